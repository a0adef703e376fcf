"""The growth-benchmark harness shared by growth_validity.py, growth_vs_scratch.py and
incremental.py: one protocol (target, small model, budget, LR), arms as plain data, runs of
raygrow's own `Trainer` in a pool of single-thread processes, and a per-run result cache so
the three scripts reuse each other's runs (the cache key is the arm's full spec).

Arms are compared on the FLOP axis with annealed scratch runs at several budgets (each with its
own complete cosine schedule): `raygrow.results` gives the speedup at matched loss, a lower
bound (">") where scratch never reaches the grown run's loss. Runs with the same seed share the
data order and the initialisation of the layers they share. The tables, curves and validity
lines of the reports are in growth_report.py.
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
from dataclasses import asdict, dataclass, replace
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from raygrow.results import ArmKind, Validity
from raygrow.results import validity as core_validity
from raygrow.train.precision import resolve_precision

from .common import ROOT, mean_std
from .growth_report import record

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
            f"{_layers(self.target) // _layers(self.small)}), width start {self.narrow} "
            f"(HyperCloning's target: {shape_label(width_target(self))})",
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
    target: str | None = None
    """The model a grown or scratch arm must end in (`LxD` or `LxD:hH`, see `model_config`);
    None: the protocol's target. A label plus a check (`check_target`), not a run parameter.
    Speedups compare an arm only with the scratch runs of its own target."""

    def key(self, protocol: Protocol) -> str:
        spec = {
            "arm": asdict(self),
            "protocol": _run_fields(protocol),
            "precision": resolve_precision("auto", "cpu"),  # runs use `auto`: what it ran as
            "v": CACHE_VERSION,
        }
        for label in ("name", "kind", "target"):  # labels do not change the run
            spec["arm"].pop(label)
        blob = json.dumps(spec, sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


def _run_fields(p: Protocol) -> dict[str, Any]:
    """The protocol fields that change a single run (not seeds/LR grids/jobs)."""
    keep = ("tokens", "seq_len", "batch_size", "warmup_steps", "eval_windows", "evals")
    return {k: getattr(p, k) for k in keep}


# ----------------------------------------------------------------------------- model configs
class TargetMismatch(ValueError):
    """A grown arm does not end in its target's config (its speedup would compare two models)."""


def model_config(shape: str, p: Protocol) -> Any:
    """`LxD` (heads of 64 dims, `ModelConfig.from_shape`'s rule) or `LxD:hH` (H query heads)
    as the ModelConfig every run of protocol `p` builds (same max_seq_len)."""
    from raygrow.model import ModelConfig

    base, _, heads = shape.partition(":h")
    extra = {"n_heads": int(heads)} if heads else {}
    return ModelConfig.from_shape(base, max_seq_len=max(256, p.seq_len), **extra)


def shape_label(shape: str) -> str:
    """`8x64` stays `8x64`; `8x64:h2` reads `8x64 (2 heads × 32)`."""
    base, _, heads = shape.partition(":h")
    if not heads:
        return base
    return f"{base} ({heads} heads × {_width(base) // int(heads)})"


def config_label(config: Any) -> str:
    """`8x64`, with the head layout when it is not `from_shape`'s: `8x64 (2 heads × 32)`."""
    shape = config.shape
    if config.n_heads == max(1, config.d_model // 64):
        return shape
    return f"{shape} ({config.n_heads} heads × {config.head_dim})"


def target_of(arm: Arm, p: Protocol) -> str:
    """The shape the arm must end in: its own `target`, a scratch arm's model, else p.target."""
    if arm.target:
        return arm.target
    return arm.model if arm.kind == "scratch" else p.target


def final_config(arm: Arm, p: Protocol) -> Any:
    """The config the arm's run ends in, from its schedule alone (no training)."""
    from raygrow.schedule import multi_stage

    start = model_config(arm.model, p)
    if not arm.operator:
        return start
    return multi_stage(
        start,
        arm.operator,
        at=list(arm.at),
        seed=arm.seed,
        stage_params=[dict(sp) for sp in arm.stage_params],
        **dict(arm.schedule_kw),
    ).final_config()


def check_target(arm: Arm, p: Protocol, final: Any = None) -> None:
    """Raise TargetMismatch unless a grown/scratch arm ends in exactly its target's config
    (every ModelConfig field). `final`: the trained model's config (default: the schedule's)."""
    if arm.kind == "small":
        return
    from dataclasses import fields

    final = final_config(arm, p) if final is None else final
    want = model_config(target_of(arm, p), p)
    diff = [
        f"{f.name} {getattr(final, f.name)!r} != {getattr(want, f.name)!r}"
        for f in fields(want)
        if getattr(final, f.name) != getattr(want, f.name)
    ]
    if diff:
        raise TargetMismatch(
            f"arm {arm.name!r} ({arm.operator or 'scratch'} from {arm.model}) ends in a different "
            f"model than its target {shape_label(target_of(arm, p))}: {'; '.join(diff)}"
        )


# ----------------------------------------------------------------------------- arm catalogue
def scratch(
    p: Protocol,
    frac: float,
    lr: float,
    seed: int,
    model: str | None = None,
    *,
    of_target: bool = False,
) -> Arm:
    """The target (or, with `of_target`, another target `model`) from scratch at `frac` of the
    budget; any other `model` is a start model trained alone (`LxD only`, kind `small`)."""
    model = model or p.target
    if model == p.target:
        return Arm(f"scratch@{frac:g}", model, frac=frac, lr=lr, seed=seed, kind="scratch")
    if of_target:
        name = f"scratch {shape_label(model)}@{frac:g}"
        return Arm(name, model, frac=frac, lr=lr, seed=seed, kind="scratch")
    return Arm(f"{model} only", model, frac=frac, lr=lr, seed=seed, kind="small")


def width_target(p: Protocol) -> str:
    """What HyperCloning from `p.narrow` grows into at the target's d_model: it keeps head_dim
    (RoPE) and multiplies the heads, so `8x32` (1 head × 32) becomes `8x64:h2` (2 heads × 32),
    not the target `8x64` (1 head × 64). No start of d_model < 64 reaches one 64-dim head, so
    the arm has its own target and scratch runs (`width_scratch`)."""
    narrow = model_config(p.narrow, p)
    heads = _width(p.target) // narrow.head_dim
    return p.target if model_config(p.target, p).n_heads == heads else f"{p.target}:h{heads}"


def width_scratch(p: Protocol, lr: float, seed: int) -> list[Arm]:
    """The HyperCloning arm's target from scratch at every scratch budget (none when it is the
    protocol's target)."""
    shape = width_target(p)
    if shape == p.target:
        return []
    return [scratch(p, f, lr, seed, model=shape, of_target=True) for f in p.scratch_fracs]


def growth_arms(p: Protocol, lr: float, seed: int) -> list[Arm]:
    """The single-stage growth arms of the papers: the depth arms reach the target model, the
    HyperCloning arm its width target (`width_target`: the target's shape, 32-dim heads)."""
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
            at=(p.grow_at,), stage_params=((("d_model", _width(p.target)),),),
            target=width_target(p)),
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
    from raygrow.schedule import multi_stage
    from raygrow.train.config import TrainConfig
    from raygrow.train.loop import Trainer

    torch.set_num_threads(1)
    if _DATA is None:
        _DATA = load_tokens("default", None)
    step_tokens = p.seq_len * p.batch_size
    tokens = max(1, round(p.tokens * arm.frac / step_tokens)) * step_tokens
    start = model_config(arm.model, p)
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
    check_target(arm, p, final=result.state.model_config)  # what was trained, not planned
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
    for a in arms:  # before any training, and for cached runs too
        check_target(a, p)
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
        res["target"] = target_of(a, p)
        res["final_model"] = config_label(final_config(a, p))
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


def with_lr(arms: Sequence[Arm], lr: float) -> list[Arm]:
    return [replace(a, lr=lr) for a in arms]


def cli(description: str, argv: Sequence[str] | None = None) -> tuple[Protocol, Path, float]:
    """Shared command line: --quick, --out DIR, --jobs N. Returns (protocol, out dir, start)."""
    import argparse

    from .common import out_dir

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
