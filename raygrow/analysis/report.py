"""`fit_guidelines`: MLflow runs -> tables, plots and a Markdown report in one folder.

Output folder:
    guidelines.md                      the report (every table below, notes, definitions)
    trials.{csv,parquet,md}            one row per trial (Parquet also has the curves as lists)
    curves.{csv,parquet}               long table: experiment, run_id, trial_id, arm, tokens,
                                       flops, val_loss
    validity.{csv,parquet,md,tex}      target-from-scratch vs small-only, per search
    guidelines.{csv,parquet,md,tex}    per (group, factor, operator): best growth time, speedup with
                                       95% interval and bound, both criteria (`analysis.cells`)
    timing_cells.{csv,parquet,md}      per (group, factor, operator, growth time): seed mean,
                                       interval, per-seed speedups
    timing_groups.{csv,parquet,md,tex} d* per (N, C, factor, operator) with G_stack's beside it
    timing_fit.{csv,parquet,md,tex}    per (factor, operator) family: coefficients and bootstrap
                                       intervals (or the reason why not)
    factors.{...}, operators.{...}     best growth factor / operator ranking with seed spread
    plots/loss_vs_flops_<exp>.png, plots/speedup_heatmap_<exp>.png, plots/timing_fit.png
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa

from raygrow.analysis import cells as C
from raygrow.analysis import fit as F
from raygrow.analysis import plots, rank, speedups
from raygrow.analysis.collect import collect_runs
from raygrow.analysis.tables import to_markdown, write_table
from raygrow.errors import ConfigError

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
    trials = C.label_groups(speedups.add_speedups(trials))
    groups = F.timing_groups(trials)
    cells = C.timing_cells(trials)
    by_group = speedups.validity(trials, by="group")
    verdicts = dict(zip(by_group["group"], by_group["valid"], strict=True))
    return {
        "trials": trials,
        "validity": speedups.validity(trials),
        "groups": groups,
        "timing_cells": cells,
        "guidelines": C.guideline_table(cells, verdicts),
        "timing_groups": F.groups_table(groups, seed=seed),
        "fits": F.fit_families(groups, form=form, n_boot=n_boot, seed=seed),
        "factors": rank.factor_table(trials),
        "operators": rank.operator_table(trials),
    }


def guidelines_from_runs_table(
    path: str | Path,
    out_dir: str | Path,
    *,
    n_boot: int = 1000,
    form: str = "gstack",
    seed: int = 0,
) -> dict[str, Any]:
    """The same analysis from a runs table (Parquet or CSV; `cells.RUNS_COLUMNS` at least)."""
    path = Path(path)
    try:
        df = pd.read_csv(path) if path.suffix == ".csv" else pd.read_parquet(path)
    except (OSError, ValueError) as exc:
        msg = f"--runs-table {path} is unreadable ({exc}); pass a .parquet or .csv"
        raise ConfigError(msg) from None
    C.check_runs_table(df, f"--runs-table {path}")
    experiments = sorted(set(df["experiment"].astype(str)))
    no_curves = pa.table({"run_id": pa.array([], pa.string())})
    return write_report(
        pa.Table.from_pandas(df, preserve_index=False), no_curves, Path(out_dir), experiments,
        n_boot=n_boot, form=form, seed=seed, source=str(path),
    )  # fmt: skip


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
    fits: dict[tuple[float, str], F.TimingFit] = res["fits"]
    for name in ("validity", "timing_groups", "factors", "operators", "guidelines"):
        files += write_table(res[name], out, name, latex=True)
    files += write_table(res["timing_cells"], out, "timing_cells")
    files += write_table(fit_table(fits, form), out, "timing_fit", latex=True)

    plot_files = []
    for exp in experiments if "curve_flops" in trials.columns else ():
        plot_files.append(
            plots.loss_vs_flops(trials, exp, out / "plots" / f"loss_vs_flops_{plots.slug(exp)}.png")
        )
        heat = plots.speedup_heatmap(
            trials, exp, out / "plots" / f"speedup_heatmap_{plots.slug(exp)}.png"
        )
        if heat:
            plot_files.append(heat)
    for name, draw, data in (
        ("speedup_vs_time.png", plots.speedup_vs_time, res["timing_cells"]),
        ("speedup_vs_tokens_per_param.png", plots.speedup_vs_tokens_per_param, res["guidelines"]),
    ):
        drawn = draw(data, out / "plots" / name)
        if drawn:
            plot_files.append(drawn)
    for (factor, op), fit in fits.items():
        name = f"timing_fit_{plots.slug(f'g{factor:g}_{op}')}.png"
        family = res["timing_groups"]
        family = family[(family["factor"] == factor) & (family["operator"] == op)]
        tf = plots.timing_fit(family, fit, out / "plots" / name, label=f"g={factor:g}, {op}")
        if tf:
            plot_files.append(tf)
    files += plot_files

    md = markdown_report(res, experiments, source, plot_files, out)
    (out / "guidelines.md").write_text(md)  # the report (replaces the bare table's .md)
    files.append(out / "guidelines.md")
    return {
        "out": str(out),
        "files": [str(p) for p in files],
        "n_trials": len(trials),
        "fits": {f"g={k[0]:g} {k[1]}": fit for k, fit in fits.items()},
        "fit_ok": any(f.ok for f in fits.values()),
    }


def fit_table(fits: dict[tuple[float, str], F.TimingFit], form: str) -> pd.DataFrame:
    """Every family's coefficients (or why it has none), factor and operator first."""
    frames = []
    for (factor, op), fit in fits.items():
        t = fit.table() if fit.ok else _no_fit(fit)
        t.insert(0, "operator", op)
        t.insert(0, "factor", factor)
        t["note"] = fit.note
        frames.append(t)
    if not frames:
        return pd.DataFrame([{"form": form, "fitted": False, "n_groups": 0,
                              "note": "no completed grown trials with a speedup"}])  # fmt: skip
    return pd.concat(frames, ignore_index=True)


def _no_fit(fit: F.TimingFit) -> pd.DataFrame:
    return pd.DataFrame([{"form": fit.form, "fitted": False, "n_groups": fit.n_groups,
                          "note": fit.note}])  # fmt: skip


def markdown_report(
    res: dict, experiments: Sequence[str], source: str, plot_files: list[Path], out: Path
) -> str:
    trials: pd.DataFrame = res["trials"]
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
    lines += guideline_section(res["guidelines"])
    lines += timing_fit_section(res["fits"])
    lines += [
        "Per (N, C, factor, operator) group: measured d* (bootstrap interval) and G_stack's "
        "formula "
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


FORM_TEXT = {
    "gstack": "log10 d* = a·log10 N + b/log10 C + c (G_stack's form)",
    "powerlaw": "log10 d* = a·log10 N + b·log10 C + c (d* ∝ N^a·C^b)",
}


def guideline_section(table: pd.DataFrame) -> list[str]:
    """The guideline table: best growth time per (group, factor, operator), both criteria."""
    lines = [
        "## Guideline: best growth time per (group, factor, operator)",
        "",
        "Criterion `speedup` (the guideline): the growth time with the highest seed-mean speedup "
        "at matched loss; speedup = mean [95% t-interval] over seeds. `>x [≥lo]` = a lower "
        "bound (some seed beat every scratch budget: only the interval's lower end is known), "
        "`<x` an upper bound. Criterion `loss`: the growth time with the lowest seed-mean final "
        "validation loss at the group's token budget D (Du et al. fix compute C instead; at "
        "fixed D later growth also spends fewer FLOPs, so `loss` favours earlier growth). "
        "`edge` = the best time is the first or last one searched: the optimum may lie outside. "
        "Times are fractions of D. Selection is on the validation split; `speedup (test)` is "
        "the same comparison on the held-out test split (documents never selected on). "
        "`group valid` = the target beats the small model alone by more than seed noise "
        "(validity table); the warm start leaves groups that are not valid out.",
        "",
    ]
    if table.empty:
        return lines + ["No completed grown trials with a speedup.", ""]
    view = pd.DataFrame(
        {
            "group": table["group"],
            "g": table["factor"],
            "operator": table["operator"],
            "best time": [
                f"{f:.2f}" + (" (edge)" if e else "")
                for f, e in zip(table["best_growth_frac"], table["at_edge"], strict=True)
            ],
            "speedup": [C.speedup_text(r) for _, r in table.iterrows()],
            "per seed": table["speedup_per_seed"],
            "seeds": table["n_seeds"],
            "val loss": table["val_loss_mean"].round(4),
            "test loss": table["test_loss_mean"].round(4),
            "speedup (test)": [C.speedup_text(r, "speedup_test") for _, r in table.iterrows()],
            "loss-optimal time": [
                f"{f:.2f}" + (" (edge)" if e else "")
                for f, e in zip(table["loss_best_growth_frac"], table["loss_at_edge"], strict=True)
            ],
            "rank": table["rank_in_group"],
            "group valid": table["valid"],
        }
    )
    return lines + [to_markdown(view), ""]


def timing_fit_section(fits: dict[tuple[float, str], F.TimingFit]) -> list[str]:
    """The timing law per (factor, operator) family, or why it could not be fitted."""
    lines = ["## Growth timing law", ""]
    if not fits:
        return lines + ["No completed grown trials with a timing: nothing to fit.", ""]
    form = next(iter(fits.values())).form
    lines += [
        f"Model: `{FORM_TEXT[form]}`; d* in tokens, N = target non-embedding parameters, "
        "C = 6·N·D; one fit per (factor, operator) family, over the (N, C) groups whose d* is a "
        "value (groups with a bound on d* are listed below, not fitted).",
        "",
    ]
    for (factor, op), fit in fits.items():
        lines += [f"### g = {factor:g}, {op}", ""]
        if not fit.ok:
            lines += [f"**{fit.note}**", ""]
            continue
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
    return lines
