"""MLflow tracking for growth-schedule searches: one parent run per search, one child per trial.

The search's Ray Tune callback (on the driver) owns one `SearchTracker` and calls it as trials
report. Everything goes through an explicit `MlflowClient` (never the fluent active-run API), so
it works from callback threads; a lock serialises the calls.

Layout in the store (one MLflow experiment per search space/target, see cli_contract.md):

    parent run   name "<experiment> <start time>" (e.g. `default-4x64 2026-12-03 17:40`)
                 tags raygrow.role=search, raygrow.search=<search id>
                 params: space, budget, target, seeds, ... (flattened)
                 tags: MLflow's own run context (`mlflow.source.*`, `mlflow.user`, git commit,
                 branch and repo URL from `resolve_tags`), package versions, raygrow.git_dirty;
                 input: the corpus manifest as a dataset (context "training");
                 at the end the ranked table under tables/
      child run  name: its schedule (`stack x4 @32%`, `scratch 4x64 @75% budget`)
                 tags raygrow.role=trial, raygrow.trial_id=<Tune trial id>, raygrow.arm=<arm>,
                 mlflow.parentRunId=<parent>, raygrow.status=<status text>, run context tags
                 params: the flattened schedule; metrics with step = tokens seen;
                 input: the same corpus dataset;
                 artifacts: growth/event-*.json, plots/loss_vs_flops.png, whatever the search adds

Run names are for people only: resume finds runs by the tags `raygrow.search` and
`raygrow.trial_id`, never by name.

Arms (tag `raygrow.arm`): `grown` (a growth schedule), `scratch` (the target model from scratch
with its own, annealed LR schedule at its budget; several budgets make the baseline frontier),
`small` (the source model only; the validity check needs it).

Resume: `start_search` reuses the newest parent run with the same `raygrow.search` tag, and
`trial_run` reuses the child with the same `raygrow.trial_id` under that parent, so restoring a
search never duplicates runs. Only this module and `raygrow.analysis` import mlflow, and neither
imports ray.
"""

from __future__ import annotations

import contextlib
import json
import numbers
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Iterator, Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

from raygrow.errors import ConfigError

# metric names shared by Ray reports, MLflow and exported tables (cli_contract.md)
CONTRACT_METRICS = (
    "val_loss",
    "val_bpb",
    "train_loss",
    "tokens",
    "flops",
    "tokens_per_s",
    "lr",
    "n_params",
    "speedup_vs_scratch",
)
# numeric extras the loop and the Ray worker report (elapsed_s: wall seconds since the
# attempt's first eval); anything else (Tune's autofilled
# time_this_iter_s, training_iteration, pid, ...) is not logged
EXTRA_METRICS = ("mfu", "n_layers", "d_model", "growth_events", "step", "grad_norm", "elapsed_s")
# per growth event, logged at step = the event's tokens
GROWTH_METRICS = (
    "growth_loss_before",
    "growth_loss_after",
    "growth_n_params_before",
    "growth_n_params_after",
    "growth_n_layers_after",
    "growth_d_model_after",
    "growth_flops",
    "growth_max_logit_diff",
)

TAG_ROLE = "raygrow.role"  # "search" | "trial"
TAG_SEARCH = "raygrow.search"
TAG_TRIAL = "raygrow.trial_id"
TAG_ARM = "raygrow.arm"
TAG_STATUS = "raygrow.status"
TAG_STATUS_KIND = "raygrow.status_kind"  # completed | stopped | failed | running
TAG_OPERATORS = "raygrow.operators"
TAG_CHECKPOINT = "raygrow.checkpoint_path"
TAG_PARENT = "mlflow.parentRunId"

ARMS = ("grown", "scratch", "small")
_ARM_ALIASES = {
    "grown": "grown",
    "growth": "grown",
    "schedule": "grown",
    "scratch": "scratch",
    "baseline": "scratch",
    "target": "scratch",
    "from_scratch": "scratch",
    "small": "small",
    "small_only": "small",
    "source": "small",
}
_MLFLOW_STATUS = {"completed": "FINISHED", "stopped": "KILLED", "failed": "FAILED"}
_BARE_SCHEMES = ("databricks", "databricks-uc", "uc")  # MLflow URIs without "://"

PACKAGES = ("raygrow", "torch", "ray", "optuna", "mlflow", "pyarrow", "numpy")
_MAX_PARAM_LEN = 6000
_MAX_TAG_LEN = 8000
_BATCH_PARAMS = 100
_BATCH_METRICS = 1000


TRACKING_URI_ENV = "MLFLOW_TRACKING_URI"


def resolve_tracking_uri(flag: str | None, default: str | None) -> str | None:
    """The store a CLI uses: `--tracking-uri`, else `$MLFLOW_TRACKING_URI`, else `default`."""
    if flag:
        return flag
    return os.environ.get(TRACKING_URI_ENV) or default


def tracking_uri_origin(flag: str | None) -> str | None:
    """Where `resolve_tracking_uri` took the URI from, for error messages (None: the flag or
    the default)."""
    if not flag and os.environ.get(TRACKING_URI_ENV):
        return f"set by ${TRACKING_URI_ENV}"
    return None


def default_tracking_uri(out_dir: str | Path) -> str:
    """The default store: `sqlite:////abs/<out_dir>/mlflow.db` (absolute: Tune changes cwd)."""
    return "sqlite:///" + str(Path(out_dir).expanduser().resolve() / "mlflow.db")


def sqlite_path(uri: str) -> Path | None:
    """Database file of a `sqlite:///...` URI (None for other schemes)."""
    if not uri.startswith("sqlite:"):
        return None
    if not uri.startswith("sqlite:///") or uri == "sqlite:///:memory:":
        raise ConfigError(
            f"tracking URI {uri!r} is not a sqlite file; use sqlite:////abs/path/mlflow.db"
        )
    return Path(uri[len("sqlite:///") :].split("?", 1)[0])


def flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dicts (and lists of dicts, e.g. schedule stages) -> {"a.b.0.c": scalar}."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, name + "."))
        elif _is_record_list(value):
            for i, item in enumerate(value):
                out.update(flatten(item, f"{name}.{i}."))
        else:
            out[name] = value
    return out


def _is_record_list(value: Any) -> bool:
    return (
        isinstance(value, list | tuple)
        and bool(value)
        and all(isinstance(v, Mapping) for v in value)
    )


def _clean_key(key: str) -> str:
    """MLflow keys allow alphanumerics, `_ - . / : space`; anything else becomes `_`."""
    clean = "".join(c if c.isalnum() or c in "_-./: " else "_" for c in str(key))
    return clean.strip("/").replace("..", "._")[:250] or "_"


def _to_text(value: Any, limit: int) -> str:
    if isinstance(value, str):
        text = value
    elif isinstance(value, list | tuple | dict):
        text = json.dumps(value, default=str, separators=(",", ":"))
    else:
        text = str(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def status_kind(status: str) -> str:
    """`completed` | `stopped by ASHA at FLOPs X` | `failed: reason` -> completed/stopped/failed."""
    text = status.strip().lower()
    for kind in _MLFLOW_STATUS:
        if text.startswith(kind):
            return kind
    raise ValueError(
        f"trial status {status!r} must start with 'completed', 'stopped' or 'failed' "
        "(e.g. 'stopped by ASHA at FLOPs 1.2e12', 'failed: NaN loss')"
    )


def package_versions() -> dict[str, str]:
    """Installed versions of the stack (read from metadata: nothing is imported)."""
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def context_tags() -> dict[str, str]:
    """MLflow's standard run-context tags, as `mlflow.start_run` would set them.

    `mlflow.tracking.context.registry.resolve_tags`: `mlflow.user`, `mlflow.source.name` and
    `.type`, and, when the program's main file is in a git checkout, `mlflow.source.git.commit`,
    `.branch` and `.repoURL`. When the main file is not (a test runner, an installed console
    script), the commit of the checkout holding this package is used, as before. Added on top:
    `raygrow.git_dirty` (MLflow has no such tag).
    """
    from mlflow.tracking.context.registry import resolve_tags

    tags = {str(k): str(v) for k, v in resolve_tags().items()}
    commit = git_commit()
    if commit is not None:
        tags.setdefault("mlflow.source.git.commit", commit[0])
        if tags["mlflow.source.git.commit"] == commit[0]:
            tags["raygrow.git_dirty"] = str(commit[1]).lower()
    return tags


def corpus_dataset_input(manifest: Any, folder: str | Path, context: str = "training") -> Any:
    """An MLflow `DatasetInput` describing a prepared token corpus (`raygrow.data.Manifest`).

    A metadata-only `mlflow.data.meta_dataset.MetaDataset`: name `<source> (<tokenizer>)`,
    digest = the first 16 hex digits of the manifest's `content_sha256`, source = the prepared
    folder; the profile holds the full hash and the token/document/byte counts of each split.
    Tagged `mlflow.data.context=<context>`.
    """
    import warnings

    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset
    from mlflow.entities import Dataset, DatasetInput, InputTag
    from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

    source = str(manifest.source)
    short = source if manifest.source_kind == "default" else Path(source).name or source
    with warnings.catch_warnings():  # "can be interpreted in multiple ways": both are local
        warnings.simplefilter("ignore")
        where = resolve_dataset_source(str(Path(folder).resolve()))
    meta = MetaDataset(
        where, name=f"{short} ({manifest.tokenizer})", digest=manifest.content_sha256[:16]
    )
    profile = {
        "content_sha256": manifest.content_sha256,
        "source": source,
        "source_kind": manifest.source_kind,
        "tokenizer": manifest.tokenizer,
        "vocab_size": manifest.vocab_size,
        "smoke_test": manifest.smoke_test,
        **{
            f"{split}_{key}": getattr(info, key)
            for split, info in sorted(manifest.splits.items())
            for key in ("tokens", "documents", "text_bytes")
        },
    }
    dataset = Dataset(**meta.to_dict(), profile=json.dumps(profile, sort_keys=True))
    return DatasetInput(dataset, tags=[InputTag(MLFLOW_DATASET_CONTEXT, context)])


def git_commit(path: str | Path | None = None) -> tuple[str, bool] | None:
    """(commit, dirty) of the repository holding `path` (default: this package), or None."""
    where = str(Path(path or __file__).resolve().parent)
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True, timeout=5
        )
        if commit.returncode:
            return None
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=where,
            capture_output=True,
            text=True,
            timeout=5,
        )
        return commit.stdout.strip(), bool(dirty.stdout.strip())
    except (OSError, subprocess.SubprocessError):
        return None


class SearchTracker:
    """Logs one search (parent run) and its trials (nested child runs) to an MLflow store."""

    def __init__(
        self,
        tracking_uri: str,
        experiment: str,
        *,
        extra_metrics: Iterable[str] = EXTRA_METRICS,
    ) -> None:
        from mlflow.tracking import MlflowClient  # lazy: keeps check_reachable light

        self.tracking_uri = tracking_uri
        self.experiment = experiment
        self.metric_names = frozenset(CONTRACT_METRICS) | frozenset(extra_metrics)
        self.client = MlflowClient(tracking_uri=tracking_uri)
        self.experiment_id = self._experiment_id(experiment)
        self.parent_run_id: str | None = None
        self.search_id: str | None = None
        self.dataset: Any = None  # DatasetInput of the corpus, logged on every run
        self._context: dict[str, str] | None = None
        self._runs: dict[str, str] = {}  # trial_id -> run_id
        self._open: set[str] = set()  # runs known to be RUNNING
        self._lock = threading.RLock()

    # ------------------------------------------------------------------------------ setup
    @staticmethod
    def check_reachable(uri: str, timeout_s: float = 5.0, *, origin: str | None = None) -> None:
        """Raise a one-line ConfigError if the store cannot be used; call before any compute.

        sqlite: the URI must be absolute and its folder writable (probed with a real temporary
        file; a missing folder is checked at its nearest existing parent, since the search
        creates it). http(s): the server must answer `/health` within `timeout_s`. Any other
        scheme must be one MLflow can build a client for (`foo://bar` is not). `origin` (e.g.
        "set by $MLFLOW_TRACKING_URI") is added to the message in parentheses.
        """
        try:
            _check_uri(uri, timeout_s)
        except ConfigError as exc:
            if origin is None:
                raise
            raise ConfigError(f"{exc} ({origin})") from None

    def _experiment_id(self, name: str) -> str:
        from mlflow.exceptions import MlflowException

        exp = self.client.get_experiment_by_name(name)
        if exp is not None:
            if exp.lifecycle_stage == "deleted":
                self.client.restore_experiment(exp.experiment_id)
            return exp.experiment_id
        location = None
        db = sqlite_path(self.tracking_uri)
        if db is not None:  # else MLflow picks ./mlruns relative to the (Tune-changed) cwd
            location = (db.parent / "mlartifacts" / _clean_key(name).replace("/", "_")).as_uri()
        try:
            return self.client.create_experiment(name, artifact_location=location)
        except MlflowException:  # created concurrently by another process
            exp = self.client.get_experiment_by_name(name)
            if exp is None:
                raise
            return exp.experiment_id

    # ------------------------------------------------------------------------------ search
    def start_search(self, params: dict, tags: dict, *, dataset: Any = None) -> str:
        """Create (or on resume reuse) the parent run; returns its run id.

        The parent is found by the tag `raygrow.search` (default: the experiment name), so pass
        a stable id there (e.g. the search's output folder) when one experiment holds several
        searches. Its name, `<experiment> <start time>`, is only for people (a resumed parent
        keeps its name). MLflow's run-context tags (`context_tags`) and package versions are
        added as tags. `dataset` (a `DatasetInput`, see `corpus_dataset_input`) is logged as
        the parent's input and as every child's.
        """
        with self._lock:
            tags = {str(k): v for k, v in (tags or {}).items()}
            search_id = str(tags.pop(TAG_SEARCH, self.experiment))
            auto = {f"raygrow.version.{k}": v for k, v in package_versions().items()}
            auto.update(self.context_tags)
            all_tags = {**auto, **tags, TAG_ROLE: "search", TAG_SEARCH: search_id}
            found = self._search(
                f"tags.`{TAG_ROLE}` = 'search' and tags.`{TAG_SEARCH}` = '{_quote(search_id)}'",
                order_by=["attributes.start_time DESC"],
            )
            if found:
                run_id = found[0].info.run_id
                self.client.update_run(run_id, status="RUNNING")
                all_tags["raygrow.resumed_at"] = time.strftime("%Y-%m-%dT%H:%M:%S")
            else:
                name = f"{self.experiment} {time.strftime('%Y-%m-%d %H:%M')}"
                run = self.client.create_run(self.experiment_id, run_name=name)
                run_id = run.info.run_id
            self._log_params(run_id, flatten(params or {}))
            self._log_tags(run_id, all_tags)
            self.dataset = dataset
            if dataset is not None:
                self.client.log_inputs(run_id, datasets=[dataset])
            self.parent_run_id, self.search_id = run_id, search_id
            return run_id

    @property
    def context_tags(self) -> dict[str, str]:
        """`context_tags()` of this process, resolved once."""
        if self._context is None:
            self._context = context_tags()
        return self._context

    def finish_search(self, ranked_table: Any, summary: dict) -> None:
        """Ranked table as tables/ranked.{csv,parquet,md,json}; summary as tags (+ numbers as
        metrics); the parent run ends FINISHED."""
        from raygrow.analysis.tables import to_markdown

        with self._lock:
            run_id = self._require_parent()
            df = _to_pandas(ranked_table)
            with tempfile.TemporaryDirectory(prefix="raygrow-ranked-") as tmp:
                df.to_csv(Path(tmp) / "ranked.csv", index=False)
                df.to_parquet(Path(tmp) / "ranked.parquet", index=False)
                (Path(tmp) / "ranked.md").write_text(to_markdown(df) + "\n")
                self.client.log_artifacts(run_id, tmp, artifact_path="tables")
            self.client.log_table(run_id, data=df, artifact_file="tables/ranked.json")
            flat = flatten(summary or {})
            self._log_tags(run_id, {f"summary.{k}": v for k, v in flat.items()})
            numeric = {k: float(v) for k, v in flat.items() if _is_number(v)}
            self._log_metric_dict(run_id, numeric, step=0)
            self.client.set_terminated(run_id, status="FINISHED")

    # ------------------------------------------------------------------------------ trials
    def trial_run(
        self, trial_id: str, params: dict, arm: str, *, run_name: str | None = None
    ) -> str:
        """The child run of `trial_id` (created once per search; reused on resume).

        `run_name` (default: the trial id) is what people see in the UI, e.g. the schedule
        `stack x4 @32%`; the run is found again by its `raygrow.trial_id` tag, never by name.
        """
        canon = _ARM_ALIASES.get(str(arm).lower())
        if canon is None:
            raise ValueError(f"unknown arm {arm!r}; use one of {ARMS}")
        with self._lock:
            parent = self._require_parent()
            run_id = self._runs.get(trial_id) or self._find_trial(trial_id)
            if run_id is None:
                run = self.client.create_run(
                    self.experiment_id,
                    run_name=str(run_name or trial_id),
                    tags={
                        **self.context_tags,
                        TAG_PARENT: parent,
                        TAG_ROLE: "trial",
                        TAG_TRIAL: str(trial_id),
                        TAG_ARM: canon,
                        TAG_SEARCH: self.search_id or self.experiment,
                        TAG_STATUS: "running",
                        TAG_STATUS_KIND: "running",
                    },
                )
                run_id = run.info.run_id
                self._open.add(run_id)
                if self.dataset is not None:
                    self.client.log_inputs(run_id, datasets=[self.dataset])
            self._runs[trial_id] = run_id
            self._log_params(run_id, flatten(params or {}))
            return run_id

    def log_trial_params(self, trial_id: str, params: dict[str, Any]) -> None:
        """Params a trial learns only while running (e.g. its resolved `precision`)."""
        with self._lock:
            self._log_params(self._run_of(trial_id), params)

    def log_metrics(self, trial_id: str, metrics: dict, step: int) -> None:
        """Numeric contract metrics (+ extras such as mfu) at step = tokens seen."""
        with self._lock:
            run_id = self._run_of(trial_id)
            if run_id not in self._open:  # a resumed trial logs again: show it as running
                if self.client.get_run(run_id).info.status != "RUNNING":
                    self.client.update_run(run_id, status="RUNNING")
                self._open.add(run_id)
            keep = {
                k: float(v) for k, v in metrics.items() if k in self.metric_names and _is_number(v)
            }
            self._log_metric_dict(run_id, keep, step=int(step))

    def log_growth_events(self, trial_id: str, events: list[dict]) -> None:
        """Per event: metrics at step = the event's tokens and `growth/event-<stage>.json`.

        Events are `GrowthReport.to_dict()` plus the loop's `tokens`, `flops`, `step`, `stage`.
        Logging the same event again (resume) overwrites its artifact and re-logs the same
        metric values, which MLflow keeps as duplicate points at the same step (harmless).
        """
        with self._lock:
            run_id = self._run_of(trial_id)
            existing = self.client.get_run(run_id).data.tags.get(TAG_OPERATORS, "")
            operators = [op for op in existing.split(",") if op]
            for i, event in enumerate(events):
                stage = int(event.get("stage", i))
                step = int(event.get("tokens", 0))
                after = event.get("config_after") or {}
                values = {
                    "growth_loss_before": event.get("loss_before"),
                    "growth_loss_after": event.get("loss_after"),
                    "growth_n_params_before": event.get("n_params_before"),
                    "growth_n_params_after": event.get("n_params_after"),
                    "growth_n_layers_after": after.get("n_layers"),
                    "growth_d_model_after": after.get("d_model"),
                    "growth_flops": event.get("flops"),
                    "growth_max_logit_diff": event.get("max_logit_diff"),
                }
                numeric = {k: float(v) for k, v in values.items() if _is_number(v)}
                self._log_metric_dict(run_id, numeric, step=step)
                self.client.log_dict(run_id, _jsonable(event), f"growth/event-{stage:02d}.json")
                op = str(event.get("operator", ""))
                if op and op not in operators:
                    operators.append(op)
            if operators:
                self._log_tags(run_id, {TAG_OPERATORS: ",".join(operators)})

    def finish_trial(self, trial_id: str, status: str, tags: dict, artifacts: dict) -> None:
        """End a trial: status tag + MLflow status, extra tags, artifacts, loss-vs-FLOPs PNG.

        `status`: "completed" -> FINISHED, "stopped ..." -> KILLED, "failed: ..." -> FAILED.
        `artifacts`: name -> Path (a file or folder, uploaded under `name`) or a JSON-able object
        (written as `name`, `.json` added when missing). A numeric `speedup_vs_scratch` tag is
        also logged as a metric. Calling it again (resume) overwrites.
        """
        kind = status_kind(status)
        with self._lock:
            run_id = self._run_of(trial_id)
            tags = dict(tags or {})
            final_step = self._last_step(run_id)
            numeric = {
                k: float(v) for k, v in tags.items() if k in self.metric_names and _is_number(v)
            }
            self._log_metric_dict(run_id, numeric, step=final_step)
            self._log_tags(run_id, {**tags, TAG_STATUS: status, TAG_STATUS_KIND: kind})
            for name, obj in (artifacts or {}).items():
                self._log_artifact(run_id, str(name), obj)
            self._log_curve_plot(run_id, title=f"{trial_id} ({status})")
            self.client.set_terminated(run_id, status=_MLFLOW_STATUS[kind])
            self._open.discard(run_id)

    def close_lost_trials(self, known: set[str]) -> list[str]:
        """End the children still `running` whose trial is not in `known` (the finished
        search's trials): a driver killed before Tune saved its state loses the trials it had
        just started, and Tune runs their schedules again as new trials. Returns their ids."""
        lost = []
        with self._lock:
            runs = self.client.search_runs(
                [self.experiment_id],
                filter_string=f"tags.`{TAG_PARENT}` = '{self._require_parent()}' and "
                f"tags.`{TAG_STATUS_KIND}` = 'running'",
                max_results=10_000,
            )
            for run in runs:
                trial_id = run.data.tags.get(TAG_TRIAL)
                if trial_id and trial_id not in known:
                    self._runs[trial_id] = run.info.run_id
                    lost.append(trial_id)
        status = "failed: lost when the search driver died before Tune recorded this trial"
        for trial_id in lost:
            self.finish_trial(trial_id, status, {}, {})
        return lost

    # ------------------------------------------------------------------------------ internals
    def _require_parent(self) -> str:
        if self.parent_run_id is None:
            raise RuntimeError("call SearchTracker.start_search(...) before logging trials")
        return self.parent_run_id

    def _search(self, filter_string: str, order_by: list[str] | None = None) -> list:
        return list(
            self.client.search_runs(
                [self.experiment_id], filter_string=filter_string, max_results=50, order_by=order_by
            )
        )

    def _find_trial(self, trial_id: str) -> str | None:
        found = self._search(
            f"tags.`{TAG_TRIAL}` = '{_quote(trial_id)}' and "
            f"tags.`{TAG_PARENT}` = '{self._require_parent()}'",
            order_by=["attributes.start_time ASC"],
        )
        return found[0].info.run_id if found else None

    def _run_of(self, trial_id: str) -> str:
        run_id = self._runs.get(trial_id) or self._find_trial(trial_id)
        if run_id is None:
            raise KeyError(f"trial {trial_id!r} has no run; call trial_run() first")
        self._runs[trial_id] = run_id
        return run_id

    def _log_params(self, run_id: str, params: dict[str, Any]) -> None:
        """Log new params; a changed value on resume becomes a tag (params are immutable)."""
        from mlflow.entities import Param

        existing = self.client.get_run(run_id).data.params
        new, changed = [], {}
        for key, value in params.items():
            k, v = _clean_key(key), _to_text(value, _MAX_PARAM_LEN)
            if k not in existing:
                new.append(Param(k, v))
            elif existing[k] != v:
                changed[f"raygrow.param_changed.{k}"] = v
        for i in range(0, len(new), _BATCH_PARAMS):
            self.client.log_batch(run_id, params=new[i : i + _BATCH_PARAMS])
        if changed:
            self._log_tags(run_id, changed)

    def _log_tags(self, run_id: str, tags: dict[str, Any]) -> None:
        from mlflow.entities import RunTag

        items = [RunTag(_clean_key(k), _to_text(v, _MAX_TAG_LEN)) for k, v in tags.items()]
        for i in range(0, len(items), _BATCH_PARAMS):
            self.client.log_batch(run_id, tags=items[i : i + _BATCH_PARAMS])

    def _log_metric_dict(self, run_id: str, values: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(_clean_key(k), v, now, step) for k, v in values.items()]
        for i in range(0, len(items), _BATCH_METRICS):
            self.client.log_batch(run_id, metrics=items[i : i + _BATCH_METRICS])

    def _last_step(self, run_id: str) -> int:
        hist = self.client.get_metric_history(run_id, "val_loss")
        return max((m.step for m in hist), default=0)

    def _log_artifact(self, run_id: str, name: str, obj: Any) -> None:
        if isinstance(obj, Path):
            if obj.is_dir():
                self.client.log_artifacts(run_id, str(obj), artifact_path=name)
            elif obj.is_file():
                folder = str(Path(name).parent) if "/" in name else None
                with tempfile.TemporaryDirectory(prefix="raygrow-art-") as tmp:
                    target = Path(tmp) / Path(name).name
                    target.write_bytes(obj.read_bytes())  # keep `name`, not the file's own
                    self.client.log_artifact(run_id, str(target), artifact_path=folder)
            else:
                self._log_tags(run_id, {f"raygrow.missing_artifact.{name}": str(obj)})
            return
        file = name if name.endswith(".json") else name + ".json"
        self.client.log_dict(run_id, _jsonable(obj), file)

    def _log_curve_plot(self, run_id: str, title: str) -> None:
        curve = run_curve(self.client, run_id)
        if not curve["flops"]:
            return
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        fig = Figure(figsize=(6.4, 4.0), dpi=100)
        FigureCanvasAgg(fig)
        # fixed margins: tight_layout costs ~1 s per figure with log axes on a busy CPU
        ax = fig.add_axes((0.11, 0.12, 0.85, 0.8))
        ax.plot(curve["flops"], curve["val_loss"], marker=".", lw=1.2, label="val_loss")
        for tokens, flops in curve["growth"]:
            ax.axvline(flops, color="tab:red", ls=":", lw=1)
            ax.annotate(
                f"grow @ {tokens:.3g} tok",
                (flops, 0.03),
                xycoords=("data", "axes fraction"),
                fontsize=7,
                color="tab:red",
                rotation=90,
                va="bottom",
                ha="right",
            )
        ax.set_xscale("log")
        ax.set_xlabel("training FLOPs")
        ax.set_ylabel("val_loss (nats/token)")
        ax.set_title(title, fontsize=9)
        ax.grid(alpha=0.3)
        self.client.log_figure(run_id, fig, "plots/loss_vs_flops.png")


# ---------------------------------------------------------------------------------- helpers
def run_curve(client: Any, run_id: str) -> dict[str, list]:
    """(tokens, flops, val_loss) of a run joined on step, plus growth events as (tokens, flops)."""
    loss = {m.step: m.value for m in client.get_metric_history(run_id, "val_loss")}
    flops = {m.step: m.value for m in client.get_metric_history(run_id, "flops")}
    tokens = {m.step: m.value for m in client.get_metric_history(run_id, "tokens")}
    steps = sorted(s for s in loss if s in flops)
    out: dict[str, list] = {
        "tokens": [float(tokens.get(s, s)) for s in steps],
        "flops": [float(flops[s]) for s in steps],
        "val_loss": [float(loss[s]) for s in steps],
        "growth": [],
    }
    for m in client.get_metric_history(run_id, "growth_flops"):
        out["growth"].append((float(m.step), float(m.value)))
    out["growth"] = sorted(set(out["growth"]))
    return out


def checkpoint_of_run(tracking_uri: str, run_id: str, download_to: str | Path) -> Path:
    """Where a trial's final checkpoint is (used by `python -m raygrow.export`).

    Looked up in this order: tag `raygrow.checkpoint_path`, tag `checkpoint_path`, param
    `checkpoint_path` (a file, or a run's checkpoints folder: its newest ckpt-*.pt), then the
    run's artifacts `checkpoints/` or `checkpoint/` (downloaded into `download_to`).
    """
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    try:
        run = client.get_run(run_id)
    except MlflowException as exc:
        raise ConfigError(
            f"run {run_id!r} not found in {tracking_uri} ({exc.error_code}); check --run-id and "
            "--tracking-uri"
        ) from None
    recorded = (
        run.data.tags.get(TAG_CHECKPOINT)
        or run.data.tags.get("checkpoint_path")
        or run.data.params.get("checkpoint_path")
    )
    if recorded:
        path = Path(recorded)
        if not path.exists():
            raise ConfigError(
                f"run {run_id} records checkpoint {recorded!r}, which does not exist on this "
                "machine; copy it here and pass --checkpoint PATH"
            )
        return path
    for folder in ("checkpoints", "checkpoint"):
        if client.list_artifacts(run_id, folder):
            return Path(client.download_artifacts(run_id, folder, dst_path=str(download_to)))
    raise ConfigError(
        f"run {run_id} has no checkpoint recorded (tag {TAG_CHECKPOINT}, param checkpoint_path "
        "or artifacts checkpoints/); pass --checkpoint PATH"
    )


@contextlib.contextmanager
def local_server(
    backend_uri: str,
    *,
    port: int | None = None,
    artifacts_dir: str | Path | None = None,
    timeout_s: float = 120.0,
    log_file: str | Path | None = None,
    command: str = "server",
) -> Iterator[str]:
    """Run `mlflow server` (or `mlflow ui`: `command="ui"`, the same server) on 127.0.0.1 for
    the duration of a `with` block; yields its URL.

    The server gets its own process group (it starts a uvicorn child), which is stopped by that
    id on exit: SIGTERM, then SIGKILL after 15 s. MLflow's background job runner is switched off
    (`MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false`: it would start seven more processes). With
    `artifacts_dir`, artifacts are proxied through the server (`mlflow-artifacts:/`).
    """
    port = port or free_port()
    cmd = [sys.executable, "-m", "mlflow", command, "--backend-store-uri", backend_uri,
           "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]  # fmt: skip
    if artifacts_dir is not None:
        cmd += ["--artifacts-destination", Path(artifacts_dir).resolve().as_uri()]
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    log = open(log_file, "ab") if log_file else subprocess.DEVNULL  # noqa: SIM115
    proc = subprocess.Popen(
        cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"mlflow server exited with code {proc.returncode}: {cmd}")
            try:
                with urllib.request.urlopen(url + "/health", timeout=2) as resp:
                    if resp.status == 200:
                        break
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"mlflow server on {url} did not answer in {timeout_s:g}s")
            time.sleep(0.5)
        yield url
    finally:
        _stop_group(proc)
        if log is not subprocess.DEVNULL:
            log.close()


def _stop_group(proc: subprocess.Popen) -> None:
    """SIGTERM the process group led by `proc` (its own session); SIGKILL what lingers."""
    for sig, grace in ((signal.SIGTERM, 15.0), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        end = time.monotonic() + grace
        while time.monotonic() < end:
            proc.poll()  # reap the leader; its children (uvicorn) may take a moment longer
            try:
                os.killpg(proc.pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.2)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _quote(text: str) -> str:
    return str(text).replace("\\", "\\\\").replace("'", "\\'")


def _jsonable(obj: Any) -> Any:
    """Round-trip through JSON with str() for anything unknown (tensors, Paths, dataclasses)."""
    return json.loads(json.dumps(obj, default=_json_default, allow_nan=True))


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if hasattr(obj, "to_dict"):
        return obj.to_dict()
    return str(obj)


def _to_pandas(table: Any):  # -> pandas.DataFrame
    import pandas as pd

    if isinstance(table, pd.DataFrame):
        return table
    if hasattr(table, "to_pandas"):  # pyarrow.Table
        return table.to_pandas()
    return pd.DataFrame(table)


def _check_sqlite(uri: str, db: Path) -> None:
    if not db.is_absolute():
        raise ConfigError(
            f"tracking URI {uri!r} is relative (Tune changes each trial's working directory); "
            f"use an absolute one: sqlite:///{db.resolve()}"
        )
    if db.exists():
        if db.is_dir():
            raise ConfigError(f"tracking database {db} is a folder; point --tracking-uri at a file")
        with db.open("rb") as fh:
            head = fh.read(16)
        if head and head != b"SQLite format 3\x00":
            raise ConfigError(f"{db} is not a SQLite database; choose another --tracking-uri")
    folder = db.parent
    while not folder.exists():
        folder = folder.parent
    if not folder.is_dir():
        raise ConfigError(
            f"cannot create the tracking database {db}: {folder} is a file, not a folder; "
            "choose another --tracking-uri or --out"
        )
    try:
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".raygrow-probe-"):
            pass
    except OSError as exc:
        raise ConfigError(
            f"cannot write the tracking database in {folder} ({exc.strerror}); choose a writable "
            "--out or --tracking-uri sqlite:////writable/path/mlflow.db"
        ) from None


def _check_uri(uri: str, timeout_s: float) -> None:
    if uri in _BARE_SCHEMES or uri.startswith("databricks"):
        _check_other(uri)
        return
    if uri.startswith("file:") or "://" not in uri and not uri.startswith("sqlite:"):
        raise ConfigError(
            f"tracking URI {uri!r} is a file store, which MLflow 3 refuses; use "
            "sqlite:////abs/path/mlflow.db or http://host:port"
        )
    db = sqlite_path(uri)
    if db is not None:
        _check_sqlite(uri, db)
    elif uri.startswith(("http://", "https://")):
        _check_http(uri, timeout_s)
    else:  # postgresql, mysql, ...: MLflow builds (and for SQL, connects to) its store
        _check_other(uri)


def _check_other(uri: str) -> None:
    """A URI that is neither sqlite nor http(s): MLflow must be able to build a client for it."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient
    from mlflow.tracking.registry import UnsupportedModelRegistryStoreURIException

    fix = "use --tracking-uri sqlite:////abs/path/mlflow.db or http://host:port"
    try:
        MlflowClient(tracking_uri=uri)
    except UnsupportedModelRegistryStoreURIException as exc:
        scheme = uri.split("://", 1)[0] if "://" in uri else uri.split(":", 1)[0]
        known = ", ".join(s for s in exc.supported_uri_schemes if s and s != "file")
        raise ConfigError(
            f"tracking URI {uri!r}: MLflow has no store for the scheme {scheme!r} (it knows "
            f"{known}); {fix}"
        ) from None
    except (MlflowException, ImportError, OSError, ValueError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
        raise ConfigError(f"MLflow cannot use tracking URI {uri!r} ({first}); {fix}") from None


def _check_http(uri: str, timeout_s: float) -> None:
    base = uri.rstrip("/")
    deadline = time.monotonic() + timeout_s
    reason = "no answer"
    for path in ("/health", "/api/2.0/mlflow/experiments/search?max_results=1"):
        left = deadline - time.monotonic()
        if left <= 0:
            break
        try:
            with urllib.request.urlopen(base + path, timeout=left) as resp:
                if resp.status == 200:
                    return
                reason = f"HTTP {resp.status}"
        except urllib.error.HTTPError as exc:
            reason = f"HTTP {exc.code}"
            if exc.code in (401, 403):  # answers, needs credentials: MLflow will say so
                return
        except (urllib.error.URLError, OSError) as exc:
            reason = str(getattr(exc, "reason", exc))
            break  # connection refused / timeout: the second path will not do better
    raise ConfigError(
        f"MLflow server {uri} did not answer within {timeout_s:g}s ({reason}); start it with "
        "`mlflow server --backend-store-uri sqlite:////abs/path/mlflow.db --host 127.0.0.1 "
        "--port 5000` or use --tracking-uri sqlite:////abs/path/mlflow.db"
    )


__all__ = [
    "ARMS",
    "CONTRACT_METRICS",
    "EXTRA_METRICS",
    "SearchTracker",
    "checkpoint_of_run",
    "context_tags",
    "corpus_dataset_input",
    "default_tracking_uri",
    "flatten",
    "local_server",
    "resolve_tracking_uri",
    "tracking_uri_origin",
]
