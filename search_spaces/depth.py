"""Depth-growth spaces: G_stack (Du et al. 2024) and the 15-minute default."""

from __future__ import annotations

from typing import Any

from search_spaces._common import depth_params, stage


def gstack(trial: Any) -> dict[str, Any]:
    """When (fraction of the budget), by how much (g), with which depth operator and layer map.

    Du et al. found g = 4 and an early growth point best at scale; at CPU scale both are open.
    """
    g = trial.suggest_categorical("g", [2, 4])
    at = trial.suggest_float("grow_at", 0.05, 0.5, log=True)
    operator = trial.suggest_categorical("operator", ["stack", "zero", "random"])
    params = depth_params(trial, operator)
    opt_policy = trial.suggest_categorical("opt_policy", ["carry", "reset"])
    return {"stages": [stage(operator, g, at=at, params=params, opt_policy=opt_policy)]}


def default(trial: Any) -> dict[str, Any]:
    """The embedded default: G_stack's g = 4 (target 4x64 grows from one layer) with stack /
    zero / random at a sampled point between 10 % and 50 % of the budget. Small enough that
    scratch at three budgets, the small model and the default search's sampled schedules
    finish in about 17 minutes on 2 CPU cores (a one-layer source keeps the validity margin,
    target vs small, clear)."""
    at = trial.suggest_float("grow_at", 0.1, 0.5)
    operator = trial.suggest_categorical("operator", ["stack", "zero", "random"])
    params = {"ramp_steps": 20} if operator == "random" else {}
    return {"stages": [stage(operator, 4, at=at, params=params)]}


def timing_factor(trial: Any) -> dict[str, Any]:
    """G_stack's two axes on a grid: growth factor g in {2, 3, 4, 6} (a 12-layer target grows
    from 6, 4, 3 or 2 layers) x growth time, by stacking. Categorical only, so it runs under
    `--sampler grid` (the exhaustive sweep of benchmarks/timing_factor.py) as well as TPE."""
    g = trial.suggest_categorical("g", [2, 3, 4, 6])
    at = trial.suggest_categorical("grow_at", [0.15, 0.3, 0.5])
    return {"stages": [stage("stack", g, at=at)]}
