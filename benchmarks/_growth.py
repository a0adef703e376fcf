"""The growth-benchmark harness shared by growth_validity.py, growth_vs_scratch.py and
incremental.py: one protocol (target, small model, budget, LR), arms as plain data, runs of
raygrow's own `Trainer` in a pool of single-thread processes, and a per-run result cache so
the three scripts reuse each other's runs (the cache key is the arm's full spec).

Arms are compared on the FLOP axis with annealed scratch runs at several budgets (each with its
own complete cosine schedule): `raygrow.results` gives the speedup at matched loss, a lower
bound (">") where scratch never reaches the grown run's loss. Runs with the same seed share the
data order and the initialisation of the layers they share.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from _common import ROOT, fmt_ms, mean_std, pyplot, save_figure

from raygrow.results import ArmKind, Speedup, TrialRecord, Validity, speedup_at_matched_loss
from raygrow.results import scratch_points as core_scratch_points
from raygrow.results import validity as core_validity
from raygrow.train.precision import resolve_precision

CACHE = Path(
    os.environ.get("RAYGROW_BENCH_CACHE", ROOT / "raygrow_runs" / "bench-cache" / "growth")
)
"""Per-run results (JSON, keyed by the run's full spec); RAYGROW_BENCH_CACHE moves it."""
CACHE_VERSION = 1  # bump when the training code changes what a cached run would produce


@dataclass(frozen=True)
class Protocol:
    """Everything the arms share. `full()` is the committed benchmark, `quick()` the CI check."""

    target: str = "8x64"
    small: str = "2x64"
    narrow: str = "8x32"
    """Start model of the width operators (HyperCloning doubles d_model)."""
    tokens: int = 600 * 16 * 128
    seq_len: int = 128
    batch_size: int = 16
    warmup_steps: int = 30
    eval_windows: int = 128
    evals: int = 12
    """Evaluations per run (the loss-vs-FLOPs curves)."""
    seeds: tuple[int, ...] = (0, 1, 2, 3)
    lrs: tuple[float, ...] = (1.5e-3, 3e-3, 6e-3, 1.2e-2)
    lr_seeds: tuple[int, ...] = (0,)
    scratch_fracs: tuple[float, ...] = (0.5, 0.75, 1.0, 1.5)
    grow_at: float = 0.3
    """Fraction of the budget trained before growing (single-stage arms)."""
    late_at: float = 0.5
    """A later growth time for G_stack/G_zero (the default search's best schedules grew at
    32-49 %)."""
    incremental_at: tuple[float, ...] = (0.15, 0.3, 0.45)
    """Li et al.-style incremental arm: one stage per +2 layers (2 -> 4 -> 6 -> 8)."""
    incremental_freeze_steps: int = 50
    """Steps the trained layers stay frozen after each incremental stage."""
    jobs: int = 2

    @classmethod
    def full(cls) -> Protocol:
        return cls()

    @classmethod
    def quick(cls) -> Protocol:
        return cls(
            target="4x32",
            small="1x32",
            narrow="4x16",
            tokens=120 * 8 * 64,
            seq_len=64,
            batch_size=8,
            warmup_steps=10,
            eval_windows=16,
            evals=4,
            seeds=(0, 1),
            lrs=(3e-3, 6e-3),
            scratch_fracs=(0.5, 0.75, 1.0),
            incremental_at=(0.2, 0.4, 0.6),
            incremental_freeze_steps=10,
        )

    def describe(self) -> list[str]:
        return [
            f"data: embedded registry-prose corpus, byte-level; seq {self.seq_len}, batch "
            f"{self.batch_size} ({self.seq_len * self.batch_size:,} tokens/step); budget "
            f"{self.tokens:,} tokens ({self.tokens // (self.seq_len * self.batch_size)} steps) "
            "for the target from scratch and for every grown arm",
            f"target {self.target}, small model {self.small} (G_stack factor "
            f"{_layers(self.target) // _layers(self.small)}), width start {self.narrow}",
            f"AdamW (0.9, 0.95), weight decay 0.1, clip 1.0, bf16 autocast, cosine to 10 % "
            f"after {self.warmup_steps} warm-up steps; 1 thread per run, {self.jobs} runs at a "
            "time",
            f"validation: {self.eval_windows} fixed windows of the held-out split, "
            f"{self.evals} evaluations per run; loss in nats/byte",
            f"seeds {list(self.seeds)} (seed = data order + initialisation)",
        ]


def _layers(shape: str) -> int:
    return int(shape.lower().split("x")[0])


@dataclass(frozen=True)
class Arm:
    """One training run: a model or a growth schedule, a budget fraction, LR and seed."""

    name: str
    """Arm label shared by its seeds (e.g. `scratch@0.75`, `G_stack`)."""
    model: str
    """Start model LxD (the model itself when there is no growth)."""
    frac: float = 1.0
    lr: float = 3e-3
    seed: int = 0
    operator: str | None = None
    at: tuple[float, ...] = ()
    stage_params: tuple[tuple[tuple[str, Any], ...], ...] = ()
    schedule_kw: tuple[tuple[str, Any], ...] = ()
    kind: ArmKind = "grown"
    """The results core's arm: `scratch` (the target), `small` (a start model alone), `grown`."""

    def key(self, protocol: Protocol) -> str:
        spec = {
            "arm": asdict(self),
            "protocol": _run_fields(protocol),
            "precision": resolve_precision("auto", "cpu"),  # runs use `auto`: what it ran as
            "v": CACHE_VERSION,
        }
        for label in ("name", "kind"):  # labels do not change the run
            spec["arm"].pop(label)
        blob = json.dumps(spec, sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


def _run_fields(p: Protocol) -> dict[str, Any]:
    """The protocol fields that change a single run (not seeds/LR grids/jobs)."""
    keep = ("tokens", "seq_len", "batch_size", "warmup_steps", "eval_windows", "evals")
    return {k: getattr(p, k) for k in keep}


# ----------------------------------------------------------------------------- arm catalogue
def scratch(p: Protocol, frac: float, lr: float, seed: int, model: str | None = None) -> Arm:
    model = model or p.target
    if model == p.target:
        return Arm(f"scratch@{frac:g}", model, frac=frac, lr=lr, seed=seed, kind="scratch")
    return Arm(f"{model} only", model, frac=frac, lr=lr, seed=seed, kind="small")


def growth_arms(p: Protocol, lr: float, seed: int) -> list[Arm]:
    """The single-stage growth arms of the papers, all reaching the target model."""
    g = _layers(p.target) // _layers(p.small)
    depth = dict(factor=g)
    return [
        Arm("G_stack", p.small, lr=lr, seed=seed, operator="stack", at=(p.grow_at,),
            stage_params=(tuple(depth.items()),)),
        Arm("G_zero", p.small, lr=lr, seed=seed, operator="zero", at=(p.grow_at,),
            stage_params=(tuple(depth.items()),)),
        Arm("staged (depth)", p.small, lr=lr, seed=seed, operator="staged_depth",
            at=(p.grow_at,), stage_params=(tuple(depth.items()),)),
        Arm("HyperCloning (width)", p.narrow, lr=lr, seed=seed, operator="hypercloning",
            at=(p.grow_at,), stage_params=((("d_model", _width(p.target)),),)),
    ]  # fmt: skip


def late_arms(p: Protocol, lr: float, seed: int) -> list[Arm]:
    """G_stack and G_zero grown later (`late_at`): the timing axis at this protocol."""
    early = growth_arms(p, lr, seed)[:2]
    return [replace(a, name=f"{a.name} @{p.late_at:.0%}", at=(p.late_at,)) for a in early]


def incremental_arm(p: Protocol, lr: float, seed: int) -> Arm:
    """Li et al. 2024: add layers one group at a time on top, freezing the trained ones for a
    while after each step (raygrow's `incremental` operator)."""
    start, end = _layers(p.small), _layers(p.target)
    sizes = [start + (end - start) * (i + 1) // len(p.incremental_at) for i in
             range(len(p.incremental_at))]  # fmt: skip
    return Arm(
        "incremental (Li et al.)",
        p.small,
        lr=lr,
        seed=seed,
        operator="incremental",
        at=p.incremental_at,
        stage_params=tuple(
            (("n_layers", n), ("phase_steps", p.incremental_freeze_steps)) for n in sizes
        ),
    )


def _width(shape: str) -> int:
    return int(shape.lower().split("x")[1])


# ----------------------------------------------------------------------------- running
_DATA: Any = None


def _train_one(arm: Arm, p: Protocol) -> dict[str, Any]:
    """Train one arm in this (worker) process and return its curve; nothing is kept on disk."""
    global _DATA
    import torch

    from raygrow.data import load_tokens
    from raygrow.model import ModelConfig
    from raygrow.schedule import multi_stage
    from raygrow.train.config import TrainConfig
    from raygrow.train.loop import Trainer

    torch.set_num_threads(1)
    if _DATA is None:
        _DATA = load_tokens("default", None)
    step_tokens = p.seq_len * p.batch_size
    tokens = max(1, round(p.tokens * arm.frac / step_tokens)) * step_tokens
    start = ModelConfig.from_shape(arm.model, max_seq_len=max(256, p.seq_len))
    schedule = None
    if arm.operator:
        schedule = multi_stage(
            start,
            arm.operator,
            at=list(arm.at),
            seed=arm.seed,
            stage_params=[dict(sp) for sp in arm.stage_params],
            **dict(arm.schedule_kw),
        )
    out = Path(tempfile.mkdtemp(prefix="raygrow-bench-"))
    try:
        config = TrainConfig(
            model=start,
            seq_len=p.seq_len,
            batch_size=p.batch_size,
            tokens=tokens,
            lr=arm.lr,
            warmup_steps=p.warmup_steps,
            eval_windows=p.eval_windows,
            eval_every_tokens=max(step_tokens, tokens // p.evals),
            seed=arm.seed,
            out_dir=str(out),
            threads=1,
            log_every_steps=0,
        )
        t0 = time.perf_counter()
        result = Trainer(config, schedule, data=_DATA, verbose=False).run()
        wall = time.perf_counter() - t0
    finally:
        shutil.rmtree(out, ignore_errors=True)
    hist = result.history
    return {
        "arm": arm.name,
        "model": arm.model,
        "final_model": f"{hist[-1]['n_layers']}x{hist[-1]['d_model']}",
        "lr": arm.lr,
        "seed": arm.seed,
        "frac": arm.frac,
        "tokens": hist[-1]["tokens"],
        "flops": hist[-1]["flops"],
        "loss": hist[-1]["val_loss"],
        "curve": [(h["flops"], h["val_loss"]) for h in hist],
        "growth": [
            {k: g.get(k) for k in ("operator", "loss_before", "loss_after", "step")}
            for g in result.state.growth_history
        ],
        "wall_s": wall,
    }


def _cached(arm: Arm, p: Protocol) -> Path:
    return CACHE / f"{arm.key(p)}.json"


def run_arms(p: Protocol, arms: Sequence[Arm], log: Callable[[str], None] = print) -> list[dict]:
    """Results of `arms` in order: cached ones read back, the rest trained `p.jobs` at a time."""
    CACHE.mkdir(parents=True, exist_ok=True)
    todo = [a for a in arms if not _cached(a, p).exists()]
    # dedupe (two arms with the same spec under different labels train once)
    unique = list({a.key(p): a for a in todo}.values())
    if unique:
        log(f"training {len(unique)} runs ({len(arms) - len(todo)} cached), {p.jobs} at a time")
        os.environ.setdefault("OMP_NUM_THREADS", "1")
        with ProcessPoolExecutor(p.jobs, mp_context=get_context("spawn")) as pool:
            futures = {pool.submit(_train_one, a, p): a for a in unique}
            for i, fut in enumerate(futures, 1):
                arm = futures[fut]
                res = fut.result()
                _cached(arm, p).write_text(json.dumps(res))
                log(
                    f"[{i}/{len(unique)}] {arm.name} lr={arm.lr:g} seed={arm.seed}: loss "
                    f"{res['loss']:.4f} at {res['flops'] / 1e12:.2f} TFLOP ({res['wall_s']:.0f} s)"
                )
    out = []
    for a in arms:
        res = json.loads(_cached(a, p).read_text())
        res["arm"], res["kind"] = a.name, a.kind  # labels from the caller
        out.append(res)
    return out


# ----------------------------------------------------------------------------- LR tuning
def lr_sweep(p: Protocol, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Peak-LR sweep of the target and of the small model from scratch (full budget).

    Returns the per-model best LR and the raw runs. Tuning the small model too keeps the
    validity check fair: a small model at a bad LR would inflate the margin."""
    arms = [
        scratch(p, 1.0, lr, s, model=m)
        for m in (p.target, p.small)
        for lr in p.lrs
        for s in p.lr_seeds
    ]
    runs = run_arms(p, arms, log)
    best: dict[str, float] = {}
    for model in (p.target, p.small):
        by_lr = {
            lr: mean_std([r["loss"] for r in runs if r["model"] == model and r["lr"] == lr])[0]
            for lr in p.lrs
        }
        best[model] = min(by_lr, key=by_lr.__getitem__)
    return {"best": best, "runs": runs}


# ----------------------------------------------------------------------------- analysis
def by_arm(runs: Sequence[dict]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for r in runs:
        out.setdefault(r["arm"], []).append(r)
    return out


def record(run: dict) -> TrialRecord:
    """The results core's view of a finished benchmark run."""
    return TrialRecord(
        arm=run["kind"],
        status="completed",
        flops=run["flops"],
        val_loss=run["loss"],
        budget_frac=run["frac"],
        seed=run["seed"],
        schedule=run["arm"],
    )


def speedups(run_list: Sequence[dict], all_runs: Sequence[dict]) -> list[Speedup]:
    """Per-seed speedup of each run vs the annealed scratch runs of the same seed (pooled over
    seeds when its seed lacks a scratch budget: the results core's rule)."""
    pool = [record(r) for r in all_runs]
    return [
        speedup_at_matched_loss(core_scratch_points(pool, r["seed"])[0], r["flops"], r["loss"])
        for r in run_list
    ]


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


def with_lr(arms: Sequence[Arm], lr: float) -> list[Arm]:
    return [replace(a, lr=lr) for a in arms]


@dataclass
class Section:
    """A report under construction (keeps the scripts' report code short)."""

    lines: list[str] = field(default_factory=list)

    def add(self, *lines: str) -> None:
        self.lines.extend(lines)


def cli(description: str, argv: Sequence[str] | None = None) -> tuple[Protocol, Path, float]:
    """Shared command line: --quick, --out DIR, --jobs N. Returns (protocol, out dir, start)."""
    import argparse

    from _common import out_dir

    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help="tiny protocol (< 5 min)")
    parser.add_argument("--out", default=None, help="result folder (default benchmarks/results)")
    parser.add_argument("--jobs", type=int, default=2, help="runs at a time (1 thread each)")
    args = parser.parse_args(argv)
    if args.jobs < 1:
        parser.error(f"--jobs {args.jobs} must be >= 1")
    protocol = Protocol.quick() if args.quick else Protocol.full()
    protocol = replace(protocol, jobs=args.jobs)
    return protocol, out_dir(args.out, args.quick), time.time()


def validity(p: Protocol, log: Callable[[str], None] = print) -> dict[str, Any]:
    """LR sweep, then target vs small-only from scratch at their tuned LRs over all seeds.

    The verdict is the results core's rule (`raygrow.results.validity`): with >= 2 seeds the
    target must beat the small model by more than twice the larger of the two arms' seed
    standard deviations (the arms rooted in the small model were the noisy ones in our pilot)."""
    sweep = lr_sweep(p, log)
    lr_t, lr_s = sweep["best"][p.target], sweep["best"][p.small]
    target = run_arms(p, [scratch(p, 1.0, lr_t, s) for s in p.seeds], log)
    small = run_arms(p, [scratch(p, 1.0, lr_s, s, model=p.small) for s in p.seeds], log)
    verdict: Validity = core_validity([record(r) for r in (*target, *small)])
    return {
        "sweep": sweep,
        "lr_target": lr_t,
        "lr_small": lr_s,
        "target": target,
        "small": small,
        "verdict": verdict,
        "margin": verdict.margin,
    }


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
