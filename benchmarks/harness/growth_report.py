"""The growth benchmarks' analysis and report pieces (growth.py runs the arms): per-seed
speedups vs the annealed scratch runs through `raygrow.results`, the arm table, the
loss-vs-FLOPs curves and the validity verdict as report lines.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from raygrow.results import Speedup, TrialRecord, Validity, speedup_at_matched_loss
from raygrow.results import scratch_points as core_scratch_points

from .common import fmt_ms, mean_std, pyplot, save_figure

if TYPE_CHECKING:
    from .growth import Protocol


def by_arm(runs: Sequence[dict]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for r in runs:
        out.setdefault(r["arm"], []).append(r)
    return out


def record(run: dict, frac_scale: float = 1.0) -> TrialRecord:
    """The results core's view of a finished benchmark run. The core takes budget fractions in
    (0, 1] (a search's arms never exceed its budget); the benchmarks' scratch runs go to 1.5x,
    so `speedups` passes `frac_scale` = 1 / the largest fraction (the fraction only keys the
    budget groups of the frontier)."""
    return TrialRecord(
        arm=run["kind"],
        status="completed",
        flops=run["flops"],
        val_loss=run["loss"],
        budget_frac=run["frac"] * frac_scale,
        seed=run["seed"],
        schedule=run["arm"],
    )


def speedups(run_list: Sequence[dict], all_runs: Sequence[dict]) -> list[Speedup]:
    """Per-seed speedup of each run vs the annealed scratch runs of the same seed (pooled over
    seeds when its seed lacks a scratch budget: the results core's rule), taking only the
    scratch runs of the run's own `target` (growth.run_arms sets it: an arm that grows into
    another model than the protocol's target is compared with that model from scratch)."""
    scale = 1.0 / max(1.0, *(x["frac"] for x in all_runs))
    out = []
    for r in run_list:
        pool = [record(x, scale) for x in all_runs if x.get("target") == r.get("target")]
        points = core_scratch_points(pool, r["seed"])[0]
        out.append(speedup_at_matched_loss(points, r["flops"], r["loss"]))
    return out


def speedup_text(values: Sequence[Speedup]) -> str:
    """`mean ± std` of per-seed speedups, with how many are bounds."""
    m, s = mean_std([v.value for v in values])
    lower = sum(v.bound == "lower" for v in values)
    upper = sum(v.bound == "upper" for v in values)
    note = []
    if lower:
        note.append(f"{lower} lower bound{'s' if lower > 1 else ''}")
    if upper:
        note.append(f"{upper} upper bound{'s' if upper > 1 else ''}")
    extra = f" ({', '.join(note)})" if note else ""
    return f"{m:.2f} ± {s:.2f}x{extra}"


def arm_table(runs: Sequence[dict], all_runs: Sequence[dict], order: Sequence[str]) -> list[str]:
    """Markdown table: one row per arm with loss mean ± std, per-seed losses, FLOPs, speedup."""
    groups = by_arm(runs)
    lines = [
        "| arm | final model | TFLOP | val loss (mean ± std over seeds) | per seed | "
        "seed spread (max−min) | speedup vs annealed scratch (mean ± std) | per seed |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name in order:
        if name not in groups:
            continue
        g = sorted(groups[name], key=lambda r: r["seed"])
        losses = [r["loss"] for r in g]
        sp = speedups(g, all_runs)
        is_scratch = g[0]["kind"] == "scratch"  # its own frontier: 1.00x by construction
        lines.append(
            f"| {name} | {g[0]['final_model']} | {mean_std([r['flops'] for r in g])[0] / 1e12:.2f}"
            f" | {fmt_ms(losses)} | {', '.join(f'{v:.4f}' for v in losses)} | "
            f"{max(losses) - min(losses):.4f} | {'—' if is_scratch else speedup_text(sp)} | "
            f"{'—' if is_scratch else ', '.join(str(v) for v in sp)} |"
        )
    return lines


def mean_curve(runs: Sequence[dict]) -> tuple[list[float], list[float], list[float]]:
    """Mean and std over seeds of the val-loss curves (same eval points across seeds)."""
    import numpy as np

    n = min(len(r["curve"]) for r in runs)
    flops = np.mean([[c[0] for c in r["curve"][:n]] for r in runs], axis=0)
    losses = np.array([[c[1] for c in r["curve"][:n]] for r in runs])
    return list(flops), list(losses.mean(axis=0)), list(losses.std(axis=0, ddof=0))


def plot_curves(
    groups: dict[str, list[dict]], path: Path, title: str, skip_first: bool = True
) -> None:
    """Val loss vs FLOPs, mean over seeds with a ±1 std band, one line per arm."""
    plt = pyplot()

    fig, ax = plt.subplots(figsize=(8, 5))
    for name, runs in groups.items():
        f, m, s = mean_curve(runs)
        k = 1 if skip_first else 0  # the step-0 eval (uniform-ish loss) squashes the plot
        f, m, s = f[k:], m[k:], s[k:]
        style = "--" if name.startswith("scratch") else "-"
        (line,) = ax.plot(f, m, style, label=name, lw=1.5)
        lo = [a - b for a, b in zip(m, s, strict=True)]
        hi = [a + b for a, b in zip(m, s, strict=True)]
        ax.fill_between(f, lo, hi, color=line.get_color(), alpha=0.15)
    ax.set_xscale("log")
    ax.set_xlabel("training FLOPs")
    ax.set_ylabel("val loss (nats/byte)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    finals = [r["loss"] for runs in groups.values() for r in runs]
    ax.set_ylim(min(finals) - 0.05, min(finals) + 0.6)
    save_figure(fig, path)


@dataclass
class Section:
    """A report under construction (keeps the scripts' report code short)."""

    lines: list[str] = field(default_factory=list)

    def add(self, *lines: str) -> None:
        self.lines.extend(lines)


def validity_lines(v: dict[str, Any], p: Protocol) -> list[str]:
    """The validity verdict as report lines (every growth report starts with it)."""
    verdict: Validity = v["verdict"]
    passed = "PASSED" if verdict.valid else "NOT PASSED"
    if verdict.note == "single seed":
        passed += ", single seed"
    return [
        f"**Validity margin ({passed})**: small-only {p.small} − target {p.target} at equal "
        f"steps = **{verdict.margin:+.4f}** nats/byte (mean over {len(p.seeds)} seeds); seed "
        f"std of the target {verdict.std_target:.4f}, of the small model "
        f"{verdict.std_small:.4f}; required > {verdict.threshold:.4f} "
        "(2 × the larger seed std; 0 with a single seed). Paired per seed: "
        + ", ".join(f"{m:+.4f}" for m in verdict.paired)
        + f". Peak LRs (tuned): target {v['lr_target']:g}, small {v['lr_small']:g}.",
        "",
    ]
