"""PNG plots (matplotlib's object API on the Agg canvas: no pyplot state, no display needed)."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from raygrow.analysis.fit import TimingFit
from raygrow.results import gstack_growth_tokens


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", str(text)).strip("_") or "x"


def _figure(w: float = 7.5, h: float = 4.8) -> Figure:
    fig = Figure(figsize=(w, h), dpi=110)
    FigureCanvasAgg(fig)
    return fig


def loss_vs_flops(trials: pd.DataFrame, experiment: str, path: Path) -> Path:
    """Every schedule's val_loss vs FLOPs, scratch arms in black with their annealed endpoints."""
    fig = _figure()
    ax = fig.add_subplot()
    sub = trials[trials["experiment"] == experiment]
    ops = sorted(set(sub.loc[sub["arm"] == "grown", "operator"]))
    colors = {op: f"C{i % 10}" for i, op in enumerate(ops)}
    seen: set[str] = set()
    for row in sub.itertuples(index=False):
        xs, ys = list(row.curve_flops), list(row.curve_val_loss)
        if not xs:
            continue
        if row.arm == "scratch":
            label, style = "scratch (target)", {"color": "black", "lw": 1.6}
        elif row.arm == "small":
            label, style = "small only", {"color": "grey", "lw": 1.2, "ls": "--"}
        else:
            label = f"grown: {row.operator}"
            style = {"color": colors[row.operator], "lw": 0.9, "alpha": 0.75}
            if row.status_kind == "stopped":
                style["ls"] = ":"
        ax.plot(xs, ys, label=None if label in seen else label, **style)
        seen.add(label)
        if row.arm == "scratch" and row.status_kind == "completed":
            ax.plot(xs[-1], ys[-1], "k*", ms=9)
    ends = sub[(sub["arm"] == "scratch") & (sub["status_kind"] == "completed")]
    if len(ends):
        ends = ends.groupby("budget_tokens")[["flops", "val_loss"]].mean().sort_values("flops")
        ax.plot(ends["flops"], ends["val_loss"], "k--", lw=1, label="annealed scratch frontier")
    ax.set_xscale("log")
    ax.set_xlabel("training FLOPs")
    ax.set_ylabel("val_loss (nats/token)")
    ax.set_title(f"{experiment}: loss vs compute (dotted = stopped by ASHA)", fontsize=10)
    ax.grid(alpha=0.3, which="both")
    finite = [v for r in sub["curve_val_loss"] for v in r if np.isfinite(v)]
    if finite:  # the first evaluations of a random model squash the interesting part
        lo, hi = min(finite), np.percentile(finite, 90)
        ax.set_ylim(lo - 0.05 * (hi - lo), hi)
    ax.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    fig.savefig(path)
    return path


def speedup_heatmap(trials: pd.DataFrame, experiment: str, path: Path) -> Path | None:
    """Seed-mean speedup over growth timing (d/D) x growth factor for one search."""
    sub = trials[
        (trials["experiment"] == experiment)
        & (trials["arm"] == "grown")
        & (trials["status_kind"] == "completed")
        & np.isfinite(trials["speedup_vs_scratch"])
        & np.isfinite(trials["growth_frac"])
    ].copy()
    if sub.empty:
        return None
    sub["factor"] = sub["factor"].fillna(-1)
    sub["timing"] = sub["growth_frac"].round(4)
    grid = sub.pivot_table(index="factor", columns="timing", values="speedup_vs_scratch")
    bounded = sub.assign(b=sub["speedup_bound"] != "exact").pivot_table(
        index="factor", columns="timing", values="b", aggfunc="any"
    )
    fig = _figure(1.8 + 0.9 * grid.shape[1], 1.6 + 0.7 * grid.shape[0])
    ax = fig.add_subplot()
    vals = grid.to_numpy(float)
    span = np.nanmax(np.abs(vals - 1.0)) if np.isfinite(vals).any() else 1.0
    im = ax.imshow(vals, cmap="RdYlGn", vmin=1 - span, vmax=1 + span, aspect="auto")
    for i in range(vals.shape[0]):
        for j in range(vals.shape[1]):
            if math.isfinite(vals[i, j]):
                mark = ">" if bool(bounded.iat[i, j]) else ""
                ax.text(j, i, f"{mark}{vals[i, j]:.2f}", ha="center", va="center", fontsize=8)
    ax.set_xticks(range(vals.shape[1]), [f"{t:.1%}" for t in grid.columns], fontsize=8)
    ax.set_yticks(
        range(vals.shape[0]), [("?" if f < 0 else f"x{f:g}") for f in grid.index], fontsize=8
    )
    ax.set_xlabel("growth timing d / D (tokens before growth / budget)")
    ax.set_ylabel("growth factor")
    ax.set_title(f"{experiment}: speedup vs scratch (seed mean)", fontsize=9)
    fig.colorbar(im, ax=ax, shrink=0.8)
    fig.tight_layout()
    fig.savefig(path)
    return path


def timing_fit(groups: pd.DataFrame, fit: TimingFit, path: Path, label: str = "") -> Path | None:
    """d* vs C per target size: measured groups (with intervals; open markers = a bound on d*,
    not fitted), the fit and its band, G_stack."""
    if groups.empty:
        return None
    fig = _figure()
    ax = fig.add_subplot()
    sizes = sorted(set(groups["n_params"]))
    top = groups["budget_tokens"].max() * 3
    off_scale = []
    for i, n in enumerate(sizes):
        color = f"C{i % 10}"
        g = groups[groups["n_params"] == n]
        yerr = [g["d_star_tokens"] - g["d_star_ci_low"], g["d_star_ci_high"] - g["d_star_tokens"]]
        cens = g["censored"].fillna("").astype(bool) if "censored" in g else g["at_edge"]
        ax.errorbar(
            g["compute_6nd"], g["d_star_tokens"], yerr=yerr, fmt="o", color=color,
            label=f"measured d*, N={n:.3g}", capsize=3,
            mfc="none" if cens.all() else color,
        )  # fmt: skip
        ax.plot(g["compute_6nd"], g["budget_tokens"], "_", color=color, ms=14)
        if fit.ok:  # drawn around this size's own budgets: no extrapolation across decades
            cs = np.geomspace(g["compute_6nd"].min() / 2, g["compute_6nd"].max() * 2, 40)
            ax.plot(cs, 10 ** fit.predict(np.full_like(cs, n), cs), "-", color=color, lw=1.3)
            lo, hi = fit.band(np.full_like(cs, n), cs)
            ax.fill_between(cs, 10**lo, 10**hi, color=color, alpha=0.15)
        gs = np.array([gstack_growth_tokens(n, c) for c in g["compute_6nd"]])
        if gs.min() < top:
            ax.plot(g["compute_6nd"], gs, "x", color=color, label=f"G_stack formula, N={n:.3g}")
        else:
            off_scale.append(gs.min() / groups["budget_tokens"].max())
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("compute C = 6·N·D (FLOPs)")
    ax.set_ylabel("optimal growth timing d* (tokens)")
    title = (
        "fitted d*(N, C) with bootstrap band" if fit.ok else "measured d* (no fit: too few runs)"
    )
    ax.set_title((f"{label}: " if label else "") + title + "; bars '_' = budget D", fontsize=9)
    if off_scale:
        ax.text(
            0.02, 0.02,
            f"G_stack formula off scale: predicts d >= {min(off_scale):.3g} x the whole budget",
            transform=ax.transAxes, fontsize=8, color="dimgrey",
        )  # fmt: skip
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    return path


def speedup_vs_time(cells: pd.DataFrame, path: Path) -> Path | None:
    """Seed-mean speedup (95% interval) vs growth time, one panel per group, one line per
    (factor, operator); triangles mark bounds (▲ lower, ▼ upper)."""
    if cells.empty:
        return None
    groups = sorted(set(cells["group"]))
    cols = min(3, len(groups))
    rows = (len(groups) + cols - 1) // cols
    fig = _figure(4.2 * cols, 3.4 * rows)
    for k, group in enumerate(groups):
        ax = fig.add_subplot(rows, cols, k + 1)
        sub = cells[cells["group"] == group]
        for i, ((factor, op), fam) in enumerate(sub.groupby(["factor", "operator"], sort=True)):
            fam = fam.sort_values("growth_frac")
            color = f"C{i % 10}"
            x, y = fam["growth_frac"].to_numpy(float), fam["speedup_mean"].to_numpy(float)
            lo = (y - fam["speedup_ci_low"].to_numpy(float)).clip(min=0)
            hi = (fam["speedup_ci_high"].to_numpy(float) - y).clip(min=0)
            ax.errorbar(x, y, yerr=[np.nan_to_num(lo), np.nan_to_num(hi)], fmt="o-",
                        color=color, ms=4, capsize=2, label=f"g={factor:g} {op}")  # fmt: skip
            for marker, kind in (("^", "lower"), ("v", "upper")):
                m = (fam["speedup_bound"] == kind).to_numpy()
                if m.any():
                    ax.plot(x[m], y[m], marker, color=color, ms=8, mfc="none")
        ax.axhline(1.0, color="grey", lw=0.8, ls="--")
        ax.set_title(group, fontsize=9)
        ax.set_xlabel("growth time (fraction of D)", fontsize=8)
        ax.set_ylabel("speedup at matched loss", fontsize=8)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path)
    return path


def speedup_vs_tokens_per_param(table: pd.DataFrame, path: Path) -> Path | None:
    """Best speedup per factor (95% interval) vs tokens per parameter, one marker per size."""
    if table.empty:
        return None
    fig = _figure()
    ax = fig.add_subplot()
    markers = dict(zip(sorted(set(table["target"])), "osD^vP*X", strict=False))
    for i, ((factor, op), fam) in enumerate(table.groupby(["factor", "operator"], sort=True)):
        color = f"C{i % 10}"
        for target, g in fam.groupby("target"):
            g = g.sort_values("tokens_per_param")
            y = g["speedup_mean"].to_numpy(float)
            lo = np.nan_to_num((y - g["speedup_ci_low"].to_numpy(float)).clip(min=0))
            hi = np.nan_to_num((g["speedup_ci_high"].to_numpy(float) - y).clip(min=0))
            ax.errorbar(g["tokens_per_param"], y, yerr=[lo, hi], fmt=markers.get(target, "o") + "-",
                        color=color, capsize=2, label=f"g={factor:g} {op}, {target}")  # fmt: skip
    ax.axhline(1.0, color="grey", lw=0.8, ls="--")
    ax.set_xscale("log")
    ax.set_xlabel("tokens per non-embedding parameter (D / N)")
    ax.set_ylabel("best speedup at matched loss")
    ax.set_title("where growth stops paying: best speedup per factor vs D/N", fontsize=9)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path)
    return path
