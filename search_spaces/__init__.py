"""Search spaces for `python -m raygrow.search --space NAME` (or `--space file.py:function`).

Each space is a plain define-by-run function `(trial: optuna.Trial) -> dict` that only suggests
(no compute, no I/O) and returns a growth sample `{"stages": [...]}` relative to the search's
target (see `search_spaces._common.stage`). Every space here is validated by one parametrized
test (tests/test_spaces.py): many samples must turn into valid schedules.

    default        G_stack g=4 (stack/zero/random) at 10-50 % of the budget (15-minute default)
    gstack         G_stack: growth time, factor g in {2, 4}, depth operator, layer map
    width          width operators, what to widen (all / MLP only), optimizer and LR policies
    staged         Staged Training: slope-triggered staged_depth / staged_width
    all_operators  every operator, factor 2, its own parameters
    timing_factor  G_stack factor g in {2,3,4,6} x growth time, categorical (grid-able)
    study_g24, study_g248, study_operators (+ _late, _any variants)
                   the guideline study's grids and the papers' recipes (search_spaces.guideline)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from search_spaces.depth import default, gstack, timing_factor
from search_spaces.guideline import (
    study_g24,
    study_g24_any,
    study_g24_late,
    study_g248,
    study_g248_any,
    study_g248_late,
    study_operators,
)
from search_spaces.mixed import all_operators
from search_spaces.staged import staged
from search_spaces.width import width

SPACES: dict[str, Callable[[Any], dict[str, Any]]] = {
    "default": default,
    "gstack": gstack,
    "width": width,
    "staged": staged,
    "all_operators": all_operators,
    "timing_factor": timing_factor,
    "study_g24": study_g24,
    "study_g248": study_g248,
    "study_operators": study_operators,
    "study_g24_late": study_g24_late,
    "study_g248_late": study_g248_late,
    "study_g24_any": study_g24_any,
    "study_g248_any": study_g248_any,
}

__all__ = [
    "SPACES",
    "all_operators",
    "default",
    "gstack",
    "staged",
    "study_g24",
    "study_g24_any",
    "study_g24_late",
    "study_g248",
    "study_g248_any",
    "study_g248_late",
    "study_operators",
    "timing_factor",
    "width",
]
