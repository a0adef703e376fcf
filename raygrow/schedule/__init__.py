"""Growth schedules: when to grow, with which operator, and what happens to optimizer and LR.

A `GrowthSchedule` is a start `ModelConfig` plus ordered `GrowthStage`s, each fired by a
`Trigger`. The schedule is pure data (JSON round trip, no tensors, no torch import).

    core          GrowthStage, GrowthSchedule (validation, timing, JSON), LR policies
    trigger       Trigger (fixed time or loss-slope rule), smoothed_slope
    constructors  fixed, multi_stage, slope_triggered, from_guideline
    guideline     G_stack timing formula (gstack_growth_tokens, clamped, suggest_growth) and
                  Staged Training's slope thresholds (SLOPE_*)
"""

from __future__ import annotations

from raygrow.schedule.constructors import fixed, from_guideline, multi_stage, slope_triggered
from raygrow.schedule.core import (
    FORMAT_VERSION,
    LR_PARAM_KEYS,
    LR_POLICIES,
    GrowthSchedule,
    GrowthStage,
)
from raygrow.schedule.guideline import (
    SLOPE_DEPTH,
    clamped_gstack_growth_tokens,
    gstack_growth_tokens,
    suggest_growth,
)
from raygrow.schedule.trigger import UNITS, Trigger, smoothed_slope

__all__ = [
    "FORMAT_VERSION",
    "LR_PARAM_KEYS",
    "LR_POLICIES",
    "SLOPE_DEPTH",
    "UNITS",
    "GrowthSchedule",
    "GrowthStage",
    "Trigger",
    "clamped_gstack_growth_tokens",
    "fixed",
    "from_guideline",
    "gstack_growth_tokens",
    "multi_stage",
    "slope_triggered",
    "smoothed_slope",
    "suggest_growth",
]
