"""Best growth factor and operator ranking, with the spread across seeds.

Both work per (N, D) group on completed `grown` trials with a speedup. For each candidate (a
factor, or an operator) the best configuration is the one with the highest seed-mean speedup
(over timings, and factors for operators); the tables report that mean, its standard deviation and
range across seeds, and the mean over all of the candidate's trials. Rank 1 is best.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd


def _grown(trials: pd.DataFrame) -> pd.DataFrame:
    ok = (
        (trials["arm"] == "grown")
        & (trials["status_kind"] == "completed")
        & np.isfinite(trials["speedup_vs_scratch"])
    )
    out = trials[ok].copy()
    out["group"] = [
        f"N={n:.3g}, D={d:.3g}" for n, d in zip(out["n_params"], out["budget_tokens"], strict=True)
    ]
    out["factor"] = out["factor"].fillna(-1.0)
    out["growth_tokens"] = out["growth_tokens"].fillna(-1.0)
    return out


def _best(g: pd.DataFrame, config: list[str]) -> dict:
    means = g.groupby(config)["speedup_vs_scratch"].mean()
    best_key = means.idxmax()
    key = best_key if isinstance(best_key, tuple) else (best_key,)
    sel = g
    for col, val in zip(config, key, strict=True):
        sel = sel[sel[col] == val]
    s = sel["speedup_vs_scratch"]
    out = {f"best_{c}": v for c, v in zip(config, key, strict=True)}
    out.update(
        speedup_mean=float(s.mean()),
        speedup_std=float(s.std(ddof=1)) if len(s) >= 2 else math.nan,
        speedup_min=float(s.min()),
        speedup_max=float(s.max()),
        n_seeds=int(sel["seed"].nunique()),
        n_trials=len(g),
        mean_all_trials=float(g["speedup_vs_scratch"].mean()),
        bounded=int((sel["speedup_bound"] != "exact").sum()),
    )
    return out


def _rank(rows: list[dict]) -> pd.DataFrame:
    df = pd.DataFrame(rows)
    if df.empty:
        return df
    df["rank"] = df.groupby("group")["speedup_mean"].rank(ascending=False, method="min")
    df["rank"] = df["rank"].astype(int)
    df["note"] = np.where(df["n_seeds"] < 2, "single seed", "")
    return df.sort_values(["group", "rank"]).reset_index(drop=True)


def factor_table(trials: pd.DataFrame) -> pd.DataFrame:
    """Per group and growth factor: best timing, its speedup mean ± std across seeds; ranked."""
    g = _grown(trials)
    rows = []
    for (group, factor), sub in g.groupby(["group", "factor"], sort=True):
        rows.append({"group": group, "factor": factor, **_best(sub, ["growth_tokens"])})
    return _rank(rows)


def operator_table(trials: pd.DataFrame) -> pd.DataFrame:
    """Per group and operator: best (timing, factor), speedup mean ± std across seeds; ranked."""
    g = _grown(trials)
    rows = []
    for (group, op), sub in g.groupby(["group", "operator"], sort=True):
        rows.append({"group": group, "operator": op, **_best(sub, ["growth_tokens", "factor"])})
    return _rank(rows)
