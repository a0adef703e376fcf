"""Benchmark 5 — search efficiency: ASHA + TPE vs the exhaustive grid over the same space.

    python benchmarks/search_efficiency.py --quick   # 2-point grid, tiny target (~5 min)
    python benchmarks/search_efficiency.py           # reuses benchmark 4's 12-point grid

Measure: the training FLOPs each method spends on growth trials until it has *finished* a
schedule whose final val loss is within 1 % of the grid's best loss (baseline arms excluded on
both sides: both need the same scratch/small runs).

- Grid: all its points (it only knows its best after the last one); also the expected FLOPs
  of a random visiting order until the first within-1 % point.
- ASHA + TPE, live: `python -m raygrow.search --sampler tpe --scheduler asha` on the same
  space, target, budget and training seed, trials one at a time; FLOPs of every trial
  (ASHA-stopped ones up to their stop) in completion order.
- ASHA + TPE, replayed over many sampler seeds: training is deterministic for a given
  (schedule, training seed), so a trial's curve is the grid's curve for that point. The replay
  asks Optuna's TPESampler (same settings as raygrow.search) through the same define-by-run
  space and makes the stop decisions with Ray Tune's own ASHA bracket (`_Bracket`, same
  grace period and reduction factor) at the grid run's recorded reports. The replay of the
  live run's sampler seed is checked against the live run.
Every replayed seed counts: success rate and rate at ≤ 1/3 of the grid's FLOPs with 95 % Wilson
intervals, median FLOPs-to-find with a seed that found nothing as not found (+inf).
Writes search_efficiency.md + PNG + search_efficiency_seeds.json (per-seed results, grid curves).
"""

from __future__ import annotations

import argparse
import json
import random
import time
import warnings
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from harness.common import header, mean_std, out_dir, pyplot, save_figure, write_report
from harness.search import (
    SweepSetup,
    experiment_dir,
    fmt_cost,
    grown,
    load_trials,
    run_search,
    seed_summary,
)

NUM_SAMPLES = {"full": 8, "quick": 2}
GRACE, RF = 0.3, 2  # raygrow.search defaults
TOL = 0.01
RAW = "search_efficiency_seeds.json"
"""Per-seed replay results and the grid's curves, written next to the report."""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", default=None)
    parser.add_argument("--replays", type=int, default=None, help="sampler seeds replayed")
    args = parser.parse_args()
    started = time.time()
    out = out_dir(args.out, args.quick)
    mode = "quick" if args.quick else "full"
    setup = SweepSetup.quick() if args.quick else SweepSetup.full()
    n = NUM_SAMPLES[mode]
    replays = args.replays or (5 if args.quick else 50)
    grid_dir = experiment_dir(out, args.quick, "timing-factor-grid")
    grid_dir.parent.mkdir(parents=True, exist_ok=True)
    run_search(
        setup, grid_dir, ["--sampler", "grid", "--scheduler", "fifo"], grid_dir.parent / "grid.log"
    )
    live_dir = experiment_dir(out, args.quick, "timing-factor-asha-tpe")
    live_s = run_search(
        setup,
        live_dir,
        ["--sampler", "tpe", "--scheduler", "asha", "--num-samples", str(n)],
        live_dir.parent / "asha.log",
    )
    grid = grown(load_trials(grid_dir))
    live_all = sorted(grown(load_trials(live_dir)), key=lambda t: t["ended"])
    live = [t for t in live_all if t["curve"][1:]]  # trials that reported at least once
    unfinished = [t for t in live_all if not t["curve"][1:]]
    best = min(t["val_loss"] for t in grid if not t["stopped"])
    goal = best * (1 + TOL)
    grid_total = sum(t["flops"] for t in grid)
    rng = random.Random(0)
    perm_costs = [_grid_order_cost(grid, goal, rng) for _ in range(2000)]
    live_cost, live_found = _sequence_cost(live, goal)
    table = {(t["g"], t["grow_at"]): t for t in grid}
    reps = [_replay(setup, table, n, seed, grid_dir) for seed in range(replays)]
    costs = [None if r["found"] is None else r["found"] / grid_total for r in reps]
    summary = seed_summary(costs)
    replay0 = reps[0]
    live_seq = [(t["g"], t["grow_at"], t["stopped"]) for t in live]
    same = replay0["sequence"][: len(live_seq)] == live_seq
    # determinism: a live trial that finished must equal the grid point with the same schedule
    drift = [
        abs(t["val_loss"] - table[(t["g"], t["grow_at"])]["val_loss"])
        for t in live
        if not t["stopped"]
    ]

    wall = f"{live_s / 60:.1f} min" if live_s else "reused run"
    from raygrow.search.config import SearchConfig

    precision = SearchConfig.load(grid_dir).train.precision or "auto (TrainConfig default)"
    lines = [
        "**Result**: ASHA + TPE (live, sampler seed 0) "
        + (
            f"found a schedule within 1 % of the grid's best after **{live_cost / 1e12:.2f} "
            f"TFLOP = {live_cost / grid_total:.2f}** of the grid's {grid_total / 1e12:.2f} TFLOP"
            if live_found
            else f"did not find a schedule within 1 % in its {len(live)} reported trials "
            f"({live_cost / 1e12:.2f} TFLOP spent = {live_cost / grid_total:.2f} of the grid)"
        )
        + f" (target ≤ 1/3). Over {replays} replayed sampler seeds (every seed counted, a seed "
        f"that found nothing within its {n} samples as not found): found in "
        f"{_rate(summary['found'], replays, summary['found_ci'])}; found at ≤ 1/3 of the grid's "
        f"FLOPs in **{_rate(summary['within'], replays, summary['within_ci'])}**; median "
        f"FLOPs-to-find over all {replays} seeds **{fmt_cost(summary['median'])}** of the "
        "grid's FLOPs (mean over the successful seeds only, for comparison: "
        + (f"{_ms([c for c in costs if c is not None])})." if summary["found"] else "n/a).")
        + f" Per-seed results: `{RAW}`.",
        "",
        f"- Grid: {len(grid)} points, best loss {best:.4f} → goal ≤ {goal:.4f}; points within "
        f"1 %: {sum(t['val_loss'] <= goal for t in grid)}/{len(grid)}. Exhaustive cost "
        f"{grid_total / 1e12:.2f} TFLOP (1.00); a random visiting order reaches a within-1 % "
        f"point after {_ms([c / grid_total for c in perm_costs])} of it (2000 orders).",
        f"- Live ASHA + TPE: {n} samples, grace {GRACE:.0%} of the FLOP budget, reduction "
        f"factor {RF}; wall {wall}; growth-trial FLOPs "
        f"{sum(t['flops'] for t in live) / 1e12:.2f} TFLOP; "
        f"{sum(t['stopped'] for t in live)} of {len(live)} trials stopped early"
        + (
            f"; {len(unfinished)} trial(s) never reported and are left out "
            f"({', '.join(t['schedule'] for t in unfinished)}: the live run hung there and was "
            "interrupted, see the closing notes)"
            if unfinished
            else ""
        )
        + ".",
        "- Replay check: the replay of sampler seed 0 "
        + ("**reproduces**" if same else "**differs from**")
        + f" the live run's trial sequence and stop decisions for the {len(live_seq)} trials "
        "the live run reported"
        + ("" if same else f" (live {live_seq}, replay {replay0['sequence']})")
        + f"; finished live trials match the grid's loss for the same schedule to within "
        f"{max(drift, default=0.0):.1e} nats (training is deterministic per schedule and seed).",
        "",
        "## Live ASHA + TPE trials (completion order)",
        "",
        "| # | schedule | status | val loss | TFLOP | cumulative TFLOP | within 1 % |",
        "|---|---|---|---|---|---|---|",
    ]
    cum = 0.0
    for i, t in enumerate(live, 1):
        cum += t["flops"]
        ok = (not t["stopped"]) and t["val_loss"] <= goal
        lines.append(
            f"| {i} | {t['schedule']} | {t['status']} | {t['val_loss']:.4f} | "
            f"{t['flops'] / 1e12:.2f} | {cum / 1e12:.2f} | {'yes' if ok else ''} |"
        )
    lines += [
        "",
        "## Grid (benchmark 4's sweep)",
        "",
        "| schedule | val loss | TFLOP |",
        "|---|---|---|",
    ]
    lines += [
        f"| {t['schedule']} | {t['val_loss']:.4f} | {t['flops'] / 1e12:.2f} |"
        for t in sorted(grid, key=lambda t: t["val_loss"])
    ]
    raw = {
        "grid_total_flops": grid_total,
        "goal": goal,
        "samples_per_seed": n,
        "seeds": [
            {"sampler_seed": seed, "found_flops": r["found"], "found_frac": c,
             "sequence": r["sequence"], "trace": r["trace"]}
            for seed, (r, c) in enumerate(zip(reps, costs, strict=True))
        ],
        "grid": [
            {k: t[k] for k in ("schedule", "g", "grow_at", "val_loss", "flops", "curve")}
            for t in grid
        ],
    }  # fmt: skip
    (out / RAW).write_text(json.dumps(raw, indent=1) + "\n")
    png = out / "search_efficiency.png"
    _plot(grid, live, reps, goal, grid_total, png)
    lines += ["", f"![best loss vs FLOPs]({png.name})", ""]
    head = header(
        "Benchmark 5: search efficiency — ASHA + TPE vs exhaustive grid",
        started=started,
        quick=args.quick,
        config_lines=[
            setup.describe(),
            "training seed 0 for every trial (grid and live); trial precision as configured in "
            f"the grid's search: {precision}",
        ],
    )
    write_report(out, "search_efficiency", head + lines)


def _rate(k: int, n: int, ci: tuple[float, float]) -> str:
    return f"{k}/{n} = {k / n:.2f} [95 % Wilson {ci[0]:.2f}, {ci[1]:.2f}]"


def _ms(values: list[float]) -> str:
    m, s = mean_std(values)
    return f"{m:.2f} ± {s:.2f} (n={len(values)})"


def _sequence_cost(trials: list[dict], goal: float) -> tuple[float, bool]:
    """FLOPs spent until the first finished trial within the goal (all, if none)."""
    cost = 0.0
    for t in trials:
        cost += t["flops"]
        if not t["stopped"] and t["val_loss"] <= goal:
            return cost, True
    return cost, False


def _grid_order_cost(grid: list[dict], goal: float, rng: random.Random) -> float:
    order = grid[:]
    rng.shuffle(order)
    return _sequence_cost(order, goal)[0]


def _replay(setup: SweepSetup, table: dict, n: int, seed: int, grid_dir: Path) -> dict[str, Any]:
    """TPE (raygrow.search's settings) + Ray Tune's ASHA bracket over the grid's curves."""
    import optuna
    from ray.tune.schedulers.async_hyperband import _Bracket
    from ray.tune.schedulers.trial_scheduler import TrialScheduler

    from raygrow.search.config import SearchConfig
    from raygrow.search.spaces import SpaceRef

    cfg = SearchConfig.load(grid_dir)
    max_t = cfg.budget_flops
    bracket = _Bracket(GRACE * max_t, max_t, RF, 0, stop_last_trials=False)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        sampler = optuna.samplers.TPESampler(
            seed=seed, multivariate=True, group=True, n_startup_trials=max(2, min(10, n // 2))
        )
    study = optuna.create_study(direction="minimize", sampler=sampler)
    space = SpaceRef(setup.space)
    best_goal = min(t["val_loss"] for t in table.values()) * (1 + TOL)
    spent, found, sequence, trace = 0.0, None, [], []
    for i in range(n):
        trial = study.ask()
        stage = space.sample(trial)["stages"][0]
        point = table[(int(stage["factor"]), float(stage["at"]))]
        handle = SimpleNamespace(trial_id=f"t{i}")
        stopped, last = False, None
        for flops, loss in point["curve"][1:]:  # the step-0 eval is not a Tune report's rung
            last = (flops, loss)
            if bracket.on_result(handle, flops, -loss) == TrialScheduler.STOP:
                stopped = True
                break
        assert last is not None
        spent += last[0]
        study.tell(trial, last[1])
        sequence.append((point["g"], point["grow_at"], stopped))
        trace.append((spent, last[1], stopped))
        if found is None and not stopped and last[1] <= best_goal:
            found = spent
    return {"found": found, "sequence": sequence, "trace": trace}


def _plot(grid, live, reps, goal, grid_total, path: Path) -> None:  # noqa: ANN001
    plt = pyplot()

    def best_so_far(seq: list[tuple[float, float, bool]]) -> tuple[list[float], list[float]]:
        xs, ys, best = [], [], float("inf")
        for cost, loss, stopped in seq:
            if not stopped:
                best = min(best, loss)
            xs.append(cost / grid_total)
            ys.append(best)
        return xs, ys

    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    for r in reps:
        xs, ys = best_so_far(r["trace"])
        ax.step(xs, ys, where="post", color="tab:blue", alpha=0.15, lw=1)
    cum, seq = 0.0, []
    for t in live:
        cum += t["flops"]
        seq.append((cum, t["val_loss"], t["stopped"]))
    xs, ys = best_so_far(seq)
    ax.step(xs, ys, where="post", color="tab:blue", lw=2.5, label="ASHA + TPE, live (seed 0)")
    rng = random.Random(1)
    order = grid[:]
    rng.shuffle(order)
    cum, seq = 0.0, []
    for t in order:
        cum += t["flops"]
        seq.append((cum, t["val_loss"], False))
    xs, ys = best_so_far(seq)
    ax.step(xs, ys, where="post", color="tab:orange", lw=2, label="grid (one random order)")
    ax.axhline(goal, color="red", ls="--", lw=1, label="within 1 % of the grid's best")
    ax.axvline(1 / 3, color="gray", ls=":", lw=1, label="1/3 of the grid's FLOPs")
    ax.set_xlabel("growth-trial FLOPs / grid's total FLOPs")
    ax.set_ylabel("best finished val loss so far")
    ax.set_title("thin lines: ASHA + TPE replayed over sampler seeds")
    finite = [t["val_loss"] for t in grid]
    ax.set_ylim(min(finite) - 0.01, max(finite) + 0.02)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    save_figure(fig, path)


if __name__ == "__main__":
    main()
