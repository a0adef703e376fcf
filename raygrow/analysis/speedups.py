"""Speedup at matched loss per trial, and each search's validity, over the collected runs.

The rules are the results core's (`raygrow.results`): frontiers per experiment with paired or
pooled seeds, speedup with bounds, and the one validity rule. This module turns the trials
table (one row per MLflow run) into `TrialRecord`s and the verdicts back into columns.
A scratch run's budget fraction is its token budget over the search's budget (its grown and
small arms' budget; longer scratch budgets are > 1), else over the largest scratch budget.
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from raygrow.results import TrialRecord, compare
from raygrow.results import validity as _validity
from raygrow.results.records import MAX_BUDGET_FRAC


def _number(value: Any) -> float | None:
    try:
        x = float(value)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def _budget_fracs(g: pd.DataFrame) -> pd.Series:
    """Budget fraction of each row: a scratch run's budget over the search's budget (the budget
    of its grown and small arms; scratch runs may be longer), else over the largest scratch
    budget when the experiment has no other arm."""
    fracs = pd.Series(1.0, index=g.index)
    scratch = g[g["arm"] == "scratch"]
    others = g[g["arm"] != "scratch"]
    for col in ("budget_tokens", "flops"):
        values = pd.to_numeric(scratch[col], errors="coerce")
        if col == "budget_tokens":
            ref = pd.to_numeric(others[col], errors="coerce").max()
        else:  # FLOPs of other arms differ from the target's: only the largest scratch run
            ref = math.nan
        if not (math.isfinite(ref) and ref > 0):
            ref = values.max()
        if values.notna().all() and ref > 0:
            fracs.loc[scratch.index] = (values / ref).clip(lower=1e-9, upper=MAX_BUDGET_FRAC)
            return fracs
    return fracs


def records(g: pd.DataFrame) -> list[TrialRecord]:
    """One record per row of one experiment's trials."""
    fracs = _budget_fracs(g)
    out = []
    for i, row in g.iterrows():
        seed = _number(row.get("seed"))
        out.append(
            TrialRecord(
                arm=row["arm"],
                status=str(row.get("status_kind") or "unfinished"),
                flops=_number(row.get("flops")),
                val_loss=_number(row.get("val_loss")),
                test_loss=_number(row.get("test_loss")),
                budget_frac=float(fracs[i]),
                seed=None if seed is None else int(seed),
                trial_id=str(row.get("trial_id", "")),
                group=str(row.get("experiment", "")),
            )
        )
    return out


def add_speedups(trials: pd.DataFrame) -> pd.DataFrame:
    """Add speedup_vs_scratch, speedup_bound, speedup_basis, scratch_flops_at_loss (on the
    validation split: what selection sees) and speedup_test_vs_scratch, speedup_test_bound (the
    same comparison on the held-out test finals, where the runs have them)."""
    df = trials.copy()
    for col, default in (
        ("speedup_vs_scratch", math.nan),
        ("speedup_bound", ""),
        ("speedup_basis", ""),
        ("scratch_flops_at_loss", math.nan),
        ("speedup_test_vs_scratch", math.nan),
        ("speedup_test_bound", ""),
    ):
        df[col] = default
    for _exp, g in df.groupby("experiment"):
        recs = records(g)
        for i, cmp in zip(g.index, compare(recs), strict=True):
            if cmp.speedup is None:
                if cmp.basis:  # the experiment has no completed scratch arm
                    df.at[i, "speedup_basis"] = cmp.basis
                continue
            df.at[i, "speedup_vs_scratch"] = cmp.speedup.value
            df.at[i, "speedup_bound"] = cmp.speedup.bound
            df.at[i, "scratch_flops_at_loss"] = cmp.speedup.scratch_flops
            df.at[i, "speedup_basis"] = cmp.basis
        for i, cmp in zip(g.index, compare(recs, split="test"), strict=True):
            if cmp.speedup is not None:
                df.at[i, "speedup_test_vs_scratch"] = cmp.speedup.value
                df.at[i, "speedup_test_bound"] = cmp.speedup.bound
    return df


VALIDITY_COLUMNS = (
    "n_seeds_scratch",
    "n_seeds_small",
    "scratch_loss",
    "small_loss",
    "margin",
    "seed_noise",
    "threshold",
    "valid",
    "note",
)


def validity(trials: pd.DataFrame, by: str = "experiment") -> pd.DataFrame:
    """One row per experiment (or per `by` value, e.g. `group`: the seeds of every search of
    the group pooled): does the target from scratch beat the small model alone?"""
    rows = []
    for key, g in trials.groupby(by, sort=True):
        v = _validity(records(g))
        rows.append(
            {
                by: key,
                "n_seeds_scratch": v.n_seeds_target,
                "n_seeds_small": v.n_seeds_small,
                "scratch_loss": v.target_loss,
                "small_loss": v.small_loss,
                "margin": v.margin,
                "seed_noise": v.seed_noise,
                "threshold": v.threshold,
                "valid": v.valid,
                "note": v.note,
            }
        )
    return pd.DataFrame(rows, columns=[by, *VALIDITY_COLUMNS])
