"""Benchmark: lineage-aware search — the same answers at a fraction of the compute.

    python benchmarks/lineage.py --quick   # 2 x 2 grid on a tiny target (~4 min)
    python benchmarks/lineage.py           # 2 x 5 grid, 8x64 target (~30 min)

A timing x factor sweep (stacking, g in {2, 4} x growth at 5 points) plus its baselines runs
through `python -m raygrow.search --sampler grid --scheduler fifo` (every point to the end, so
losses compare one to one), in these arms, all fixed here before any run:

1. cosine, `--no-share-prefixes`   (every trial trains from step 0)
2. cosine, prefix sharing (default)
3. WSD (`--lr-schedule wsd`), `--no-share-prefixes`   (scratch budgets are separate WSD runs)
4. WSD, prefix sharing   (the frontier is one stable-phase run + a cooldown branch per budget)
5. WSD, prefix sharing, `--baselines-from` arm 4, `--num-samples 0`   (baselines only: reused)

Reported: per-trial final val loss with sharing on vs off (max |delta|, target 0), computed
FLOPs with sharing / without (target <= 0.6, from the search's own ledger), wall-clock ratio,
and which part of the saving comes from grown prefixes, the frontier and reused baselines.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from harness.common import ROOT, header, out_dir, write_report
from harness.search import SweepSetup, experiment_dir, run_search

SPACES = ROOT / "benchmarks" / "harness" / "spaces.py"
GRID = ["--sampler", "grid", "--scheduler", "fifo"]
ASHA = ["--sampler", "grid", "--scheduler", "asha", "--max-concurrent", "1"]
ARMS = (
    ("cosine-off", [*GRID, "--no-share-prefixes"]),
    ("cosine-on", GRID),
    ("wsd-off", [*GRID, "--lr-schedule", "wsd", "--no-share-prefixes"]),
    ("wsd-on", [*GRID, "--lr-schedule", "wsd"]),
    # added after the quick run showed that a FIFO grid shares only pre-growth compute: with
    # ASHA stopping schedules early, prefixes are a larger part of what a search computes.
    # One trial at a time, so that ASHA sees the same results in the same order either way.
    ("wsd-asha-off", [*ASHA, "--lr-schedule", "wsd", "--no-share-prefixes"]),
    ("wsd-asha-on", [*ASHA, "--lr-schedule", "wsd"]),
)
PAIRS = (("cosine", "fifo"), ("wsd", "fifo"), ("wsd-asha", "asha, one trial at a time"))


def setup_of(quick: bool) -> SweepSetup:
    if quick:
        return SweepSetup(f"{SPACES}:lineage_sweep_quick", "4x16", "2x16", 60 * 512, True)
    return SweepSetup(f"{SPACES}:lineage_sweep", "8x64", "4x64", 400 * 512, True)


def load(exp: Path) -> list[dict[str, Any]]:
    import pandas as pd

    return pd.read_parquet(exp / "results.parquet").to_dict("records")


def num(value: Any) -> float:
    """A FLOP or loss cell as a number: a failed trial's missing value (None/NaN) counts 0."""
    return float(value) if value is not None and value == value else 0.0


def key(row: dict[str, Any]) -> tuple[str, str, int]:
    return (row["arm"], row["schedule"], int(row["seed"]))


def computed(rows: list[dict[str, Any]], arm: str | None = None) -> float:
    return sum(
        num(r["flops"]) - num(r["flops_reused"]) for r in rows if arm is None or r["arm"] == arm
    )


def naive(rows: list[dict[str, Any]], arm: str | None = None) -> float:
    return sum(num(r["flops"]) for r in rows if arm is None or r["arm"] == arm)


def compare(off: list[dict[str, Any]], on: list[dict[str, Any]]) -> tuple[float, int, int]:
    """max |delta val_loss| over the trials both ran with a loss, how many were compared, and
    how many trials of either arm have no loss (failed: counted, never dropped silently)."""
    a, b = {key(r): r for r in off}, {key(r): r for r in on}
    common = sorted(set(a) & set(b))
    lossless = sum(1 for r in (*off, *on) if not num(r["val_loss"]))
    pairs = [k for k in common if num(a[k]["val_loss"]) and num(b[k]["val_loss"])]
    deltas = [abs(a[k]["val_loss"] - b[k]["val_loss"]) for k in pairs]
    return (max(deltas) if deltas else float("nan")), len(pairs), lossless


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    started = time.time()
    out = out_dir(args.out, args.quick)
    setup = setup_of(args.quick)
    runs: dict[str, Path] = {}
    secs: dict[str, float] = {}
    for name, extra in ARMS:
        exp = experiment_dir(out, args.quick, f"lineage-{name}")
        exp.parent.mkdir(parents=True, exist_ok=True)
        secs[name] = run_search(setup, exp, extra, exp.parent / f"lineage-{name}.log")
        runs[name] = exp
    reuse = experiment_dir(out, args.quick, "lineage-wsd-baselines-reused")
    secs["wsd-reuse"] = run_search(
        setup,
        reuse,
        ["--lr-schedule", "wsd", "--num-samples", "0", "--baselines-from", str(runs["wsd-on"])],
        reuse.parent / "lineage-wsd-reuse.log",
    )
    rows = {name: load(path) for name, path in runs.items()}
    reused_rows = load(reuse)

    lines = ["## Sharing on vs off (same grid, same seed)", ""]
    lines += [
        "| arms | scheduler | trials compared (without a loss) | max abs delta val loss "
        "| computed FLOPs on / off "
        "| grown | scratch | small | wall on / off |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for sched, scheduler in PAIRS:
        off, on = rows[f"{sched}-off"], rows[f"{sched}-on"]
        delta, n, failed = compare(off, on)
        parts = [
            f"{computed(on, arm) / naive(off, arm):.3f}" if naive(off, arm) else "—"
            for arm in ("grown", "scratch", "small")
        ]
        wall_off, wall_on = secs[f"{sched}-off"], secs[f"{sched}-on"]
        wall = f"{wall_on / wall_off:.2f} ({wall_on:.0f} s / {wall_off:.0f} s)" if wall_off else "—"
        lines.append(
            f"| {sched} | {scheduler} | {n} ({failed}) | {delta:.3g} | "
            f"{computed(on) / naive(off):.3f} | " + " | ".join(parts) + f" | {wall} |"
        )
    lines += [
        "",
        "Where the saving comes from (FLOPs not computed thanks to the store, share of "
        "the naive total):",
        "",
    ]
    for sched, _ in PAIRS:
        on = rows[f"{sched}-on"]
        total = naive(on)
        for arm, what in (
            ("grown", "grown prefixes"),
            ("scratch", "scratch frontier"),
            ("small", "small-only arm"),
        ):
            saved = naive(on, arm) - computed(on, arm)
            lines.append(f"- {sched}, {what}: {saved:.3g} FLOPs ({saved / total:.1%})")
    base_naive = naive(reused_rows)
    lines += [
        f"- baselines reused from another search (`--baselines-from`, WSD): "
        f"{computed(reused_rows):.3g} of {base_naive:.3g} FLOPs computed "
        f"({computed(reused_rows) / base_naive:.3f}); max abs delta val loss vs that search's "
        f"baselines {compare(rows['wsd-on'], reused_rows)[0]:.3g} over "
        f"{compare(rows['wsd-on'], reused_rows)[1]} arms",
        "",
        "## WSD frontier: cooldown branches vs separate WSD runs",
        "",
        "| budget | val loss separate | val loss branch | abs delta "
        "| computed FLOPs branch / separate |",
        "|---|---|---|---|---|",
    ]
    sep = {r["budget_frac"]: r for r in rows["wsd-off"] if r["arm"] == "scratch"}
    br = {r["budget_frac"]: r for r in rows["wsd-on"] if r["arm"] == "scratch"}
    for frac in sorted(sep):
        a, b = sep[frac], br[frac]
        ratio = (num(b["flops"]) - num(b["flops_reused"])) / (num(a["flops"]) or 1.0)
        lines.append(
            f"| {frac:.0%} | {a['val_loss']:.6f} | {b['val_loss']:.6f} | "
            f"{abs(a['val_loss'] - b['val_loss']):.3g} | {ratio:.3f} |"
        )
    frontier = computed(rows["wsd-on"], "scratch") / naive(rows["wsd-off"], "scratch")
    lines += ["", f"Frontier total: {frontier:.3f} of the separate runs' compute.", ""]
    lines += [
        "## Per-trial losses",
        "",
        "| arm | schedule | " + " | ".join(name for name, _ in ARMS) + " |",
        "|---|---|" + "---|" * len(ARMS),
    ]
    table = {name: {key(r)[:2]: r for r in rs} for name, rs in rows.items()}
    for k in sorted(table["cosine-off"]):
        cells = [
            f"{table[name][k]['val_loss']:.6f}" if k in table[name] else "—" for name, _ in ARMS
        ]
        lines.append(f"| {k[0]} | {k[1]} | " + " | ".join(cells) + " |")
    head = header(
        "Lineage: prefix sharing, WSD frontier, reused baselines",
        started=started,
        quick=args.quick,
        config_lines=[
            setup.describe(),
            "seed 0; arms fixed in the script (flags in ARMS): "
            + ", ".join(name for name, _ in ARMS)
            + ", wsd-reuse (baselines only, --baselines-from wsd-on)",
            "computed FLOPs = each trial's FLOPs minus those it resumed from the prefix store "
            "(the search's own ledger: search_flops)",
        ],
    )
    write_report(out, "lineage", head + lines)


if __name__ == "__main__":
    main()
