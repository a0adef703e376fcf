"""Tiny search spaces for the benchmarks' --quick modes (same shape as the shipped ones)."""

from __future__ import annotations

from typing import Any

from search_spaces._common import stage


def timing_factor_quick(trial: Any) -> dict[str, Any]:
    """search_spaces.timing_factor cut to 2 points (g in {2, 4}, one growth time)."""
    g = trial.suggest_categorical("g", [2, 4])
    at = trial.suggest_categorical("grow_at", [0.3])
    return {"stages": [stage("stack", g, at=at)]}


def lineage_sweep(trial: Any) -> dict[str, Any]:
    """benchmarks/lineage.py: g in {2, 4} x growth at 5 points, stacking (10 grid points)."""
    g = trial.suggest_categorical("g", [2, 4])
    at = trial.suggest_categorical("grow_at", [0.1, 0.25, 0.4, 0.55, 0.7])
    return {"stages": [stage("stack", g, at=at)]}


def lineage_sweep_quick(trial: Any) -> dict[str, Any]:
    """lineage_sweep cut to g in {2, 4} x 2 growth times."""
    g = trial.suggest_categorical("g", [2, 4])
    at = trial.suggest_categorical("grow_at", [0.2, 0.4])
    return {"stages": [stage("stack", g, at=at)]}
