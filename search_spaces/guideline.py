"""The guideline study's grid spaces (benchmarks/guideline_study.py) and the papers' recipes.

Every parameter is categorical, so `--sampler grid` runs each combination once. Parameter names
follow the `gstack` space (`g`, `grow_at`, `operator`), so `--warm-start guidelines.csv` can
enqueue a guideline's schedule into them.

    study_g24        stack, g in {2, 4} x growth time in {0.1, 0.2, 0.4, 0.6} (4-layer targets)
    study_g248       stack, g in {2, 4, 8} x the same times (8-layer targets; g = 8 grows
                     1 layer -> 8, Deep Progressive Training's shape)
    study_operators  zero (no function preservation) vs the papers' recipes and the incremental
                     negative control, g in {2, 4} x growth time in {0.2, 0.4}
    study_g24_late, study_g248_late
                     the same factors at growth time 0.7 -- ADDED AFTER SEEING RESULTS: the
                     first two groups' grids had their best time at the last one searched (0.6)
    study_g24_any, study_g248_any
                     every time above (0.1 ... 0.7): what a warm start snaps into (the
                     confirmation and held-out searches)

Recipes as the papers ran them (scaled to runs of hundreds of steps, not 300k):
    gstack_du2024    G_stack (Du et al. 2024, released code): stack the trained blocks, a fresh
                     AdamW (no moments carried), the LR schedule restarted with a re-warm-up to
                     0.3 x the small model's peak (their grown model: 3e-4 vs 1e-3)
    staged_shen2022  Staged Training (Shen et al. 2022): staged_depth with new layers at
                     identity, grown once the loss slope d log L / d log C rises above -0.0575
                     (at the latest at the cell's growth time), optimizer state grown by the
                     training-dynamics rule (`scale`), the LR kept on the target's schedule with
                     a short re-warm-up
    incremental      Li et al. 2024 (the negative result): new random layers added on top in
                     doublings, the trained layers frozen for a short phase
"""

from __future__ import annotations

from typing import Any

from search_spaces._common import stage

TIMES = [0.1, 0.2, 0.4, 0.6]
"""Growth times (fractions of the budget), all in WSD's stable phase (decay: the last 20 %)."""
LATE_TIMES = [0.7]
"""Added after seeing the 4x32 grids (best time = the last searched, 0.6); still in WSD's stable
phase (decay from 0.8)."""
OPERATOR_TIMES = [0.2, 0.4]
REWARM_STEPS = 20
RECIPES = ("gstack_du2024", "staged_shen2022", "incremental")


def study_g24(trial: Any) -> dict[str, Any]:
    return _stack_grid(trial, [2, 4], TIMES)


def study_g248(trial: Any) -> dict[str, Any]:
    return _stack_grid(trial, [2, 4, 8], TIMES)


def _stack_grid(trial: Any, factors: list[int], times: list[float]) -> dict[str, Any]:
    g = trial.suggest_categorical("g", factors)
    at = trial.suggest_categorical("grow_at", times)
    return {"stages": [stage("stack", g, at=at)]}


def study_g24_late(trial: Any) -> dict[str, Any]:
    return _stack_grid(trial, [2, 4], LATE_TIMES)


def study_g248_late(trial: Any) -> dict[str, Any]:
    return _stack_grid(trial, [2, 4, 8], LATE_TIMES)


def study_g24_any(trial: Any) -> dict[str, Any]:
    return _stack_grid(trial, [2, 4], TIMES + LATE_TIMES)


def study_g248_any(trial: Any) -> dict[str, Any]:
    return _stack_grid(trial, [2, 4, 8], TIMES + LATE_TIMES)


def recipe(operator: str, g: int, at: float) -> dict[str, Any]:
    """A growth sample for a named recipe or a plain depth operator (see the module doc)."""
    if operator == "gstack_du2024":
        lr = {"lr_scale": 0.3, "rewarm_steps": REWARM_STEPS}
        return {
            "stages": [
                stage("stack", g, at=at, opt_policy="reset", lr_policy="restart", lr_params=lr)
            ]
        }
    if operator == "staged_shen2022":
        params = {"placement": "alternate", "new_layers": "id"}
        lr = {"lr_scale": 1.0, "rewarm_steps": REWARM_STEPS}
        stages = [
            stage(
                "staged_depth",
                2,
                at=at,
                slope=-0.0575,
                params=params,
                opt_policy="scale",
                lr_policy="rescale",
                lr_params=lr,
            )  # fmt: skip
            for _ in range(g.bit_length() - 1)  # g = 4: two doublings, each slope-triggered
        ]
        return {"stages": stages}
    if operator == "incremental":
        params = {"phase_steps": REWARM_STEPS, "freeze": "layers"}
        doublings = g.bit_length() - 1
        times = [at * (i + 1) / doublings for i in range(doublings)]
        return {"stages": [stage("incremental", 2, at=t, params=params) for t in times]}
    if operator == "zero":
        return {"stages": [stage("zero", g, at=at, params={"layer_map": "stack", "init": "copy"})]}
    return {"stages": [stage(operator, g, at=at)]}


def study_operators(trial: Any) -> dict[str, Any]:
    operator = trial.suggest_categorical("operator", ["zero", *RECIPES])
    g = trial.suggest_categorical("g", [2, 4])
    at = trial.suggest_categorical("grow_at", OPERATOR_TIMES)
    return recipe(operator, g, at)
