"""The search: baseline arms, then Optuna + ASHA over growth schedules, then the ranked table.

Two Tune runs share one experiment folder (`<out>/ray/baselines`, `<out>/ray/search`) and one
trainable (`trainable.trial_driver`):

1. **baselines** (FIFO, never stopped): the target from scratch at the full budget and at the
   shorter `baseline_fracs` budgets, each with its own annealed LR schedule, plus the small
   model alone. They run first and to completion; ASHA never sees them.
2. **search**: `OptunaSearch(space=SpaceRef, metric="val_loss", mode="min",
   sampler=TPESampler(seed, multivariate=True, group=True))` with `ASHAScheduler(
   time_attr="flops", max_t=<target's FLOP budget>, grace_period=grace_frac * max_t)` - the
   compute clock, so rungs compare schedules at equal FLOPs and survive a restore (Tune's
   training_iteration restarts, FLOPs do not). `--sampler grid|random` swaps the sampler
   (grid: Optuna's GridSampler over the space's categorical choices, each combination once);
   `--scheduler fifo` runs every trial to the end (the exhaustive baseline of a search).

`search_wiring` / `baseline_wiring` build everything a test may inspect without Ray;
`run_search` starts (or joins) Ray, fits or restores both runs, and writes the results. A trial
reserves what it uses (`trial_resources`): one worker trains in the trial process (CPU = its
torch threads; `reuse_actors` hands the process to the next trial), several workers drive a
nested TorchTrainer from the `train_driver` resource.

Resume: both Tune runs are restored with `Tuner.restore(resume_unfinished=True)` when their
folder exists: finished trials are kept (not re-run), interrupted ones continue from their last
reported checkpoint (one worker: the Tune trial's own; several: Train run `train-<trial_id>`),
OptunaSearch continues its study (`optuna.db`
in the experiment folder, `raygrow.search.study`), ASHA reloads its rung records and stop
reasons (`asha_state.json`, `raygrow.search.asha`: Tune itself does not restore a scheduler's
state), and the MLflow parent/child runs are found again by tag (no duplicates). Errored
trials stay errored: they were retried per FailureConfig already (pass `--retry-errored` to
retry them).
"""

from __future__ import annotations

import os
import sys
import time
import warnings
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import optuna
import pandas as pd
import ray
from ray import tune
from ray.tune import CLIReporter
from ray.tune.schedulers import FIFOScheduler

from raygrow._omp import wait_policy_env
from raygrow.data import manifest_of
from raygrow.errors import ConfigError
from raygrow.results import status_kind
from raygrow.search import results
from raygrow.search.asha import RecordingASHA, state_path, stop_texts
from raygrow.search.callbacks import TrackingCallback, get_tracker
from raygrow.search.config import SearchConfig
from raygrow.search.lineage import check_baselines_from, prefix_store_of
from raygrow.search.results import validity
from raygrow.search.spaces import SpaceRef, grid_of_space
from raygrow.search.study import GrowthOptunaSearch, make_storage
from raygrow.search.trainable import (
    BASELINE_KEY,
    SEED_KEY,
    baseline_arms,
    plan_trial,
    trial_driver,
)
from raygrow.search.watch import PlacementGroupWatch
from raygrow.tracking import corpus_dataset_input, default_tracking_uri
from raygrow.train.driver import autoscaler_view, ray_session

METRIC = "val_loss"
MODE = "min"
TIME_ATTR = "flops"
BASELINES = "baselines"
SEARCH = "search"
FRONTIER = "frontier"
DRIVER_RESOURCE = "train_driver"
PROGRESS_METRICS = {
    "val_loss": "val_loss",
    "flops": "flops",
    "tokens": "tokens",
    "n_layers": "L",
    "d_model": "D",
}


@dataclass
class Wiring:
    """One Tune run, ready to fit: what `Tuner(trainable, **...)` gets."""

    name: str
    param_space: dict[str, Any]
    tune_config: Any
    run_config: Any
    searcher: Any = None
    scheduler: Any = None

    def tuner(self, trainable: Any) -> Any:
        return tune.Tuner(
            trainable,
            param_space=self.param_space,
            tune_config=self.tune_config,
            run_config=self.run_config,
        )


# --------------------------------------------------------------------------- searcher
def make_searcher(cfg: SearchConfig) -> Any:
    """OptunaSearch over the define-by-run space with the configured sampler."""

    space = SpaceRef(cfg.space)
    if cfg.sampler == "grid":  # exhaustive: each combination once, in a seeded order
        sampler: Any = optuna.samplers.GridSampler(grid_of_space(space), seed=cfg.seed)
    elif cfg.sampler == "random":
        sampler = optuna.samplers.RandomSampler(seed=cfg.seed)
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            sampler = optuna.samplers.TPESampler(
                seed=cfg.seed,
                multivariate=True,  # conditional spaces: model joint structure ...
                group=True,  # ... per branch of the define-by-run tree
                n_startup_trials=max(2, min(10, cfg.num_samples // 2)),
            )
    kwargs: dict[str, Any] = {}
    if cfg.out:  # persisted: optuna-dashboard sqlite:///<out>/optuna.db; --resume continues it
        kwargs = {"storage": make_storage(cfg.experiment_dir), "study_name": cfg.experiment}
    stop_file = _asha_state_file(cfg) if cfg.scheduler == "asha" else None
    return GrowthOptunaSearch(
        space=space,
        metric=METRIC,
        mode=MODE,
        sampler=sampler,
        stop_file=stop_file,
        seeds=cfg.seeds,
        **kwargs,
    )


def _asha_state_file(cfg: SearchConfig) -> str | None:
    return str(state_path(cfg.experiment_dir)) if cfg.out else None


def make_scheduler(cfg: SearchConfig) -> Any:

    if cfg.scheduler == "fifo":
        return FIFOScheduler()
    max_t = cfg.budget_flops
    return RecordingASHA(  # Ray's ASHA + stop reasons + rung records that survive --resume
        time_attr=TIME_ATTR,  # the compute clock, never training_iteration
        metric=METRIC,
        mode=MODE,
        max_t=max_t,
        grace_period=cfg.grace_frac * max_t,
        reduction_factor=cfg.reduction_factor,
        stop_last_trials=False,  # grown runs end below max_t FLOPs; let survivors finish
        state_file=_asha_state_file(cfg),
        growth_lag_tokens=cfg.growth_lag,  # no judgement right after a growth (issue 15)
    )


def _reporter(cfg: SearchConfig, total: int) -> Any:
    return CLIReporter(
        metric_columns=PROGRESS_METRICS,
        parameter_columns={"schedule": "schedule"},
        total_samples=total,
        max_column_length=48,
        max_report_frequency=30,
        print_intermediate_tables=True,  # else it depends on Tune's global verbosity
        metric=METRIC,
        mode=MODE,
        sort_by_metric=True,
    )


def _run_config(cfg: SearchConfig, name: str, total: int) -> Any:

    callbacks: list[Any] = [TrackingCallback(cfg.to_dict())]
    if cfg.workers > 1:  # only nested Train runs have worker groups that can outlive a trial
        callbacks.append(PlacementGroupWatch(DRIVER_RESOURCE))
    return tune.RunConfig(
        name=name,
        storage_path=cfg.tune_storage,
        callbacks=callbacks,
        failure_config=tune.FailureConfig(max_failures=cfg.max_failures),
        progress_reporter=_reporter(cfg, total),
        verbose=1,
    )


def search_trials(cfg: SearchConfig) -> int:
    """Tune trials of the search run: every sampled schedule once per seed replicate."""
    return cfg.num_samples * len(cfg.replicate_seeds)


def search_wiring(cfg: SearchConfig) -> Wiring:
    """The Optuna + ASHA run over the space (inspectable without Ray)."""
    searcher = make_searcher(cfg)
    scheduler = make_scheduler(cfg)
    return Wiring(
        name=SEARCH,
        param_space={},
        tune_config=tune.TuneConfig(
            search_alg=searcher,
            scheduler=scheduler,
            num_samples=search_trials(cfg),
            max_concurrent_trials=cfg.max_concurrent,
            reuse_actors=cfg.workers == 1,  # a finished trial's process takes the next
        ),
        run_config=_run_config(cfg, SEARCH, search_trials(cfg)),
        searcher=searcher,
        scheduler=scheduler,
    )


def baseline_stages(cfg: SearchConfig) -> list[tuple[str, list[str]]]:
    """The baseline arms in the Tune runs that train them, in order.

    One run of every arm, except where a scratch budget can branch off the full-budget run's
    stable phase (WSD or constant LR with prefix sharing): then the full-budget arms run first
    and the other budgets (`frontier`) after them, shorter ones first, longer ones in rising
    order, so that each finds its trunk stored and trains only its cooldown (a longer one: from
    the previous trunk's end). Nothing waits on anything inside a run."""
    arms = baseline_arms(cfg)
    full = [name for name, arm in arms.items() if arm["frac"] == 1.0]
    shorter = sorted(
        (n for n in arms if n not in full),
        key=lambda n: (arms[n]["frac"] > 1, abs(arms[n]["frac"] - 1)),
    )
    if cfg.share_prefixes and cfg.base_train().lr_schedule != "cosine" and shorter:
        return [(BASELINES, full), (FRONTIER, shorter)]
    return [(BASELINES, list(arms))]


def baseline_wiring(
    cfg: SearchConfig, name: str = BASELINES, arms: list[str] | None = None
) -> Wiring:
    """The fixed arms (FIFO: nothing stops them), one trial per arm and seed replicate."""

    arms = list(baseline_arms(cfg)) if arms is None else arms
    space: dict[str, Any] = {BASELINE_KEY: tune.grid_search(arms)}
    if cfg.seeds:
        space[SEED_KEY] = tune.grid_search(list(cfg.seeds))
    scheduler = FIFOScheduler()
    return Wiring(
        name=name,
        param_space=space,
        tune_config=tune.TuneConfig(
            scheduler=scheduler,
            num_samples=1,
            max_concurrent_trials=cfg.max_concurrent,
            reuse_actors=cfg.workers == 1,  # a finished trial's process takes the next
        ),
        run_config=_run_config(cfg, name, len(arms) * len(cfg.replicate_seeds)),
        scheduler=scheduler,
    )


def trial_resources(cfg: SearchConfig, cluster: dict, autoscaler: dict | None = None) -> dict:
    """What one trial's actor reserves. One worker: training runs in the trial itself, so
    the trial takes the CPUs its torch threads use (and a GPU when used). Several workers: the
    trial drives a nested TorchTrainer on the `train_driver` resource (in `cluster`, or on a
    node type the `autoscaler` can launch), and the workers take the CPUs/GPUs."""
    if cfg.workers == 1:
        resources = {"CPU": float(cfg.train.value("threads") or 1)}
        if cfg.use_gpu:
            resources["GPU"] = 1.0
        return resources
    types = (autoscaler or {}).get("node_types", ())
    if DRIVER_RESOURCE not in cluster and not any(
        t["max_workers"] and t["resources"].get(DRIVER_RESOURCE) for t in types
    ):
        raise ConfigError(
            f"--workers {cfg.workers}: the Ray cluster has no {DRIVER_RESOURCE!r} resource for "
            "the trials' Train drivers; start its head with "
            f"--resources='{{\"{DRIVER_RESOURCE}\": 16}}' (cluster.yaml does) or use --workers 1"
        )
    return {DRIVER_RESOURCE: 1}


def make_trainable(cfg: SearchConfig) -> Any:
    """`trial_driver` with the search settings attached and its resources (needs Ray)."""
    resources = trial_resources(cfg, ray.cluster_resources(), autoscaler_view())
    return tune.with_resources(tune.with_parameters(trial_driver, search=cfg.to_dict()), resources)


# --------------------------------------------------------------------------- Ray
def trial_env(cfg: SearchConfig) -> dict[str, str]:
    """Environment of the search's Ray processes: the OpenMP wait policy for `threads` per
    process x the processes that train at once (trials x workers) on a node (raygrow._omp)."""
    threads = int(cfg.train.value("threads") or 1)
    return wait_policy_env(threads, cfg.max_concurrent * cfg.workers)


@contextmanager
def search_ray(cfg: SearchConfig) -> Iterator[bool]:
    """`raygrow.train.driver.ray_session` with the search's settings: a new local instance has
    the machine's CPUs and the `train_driver` resource that nested Train trials' drivers use."""
    with ray_session(
        address=cfg.address,
        num_cpus=os.cpu_count() or 1,
        resources={DRIVER_RESOURCE: 1000},
        log_to_driver=False,
        env_vars=trial_env(cfg),
    ) as started:
        yield started


def _fit(wiring: Wiring, trainable: Any, path: str, retry_errored: bool) -> Any:
    if tune.Tuner.can_restore(path):
        tuner = tune.Tuner.restore(
            path,
            trainable=trainable,
            resume_unfinished=True,
            resume_errored=retry_errored,
        )
    else:  # a new Tune run: no study trials or rung records of an earlier, lost one
        for part in (wiring.searcher, wiring.scheduler):
            if hasattr(part, "start_fresh"):
                part.start_fresh()
        tuner = wiring.tuner(trainable)
    return tuner.fit()


# --------------------------------------------------------------------------- the search
@dataclass
class SearchOutcome:
    rows: list[dict[str, Any]]
    summary: dict[str, Any]
    complete: bool


def mlflow_ui_command(cfg: SearchConfig) -> str:
    return f"mlflow ui --backend-store-uri {cfg.tracking_uri}"


def corpus_input(cfg: SearchConfig) -> Any:
    """The search's corpus (every arm trains on the same data) as an MLflow dataset input."""
    train = cfg.base_train()
    manifest, folder = manifest_of(train.data, train.tokenizer)
    return corpus_dataset_input(manifest, folder, context="training")


def run_search(cfg: SearchConfig, *, retry_errored: bool = False) -> SearchOutcome:
    """Fit (or resume) the baselines and the search; write and return the ranked results.

    `cfg.out` must be an absolute folder; an empty `cfg.tracking_uri` means the SQLite store
    in it (as the CLI does)."""
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # CLIReporter instead of the new output
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "2")  # small state: save it often
    start = time.time()
    if not cfg.out or not os.path.isabs(cfg.out):
        raise ConfigError(f"SearchConfig.out={cfg.out!r} must be an absolute folder")
    if not cfg.tracking_uri:
        cfg = cfg.replace(tracking_uri=default_tracking_uri(cfg.out))
    check_baselines_from(cfg)
    exp = cfg.experiment_dir
    print(f"raygrow.search: experiment folder {exp}", flush=True)
    print(f"raygrow.search: MLflow experiment {cfg.experiment!r}: {mlflow_ui_command(cfg)}")
    tracker = get_tracker(cfg.tracking_uri, cfg.experiment)
    tracker.start_search(
        params=cfg.to_dict(),
        tags={
            "raygrow.search": str(exp),
            "raygrow.space": cfg.space,
            "raygrow.target": cfg.target.shape,
        },
        dataset=corpus_input(cfg),
    )

    def plan_of(config: dict[str, Any], trial_id: str) -> Any:
        return plan_trial(cfg, config, trial_id)

    infos: list[Any] = []
    complete = True
    with search_ray(cfg):
        trainable = make_trainable(cfg)
        for name, arms in baseline_stages(cfg):
            if not complete:
                break
            wiring = baseline_wiring(cfg, name, arms)
            grid = _fit(wiring, trainable, f"{cfg.tune_storage}/{name}", retry_errored)
            infos += results.collect_trials(grid, plan_of)
            complete = all(i.tune_status in ("TERMINATED", "ERROR") for i in infos)
        if complete and cfg.num_samples > 0:
            grid = _fit(
                search_wiring(cfg), trainable, f"{cfg.tune_storage}/{SEARCH}", retry_errored
            )
            found = results.collect_trials(grid, plan_of, _stop_texts(cfg))
            infos += found
            complete = len(found) >= search_trials(cfg) and all(
                i.tune_status in ("TERMINATED", "ERROR") for i in found
            )

    rows = results.build_rows(infos)
    summary = _summary(cfg, rows, time.time() - start, complete)
    results.write_tables(rows, summary, exp)
    for row in rows:  # speedups are known only now that every scratch budget has finished
        if row["speedup_vs_scratch"] is not None:
            tags = {
                "speedup_vs_scratch": row["speedup_vs_scratch"],
                "raygrow.speedup": row["speedup"],
            }
            if row["speedup_test"] is not None:  # at matched held-out test loss: reported only
                tags["speedup_test_vs_scratch"] = row["speedup_test_vs_scratch"]
                tags["raygrow.speedup_test"] = row["speedup_test"]
            _quiet(tracker.finish_trial, row["trial_id"], row["status"], tags, {})
    print()
    print(results.to_markdown(rows))
    print()
    for key in ("splits", "validity", "best", "counts"):
        print(f"raygrow.search: {key}: {summary[key]}")
    print(f"raygrow.search: cost: {_cost_text(summary)}")
    print(f"raygrow.search: results {exp / 'results.parquet'} and {exp / 'results.md'}")
    print(f"raygrow.search: MLflow experiment {cfg.experiment!r}: {mlflow_ui_command(cfg)}")
    if complete:
        _quiet(tracker.close_lost_trials, {row["trial_id"] for row in rows})
        _quiet(tracker.finish_search, pd.read_parquet(exp / "results.parquet"), summary)
    else:
        print(
            f"raygrow.search: the search was interrupted; continue it with "
            f"python -m raygrow.search --resume {exp}",
            file=sys.stderr,
        )
    return SearchOutcome(rows, summary, complete)


def _stop_texts(cfg: SearchConfig) -> dict[str, str]:
    """trial_id -> why ASHA stopped it (RecordingASHA's state file)."""
    return stop_texts(_asha_state_file(cfg))


def _summary(
    cfg: SearchConfig, rows: list[dict[str, Any]], seconds: float, complete: bool
) -> dict[str, Any]:

    check = validity(rows)
    counts = Counter(f"{r['arm']} {status_kind(r['status'])}" for r in rows)
    cost = results.ledger(rows)
    net = results.net_speedup(rows, cost["search_flops"])
    store = prefix_store_of(cfg)
    return {
        "experiment": cfg.experiment,
        "space": cfg.space,
        "target": cfg.target.shape,
        "budget": f"{cfg.tokens:,} tokens = {cfg.budget_flops:.3g} FLOPs for the target",
        "validity": check["text"].removeprefix("validity: "),
        "valid": check.get("valid"),
        "validity_margin": check.get("margin"),
        "splits": results.SPLITS_NOTE,
        "best": results.best_text(rows),
        "counts": ", ".join(f"{k}: {v}" for k, v in sorted(counts.items())),
        "complete": complete,
        "seconds": round(seconds, 1),
        **cost,
        **net,
        "prefix_store": store.summary() if store is not None else None,
        "tracking_uri": cfg.tracking_uri,
        "mlflow_ui": mlflow_ui_command(cfg),
    }


def _cost_text(summary: dict[str, Any]) -> str:
    spent, naive = summary["search_flops"], summary["search_flops_naive"]
    text = f"{spent:.3g} FLOPs computed ({naive:.3g} without the prefix store"
    if summary["sharing_ratio"] is not None:
        text += f", ratio {summary['sharing_ratio']:.2f}"
    text += ")"
    if summary["net_speedup"]:
        text += f"; speedup net of the search's cost {summary['net_speedup']}"
    store = summary.get("prefix_store")
    if store:
        text += (
            f"; prefix store {store['root']}: {store['checkpoints']} states of "
            f"{store['keys']} prefixes, {store['mb']:.1f}/{store['cap_mb']:.0f} MB"
        )
    return text


def _quiet(fn: Any, *args: Any) -> None:
    try:
        fn(*args)
    except Exception as exc:  # noqa: BLE001 - tracking must not fail the search
        print(f"raygrow.search: warning: MLflow: {type(exc).__name__}: {exc}", file=sys.stderr)
