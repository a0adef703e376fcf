"""Tiny search spaces for the benchmarks' --quick modes (same shape as the shipped ones)."""

from __future__ import annotations

from typing import Any

from search_spaces._common import stage


def timing_factor_quick(trial: Any) -> dict[str, Any]:
    """search_spaces.timing_factor cut to 2 points (g in {2, 4}, one growth time)."""
    g = trial.suggest_categorical("g", [2, 4])
    at = trial.suggest_categorical("grow_at", [0.3])
    return {"stages": [stage("stack", g, at=at)]}
