"""`fit_guidelines`: MLflow runs -> tables, plots and a Markdown report in one folder.

Output folder:
    guidelines.md                      the report (every table below, notes, definitions)
    trials.{csv,parquet,md}            one row per trial (Parquet also has the curves as lists)
    curves.{csv,parquet}               long table: experiment, run_id, trial_id, arm, tokens,
                                       flops, val_loss
    validity.{csv,parquet,md,tex}      target-from-scratch vs small-only, per search
    timing_groups.{csv,parquet,md,tex} d* per (N, C) group with G_stack's prediction beside it
    timing_fit.{csv,parquet,md,tex}    coefficients and bootstrap intervals (or the reason why not)
    factors.{...}, operators.{...}     best growth factor / operator ranking with seed spread
    plots/loss_vs_flops_<exp>.png, plots/speedup_heatmap_<exp>.png, plots/timing_fit.png
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa

from raygrow.analysis import fit as F
from raygrow.analysis import plots, rank, speedups
from raygrow.analysis.collect import collect_runs
from raygrow.analysis.tables import to_markdown, write_table

TRIAL_COLUMNS = [
    "experiment",
    "trial_id",
    "run_id",
    "arm",
    "status",
    "seed",
    "operator",
    "factor",
    "growth_tokens",
    "growth_frac",
    "budget_tokens",
    "n_params",
    "c_6nd",
    "flops",
    "tokens",
    "val_loss",
    "val_bpb",
    "speedup_vs_scratch",
    "speedup_bound",
    "speedup_basis",
]


def analyse(trials: pd.DataFrame, n_boot: int = 1000, form: str = "gstack", seed: int = 0):
    """All analysis tables from a trials frame (as `collect_runs` returns it, in pandas)."""
    trials = speedups.add_speedups(trials)
    groups = F.timing_groups(trials)
    return {
        "trials": trials,
        "validity": speedups.validity(trials),
        "groups": groups,
        "timing_groups": F.groups_table(groups, seed=seed),
        "fit": F.fit_timing(groups, form=form, n_boot=n_boot, seed=seed),
        "factors": rank.factor_table(trials),
        "operators": rank.operator_table(trials),
    }


def fit_guidelines(
    tracking_uri: str,
    experiments: Sequence[str],
    out_dir: str | Path,
    *,
    n_boot: int = 1000,
    form: str = "gstack",
    seed: int = 0,
) -> dict[str, Any]:
    """Collect, analyse, write. Returns a summary (paths, counts, fit)."""
    out = Path(out_dir)
    (out / "plots").mkdir(parents=True, exist_ok=True)
    trials_tbl, curves_tbl = collect_runs(tracking_uri, experiments)
    return write_report(
        trials_tbl, curves_tbl, out, experiments, n_boot=n_boot, form=form, seed=seed,
        source=tracking_uri,
    )  # fmt: skip


def write_report(
    trials_tbl: pa.Table,
    curves_tbl: pa.Table,
    out: Path,
    experiments: Sequence[str],
    *,
    n_boot: int = 1000,
    form: str = "gstack",
    seed: int = 0,
    source: str = "",
) -> dict[str, Any]:
    out = Path(out)
    (out / "plots").mkdir(parents=True, exist_ok=True)
    trials = trials_tbl.to_pandas()
    if "arm" not in trials.columns:
        trials = pd.DataFrame(columns=TRIAL_COLUMNS)
    res = analyse(trials, n_boot=n_boot, form=form, seed=seed)
    trials = res["trials"]
    files: list[Path] = []
    lead = [c for c in TRIAL_COLUMNS if c in trials.columns]
    trials = trials[lead + [c for c in trials.columns if c not in lead]]
    files += write_table(trials, out, "trials")
    curves = curves_tbl.to_pandas()
    curves.to_csv(out / "curves.csv", index=False)
    curves.to_parquet(out / "curves.parquet", index=False)
    files += [out / "curves.csv", out / "curves.parquet"]
    fit: F.TimingFit = res["fit"]
    for name in ("validity", "timing_groups", "factors", "operators"):
        files += write_table(res[name], out, name, latex=True)
    files += write_table(fit.table() if fit.ok else _no_fit(fit), out, "timing_fit", latex=True)

    plot_files = []
    for exp in experiments:
        plot_files.append(
            plots.loss_vs_flops(trials, exp, out / "plots" / f"loss_vs_flops_{plots.slug(exp)}.png")
        )
        heat = plots.speedup_heatmap(
            trials, exp, out / "plots" / f"speedup_heatmap_{plots.slug(exp)}.png"
        )
        if heat:
            plot_files.append(heat)
    tf = plots.timing_fit(res["timing_groups"], fit, out / "plots" / "timing_fit.png")
    if tf:
        plot_files.append(tf)
    files += plot_files

    md = markdown_report(res, experiments, source, plot_files, out)
    (out / "guidelines.md").write_text(md)
    files.append(out / "guidelines.md")
    return {
        "out": str(out),
        "files": [str(p) for p in files],
        "n_trials": len(trials),
        "fit_ok": fit.ok,
        "fit_note": fit.note,
        "coef": fit.coef,
        "ci": fit.ci,
    }


def _no_fit(fit: F.TimingFit) -> pd.DataFrame:
    return pd.DataFrame([{"form": fit.form, "fitted": False, "n_groups": fit.n_groups,
                          "note": fit.note}])  # fmt: skip


def markdown_report(
    res: dict, experiments: Sequence[str], source: str, plot_files: list[Path], out: Path
) -> str:
    trials: pd.DataFrame = res["trials"]
    fit: F.TimingFit = res["fit"]
    lines = [
        "# Growth-schedule guidelines",
        "",
        f"Source: `{source}`; experiments: {', '.join(f'`{e}`' for e in experiments)}.",
        "",
        "## Runs",
        "",
    ]
    if len(trials):
        counts = trials.groupby(["experiment", "arm", "status_kind"]).size().rename("runs")
        lines += [to_markdown(counts.reset_index()), ""]
    else:
        lines += ["No trial runs found (tag `raygrow.role = trial`).", ""]
    lines += [
        "## Validity: does the target from scratch beat the small model alone?",
        "",
        "Margin = small-only loss − full-budget scratch loss (nats/token); it must exceed 2× the "
        "seed noise (std across seeds) when both arms have several seeds, else > 0 ('single "
        "seed'). Speedups of a search that fails this check compare against a weak target.",
        "",
        to_markdown(res["validity"]),
        "",
        "## Speedup at matched loss (top 15 completed grown trials)",
        "",
        "speedup = scratch FLOPs to reach the trial's final loss / the trial's FLOPs, interpolated "
        "in log-compute between annealed scratch budgets (`raygrow.results.speedup`); bound "
        "`lower` = beyond every scratch budget (true speedup is larger), `upper` = below the "
        "smallest.",
        "",
    ]
    grown = trials[(trials["arm"] == "grown") & (trials["status_kind"] == "completed")]
    top = grown.sort_values("speedup_vs_scratch", ascending=False).head(15)
    cols = ["experiment", "trial_id", "seed", "operator", "factor", "growth_frac", "val_loss",
            "flops", "speedup_vs_scratch", "speedup_bound", "speedup_basis"]  # fmt: skip
    lines += [to_markdown(top[[c for c in cols if c in top.columns]]), ""]
    lines += ["## Growth timing guideline", ""]
    form_text = {
        "gstack": "log10 d* = a·log10 N + b/log10 C + c (G_stack's form)",
        "powerlaw": "log10 d* = a·log10 N + b·log10 C + c (d* ∝ N^a·C^b)",
    }[fit.form]
    lines += [f"Model: `{form_text}`; d* in tokens, N = target parameters, C = 6·N·D.", ""]
    if fit.ok:
        lines += [
            f"Fitted on {fit.n_groups} (N, C) groups; {int(fit.level * 100)}% bootstrap "
            f"intervals ({0 if fit.boot is None else len(fit.boot)} replicates).",
            "",
            to_markdown(fit.table()),
            "",
        ]
        if "a" in fit.coef:
            lo, hi = fit.ci["a"]
            lines += [
                f"N exponent a = {fit.coef['a']:.3g} [{lo:.3g}, {hi:.3g}] vs G_stack's 0.88.",
                "",
            ]
        if fit.note:
            lines += [f"Note: {fit.note}.", ""]
    else:
        lines += [f"**{fit.note}**", ""]
    lines += [
        "Per group: measured d* (bootstrap interval) and G_stack's formula "
        "`log10 d = 0.88·log10 N + 163.27/log10 C − 5.74` beside it. That formula was fitted on "
        "410M–3B targets with billions of tokens; at this scale it is far outside its range "
        "(d/D ≫ 1 means 'grow after the budget is spent'), so do not use it here unclamped.",
        "",
        to_markdown(res["timing_groups"]),
        "",
        "## Best growth factor",
        "",
        to_markdown(res["factors"]),
        "",
        "## Operator ranking (best configuration per operator, spread across seeds)",
        "",
        to_markdown(res["operators"]),
        "",
        "## Plots",
        "",
    ]
    lines += [f"![{p.stem}]({p.relative_to(out)})" for p in plot_files]
    return "\n".join(lines) + "\n"
