"""Helpers shared by the shipped spaces: plain data builders, no compute and no I/O.

A space is a define-by-run function `(trial: optuna.Trial) -> dict` that only calls
`trial.suggest_*` and returns a *growth sample*::

    {"stages": [stage(...), ...]}          # [] = no growth: the target from scratch

Each stage is a dict (see `stage`): the operator, the growth factor relative to the model
before this stage (depth: L_after / L_before, width: d_after / d_before), when to grow, the
operator's own parameters, and the optimizer / LR policies at growth. raygrow.search turns the
sample into a `GrowthSchedule` for the search's target and budget: the start model is derived
from the target by dividing out the factors (target 4x128 with a depth factor 2 starts at
2x128). Parameters that only make sense for one operator are suggested only when that operator
is chosen, under a name prefixed with the operator (`stack.layer_map`), so Optuna's
distributions stay consistent across trials.
"""

from __future__ import annotations

from typing import Any

DEPTH_OPERATORS = ("stack", "zero", "random", "staged_depth", "incremental", "learned")
WIDTH_OPERATORS = (
    "net2net",
    "hypercloning",
    "staged_width",
    "mixture",
    "zero_width",
    "random_width",
)
MLP_ONLY_OK = ("net2net", "hypercloning", "zero_width", "random_width")
"""Width operators that can grow the SwiGLU hidden size alone (the block-structured ones,
staged_width and mixture, must grow d_model)."""


def stage(
    operator: str,
    factor: int = 2,
    *,
    at: float | None = None,
    slope: float | None = None,
    params: dict[str, Any] | None = None,
    opt_policy: str = "carry",
    lr_policy: str = "continue",
    lr_params: dict[str, Any] | None = None,
    width: str | None = None,
    axis: str | None = None,
) -> dict[str, Any]:
    """One growth stage. Trigger: `at` = fraction of the token budget trained before growing,
    or `slope` = grow when d log10(val loss) / d log10(FLOPs) rises above this threshold
    (Staged Training, e.g. -0.0575 for depth), with `at` then acting as the latest point.
    `width` (width operators only): `all` = d_model, heads and MLP grow by `factor` (default),
    `mlp` = only the SwiGLU hidden size grows. `axis` (operators that can grow either axis,
    e.g. `learned`): `depth` (default) or `width`."""
    out: dict[str, Any] = {
        "operator": operator,
        "factor": factor,
        "params": dict(params or {}),
        "opt_policy": opt_policy,
        "lr_policy": lr_policy,
        "lr_params": dict(lr_params or {}),
    }
    if at is not None:
        out["at"] = at
    if slope is not None:
        out["slope"] = slope
    if width is not None:
        out["width"] = width
    if axis is not None:
        out["axis"] = axis
    return out


def depth_params(trial: Any, operator: str) -> dict[str, Any]:
    """Operator-specific parameters of a depth operator (suggested only for that operator)."""
    if operator in ("stack", "zero", "random"):
        params: dict[str, Any] = {
            "layer_map": trial.suggest_categorical(f"{operator}.layer_map", ["stack", "interleave"])
        }
        if operator == "zero":
            params["init"] = trial.suggest_categorical("zero.init", ["copy", "random"])
        if operator == "random":
            params["ramp_steps"] = trial.suggest_categorical("random.ramp_steps", [0, 20, 100])
        return params
    if operator == "staged_depth":
        return {
            "placement": trial.suggest_categorical(
                "staged_depth.placement", ["alternate", "append"]
            ),
            "new_layers": trial.suggest_categorical("staged_depth.new_layers", ["id", "copy"]),
        }
    if operator == "incremental":
        return {
            "phase_steps": trial.suggest_categorical("incremental.phase_steps", [0, 20, 100]),
            "freeze": trial.suggest_categorical("incremental.freeze", ["layers", "all"]),
        }
    if operator == "learned":
        return {"phase_steps": trial.suggest_categorical("learned.phase_steps", [20, 100])}
    return {}


def width_params(trial: Any, operator: str) -> dict[str, Any]:
    """Operator-specific parameters of a width operator (suggested only for that operator)."""
    if operator == "net2net":
        return {
            "map": trial.suggest_categorical("net2net.map", ["random", "from_left"]),
            "noise": trial.suggest_categorical("net2net.noise", [0.0, 0.01]),
        }
    if operator == "hypercloning":
        return {
            "noise_snr_db": trial.suggest_categorical("hypercloning.noise_snr_db", [None, 10.0])
        }
    if operator == "mixture":
        return {
            "coefs": trial.suggest_categorical(
                "mixture.coefs", ["orthogonal", "copy", "random", "zero"]
            )
        }
    return {}
