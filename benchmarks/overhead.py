"""Ray Train overhead: fixed start-up cost per run, and 1-worker throughput vs the bare loop.

    python benchmarks/overhead.py --quick        # < 5 min on the standard machine
    python benchmarks/overhead.py                # more repeats, longer throughput runs

Writes `benchmarks/results/overhead.md` (date, machine, load, commit, numbers).

Start-up (a tiny raygrow run: 2x64 model, 4 steps, so nearly all of the wall time is fixed cost):

- `default`: what a fresh `python -m raygrow.train --workers 1` pays with Ray's defaults - a
  new process, `ray.init()`, one `fit()`, `ray.shutdown()`; Train polls its workers every 2 s
  (`RAY_TRAIN_HEALTH_CHECK_INTERVAL_S`), preemption watcher and Train metrics on, and each
  worker opens and verifies the token shards itself. Measured in a child process, from before
  `import ray` to after `ray.shutdown()`.
- `reused cluster, default env`: Ray initialised once in this process, then one `fit()` per
  run with Ray's default settings.
- `optimised`: Ray reused + `raygrow.train.driver.FAST_START_ENV` + token data shared through
  the object store (what `run_distributed`/`build_trainer` do).

Each `fit()` is split, from the reports' wall-clock times, into start -> first evaluation (Ray
actors, process group, imports, data, model), the training itself, and last report -> `fit()`
returned (controller poll, shutdown).

Throughput: the same config (4x128, seq 128, batch 16, precision `auto` as resolved on this
machine, 2 threads, evaluation every 1/8 and a checkpoint every 1/4 of the run) trained, in
rounds, by the bare single-process loop, by a 1-worker Ray Train run with 2 CPUs (optimised env)
and by the same with Ray's default env; the order rotates each round, since the shared
machine's load drifts. Tokens/s
are measured from the first to the last evaluation (training, evaluations, reports and
checkpoints included), so the ratio charges Ray's per-report cost too; the loop's own
step-only tokens/s is shown beside it.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from harness.common import machine as common_machine
from harness.ray_run import NUM_CPUS, run_ray, throughput_config

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "overhead.md"

RAY_DEFAULT_ENV = {
    "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "2.0",
    "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "1",
    "RAY_TRAIN_METRICS_ENABLED": "1",
}
"""Ray 2.60's built-in defaults for the variables FAST_START_ENV changes."""


def tiny_config(out_dir: Path) -> Any:
    from raygrow.model import ModelConfig
    from raygrow.train.config import TrainConfig

    return TrainConfig(
        model=ModelConfig(n_layers=2, d_model=64, n_heads=2, max_seq_len=64),
        seq_len=64,
        batch_size=8,
        tokens=4 * 8 * 64,
        warmup_steps=1,
        eval_every_tokens=2 * 8 * 64,
        eval_windows=8,
        log_every_steps=0,
        out_dir=str(out_dir),
    )


def split_fit(t_start: float, t_end: float, metrics: dict[str, Any]) -> dict[str, float]:
    """fit() wall time split at the first and last report (reports carry wall_time)."""
    first = metrics["wall_time"] - metrics["elapsed_s"]
    return {
        "fit_s": t_end - t_start,
        "to_first_eval_s": first - t_start,
        "train_s": metrics["elapsed_s"],
        "after_last_report_s": t_end - metrics["wall_time"],
    }


def one_fit(out_dir: Path, *, share_data: bool) -> dict[str, float]:
    from raygrow.train.driver import build_trainer, fit

    trainer = build_trainer(
        tiny_config(out_dir), num_workers=1, share_data=share_data, verbose=False
    )
    t0 = time.time()
    result = fit(trainer)
    return split_fit(t0, time.time(), result.metrics)


def default_child(out_dir: str) -> None:
    """One run as a fresh process with Ray's defaults; prints its phases as JSON."""
    t0 = time.time()
    os.environ.update(RAY_DEFAULT_ENV)
    import ray

    import raygrow.train.driver  # noqa: F401 - the CLI imports it too

    t_import = time.time()
    ray.init(address="local", num_cpus=NUM_CPUS, include_dashboard=True, log_to_driver=False)
    t_init = time.time()
    phases = one_fit(Path(out_dir), share_data=False)
    t_fit = time.time()
    ray.shutdown()
    t_end = time.time()
    phases.update(
        import_s=t_import - t0,
        init_s=t_init - t_import,
        shutdown_s=t_end - t_fit,
        total_s=t_end - t0,
    )
    print("RESULT " + json.dumps(phases), flush=True)


def run_default(out_dir: Path) -> dict[str, float]:
    t0 = time.time()
    proc = subprocess.run(
        [sys.executable, __file__, "--default-child", str(out_dir)],
        capture_output=True,
        text=True,
        check=True,
    )
    wall = time.time() - t0
    line = next(x for x in proc.stdout.splitlines() if x.startswith("RESULT "))
    phases = json.loads(line.removeprefix("RESULT "))
    phases["process_s"] = wall  # includes interpreter start and exit
    return phases


class Stopwatch:
    """LoopHooks for the bare loop: the same elapsed-since-first-eval clock as RayReportHooks."""

    def __init__(self) -> None:
        self.first: float | None = None
        self.elapsed = 0.0

    def on_eval(self, metrics: dict[str, Any], checkpoint: Path | None) -> None:
        now = time.time()
        self.first = self.first or now
        self.elapsed = now - self.first

    def on_growth(self, report: dict[str, Any]) -> None:
        pass


def run_bare(out_dir: Path, steps: int) -> dict[str, float]:
    from raygrow.train.loop import train

    watch = Stopwatch()
    result = train(throughput_config(out_dir, steps), hooks=watch, verbose=False)
    step_tps = [r["tokens_per_s"] for r in result.history if r["tokens_per_s"]]
    return {
        "tokens_per_s": result.final["tokens"] / watch.elapsed,
        "step_tokens_per_s": statistics.median(step_tps),
        "eval_interval_s": watch.elapsed / (len(result.history) - 1),
    }


ARMS = {
    "bare loop": run_bare,
    "Ray, 1 worker": run_ray,
    "Ray, 1 worker, Ray default env": lambda out, steps: run_ray(out, steps, RAY_DEFAULT_ENV),
}
"""Throughput arms, run in rotating order in every round."""


def peak_flops_seconds() -> float:
    """What `raygrow.train.worker.warm_peak_flops_cache` saves per worker start: one uncached
    `measure_peak_flops` (fp32, 1 thread, as the tiny start-up runs), in a fresh process."""
    code = (
        "import raygrow, time, torch; torch.set_num_threads(1); "
        "from raygrow.train.precision import measure_peak_flops as m; "
        "t = time.perf_counter(); m(torch.float32, 'cpu'); print(time.perf_counter() - t)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(out.stdout.split()[-1])


def median_phases(runs: list[dict[str, float]]) -> dict[str, float]:
    return {key: statistics.median(r[key] for r in runs) for key in runs[0]}


def machine() -> str:
    return f"{platform.node()}: {common_machine()}"


def commit() -> str:
    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=ROOT, capture_output=True, text=True, check=False
        ).stdout.strip()

    dirty = " (uncommitted changes)" if git("status", "--porcelain", "--", "raygrow") else ""
    return git("rev-parse", "--short", "HEAD") + dirty


def fmt(phases: dict[str, float], key: str) -> str:
    return f"{phases[key]:.1f}" if key in phases else "-"


def write_report(data: dict[str, Any]) -> None:
    d, r, o = data["default"], data["reused_default_env"], data["optimised"]
    rows = [
        ("default (new process + `ray.init` per run, Ray defaults)", d),
        ("reused cluster, Ray default env", r),
        ("optimised (reused cluster + FAST_START_ENV + shared data)", o),
    ]
    lines = [
        "# Ray Train overhead",
        "",
        f"- date: {data['date']}",
        f"- machine: {data['machine']}",
        f"- load average at start / end: {data['load_start']} / {data['load_end']} "
        "(the machine is shared; absolute seconds are inflated accordingly)",
        f"- commit: {data['commit']}; torch {data['torch']}, ray {data['ray']}",
        f"- command: `{data['command']}` ({data['wall_s']:.0f} s)",
        "",
        "## Fixed start-up cost per Train run (1 worker, tiny 4-step run; medians, seconds)",
        "",
        f"Runs: default {data['n_default']}, reused {data['n_reused']}, "
        f"optimised {data['n_opt']}. `ray.init` in this process (paid once when reused): "
        f"{data['init_s']:.1f} s.",
        "",
        "| setting | per-run cost | `import` + `ray.init` + `shutdown` | `fit()` | "
        "start -> first eval | train | last report -> return |",
        "|---|---|---|---|---|---|---|",
    ]
    for label, p in rows:
        fixed = p.get("total_s", p["fit_s"])
        ray_setup = (
            f"{p['import_s']:.1f} + {p['init_s']:.1f} + {p['shutdown_s']:.1f}"
            if "init_s" in p
            else "0 (reused)"
        )
        lines.append(
            f"| {label} | **{fixed:.1f}** | {ray_setup} | {fmt(p, 'fit_s')} | "
            f"{fmt(p, 'to_first_eval_s')} | {fmt(p, 'train_s')} | "
            f"{fmt(p, 'after_last_report_s')} |"
        )
    t = data["throughput"]
    lines += [
        "",
        f"Per-run fixed cost: {d['total_s']:.1f} s -> {o['fit_s']:.1f} s "
        f"({d['total_s'] / o['fit_s']:.1f}x less).",
        "",
        "Not in the rows above (all of them hit it): the per-node cache of the peak-FLOP/s "
        f"measurement saves {data['peak_s']:.1f} s of every worker start (one uncached "
        "`measure_peak_flops`, fp32, 1 thread, fresh process).",
        "",
        "## Throughput: 1-worker Ray Train run vs the bare loop (same process, alternated)",
        "",
        f"4x128 model, seq 128, batch 16, precision {data['precision']} (`auto`), 2 threads, "
        f"{t['steps']} steps per run, "
        f"{t['rounds']} rounds of all arms (order rotated each round). Tokens/s from the first "
        "to the last evaluation (evaluations, reports and checkpoints included); in brackets "
        "the loop's step-only tokens/s (median over its evaluation windows).",
        "",
        "| arm | " + " | ".join(f"round {i + 1}" for i in range(t["rounds"])) + " |",
        "|---|" + "---|" * t["rounds"],
    ]
    for arm, runs in t["runs"].items():
        cells = [
            f"{r['tokens_per_s']:,.0f} ({r['step_tokens_per_s']:,.0f}), load {r['load']:.1f}"
            for r in runs
        ]
        lines.append(f"| {arm} | " + " | ".join(cells) + " |")
    lines.append("")
    for arm, (e2e, step) in t["ratios"].items():
        lines.append(
            f"- **{arm} / bare loop: {e2e:.3f}** end to end (target >= 0.90), {step:.3f} "
            "step-only (medians of the per-round ratios)"
        )
    lines += [
        "",
        "Reports and the controller: `ray.train.report` puts the result on a queue of size 1 "
        "that the controller empties once per poll, so a run cannot report faster than once "
        f"per poll interval: 2 s by default, 0.25 s with `FAST_START_ENV`. Evaluations here "
        f"were {statistics.median(r['eval_interval_s'] for r in t['runs']['bare loop']):.1f} s "
        "apart in the bare loop (median); a run that evaluates more often than every 2 s is "
        "held to one evaluation per 2 s with the default env.",
        "",
    ]
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats (< 5 min)")
    parser.add_argument("--default-child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.default_child:
        default_child(args.default_child)
        return

    n_default, n_reused, n_opt = (1, 1, 3) if args.quick else (3, 3, 5)
    steps, rounds = (80, 2) if args.quick else (240, 4)
    t_begin = time.time()
    load_start = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    tmp = Path(tempfile.mkdtemp(prefix="raygrow-overhead-"))

    peak_s = peak_flops_seconds()
    # 1) default: its own Ray instance per run, so nothing of ours may be running yet
    default = [run_default(tmp / f"default{i}") for i in range(n_default)]
    print("default", median_phases(default), flush=True)

    import ray
    import torch

    from raygrow.train.driver import FAST_START_ENV, ray_session
    from raygrow.train.precision import resolve_precision

    t0 = time.time()
    with ray_session(num_cpus=NUM_CPUS, log_to_driver=False, logging_level="WARNING"):
        init_s = time.time() - t0
        # 2) reused cluster, Ray's defaults, each worker loads the data itself
        os.environ.update(RAY_DEFAULT_ENV)
        reused = [one_fit(tmp / f"reused{i}", share_data=False) for i in range(n_reused)]
        print("reused", median_phases(reused), flush=True)
        # 3) optimised
        os.environ.update(FAST_START_ENV)
        opt = [one_fit(tmp / f"opt{i}", share_data=True) for i in range(n_opt)]
        print("optimised", median_phases(opt), flush=True)
        # 4) throughput: rounds of all arms, order rotated each round (the load drifts)
        arms = list(ARMS)
        tput: dict[str, list[dict[str, float]]] = {arm: [] for arm in arms}
        for i in range(rounds):
            for arm in arms[i % len(arms) :] + arms[: i % len(arms)]:
                tput[arm].append(ARMS[arm](tmp / f"tput{i}-{arms.index(arm)}", steps))
                tput[arm][-1]["load"] = os.getloadavg()[0]
            print("throughput", {arm: runs[-1] for arm, runs in tput.items()}, flush=True)

    def ratio(arm: str, key: str) -> float:  # median over rounds of the per-round ratio
        pairs = zip(tput[arm], tput["bare loop"], strict=True)
        return statistics.median(r[key] / b[key] for r, b in pairs)

    write_report(
        {
            "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "machine": machine(),
            "load_start": load_start,
            "load_end": ", ".join(f"{x:.1f}" for x in os.getloadavg()),
            "commit": commit(),
            "torch": torch.__version__,
            "ray": ray.__version__,
            "precision": resolve_precision("auto"),
            "command": "python benchmarks/overhead.py" + (" --quick" if args.quick else ""),
            "wall_s": time.time() - t_begin,
            "n_default": n_default,
            "n_reused": n_reused,
            "n_opt": n_opt,
            "init_s": init_s,
            "peak_s": peak_s,
            "default": median_phases(default),
            "reused_default_env": median_phases(reused),
            "optimised": median_phases(opt),
            "throughput": {
                "steps": steps,
                "rounds": rounds,
                "runs": tput,
                "ratios": {
                    arm: (ratio(arm, "tokens_per_s"), ratio(arm, "step_tokens_per_s"))
                    for arm in arms[1:]
                },
            },
        }
    )
    shutil.rmtree(tmp, ignore_errors=True)
    print(RESULTS.read_text())


if __name__ == "__main__":
    main()
