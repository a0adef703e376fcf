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
import sys
from pathlib import Path
from typing import Any

from raygrow.errors import EXIT_OK, EXIT_RUN_FAILURE, ConfigError, cli_entry

RESUME_IGNORES = (
    "space",
    "precision",
    "lr_schedule",
    "target",
    "budget_flops",
    "tokens",
    "num_samples",
    "experiment",
    "tracking_uri",
    "out",
    "small",
    "storage",
    "seeds",
    "share_prefixes",
    "prefix_store_mb",
    "growth_lag_tokens",
    "baselines_from",
    "warm_start",
    "force",
)


def build_parser() -> argparse.ArgumentParser:
    from raygrow.search.config import SearchConfig

    d = SearchConfig()  # the defaults live there; every flag left unset takes its field's
    p = argparse.ArgumentParser(
        prog="python -m raygrow.search",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--space",
        help=f"search space: a name from search_spaces.SPACES (default: {d.space}) or "
        "path/to/file.py:function",
    )
    p.add_argument(
        "--target",
        help=f"target model LxD (default {d.target.shape}) or a JSON/TOML file with ModelConfig "
        "keys, or TrainConfig keys with a `model` entry (its other keys become the training "
        "settings)",
    )
    budget = p.add_mutually_exclusive_group()
    budget.add_argument(
        "--budget-flops", type=float, help="FLOP budget of the target trained from scratch"
    )
    budget.add_argument(
        "--tokens", type=int, help=f"token budget of every full-budget arm (default {d.tokens})"
    )
    p.add_argument(
        "--num-samples",
        type=int,
        help=f"Optuna-sampled schedules, baselines extra (default {d.num_samples})",
    )
    p.add_argument(
        "--max-concurrent", type=int, help=f"trials at a time (default {d.max_concurrent})"
    )
    p.add_argument("--workers", type=int, help=f"Ray Train workers per trial (default {d.workers})")
    p.add_argument("--use-gpu", action="store_true", help="one GPU per Train worker")
    p.add_argument(
        "--precision",
        help="auto (default: bf16 autocast only where measured faster on the trial's device), "
        "fp32 or bf16",
    )
    p.add_argument(
        "--lr-schedule",
        choices=("cosine", "wsd", "constant"),
        help="LR schedule of every arm (default cosine). wsd: warmup, constant LR, linear "
        "decay over the last --target-file wsd_decay_frac of each budget; the scratch frontier "
        "is then one stable-phase run with a cooldown branch per budget (prefix store)",
    )
    p.add_argument("--experiment", help="MLflow experiment name (default <space>-<target>)")
    p.add_argument(
        "--tracking-uri",
        help="MLflow store; precedence: this flag, else $MLFLOW_TRACKING_URI, else "
        "sqlite:////<out>/mlflow.db (absolute)",
    )
    p.add_argument("--out", help="experiment folder (default ./raygrow_runs/<experiment>)")
    p.add_argument("--resume", metavar="DIR", help="continue the search in this folder")
    p.add_argument("--seed", type=int, help=f"sampler and training seed (default {d.seed})")
    p.add_argument(
        "--grace-frac",
        type=float,
        help=f"ASHA grace period as a fraction of the FLOP budget (default {d.grace_frac})",
    )
    p.add_argument(
        "--reduction-factor",
        type=int,
        help=f"ASHA reduction factor (default {d.reduction_factor})",
    )
    p.add_argument(
        "--sampler",
        help=f"tpe, random, or grid: every combination of the space's categorical choices once "
        f"(--num-samples defaults to the grid size); default {d.sampler}",
    )
    p.add_argument(
        "--scheduler",
        help="asha (stop poor schedules early on the FLOP clock) or fifo (run all); default "
        f"{d.scheduler}",
    )
    p.add_argument(
        "--baseline-fracs",
        help="other annealed scratch budgets as comma-separated fractions of the budget: >= 2 "
        "shorter ones, and optionally longer ones (up to 4) so that a schedule beating the "
        "full-budget scratch run gets a measured speedup, not a bound (default "
        f"{','.join(map(str, d.baseline_fracs))})",
    )
    p.add_argument("--small", help="small-only arm LxD (default: the space's usual start model)")
    p.add_argument(
        "--max-failures",
        type=int,
        help=f"Tune retries of a crashed trial (default {d.max_failures})",
    )
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
        "--seeds",
        help="seed replicates, comma-separated (e.g. 0,1,2): every baseline and sampled schedule "
        "trains at each seed (default: --seed alone)",
    )
    p.add_argument(
        "--no-share-prefixes",
        dest="share_prefixes",
        action="store_false",
        default=None,
        help="train every trial's pre-growth prefix itself instead of resuming a stored one",
    )
    p.add_argument(
        "--prefix-store-mb",
        type=int,
        help=f"size cap of the prefix store (default {d.prefix_store_mb})",
    )
    p.add_argument(
        "--growth-lag-tokens",
        type=int,
        help="ASHA judges no report within this many tokens after a growth event "
        "(default: two evaluation intervals)",
    )
    p.add_argument(
        "--baselines-from",
        metavar="DIR",
        help="reuse the finished baseline arms of this earlier search folder (must match)",
    )
    p.add_argument(
        "--warm-start",
        metavar="CSV",
        help="guidelines.csv of `python -m raygrow.guidelines`: its best predicted schedules "
        "for this target and budget (up to 3) are the first Optuna trials",
    )
    p.add_argument(
        "--force",
        action="store_true",
        default=None,
        help="with --warm-start: use the guideline outside its range of N and tokens/param",
    )
    p.add_argument(
        "--smoke-test",
        action="store_true",
        help="the same code path at tiny sizes (raygrow.search.config.SMOKE), ~2 min",
    )
    return p


def _budget_tokens(args: argparse.Namespace, base: Any, target: Any, train: Any) -> int:
    """--budget-flops / --tokens (else the base config's budget) in whole steps of `train`.
    Whether that is enough steps is SearchConfig.validate's to say."""
    from raygrow.flops import flops_per_token

    seq_len = int(train.value("seq_len"))
    step = int(train.value("batch_size")) * seq_len
    if args.budget_flops is not None:
        if args.budget_flops <= 0:
            raise ConfigError(f"--budget-flops={args.budget_flops:g} must be positive")
        return int(args.budget_flops / flops_per_token(target, seq_len)) // step * step
    if args.tokens is not None:
        return args.tokens // step * step
    return int(base.tokens)


def _search_fields(args: argparse.Namespace, base: Any) -> dict[str, Any]:
    """Flags that map one-to-one onto SearchConfig fields; unset ones keep the base's."""
    names = (
        "max_concurrent",
        "workers",
        "seed",
        "sampler",
        "scheduler",
        "grace_frac",
        "reduction_factor",
        "max_failures",
        "share_prefixes",
        "prefix_store_mb",
        "growth_lag_tokens",
    )
    return {n: getattr(base, n) if getattr(args, n) is None else getattr(args, n) for n in names}


def config_from_args(args: argparse.Namespace) -> tuple[Any, Any]:
    """SearchConfig (validated, not yet saved) and the SpaceCheck of its dry run."""
    from raygrow.config import ModelConfig
    from raygrow.search.config import SMOKE, SearchConfig, TrainSettings, parse_target
    from raygrow.search.lineage import check_baselines_from
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

    base = SearchConfig().replace(**SMOKE) if args.smoke_test else SearchConfig()
    space = resolve_space(args.space or base.space)
    if args.target:
        target, train_file = parse_target(args.target)
    else:
        target, train_file = base.target, {}
    train = TrainSettings.from_dict({**base.train.to_dict(), **train_file})
    if args.precision is not None:
        train = train.replace(precision=args.precision)
    if args.lr_schedule is not None:
        train = train.replace(lr_schedule=args.lr_schedule)
    _check_precision(train.value("precision"), args.use_gpu)
    seq_len = int(train.value("seq_len"))
    if target.max_seq_len < seq_len:
        target = target.replace(max_seq_len=seq_len)
    tokens = _budget_tokens(args, base, target, train)
    fields = _search_fields(args, base)
    machine: list[str] = []  # about this machine, not the config: checked here, listed with
    address = args.address or os.environ.get("RAY_ADDRESS")
    need = fields["workers"] * fields["max_concurrent"]
    if not address and need >= 1:  # a local cluster: the trials must fit on this machine
        cpus = os.cpu_count() or 1
        if need > cpus and not args.use_gpu:
            machine.append(
                f"--workers {fields['workers']} x --max-concurrent {fields['max_concurrent']} "
                f"need {need} CPUs, this machine has {cpus}; lower one of them"
            )
        if train.threads is None:
            train = train.replace(threads=max(1, cpus // need))
    if args.baseline_fracs is None:
        fracs = base.baseline_fracs
    else:
        try:
            fracs = tuple(float(f) for f in args.baseline_fracs.split(",") if f.strip())
        except ValueError:
            raise ConfigError(
                f"--baseline-fracs {args.baseline_fracs!r} must be comma-separated fractions"
            ) from None
    seeds = base.seeds if args.seeds is None else _seeds(args.seeds)
    baselines_from = None if args.baselines_from is None else _abs(args.baselines_from)
    ref = SpaceRef(space)
    prefix = "smoke-" if args.smoke_test else ""
    experiment = args.experiment or f"{prefix}{ref.name}-{target.shape}"
    out = Path(args.out or Path("raygrow_runs") / experiment).expanduser().resolve()
    small = ModelConfig.from_shape(args.small) if args.small else None
    num_samples = base.num_samples if args.num_samples is None else args.num_samples
    try:  # every config problem at once, with this machine's
        cfg = base.replace(
            num_samples=num_samples,
            space=space,
            target=target,
            tokens=tokens,
            train=train,
            use_gpu=args.use_gpu,
            experiment=experiment,
            out=str(out),
            baseline_fracs=fracs,
            small=_fit_seq_len(small, seq_len),
            address=args.address,
            storage=_storage(args.storage),
            seeds=seeds,
            baselines_from=baselines_from,
            warm_start=None if args.warm_start is None else _abs(args.warm_start),
            force=bool(args.force),
            **fields,
        )
    except ConfigError as exc:
        machine.append(str(exc))
    if machine:
        raise ConfigError("\n".join(machine))
    check = validate_space(ref, cfg.target, cfg.tokens, cfg.seq_len, seed=cfg.seed)
    uri = resolve_tracking_uri(args.tracking_uri, default_tracking_uri(out))
    SearchTracker.check_reachable(uri, origin=tracking_uri_origin(args.tracking_uri))
    if cfg.sampler == "grid":
        size = len(grid_points(grid_of_space(ref)))
        if args.num_samples is None:
            num_samples = size
        elif args.num_samples != size:
            raise ConfigError(
                f"--num-samples {args.num_samples} with --sampler grid: the grid has {size} "
                "points; drop --num-samples"
            )
    small = cfg.small or _fit_seq_len(check.common_start, seq_len)
    cfg = cfg.replace(small=small, num_samples=num_samples, tracking_uri=uri)
    check_baselines_from(cfg)
    return cfg, check


def _seeds(value: str) -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in value.split(",") if x.strip())
    except ValueError:
        raise ConfigError(
            f"--seeds {value!r} must be comma-separated integers, e.g. 0,1,2"
        ) from None


def _abs(path: str) -> str:
    return str(Path(path).expanduser().resolve())


def _fit_seq_len(model: Any, seq_len: int) -> Any:
    """A model given as LxD gets a context that fits the training seq_len."""
    if model is None or model.max_seq_len >= seq_len:
        return model
    return model.replace(max_seq_len=seq_len)


def _print_precision(cfg: Any) -> None:
    """What `auto` resolves to on this node (it also fills the node cache the trials read)."""
    if cfg.use_gpu or cfg.address or os.environ.get("RAY_ADDRESS"):
        where = "resolved by each trial on its node"
    else:
        from raygrow.train.precision import describe, resolve_precision

        requested = cfg.train.value("precision")
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
    try:
        return _main(argv)
    except ConfigError as exc:
        # one stderr line per problem (SearchConfig.validate lists them all): all but the
        # last here, the last through cli_entry like any other bad input
        *lines, last = str(exc).splitlines() or [""]
        for line in lines:
            print(f"raygrow.search: error: {line}", file=sys.stderr)
        raise ConfigError(last) from None


def _main(argv: list[str] | None) -> int:
    args = build_parser().parse_args(argv)
    from raygrow.search import warm_start
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
            f"({ops or 'no growth'}); target {cfg.target.shape}, small arm "
            f"{cfg.small.shape}, budget {cfg.tokens:,} tokens = {cfg.budget_flops:.3g} "
            f"FLOPs",
            flush=True,
        )
        warm = warm_start.plan(cfg, check) if cfg.warm_start else []
        cfg.save()
        if warm:
            warm_start.start(cfg, warm)

    _print_precision(cfg)
    from raygrow.search.tuner import run_search

    outcome = run_search(cfg, retry_errored=args.retry_errored)
    return EXIT_OK if outcome.complete else EXIT_RUN_FAILURE


if __name__ == "__main__":
    raise SystemExit(main())
