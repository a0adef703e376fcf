"""`python -m raygrow.search`: search growth schedules with Ray Tune + Optuna + ASHA.

Every search runs fixed baseline arms first (the target from scratch at the full budget and at
shorter budgets, each with its own annealed LR schedule, and the small model alone), then the
Optuna-sampled schedules under ASHA on the FLOP clock. The end is a ranked table (speedup at
matched loss vs scratch; lower bounds shown as >1.14x) saved as Parquet + Markdown in the
experiment folder, and one MLflow run per trial. No arguments = the embedded default search
(about 17 minutes on 2 CPU cores); --smoke-test = the same code path in about 2 minutes.

Everything is checked before Ray starts: a bad flag, space (each space is dry-run on 64
samples into validated schedules), target, budget or tracking URI exits with code 2 and one
line on stderr. A search whose driver died continues with --resume EXPERIMENT_DIR.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from pathlib import Path
from typing import Any

from raygrow.errors import EXIT_OK, EXIT_RUN_FAILURE, ConfigError, cli_entry

DEFAULTS: dict[str, Any] = {
    "space": "default",
    "target": "4x64",
    "tokens": 901_120,  # 880 steps of 8 x 128 tokens
    "num_samples": 24,  # keep equal to SearchConfig.num_samples
}
RESUME_IGNORES = (
    "space",
    "precision",
    "target",
    "budget_flops",
    "tokens",
    "num_samples",
    "experiment",
    "tracking_uri",
    "out",
    "small",
    "storage",
)
SMOKE: dict[str, Any] = {
    "space": "default",
    "target": "4x64",
    "tokens": 81_920,  # 160 steps of 8 x 64 tokens
    "num_samples": 2,
}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m raygrow.search",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--space",
        help="search space: a name from search_spaces.SPACES (default: default) or "
        "path/to/file.py:function",
    )
    p.add_argument(
        "--target",
        help="target model LxD (e.g. 4x128) or a JSON/TOML file with ModelConfig keys, or "
        "TrainConfig keys with a `model` entry (its other keys become the training settings)",
    )
    budget = p.add_mutually_exclusive_group()
    budget.add_argument(
        "--budget-flops", type=float, help="FLOP budget of the target trained from scratch"
    )
    budget.add_argument("--tokens", type=int, help="token budget of every full-budget arm")
    p.add_argument("--num-samples", type=int, help="Optuna-sampled schedules (baselines extra)")
    p.add_argument("--max-concurrent", type=int, default=1, help="trials at a time (default 1)")
    p.add_argument("--workers", type=int, default=1, help="Ray Train workers per trial")
    p.add_argument("--use-gpu", action="store_true", help="one GPU per Train worker")
    p.add_argument(
        "--precision",
        help="auto (default: bf16 autocast only where measured faster on the trial's device), "
        "fp32 or bf16",
    )
    p.add_argument("--experiment", help="MLflow experiment name (default <space>-<target>)")
    p.add_argument(
        "--tracking-uri",
        help="MLflow store; precedence: this flag, else $MLFLOW_TRACKING_URI, else "
        "sqlite:////<out>/mlflow.db (absolute)",
    )
    p.add_argument("--out", help="experiment folder (default ./raygrow_runs/<experiment>)")
    p.add_argument("--resume", metavar="DIR", help="continue the search in this folder")
    p.add_argument("--seed", type=int, default=0, help="sampler and training seed")
    p.add_argument(
        "--grace-frac",
        type=float,
        default=0.3,
        help="ASHA grace period as a fraction of the FLOP budget (default 0.3)",
    )
    p.add_argument("--reduction-factor", type=int, default=2, help="ASHA reduction factor")
    p.add_argument(
        "--sampler",
        default="tpe",
        help="tpe (default), random, or grid: every combination of the space's categorical "
        "choices once (--num-samples defaults to the grid size)",
    )
    p.add_argument(
        "--scheduler",
        default="asha",
        help="asha (default: stop poor schedules early on the FLOP clock) or fifo (run all)",
    )
    p.add_argument(
        "--baseline-fracs",
        default="0.5,0.75",
        help="shorter annealed scratch budgets as fractions (default 0.5,0.75)",
    )
    p.add_argument("--small", help="small-only arm LxD (default: the space's usual start model)")
    p.add_argument("--max-failures", type=int, default=1, help="Tune retries of a crashed trial")
    p.add_argument(
        "--retry-errored", action="store_true", help="with --resume: re-run errored trials"
    )
    p.add_argument("--address", help="Ray address (default: RAY_ADDRESS, else a local cluster)")
    p.add_argument(
        "--storage",
        help="Tune/Train storage root for a multi-node cluster: s3://BUCKET/PATH, gs://..., or "
        "a folder mounted at the same path on every node (default: the experiment folder)",
    )
    p.add_argument(
        "--smoke-test", action="store_true", help="tiny target and budget, 2 samples (~2 min)"
    )
    return p


def _budget_tokens(args: argparse.Namespace, target: Any, train: dict, default: int) -> int:
    from raygrow.flops import flops_per_token

    seq_len = int(train.get("seq_len", 256))
    step = int(train.get("batch_size", 16)) * seq_len
    if args.budget_flops is not None:
        if args.budget_flops <= 0:
            raise ConfigError(f"--budget-flops={args.budget_flops:g} must be positive")
        tokens = int(args.budget_flops / flops_per_token(target, seq_len)) // step * step
        what = f"--budget-flops {args.budget_flops:g}"
    elif args.tokens is not None:
        tokens = args.tokens // step * step
        what = f"--tokens {args.tokens}"
    else:
        tokens, what = train.pop("tokens", default), "the budget"
    min_steps = 16
    if tokens < min_steps * step:
        raise ConfigError(
            f"{what} gives {tokens // step} steps of {step} tokens for {target.shape}; a search "
            f"needs at least {min_steps} steps: raise the budget"
        )
    return int(tokens)


def config_from_args(args: argparse.Namespace) -> tuple[Any, Any]:
    """SearchConfig (validated, not yet saved) and the SpaceCheck of its dry run."""
    from raygrow.model import ModelConfig
    from raygrow.search.config import DEFAULT_TRAIN, SMOKE_TRAIN, SearchConfig, parse_target
    from raygrow.search.spaces import (
        SpaceRef,
        grid_of_space,
        grid_points,
        resolve_space,
        validate_space,
    )
    from raygrow.tracking import (
        SearchTracker,
        default_tracking_uri,
        resolve_tracking_uri,
        tracking_uri_origin,
    )

    base = SMOKE if args.smoke_test else DEFAULTS
    space = resolve_space(args.space or base["space"])
    target, train_file = parse_target(args.target or base["target"])
    train = dict(SMOKE_TRAIN if args.smoke_test else DEFAULT_TRAIN)
    train.update(train_file)
    if args.precision is not None:
        train["precision"] = args.precision
    _check_precision(train.get("precision", "auto"), args.use_gpu)
    seq_len = int(train.get("seq_len", 256))
    if target.max_seq_len < seq_len:
        target = target.replace(max_seq_len=seq_len)
    tokens = _budget_tokens(args, target, train, base["tokens"])
    for name in ("workers", "max_concurrent"):
        if getattr(args, name) < 1:
            raise ConfigError(f"--{name.replace('_', '-')}={getattr(args, name)} must be >= 1")
    address = args.address or os.environ.get("RAY_ADDRESS")
    if not address:  # a local cluster: the trials must fit on this machine
        cpus = os.cpu_count() or 1
        need = args.workers * args.max_concurrent
        if need > cpus and not args.use_gpu:
            raise ConfigError(
                f"--workers {args.workers} x --max-concurrent {args.max_concurrent} need {need} "
                f"CPUs, this machine has {cpus}; lower one of them"
            )
        train.setdefault("threads", max(1, cpus // need))
    if int(train.get("batch_size", 16)) % args.workers:
        raise ConfigError(
            f"batch_size={train.get('batch_size')} is not divisible by --workers {args.workers}"
        )
    try:
        fracs = tuple(float(f) for f in args.baseline_fracs.split(",") if f.strip())
    except ValueError:
        raise ConfigError(
            f"--baseline-fracs {args.baseline_fracs!r} must be comma-separated fractions"
        ) from None
    ref = SpaceRef(space)
    check = validate_space(ref, target, tokens, seq_len, seed=args.seed)
    small = ModelConfig.from_shape(args.small) if args.small else check.common_start
    if small.max_seq_len < seq_len:
        small = small.replace(max_seq_len=seq_len)
    if small == target or small.n_params() >= target.n_params():
        raise ConfigError(
            f"small-only arm {small.shape} is not smaller than the target {target.shape}; "
            "pass --small LxD or a space that grows"
        )
    prefix = "smoke-" if args.smoke_test else ""
    experiment = args.experiment or f"{prefix}{ref.name}-{target.shape}"
    out = Path(args.out or Path("raygrow_runs") / experiment).expanduser().resolve()
    uri = resolve_tracking_uri(args.tracking_uri, default_tracking_uri(out))
    SearchTracker.check_reachable(uri, origin=tracking_uri_origin(args.tracking_uri))
    num_samples = base["num_samples"] if args.num_samples is None else args.num_samples
    if args.sampler == "grid":
        size = len(grid_points(grid_of_space(ref)))
        if args.num_samples is None:
            num_samples = size
        elif args.num_samples != size:
            raise ConfigError(
                f"--num-samples {args.num_samples} with --sampler grid: the grid has {size} "
                "points; drop --num-samples"
            )
    storage = _storage(args.storage)
    cfg = SearchConfig(
        space=space,
        target=target.to_dict(),
        tokens=tokens,
        train=train,
        num_samples=num_samples,
        max_concurrent=args.max_concurrent,
        workers=args.workers,
        use_gpu=args.use_gpu,
        experiment=experiment,
        tracking_uri=uri,
        out=str(out),
        seed=args.seed,
        sampler=args.sampler,
        scheduler=args.scheduler,
        grace_frac=args.grace_frac,
        reduction_factor=args.reduction_factor,
        baseline_fracs=fracs,
        small=small.to_dict(),
        max_failures=args.max_failures,
        smoke_test=args.smoke_test,
        address=args.address,
        storage=storage,
    )
    return cfg, check


def _print_precision(cfg: Any) -> None:
    """What `auto` resolves to on this node (it also fills the node cache the trials read)."""
    if cfg.use_gpu or cfg.address or os.environ.get("RAY_ADDRESS"):
        where = "resolved by each trial on its node"
    else:
        from raygrow.train.precision import describe, resolve_precision

        requested = cfg.train.get("precision", "auto")
        where = describe(requested, resolve_precision(requested, "cpu"), "cpu")
    print(f"raygrow.search: precision {where}", flush=True)


def _check_precision(precision: str, use_gpu: bool) -> None:
    """Unknown precision, or bf16 on a GPU without it: exit 2 before Ray starts."""
    import torch

    from raygrow.train.precision import check_precision

    device = "cuda" if use_gpu and torch.cuda.is_available() else "cpu"
    check_precision(precision, device)


def _storage(value: str | None) -> str | None:
    """A storage URI (scheme checked) or an absolute folder; None stays None."""
    if value is None:
        return None
    if "://" in value:
        scheme = value.split("://", 1)[0]
        if scheme not in ("s3", "gs", "gcs", "abfs", "hdfs", "file"):
            raise ConfigError(
                f"--storage {value!r}: unknown scheme {scheme!r}; use s3://, gs:// or a folder"
            )
        return value.rstrip("/")
    return str(Path(value).expanduser().resolve())


@cli_entry
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from raygrow.search.config import CONFIG_FILE, SearchConfig
    from raygrow.tracking import SearchTracker

    if args.resume:
        given = [f"--{k.replace('_', '-')}" for k in RESUME_IGNORES if getattr(args, k) is not None]
        if given or args.smoke_test:
            raise ConfigError(
                f"--resume takes every setting from {args.resume}/{CONFIG_FILE}; drop "
                f"{', '.join(given or ['--smoke-test'])}"
            )
        cfg = SearchConfig.load(args.resume)
        if args.address:  # the only setting a resumed search may change: where Ray runs
            cfg = dataclasses.replace(cfg, address=args.address)
        SearchTracker.check_reachable(cfg.tracking_uri)
        print(f"raygrow.search: resuming {cfg.experiment!r} from {cfg.out}", flush=True)
    else:
        cfg, check = config_from_args(args)
        if (Path(cfg.out) / CONFIG_FILE).exists():
            raise ConfigError(
                f"{cfg.out} already holds a search; continue it with --resume {cfg.out} or pass "
                "a new --experiment/--out"
            )
        ops = ", ".join(f"{k} {v}" for k, v in check.operators.most_common())
        print(
            f"raygrow.search: space {cfg.space!r} checked on {check.samples} samples "
            f"({ops or 'no growth'}); target {cfg.target_model.shape}, small arm "
            f"{cfg.small_model.shape}, budget {cfg.tokens:,} tokens = {cfg.budget_flops:.3g} "
            f"FLOPs",
            flush=True,
        )
        cfg.save()

    _print_precision(cfg)
    from raygrow.search.tuner import run_search

    outcome = run_search(cfg, retry_errored=args.retry_errored)
    return EXIT_OK if outcome.complete else EXIT_RUN_FAILURE


if __name__ == "__main__":
    raise SystemExit(main())
