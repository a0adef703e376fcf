"""The guideline study's findings, each with a 95% interval and its number of seeds.

Reads the committed runs table (speedups added by `raygrow.analysis.speedups.add_speedups`)
and the guideline table (`raygrow.analysis.cells`); writes Markdown lines. A claim is "met"
only when the interval's lower end clears it; otherwise the report says how many seeds did.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import pandas as pd

from raygrow.analysis.cells import guideline_table, speedup_text, timing_cells
from raygrow.analysis.speedups import validity
from raygrow.analysis.tables import to_markdown
from raygrow.results import mean_interval


def _iv(values: Sequence[float]) -> str:
    values = [float(v) for v in values if math.isfinite(float(v))]
    if not values:
        return "—"
    return str(mean_interval(values))


def validity_by_group(runs: pd.DataFrame) -> pd.DataFrame:
    """The validity rule per group, every search's seeds of the group pooled."""
    return validity(runs, by="group")


def verdict(row: pd.Series, threshold: float = 1.0) -> str:
    """'met' only when the interval's lower end clears the threshold; else the seed count."""
    if row["speedup_bound"] in ("upper", "mixed"):
        return "not met (upper bound)" if row["speedup_bound"] == "upper" else "undetermined"
    low = row["speedup_ci_low"]
    if math.isfinite(low) and low > threshold:
        return f"met (>{threshold:g}x)"
    per_seed = [float(v) for v in str(row["speedup_per_seed"]).split()]
    above = sum(v > threshold for v in per_seed)
    return f"not met: {above} of {len(per_seed)} seeds above {threshold:g}x"


def best_per_group(table: pd.DataFrame) -> pd.DataFrame:
    best = table[table["rank_in_group"] == 1].copy()
    return pd.DataFrame(
        {
            "group": best["group"],
            "best (g, time, operator)": [
                f"g={f:g}, {t:.2f}, {o}"
                for f, t, o in zip(
                    best["factor"], best["best_growth_frac"], best["operator"], strict=True
                )
            ],
            "speedup (val) [95% CI]": [speedup_text(r) for _, r in best.iterrows()],
            "speedup (test)": [speedup_text(r, "speedup_test") for _, r in best.iterrows()],
            "per seed": best["speedup_per_seed"],
            "seeds": best["n_seeds"],
            "speedup > 1": [verdict(r) for _, r in best.iterrows()],
        }
    )


def factor_comparison(table: pd.DataFrame, operator: str = "stack") -> pd.DataFrame:
    """Per group and g: the best time's speedup with interval (the g crossover, g=2 vs g=4)."""
    sub = table[table["operator"] == operator].sort_values(["group", "factor"])
    return pd.DataFrame(
        {
            "group": sub["group"],
            "tokens/param": sub["tokens_per_param"].round(1),
            "g": sub["factor"],
            "best time": sub["best_growth_frac"].round(2),
            "speedup [95% CI]": [speedup_text(r) for _, r in sub.iterrows()],
            "seeds": sub["n_seeds"],
            "speedup > 1": [verdict(r) for _, r in sub.iterrows()],
        }
    )


def paired_difference(
    runs: pd.DataFrame, group: str, a: str, b: str, factors: Sequence[float] = (2.0, 4.0)
) -> pd.DataFrame:
    """Operator a minus operator b, per (g, time) cell both ran, paired by seed."""
    g = runs[(runs["group"] == group) & (runs["arm"] == "grown")]
    g = g[g["status_kind"] == "completed"].copy()
    g["time"] = g["grow_at"].round(2)  # the cell's sampled time (slope/multi-stage differ)
    rows = []
    for (factor, time), cell in g.groupby(["factor", "time"]):
        if factor not in factors:
            continue
        pa_ = cell[cell["operator"] == a].set_index("seed")["speedup_vs_scratch"]
        pb_ = cell[cell["operator"] == b].set_index("seed")["speedup_vs_scratch"]
        seeds = sorted(set(pa_.index) & set(pb_.index))
        if not seeds:
            continue
        diffs = [float(pa_[s] - pb_[s]) for s in seeds]
        rows.append(
            {
                "g": factor,
                "time": time,
                f"{a}": _iv(pa_[seeds]),
                f"{b}": _iv(pb_[seeds]),
                f"{a} − {b}": _iv(diffs),
                "seeds": len(seeds),
            }
        )
    return pd.DataFrame(rows)


def heldout_comparison(runs: pd.DataFrame, prediction: pd.DataFrame) -> pd.DataFrame:
    """Each predicted schedule of the held-out group: predicted vs measured speedup."""
    held = runs[(runs["role"] == "heldout") & (runs["arm"] == "grown")]
    if held.empty or prediction.empty:
        return pd.DataFrame()
    measured = guideline_table(timing_cells(held))
    rows = []
    for _, p in prediction.iterrows():
        m = measured[(measured["factor"] == p["factor"]) & (measured["operator"] == p["operator"])]
        rows.append(
            {
                "schedule": f"g={p['factor']:g}, {p['operator']}, {p['growth_frac']:.2f}",
                "predicted": p["text"],
                "measured (val)": speedup_text(m.iloc[0]) if len(m) else "not run",
                "measured (test)": speedup_text(m.iloc[0], "speedup_test") if len(m) else "—",
                "seeds": int(m.iloc[0]["n_seeds"]) if len(m) else 0,
                "predicted inside measured CI": _inside(p, m.iloc[0]) if len(m) else "—",
            }
        )
    return pd.DataFrame(rows)


def _inside(pred: pd.Series, meas: pd.Series) -> str:
    low, high = meas["speedup_ci_low"], meas["speedup_ci_high"]
    if not (math.isfinite(low) and math.isfinite(high)):
        return "no interval"
    return "yes" if low <= pred["speedup_mean"] <= high else "no"


def findings(runs: pd.DataFrame, table: pd.DataFrame) -> list[str]:
    """The report's findings sections (Markdown lines)."""
    lines = ["## Validity per group (target from scratch vs the small model alone)", ""]
    lines += [
        "Margin = small-only final val loss − full-budget scratch loss; valid when it exceeds "
        "2 × the larger arm's seed std (≥ 2 seeds per arm). Seeds of all the group's searches "
        "pooled.",
        "",
        to_markdown(validity_by_group(runs)),
        "",
    ]
    lines += ["## Best (g, time, operator) per group", ""]
    lines += [to_markdown(best_per_group(table)), ""]
    lines += ["## Growth factor: the crossover and g = 2 (Mallik et al.) vs g = 4 (G_stack)", ""]
    lines += [to_markdown(factor_comparison(table)), ""]
    ops = runs[(runs["study_search"].str.endswith("-operators"))]
    for group in sorted(set(ops["group"])):
        lines += [f"## Function preservation and the papers' recipes ({group})", ""]
        lines += [
            "Paired by seed, same (g, time) cell: speedup difference with 95% t-interval.",
            "",
        ]
        for other in ("zero", "gstack_du2024", "staged_shen2022", "incremental"):
            diff = paired_difference(runs, group, "stack", other)
            if len(diff):
                lines += [f"### stack vs {other}", "", to_markdown(diff), ""]
        inc = table[(table["group"] == group) & (table["operator"] == "incremental")]
        if len(inc):
            lines += ["### Incremental layer-wise (negative control, expected ≤ 1.0x)", ""]
            view = inc[["factor", "best_growth_frac", "speedup_per_seed", "n_seeds"]].copy()
            view["speedup"] = [speedup_text(r) for _, r in inc.iterrows()]
            view["≤ 1.0x"] = [
                "yes (interval's upper end ≤ 1)"
                if math.isfinite(r["speedup_ci_high"]) and r["speedup_ci_high"] <= 1
                else verdict(r)
                for _, r in inc.iterrows()
            ]
            lines += [to_markdown(view), ""]
    return lines
