"""Width-growth spaces: which width operator, what to widen, and the policies at growth."""

from __future__ import annotations

from typing import Any

from search_spaces._common import MLP_ONLY_OK, WIDTH_OPERATORS, stage, width_params


def width(trial: Any) -> dict[str, Any]:
    """Double the width once. `target`: `all` widens d_model (with heads, head_dim fixed) and
    the MLP; `mlp` widens only the SwiGLU hidden size (not offered for staged_width and
    mixture, whose block-diagonal rule needs d_model to grow)."""
    operator = trial.suggest_categorical("operator", list(WIDTH_OPERATORS))
    at = trial.suggest_float("grow_at", 0.05, 0.5, log=True)
    target = "all"
    if operator in MLP_ONLY_OK:
        target = trial.suggest_categorical(f"{operator}.target", ["all", "mlp"])
    params = width_params(trial, operator)
    opt_policy = trial.suggest_categorical("opt_policy", ["carry", "scale", "reset"])
    lr_policy = trial.suggest_categorical("lr_policy", ["continue", "rescale"])
    lr_params: dict[str, Any] = {}
    if lr_policy == "rescale":
        lr_params = {
            "lr_scale": trial.suggest_float("rescale.lr_scale", 0.5, 1.0),
            "rewarm_steps": trial.suggest_categorical("rescale.rewarm_steps", [0, 20]),
        }
    grow = stage(
        operator,
        2,
        at=at,
        params=params,
        opt_policy=opt_policy,
        lr_policy=lr_policy,
        lr_params=lr_params,
        width=target,
    )
    return {"stages": [grow]}
