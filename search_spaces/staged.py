"""Staged Training (Shen et al. 2022): loss-slope-triggered growth with its own operators."""

from __future__ import annotations

from typing import Any

from search_spaces._common import stage


def staged(trial: Any) -> dict[str, Any]:
    """Grow depth (staged_depth) or width (staged_width) once the validation loss flattens:
    when the slope d log10(loss) / d log10(FLOPs) rises above a threshold (the paper: -0.0575
    for depth, -0.0475 for width, recalibrated here by the search), at the latest at `latest`
    of the budget. The optimizer state follows the paper's training-dynamics rule (`scale`:
    m/2, v/4 for width) or is carried; the LR is continued or rescaled with a short re-warmup."""
    axis = trial.suggest_categorical("axis", ["depth", "width"])
    operator = "staged_depth" if axis == "depth" else "staged_width"
    slope = trial.suggest_float("slope", -0.12, -0.02)
    latest = trial.suggest_float("latest", 0.3, 0.6)
    params: dict[str, Any] = {}
    if operator == "staged_depth":
        params["placement"] = trial.suggest_categorical(
            "staged_depth.placement", ["alternate", "append"]
        )
    opt_policy = trial.suggest_categorical("opt_policy", ["scale", "carry"])
    lr_policy = trial.suggest_categorical("lr_policy", ["continue", "rescale"])
    lr_params: dict[str, Any] = {}
    if lr_policy == "rescale":
        lr_params = {
            "lr_scale": trial.suggest_float("rescale.lr_scale", 0.5, 1.0),
            "rewarm_steps": trial.suggest_categorical("rescale.rewarm_steps", [0, 20]),
        }
    return {
        "stages": [
            stage(
                operator,
                2,
                at=latest,
                slope=slope,
                params=params,
                opt_policy=opt_policy,
                lr_policy=lr_policy,
                lr_params=lr_params,
            )
        ]
    }
