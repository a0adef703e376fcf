"""Every registered operator in one space: which family of growth works at all."""

from __future__ import annotations

from typing import Any

from search_spaces._common import (
    DEPTH_OPERATORS,
    MLP_ONLY_OK,
    WIDTH_OPERATORS,
    depth_params,
    stage,
    width_params,
)


def all_operators(trial: Any) -> dict[str, Any]:
    """One growth by a factor of 2 with any depth or width operator (`learned` grows depth
    here), its own parameters, a growth point, and the optimizer policy at growth."""
    operator = trial.suggest_categorical("operator", [*DEPTH_OPERATORS, *WIDTH_OPERATORS])
    at = trial.suggest_float("grow_at", 0.05, 0.5, log=True)
    opt_policy = trial.suggest_categorical("opt_policy", ["carry", "scale", "reset"])
    if operator in DEPTH_OPERATORS:
        params = depth_params(trial, operator)
        axis = "depth" if operator == "learned" else None
        return {
            "stages": [stage(operator, 2, at=at, params=params, opt_policy=opt_policy, axis=axis)]
        }
    params = width_params(trial, operator)
    target = "all"
    if operator in MLP_ONLY_OK:
        target = trial.suggest_categorical(f"{operator}.target", ["all", "mlp"])
    grow = stage(operator, 2, at=at, params=params, opt_policy=opt_policy, width=target)
    return {"stages": [grow]}
