"""Ray Train (V2) driver: the training loop on N DDP workers, with fault tolerance.

    from raygrow.train.driver import run_distributed
    result = run_distributed(config, schedule, num_workers=2)   # what `--workers 2` runs

`build_trainer(...)` returns the `TorchTrainer` without running it, for callers that add
callbacks, e.g. a Tune function trainable (Train V2's TorchTrainer cannot itself be a Tune
trainable)::

    def trial(tune_config):
        trainer = build_trainer(config, schedule, num_workers=2, use_gpu=False,
                                storage_path=STORAGE, name=f"train-{trial_id}",
                                callbacks=[ray.tune.integration.ray_train.TuneReportCallback()])
        trainer.fit()

Layout: the loop writes `out_dir/metrics.jsonl` and `out_dir/checkpoints/` as in a
single-process run; Ray Train keeps its run state under `storage_path/name/` (default
`out_dir/ray/train-<hash>/`), where each reported checkpoint is a folder holding a hard link
to the loop's checkpoint file. The run name is a hash of the trajectory settings and the
schedule, so re-running the same command after a crash resumes from the last checkpoint, and
a changed config starts a new run.

Start-up cost: a TorchTrainer run starts new processes for its controller and workers
(about 10 s here) besides `ray.init` (5-10 s). `run_distributed` reuses an existing Ray
connection (call `ray.init` once per process and run many trainings), the token data is put
in the object store once per driver process and shared by the workers, and `FAST_START_ENV`
tightens Train's polling (the default 2 s poll adds 2-4 s at the end of every run and throttles
reports). See `benchmarks/overhead.py`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import socket
import sys
from collections.abc import Iterator, Sequence
from math import inf
from pathlib import Path
from typing import TYPE_CHECKING, Any

from raygrow._omp import wait_policy_env
from raygrow.errors import CheckpointError, ConfigError
from raygrow.train.config import TRAJECTORY_FIELDS, TrainConfig
from raygrow.train.worker import checkpoint_file, train_fn_per_worker

if TYPE_CHECKING:
    from ray.train.torch import TorchTrainer

    from raygrow.schedule import GrowthSchedule

DEFAULT_MAX_FAILURES = 2
CONTROLLER_FAILURE_LIMIT = 2
"""Train controller failures (worker-group start-up timeouts, 60 s each) before a run fails."""
API_SERVER_ENV = "RAY_API_SERVER_ADDRESS"

FAST_START_ENV = {
    # Controller polls the workers every 2 s by default: every run then ends 2-4 s after the
    # last report, and a report blocks until the previous one has been polled.
    "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.25",
    # No preemption watcher and Train metrics exporters (one fewer thread/actor per run).
    "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0",
    "RAY_TRAIN_METRICS_ENABLED": "0",
}
"""Environment for faster Ray Train start/stop; set (unless already set) by `build_trainer`."""

_DATA_REFS: dict[tuple[str, str], Any] = {}


def apply_fast_start_env() -> None:
    """Export `FAST_START_ENV` (values the user already set win); Train propagates them."""
    for key, value in FAST_START_ENV.items():
        os.environ.setdefault(key, value)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


LOCAL_ONLY_INIT_ARGS = ("num_cpus", "num_gpus", "resources", "include_dashboard", "dashboard_port")
"""`ray.init` arguments that only make sense for a new local instance (dropped when joining)."""


def start_ray(*, env_vars: dict[str, str] | None = None, **init_kwargs: Any) -> bool:
    """`ray.init` for every raygrow command: join `address=`/`RAY_ADDRESS`, else start a new
    local instance (never someone's `ray start` cluster on this machine). True if started.

    A new local instance gets a fixed dashboard port, exported as `RAY_API_SERVER_ADDRESS`
    before the start so that every Ray process inherits it: the State API (which Train's
    placement-group cleaner polls from its own actor) then queries this instance, even when
    other Ray instances run on the machine (auto-detection raises "Found multiple active Ray
    instances", the cleaner's thread dies and stopped trials' worker groups stay reserved).
    `env_vars` reach every process of this job (trial actors, Train workers) at their start,
    through the job's runtime env; the fast-start Train settings are always among them.
    """
    import ray

    apply_fast_start_env()
    env = {k: os.environ[k] for k in FAST_START_ENV} | dict(env_vars or {})
    runtime_env = dict(init_kwargs.pop("runtime_env", None) or {})
    runtime_env["env_vars"] = {**runtime_env.get("env_vars", {}), **env}
    init_kwargs["runtime_env"] = runtime_env
    address = init_kwargs.pop("address", None) or os.environ.get("RAY_ADDRESS")
    if address not in (None, "", "local"):
        for key in LOCAL_ONLY_INIT_ARGS:
            init_kwargs.pop(key, None)
        ray.init(address=address, **init_kwargs)
        return False
    init_kwargs.setdefault("include_dashboard", True)
    port = init_kwargs.setdefault("dashboard_port", _free_port())
    os.environ[API_SERVER_ENV] = f"http://127.0.0.1:{port}"
    ray.init(address="local", **init_kwargs)
    return True


@contextlib.contextmanager
def ray_session(**init_kwargs: Any) -> Iterator[bool]:
    """Ray connected for the block: the current connection (yields False), else `start_ray`
    (yields whether it started a new instance) and `ray.shutdown()` at the end."""
    import ray

    if ray.is_initialized():
        yield False
        return
    saved = os.environ.get(API_SERVER_ENV)
    try:
        yield start_ray(**init_kwargs)
    finally:
        ray.shutdown()
        if saved is None:
            os.environ.pop(API_SERVER_ENV, None)
        else:
            os.environ[API_SERVER_ENV] = saved


def run_name(config: TrainConfig, schedule: GrowthSchedule | None) -> str:
    """Deterministic Train run name: same trajectory settings + schedule -> same name."""
    cfg = config.to_dict()
    key = {name: cfg[name] for name in TRAJECTORY_FIELDS}
    key["model"] = cfg["model"]
    key["schedule"] = schedule.to_dict() if schedule is not None else None
    digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()
    return f"train-{digest[:12]}"


def check_request(
    config: TrainConfig, *, num_workers: int, use_gpu: bool, cpus_per_worker: float
) -> None:
    """The checks that need no cluster: worker count, batch split, device."""
    if num_workers < 1:
        raise ConfigError(f"num_workers={num_workers} must be >= 1; use --workers 1 or more")
    if cpus_per_worker <= 0:
        raise ConfigError(f"cpus_per_worker={cpus_per_worker} must be > 0")
    if config.batch_size % num_workers:
        raise ConfigError(
            f"batch_size={config.batch_size} is not divisible by {num_workers} workers; "
            "pick a batch size that is a multiple of the worker count"
        )
    per_rank = config.batch_size // num_workers
    if config.micro_batch_size and per_rank % config.micro_batch_size:
        raise ConfigError(
            f"micro_batch_size={config.micro_batch_size} does not divide the per-worker batch "
            f"{per_rank} ({config.batch_size} / {num_workers} workers); pick a divisor"
        )
    if not use_gpu and config.device != "auto" and config.device != "cpu":
        raise ConfigError(
            f"device={config.device} with Ray workers needs --use-gpu (workers get their GPU "
            "from Ray); add --use-gpu or use --device cpu"
        )


def validate_scaling(
    config: TrainConfig, *, num_workers: int, use_gpu: bool, cpus_per_worker: float
) -> dict[str, float]:
    """Check the request (`check_request`) and that the connected cluster can hold it, now or,
    with an autoscaler, once it has added nodes (`check_cluster_fit`); return the resources per
    worker. Prints one line when the run will wait for the autoscaler."""
    import ray

    check_request(config, num_workers=num_workers, use_gpu=use_gpu, cpus_per_worker=cpus_per_worker)
    resources = {"CPU": float(cpus_per_worker)}
    if use_gpu:
        resources["GPU"] = 1.0
    waiting = check_cluster_fit(num_workers, resources, ray.cluster_resources(), autoscaler_view())
    if waiting:
        print(f"raygrow: {waiting}", file=sys.stderr, flush=True)
    return resources


def autoscaler_view() -> dict[str, Any] | None:
    """The autoscaler's node types as Ray reads them, or None without an autoscaler.

    The source is the cluster config the autoscaler reports to the GCS
    (`ray._private.state.state.get_cluster_config()`), the same one Ray Train V2 reads for
    its worker-group check (`get_max_resources_from_cluster_config`) and Ray Data for
    scale-up: `{"node_types": [{"name", "resources", "max_workers"}], "max_resources"}`;
    `max_workers` -1 means unbounded. A local instance or `ray start` nodes report none.
    """
    from ray._private.state import state

    config = state.get_cluster_config()
    if config is None or not config.node_group_configs:
        return None
    node_types = [
        {"name": g.name, "resources": dict(g.resources), "max_workers": int(g.max_count)}
        for g in config.node_group_configs
    ]
    return {"node_types": node_types, "max_resources": dict(config.max_resources)}


def _fmt(resources: dict[str, float], keys: Any = None) -> str:
    """`{CPU: 8, GPU: 1}`: the resources named in `keys` (default all)."""
    names = sorted(keys if keys is not None else resources)
    return "{" + ", ".join(f"{k}: {resources.get(k, 0.0):g}" for k in names) + "}"


def _shortfall_now(num_workers: int, per_worker: dict[str, float], cluster: dict) -> str | None:
    """Why the cluster's current resources cannot hold the workers (None: they can)."""
    cpus, cpw = cluster.get("CPU", 0.0), per_worker.get("CPU", 0.0)
    if num_workers * cpw > cpus:
        return (
            f"{num_workers} workers x {cpw:g} CPU need {num_workers * cpw:g} CPUs but the Ray "
            f"cluster has {cpus:g}; use --workers {int(cpus // cpw)} or fewer, or add nodes"
        )
    gpus = cluster.get("GPU", 0.0)
    if num_workers * per_worker.get("GPU", 0.0) > gpus:
        return (
            f"--use-gpu with {num_workers} workers needs {num_workers} GPUs but the Ray "
            f"cluster has {gpus:g}; drop --use-gpu or connect to a cluster with GPUs"
        )
    return None


def _per_node(per_worker: dict[str, float], node: dict[str, float]) -> int:
    """How many workers of this shape one node holds."""
    return int(min(node.get(k, 0.0) // v for k, v in per_worker.items() if v > 0))


def check_cluster_fit(
    num_workers: int,
    per_worker: dict[str, float],
    cluster: dict[str, float],
    autoscaler: dict[str, Any] | None,
) -> str | None:
    """Whether `num_workers` bundles of `per_worker` can run: None when they fit the current
    `cluster` resources; the line to print when they fit only once the autoscaler has started
    nodes; ConfigError (one line naming the fix) when they never can.

    Without an autoscaler (`autoscaler_view()` None) only the current resources count. With
    one, a worker must fit on one node of a node type, and the workers on all node types at
    their `max_workers` (each type's count x workers per node, capped by the cluster's
    `max_resources`) must reach `num_workers`.
    """
    shortfall = _shortfall_now(num_workers, per_worker, cluster)
    if shortfall is None:
        return None
    if not autoscaler or not autoscaler.get("node_types"):
        raise ConfigError(shortfall)
    types = [t for t in autoscaler["node_types"] if t["max_workers"] != 0]
    # (node type, workers it can hold at max_workers; -1 = unbounded)
    slots = [(t, _per_node(per_worker, t["resources"])) for t in types]
    slots = [(t, n * (t["max_workers"] if t["max_workers"] > 0 else inf)) for t, n in slots if n]
    most = sum(n for _, n in slots)
    for key, cap in (autoscaler.get("max_resources") or {}).items():
        if per_worker.get(key, 0.0) > 0:
            most = min(most, cap // per_worker[key])
    need = f"{num_workers} workers x {_fmt(per_worker)}"
    if not slots:
        gpu = per_worker.get("GPU", 0.0) > 0
        pool = types or autoscaler["node_types"]
        order = ("GPU", "CPU") if gpu else ("CPU",)  # biggest: most GPUs (if wanted), then CPUs
        big = max(pool, key=lambda t: [t["resources"].get(k, 0.0) for k in order])
        fix = (
            "drop --use-gpu or add a GPU node type to the cluster config"
            if gpu and not big["resources"].get("GPU")
            else f"use at most {big['resources'].get('CPU', 0.0):g} CPUs per worker, or add a "
            "larger node type to the cluster config"
        )
        raise ConfigError(
            f"{need}: no node type the autoscaler can launch holds one worker (largest: "
            f"{big['name']!r} {_fmt(big['resources'], per_worker)}); {fix}"
        )
    best = max(slots, key=lambda tn: tn[1])[0]
    if most < num_workers:
        raise ConfigError(
            f"{need} never fit this autoscaling cluster: at most {int(most)} at its max_workers "
            f"(largest: {best['name']!r} {_fmt(best['resources'], per_worker)} x "
            f"{best['max_workers']}); "
            f"use --workers {int(most)} or fewer, or raise max_workers in the cluster config"
        )
    return (
        f"the Ray cluster cannot hold {need} yet; the autoscaler can start them on node type "
        f"{best['name']!r} {_fmt(best['resources'], per_worker)}: waiting for nodes to scale up"
    )


def shared_data_ref(config: TrainConfig) -> Any:
    """The run's token data in the object store, put once per driver process.

    Workers `ray.get` it (zero-copy numpy views on the same node) instead of each opening and
    verifying the shards; a raw source is also prepared only once, here, not by every worker.
    """
    import ray

    from raygrow.data import load_tokens

    key = (config.data, config.tokenizer)
    if key not in _DATA_REFS:
        _DATA_REFS[key] = ray.put(load_tokens(config.data, config.tokenizer))
    return _DATA_REFS[key]


def check_resume(config: TrainConfig, schedule: GrowthSchedule | None, resume: str | Path) -> Path:
    """Fail before training if `resume` is missing or was made by a different trajectory."""
    from raygrow.train.state import load_checkpoint

    path = Path(resume).resolve()
    state = load_checkpoint(path)
    bad = config.trajectory_mismatch(state.train_config)
    if bad:
        raise CheckpointError(
            f"checkpoint {resume} was made with different {', '.join(bad)}; resume with the "
            "original settings or start a new run"
        )
    if (state.schedule or None) != (schedule.to_dict() if schedule else None):
        raise CheckpointError(
            f"checkpoint {resume} was made with a different growth schedule; pass the same "
            "--schedule"
        )
    return path


def build_trainer(
    config: TrainConfig,
    schedule: GrowthSchedule | None = None,
    *,
    num_workers: int,
    use_gpu: bool = False,
    storage_path: str | None = None,
    name: str | None = None,
    max_failures: int = DEFAULT_MAX_FAILURES,
    callbacks: Sequence[Any] = (),
    resume: str | Path | None = None,
    cpus_per_worker: float = 1,
    share_data: bool = True,
    verbose: bool = True,
) -> TorchTrainer:
    """A ready-to-`fit()` TorchTrainer running `raygrow.train.loop` on `num_workers` ranks.

    Needs a Ray connection (started here if absent). Validates the scaling request against
    the cluster first (`ConfigError` naming the fix). `storage_path` defaults to
    `<out_dir>/ray`, `name` to `run_name(config, schedule)`; keep both fixed to make a
    re-submitted run resume from its last checkpoint. `callbacks` go to `RunConfig`
    (e.g. Tune's `TuneReportCallback`).
    """
    import ray
    import ray.train
    from ray.train.torch import TorchConfig, TorchTrainer

    if not ray.is_initialized():
        start_ray()
    resources = validate_scaling(
        config, num_workers=num_workers, use_gpu=use_gpu, cpus_per_worker=cpus_per_worker
    )
    apply_fast_start_env()
    out_dir = Path(config.out_dir).resolve()  # workers run in another working directory
    if storage_path is None:
        storage_path = str(out_dir / "ray")
    elif "://" not in storage_path:
        storage_path = str(Path(storage_path).resolve())
    threads = max(1, int(cpus_per_worker))
    # workers of one run may share a node: each has `threads` OpenMP threads (see raygrow._omp)
    worker_env = wait_policy_env(threads, num_workers)
    spec = {
        "config": config.replace(out_dir=str(out_dir)).to_dict(),
        "schedule": schedule.to_dict() if schedule is not None else None,
        "use_gpu": use_gpu,
        "threads": threads,
        "resume": str(check_resume(config, schedule, resume)) if resume else None,
        "data": shared_data_ref(config) if share_data else None,
        "verbose": verbose,
    }
    return TorchTrainer(
        train_fn_per_worker,
        train_loop_config=spec,
        torch_config=TorchConfig(backend="nccl" if use_gpu else "gloo"),
        scaling_config=ray.train.ScalingConfig(
            num_workers=num_workers, use_gpu=use_gpu, resources_per_worker=resources
        ),
        run_config=ray.train.RunConfig(
            name=name or run_name(config, schedule),
            storage_path=storage_path,
            failure_config=ray.train.FailureConfig(
                max_failures=max_failures,
                # a worker group that cannot start (e.g. CPUs still held by a stopped run) fails
                # the run after a few start-up timeouts instead of retrying forever (default -1)
                controller_failure_limit=CONTROLLER_FAILURE_LIMIT,
            ),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=config.keep_checkpoints),
            callbacks=list(callbacks),
            # read by libgomp when torch loads: it must be in the environment at process start
            worker_runtime_env={"env_vars": worker_env},
        ),
    )


def fit(trainer: TorchTrainer) -> Any:
    """`trainer.fit()`, raising a worker's ConfigError as itself (the CLI's exit 2).

    Also puts back the SIGINT handler that `fit()` installs from the main thread: that
    handler holds the controller's actor handle, which would keep the finished controller
    process alive until the next `fit()`.
    """
    import ray.train

    handler = signal.getsignal(signal.SIGINT)
    try:
        return trainer.fit()
    except ray.train.TrainingFailedError as exc:
        for error in (getattr(exc, "worker_failures", None) or {}).values():
            for candidate in (error, getattr(error, "cause", None)):
                if isinstance(candidate, ConfigError):
                    raise candidate from None
        raise
    finally:
        with contextlib.suppress(ValueError):  # not the main thread: nothing was installed
            signal.signal(signal.SIGINT, handler)


def run_distributed(
    config: TrainConfig,
    schedule: GrowthSchedule | None = None,
    *,
    num_workers: int,
    use_gpu: bool = False,
    resume: str | Path | None = None,
    storage_path: str | None = None,
    name: str | None = None,
    max_failures: int = DEFAULT_MAX_FAILURES,
    cpus_per_worker: float = 1,
    verbose: bool = True,
) -> dict[str, Any]:
    """Train with Ray Train on `num_workers` DDP ranks; the final metrics and checkpoint.

    Uses the current Ray connection, or `start_ray()` (`RAY_ADDRESS` if set, else a new local
    instance) and shuts it down at the end. Returns the last evaluation's metrics plus
    `checkpoint` (the final loop checkpoint file), `out_dir` and `ray_run_dir`.
    """
    # what needs no cluster fails before Ray starts
    check_request(config, num_workers=num_workers, use_gpu=use_gpu, cpus_per_worker=cpus_per_worker)
    if resume is not None and not Path(resume).exists():
        raise CheckpointError(
            f"checkpoint {str(resume)!r} does not exist; pass a checkpoint file or a run's "
            "checkpoints folder"
        )
    with ray_session():
        trainer = build_trainer(
            config,
            schedule,
            num_workers=num_workers,
            use_gpu=use_gpu,
            storage_path=storage_path,
            name=name,
            max_failures=max_failures,
            resume=resume,
            cpus_per_worker=cpus_per_worker,
            verbose=verbose,
        )
        result = fit(trainer)
    checkpoint = None
    if result.checkpoint is not None:
        checkpoint = checkpoint_file(result.checkpoint.path) or result.checkpoint.path
    out = dict(result.metrics or {})
    out.update(
        checkpoint=str(checkpoint) if checkpoint else None,
        out_dir=str(Path(config.out_dir).resolve()),
        ray_run_dir=str(result.path),
        num_workers=num_workers,
    )
    return out
