"""The guideline table: per (group, growth factor, operator), the best growth time and its speedup.

A *group* is one target model and token budget, labelled `<target>@<tokens per parameter>`
(e.g. `8x32@5`; N = the target's non-embedding parameters). A *cell* is one (group, factor,
operator, growth time); its seeds give a mean speedup with a 95% t-interval
(`raygrow.results.mean_interval`).

Bounds stay bounds (censored, never values): a seed whose speedup is a lower bound (`>1.3x`:
the run beat every scratch budget) makes the cell's mean a lower bound, and only the interval's
lower end is reported (the upper end is unknown); an upper bound the other way round; a cell
with both kinds is `mixed` and has no interval.

Two criteria pick the best growth time of a (group, factor, operator):
- `speedup` (the guideline): the highest seed-mean speedup at matched loss (scratch compute to
  reach the run's final validation loss / the run's compute);
- `loss`: the lowest seed-mean final validation loss at the group's fixed token budget D. Du et
  al. (2024) fix compute C instead; at fixed D a later growth also spends fewer FLOPs, so this
  criterion favours earlier growth than theirs.
A best time at the edge of the searched times is flagged `at_edge` (the optimum may lie outside).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from raygrow.config import ModelConfig
from raygrow.errors import ConfigError
from raygrow.results import mean_interval

RUNS_COLUMNS = (
    "experiment",
    "arm",
    "status_kind",
    "seed",
    "operator",
    "factor",
    "growth_tokens",
    "budget_tokens",
    "n_params",
    "flops",
    "val_loss",
)
"""What a runs table must hold for `python -m raygrow.guidelines --runs-table`."""

CELL_KEYS = ["group", "factor", "operator", "growth_frac"]
GUIDELINE_COLUMNS = [
    "group",
    "target",
    "n_params",
    "budget_tokens",
    "tokens_per_param",
    "compute_6nd",
    "factor",
    "operator",
    "criterion",
    "best_growth_frac",
    "best_growth_tokens",
    "at_edge",
    "n_timings",
    "speedup_mean",
    "speedup_ci_low",
    "speedup_ci_high",
    "speedup_bound",
    "speedup_per_seed",
    "n_seeds",
    "val_loss_mean",
    "test_loss_mean",
    "speedup_test_mean",
    "speedup_test_ci_low",
    "speedup_test_ci_high",
    "speedup_test_bound",
    "loss_best_growth_frac",
    "loss_best_val_loss",
    "loss_at_edge",
    "valid",
]


def check_runs_table(df: pd.DataFrame, path: str = "runs table") -> None:
    """One-line ConfigError naming the missing columns."""
    missing = [c for c in RUNS_COLUMNS if c not in df.columns]
    if missing:
        raise ConfigError(
            f"{path} lacks columns {', '.join(missing)}; write it with "
            "benchmarks/guideline_study.py or export trials.parquet from python -m "
            "raygrow.guidelines --experiment NAME"
        )


def nonembedding_params(target: str) -> float:
    """Non-embedding parameters of a target given as a shape (`8x32`); NaN if not a shape."""
    try:
        return float(ModelConfig.from_shape(str(target)).n_params(non_embedding=True))
    except (ConfigError, ValueError, TypeError):
        return math.nan


def label_groups(trials: pd.DataFrame) -> pd.DataFrame:
    """Add `target` (if absent), `n_params_nonemb`, `tokens_per_param` and `group`.

    N is the target's non-embedding size when the target shape is known, else the logged
    (final, total) `n_params`."""
    df = trials.copy()
    if "target" not in df.columns:
        df["target"] = ""
    df["target"] = df["target"].fillna("").astype(str)
    if "n_params_nonemb" not in df.columns:
        df["n_params_nonemb"] = [nonembedding_params(t) if t else math.nan for t in df["target"]]
    n = pd.to_numeric(df["n_params_nonemb"], errors="coerce")
    n = n.where(np.isfinite(n), pd.to_numeric(df["n_params"], errors="coerce"))
    df["n_params_nonemb"] = n
    df["tokens_per_param"] = pd.to_numeric(df["budget_tokens"], errors="coerce") / n
    if "group" not in df.columns or df["group"].isna().any():
        df["group"] = [
            f"{t}@{tpp:.3g}" if t else f"N={nn:.3g}@{tpp:.3g}"
            for t, nn, tpp in zip(df["target"], n, df["tokens_per_param"], strict=True)
        ]
    return df


def _bound_of(bounds: list[str]) -> str:
    kinds = {b for b in bounds if b and b != "exact"}
    if not kinds:
        return "exact"
    return kinds.pop() if len(kinds) == 1 else "mixed"


def _interval(values: list[float], bound: str) -> tuple[float, float, float]:
    iv = mean_interval(values)
    low = math.nan if iv.low is None else iv.low
    high = math.nan if iv.high is None else iv.high
    if bound == "lower":
        high = math.nan  # the true mean is at least this: no upper end
    elif bound == "upper":
        low = math.nan
    elif bound == "mixed":
        low = high = math.nan
    return iv.mean, low, high


def _grown(trials: pd.DataFrame) -> pd.DataFrame:
    ok = (
        (trials["arm"] == "grown")
        & (trials["status_kind"] == "completed")
        & np.isfinite(pd.to_numeric(trials["speedup_vs_scratch"], errors="coerce"))
        & (pd.to_numeric(trials["growth_tokens"], errors="coerce") > 0)
    )
    g = trials[ok].copy()
    # the cell's sampled time when the runs table has it (`grow_at`): a slope-triggered or
    # multi-stage schedule first grows elsewhere, and its seeds must stay one cell
    measured = g["growth_tokens"] / g["budget_tokens"]
    sampled = pd.to_numeric(g.get("grow_at", pd.Series(math.nan, index=g.index)), errors="coerce")
    g["growth_frac"] = sampled.where(sampled.notna(), measured).round(4)
    g["factor"] = pd.to_numeric(g["factor"], errors="coerce").fillna(-1).round(3)
    return g


def timing_cells(trials: pd.DataFrame) -> pd.DataFrame:
    """One row per (group, factor, operator, growth time): seed mean speedup, interval, bound."""
    g = _grown(label_groups(trials))
    rows = []
    for key, sub in g.groupby(CELL_KEYS, sort=True):
        sub = sub.sort_values("seed")
        values = sub["speedup_vs_scratch"].astype(float).tolist()
        test = pd.to_numeric(sub.get("test_loss", pd.Series(math.nan, index=sub.index)))
        first = sub.iloc[0]
        rows.append(
            {
                **dict(zip(CELL_KEYS, key, strict=True)),
                "target": first["target"],
                "n_params": float(first["n_params_nonemb"]),
                "budget_tokens": float(first["budget_tokens"]),
                "tokens_per_param": float(first["tokens_per_param"]),
                "growth_tokens": float(sub["growth_tokens"].mean()),
                "n_seeds": len(values),
                **_seed_summary(sub, "speedup_vs_scratch", "speedup_bound", "speedup"),
                "speedup_per_seed": " ".join(f"{v:.3f}" for v in values),
                "seeds": " ".join(str(s) for s in sub["seed"].tolist()),
                "val_loss_mean": float(sub["val_loss"].mean()),
                "test_loss_mean": float(test.mean()) if test.notna().any() else math.nan,
                **_seed_summary(
                    sub, "speedup_test_vs_scratch", "speedup_test_bound", "speedup_test"
                ),
            }
        )
    return pd.DataFrame(rows)


def _seed_summary(sub: pd.DataFrame, value: str, bound: str, prefix: str) -> dict[str, Any]:
    """`<prefix>_mean/_ci_low/_ci_high/_bound` over the cell's seeds (NaN when a seed lacks it)."""
    values = pd.to_numeric(sub.get(value, pd.Series(math.nan, index=sub.index)))
    if values.isna().any():
        kind, mean, low, high = "", math.nan, math.nan, math.nan
    else:
        marks = sub.get(bound, pd.Series("", index=sub.index))
        kind = _bound_of([str(b) for b in marks])
        mean, low, high = _interval(values.astype(float).tolist(), kind)
    keys = ("mean", "ci_low", "ci_high", "bound")
    return {f"{prefix}_{k}": v for k, v in zip(keys, (mean, low, high, kind), strict=True)}


def _sort_key(row: pd.Series) -> tuple[float, float]:
    """Best first: seed-mean speedup (a lower bound counts as its value, flagged in the row)."""
    return (-float(row["speedup_mean"]), float(row["growth_frac"]))


def guideline_table(cells: pd.DataFrame, valid: Mapping[str, bool] | None = None) -> pd.DataFrame:
    """One row per (group, factor, operator): the best growth time under both criteria.

    `valid`: group -> the validity rule's verdict (`speedups.validity(trials, by="group")`);
    a group where the target does not beat the small model by more than seed noise is the
    regime where any growth "wins", so the warm start leaves it out. Missing: NaN."""
    valid = valid or {}
    rows = []
    if cells.empty:
        return pd.DataFrame(columns=GUIDELINE_COLUMNS)
    for (group, factor, op), sub in cells.groupby(["group", "factor", "operator"], sort=True):
        sub = sub.sort_values("growth_frac").reset_index(drop=True)
        order = sorted(range(len(sub)), key=lambda i: _sort_key(sub.iloc[i]))
        best = sub.iloc[order[0]]
        edge = len(sub) < 3 or order[0] in (0, len(sub) - 1)
        by_loss = int(np.argmin(sub["val_loss_mean"].to_numpy(float)))
        rows.append(
            {
                "group": group,
                "target": best["target"],
                "n_params": best["n_params"],
                "budget_tokens": best["budget_tokens"],
                "tokens_per_param": best["tokens_per_param"],
                "compute_6nd": 6.0 * best["n_params"] * best["budget_tokens"],
                "factor": factor,
                "operator": op,
                "criterion": "speedup",
                "best_growth_frac": float(best["growth_frac"]),
                "best_growth_tokens": float(best["growth_tokens"]),
                "at_edge": bool(edge),
                "n_timings": len(sub),
                "speedup_mean": float(best["speedup_mean"]),
                "speedup_ci_low": float(best["speedup_ci_low"]),
                "speedup_ci_high": float(best["speedup_ci_high"]),
                "speedup_bound": best["speedup_bound"],
                "speedup_per_seed": best["speedup_per_seed"],
                "n_seeds": int(best["n_seeds"]),
                "val_loss_mean": float(best["val_loss_mean"]),
                "test_loss_mean": float(best["test_loss_mean"]),
                **{k: best[k] for k in GUIDELINE_COLUMNS if k.startswith("speedup_test")},
                "loss_best_growth_frac": float(sub["growth_frac"].iloc[by_loss]),
                "loss_best_val_loss": float(sub["val_loss_mean"].iloc[by_loss]),
                "loss_at_edge": bool(len(sub) < 3 or by_loss in (0, len(sub) - 1)),
                "valid": _verdict(valid.get(group)),
            }
        )
    out = pd.DataFrame(rows, columns=GUIDELINE_COLUMNS)
    out["rank_in_group"] = (
        out.groupby("group")["speedup_mean"].rank(ascending=False, method="min").astype(int)
    )
    return out.sort_values(["group", "rank_in_group", "factor"]).reset_index(drop=True)


def _verdict(value: Any) -> Any:
    """True/False, or NaN where the rule could not decide (no small arm, unknown group)."""
    return bool(value) if isinstance(value, bool | np.bool_) else math.nan


def speedup_text(row: pd.Series, prefix: str = "speedup") -> str:
    """`1.42 [1.20, 1.64]`, `>1.30 [≥1.10]` for a lower bound, `<0.9` for an upper one
    (`prefix="speedup_test"`: the same on the test split)."""
    mean, low, high, bound = (row[f"{prefix}_{k}"] for k in ("mean", "ci_low", "ci_high", "bound"))
    if not math.isfinite(mean):
        return "—"
    if bound == "lower":
        return f">{mean:.2f}" + (f" [≥{low:.2f}]" if math.isfinite(low) else "")
    if bound == "upper":
        return f"<{mean:.2f}" + (f" [≤{high:.2f}]" if math.isfinite(high) else "")
    if bound == "mixed":
        return f"~{mean:.2f} (mixed bounds)"
    if math.isfinite(low) and math.isfinite(high):
        return f"{mean:.2f} [{low:.2f}, {high:.2f}]"
    return f"{mean:.2f} (1 seed)"
