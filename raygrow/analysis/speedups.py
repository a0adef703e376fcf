"""Speedup at matched loss per trial, and the search's validity check.

Speedup (`raygrow.speedup`, no extrapolation): a trial that spent `flops` and ended at `val_loss`
is compared with the frontier of its search's *annealed* scratch arms (arm `scratch`, completed,
one point (final flops, final val_loss) per budget). Which scratch runs form the frontier:
- `paired`: the scratch runs with the trial's own seed, when that seed covers every scratch
  budget of the search (same data order, so seed noise mostly cancels);
- `pooled`: otherwise the seed-mean loss at each budget.
A scratch run therefore meets its own point: the full-budget scratch arm's speedup is exactly 1.0
whenever it has the lowest scratch loss of its seed.

Validity (per search): the target from scratch at the full budget must beat the small model alone
(arm `small`) - by more than 2x the seed noise (the larger of the two arms' standard deviations
across seeds) when both arms have >= 2 seeds, otherwise by > 0 and flagged "single seed".
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from raygrow.speedup import speedup_at_matched_loss


def _scratch(df: pd.DataFrame) -> pd.DataFrame:
    ok = (
        (df["arm"] == "scratch")
        & (df["status_kind"] == "completed")
        & np.isfinite(df["flops"])
        & np.isfinite(df["val_loss"])
        & (df["flops"] > 0)
    )
    out = df[ok].copy()
    # budget key: the token budget when known, else the FLOPs (identical across seeds)
    out["_budget"] = np.where(
        np.isfinite(out["budget_tokens"]), out["budget_tokens"], out["flops"].round(-3)
    )
    return out


def add_speedups(trials: pd.DataFrame) -> pd.DataFrame:
    """Add speedup_vs_scratch, speedup_bound, speedup_basis, scratch_flops_at_loss."""
    df = trials.copy()
    for col, default in (
        ("speedup_vs_scratch", math.nan),
        ("speedup_bound", ""),
        ("speedup_basis", ""),
        ("scratch_flops_at_loss", math.nan),
    ):
        df[col] = default
    if df.empty:
        return df
    for _exp, idx in df.groupby("experiment").groups.items():
        scratch = _scratch(df.loc[idx])
        if scratch.empty:
            df.loc[idx, "speedup_basis"] = "no completed scratch arm"
            continue
        budgets = set(scratch["_budget"])
        pooled_df = scratch.groupby("_budget")[["flops", "val_loss"]].mean()
        pooled = list(zip(pooled_df["flops"], pooled_df["val_loss"], strict=True))
        n_seeds = scratch["seed"].nunique()
        by_seed = {
            seed: list(zip(g["flops"], g["val_loss"], strict=True))
            for seed, g in scratch.groupby("seed")
            if set(g["_budget"]) >= budgets
        }
        for i in idx:
            flops, loss = df.at[i, "flops"], df.at[i, "val_loss"]
            if not (math.isfinite(flops) and math.isfinite(loss) and flops > 0):
                continue
            seed = df.at[i, "seed"]
            if seed is not None and not pd.isna(seed) and seed in by_seed:
                points, basis = by_seed[seed], f"paired (seed {int(seed)})"
            else:
                points, basis = pooled, f"pooled ({n_seeds} seed{'s' * (n_seeds != 1)})"
            s = speedup_at_matched_loss(points, flops, loss)
            df.at[i, "speedup_vs_scratch"] = s.value
            df.at[i, "speedup_bound"] = s.bound
            df.at[i, "scratch_flops_at_loss"] = s.scratch_flops
            df.at[i, "speedup_basis"] = basis
    return df


def validity(trials: pd.DataFrame) -> pd.DataFrame:
    """One row per experiment: does the target from scratch beat the small model alone?"""
    rows = []
    for exp, g in trials.groupby("experiment", sort=True):
        scratch = _scratch(g)
        row: dict = {"experiment": exp}
        small = g[(g["arm"] == "small") & (g["status_kind"] == "completed")]
        small = small[np.isfinite(small["val_loss"])]
        if not scratch.empty:
            full = scratch[scratch["_budget"] == scratch["_budget"].max()]
        else:
            full = scratch
        row.update(
            n_seeds_scratch=int(full["seed"].nunique(dropna=False)) if len(full) else 0,
            n_seeds_small=int(small["seed"].nunique(dropna=False)) if len(small) else 0,
            scratch_loss=float(full["val_loss"].mean()) if len(full) else math.nan,
            small_loss=float(small["val_loss"].mean()) if len(small) else math.nan,
        )
        row["margin"] = row["small_loss"] - row["scratch_loss"]
        sd = [float(x["val_loss"].std(ddof=1)) for x in (full, small) if len(x) >= 2]
        several = row["n_seeds_scratch"] >= 2 and row["n_seeds_small"] >= 2
        row["seed_noise"] = max(sd) if sd else math.nan
        if full.empty or small.empty:
            row["threshold"], row["valid"] = math.nan, None
            row["note"] = "no completed " + ("scratch" if full.empty else "small") + " arm"
        elif several:
            row["threshold"] = 2 * row["seed_noise"]
            row["valid"] = bool(row["margin"] > row["threshold"])
            row["note"] = "" if row["valid"] else "margin within 2x seed noise"
        else:
            row["threshold"] = 0.0
            row["valid"] = bool(row["margin"] > 0)
            row["note"] = "single seed"
        rows.append(row)
    return pd.DataFrame(rows)
