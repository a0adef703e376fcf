"""The MLflow writer: `SearchTracker` logs one search (parent run) and its trials (children).

The search's Ray Tune callback (on the driver) owns one `SearchTracker` and calls it as trials
report. Everything goes through an explicit `MlflowClient` (never the fluent active-run API), so
it works from callback threads; a lock serialises the calls. The layout it writes is described
in `raygrow.tracking`.

MLflow, matplotlib and pandas are imported inside the methods that need them: together they
cost about 4 s to import, and `import raygrow.tracking` must stay cheap for the CLIs that only
check their store before any compute.
"""

from __future__ import annotations

import json
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from raygrow.results import status_kind
from raygrow.tracking import store
from raygrow.tracking.provenance import context_tags, package_versions
from raygrow.tracking.reader import run_curve
from raygrow.tracking.schema import (
    CONTRACT_METRICS,
    EXTRA_METRICS,
    MAX_PARAM_LEN,
    MAX_TAG_LEN,
    MLFLOW_STATUS,
    SEARCH_METRICS,
    TAG_ARM,
    TAG_OPERATORS,
    TAG_PARENT,
    TAG_ROLE,
    TAG_SEARCH,
    TAG_STATUS,
    TAG_STATUS_KIND,
    TAG_TRIAL,
    canonical_arm,
    clean_key,
    flatten,
    is_number,
    to_text,
)

# entries per `log_batch` call (MLflow's limits: 100 params/tags, 1000 metrics)
_BATCH_PARAMS = 100
_BATCH_METRICS = 1000


class SearchTracker:
    """Logs one search (parent run) and its trials (nested child runs) to an MLflow store."""

    def __init__(self, tracking_uri: str, experiment: str) -> None:
        from mlflow.tracking import MlflowClient

        self.tracking_uri = tracking_uri
        self.experiment = experiment
        self.metric_names = frozenset(CONTRACT_METRICS) | frozenset(EXTRA_METRICS)
        self.client = MlflowClient(tracking_uri=tracking_uri)
        self.experiment_id = self._experiment_id(experiment)
        self.parent_run_id: str | None = None
        self.search_id: str | None = None
        self.dataset: Any = None  # DatasetInput of the corpus, logged on every run
        self._context: dict[str, str] | None = None
        self._runs: dict[str, str] = {}  # trial_id -> run_id
        self._open: set[str] = set()  # runs known to be RUNNING
        self._search_tags: dict[str, Any] = {}  # `tag_search` before the parent run exists
        self._lock = threading.RLock()

    # ------------------------------------------------------------------------------ setup
    # the search calls it before constructing a tracker; see `store.check_reachable`
    check_reachable = staticmethod(store.check_reachable)

    def _experiment_id(self, name: str) -> str:
        from mlflow.exceptions import MlflowException

        exp = self.client.get_experiment_by_name(name)
        if exp is not None:
            if exp.lifecycle_stage == "deleted":
                self.client.restore_experiment(exp.experiment_id)
            return exp.experiment_id
        location = None
        db = store.sqlite_path(self.tracking_uri)
        if db is not None:  # else MLflow picks ./mlruns relative to the (Tune-changed) cwd
            location = (db.parent / "mlartifacts" / clean_key(name).replace("/", "_")).as_uri()
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
            extra = getattr(self, "_search_tags", {})
            all_tags = {**auto, **tags, **extra, TAG_ROLE: "search", TAG_SEARCH: search_id}
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

    def tag_search(self, tags: dict[str, Any]) -> None:
        """Tags of the parent run: logged now if it is started, else by `start_search`."""
        with self._lock:
            self._search_tags = {**getattr(self, "_search_tags", {}), **tags}
            if self.parent_run_id is not None:
                self._log_tags(self.parent_run_id, tags)

    @property
    def context_tags(self) -> dict[str, str]:
        """`context_tags()` of this process, resolved once."""
        if self._context is None:
            self._context = context_tags()
        return self._context

    def finish_search(self, ranked_table: Any, summary: dict) -> None:
        """Ranked table as tables/ranked.{csv,parquet,md,json}; summary as tags (+ numbers as
        metrics); the parent run ends FINISHED."""
        from raygrow.tracking.render import to_pandas, write_ranked_table

        with self._lock:
            run_id = self._require_parent()
            df = to_pandas(ranked_table)
            with tempfile.TemporaryDirectory(prefix="raygrow-ranked-") as tmp:
                write_ranked_table(df, Path(tmp))
                self.client.log_artifacts(run_id, tmp, artifact_path="tables")
            self.client.log_table(run_id, data=df, artifact_file="tables/ranked.json")
            flat = flatten(summary or {})
            self._log_tags(run_id, {f"summary.{k}": v for k, v in flat.items()})
            numeric = {k: float(v) for k, v in flat.items() if is_number(v)}
            numeric.update(
                {k: float(summary[k]) for k in SEARCH_METRICS if is_number(summary.get(k))}
            )
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
        canon = canonical_arm(arm)
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
                k: float(v) for k, v in metrics.items() if k in self.metric_names and is_number(v)
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
                numeric = {k: float(v) for k, v in values.items() if is_number(v)}
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
        if kind not in MLFLOW_STATUS:
            raise ValueError(f"finish_trial needs a final status, not {status!r}")
        with self._lock:
            run_id = self._run_of(trial_id)
            tags = dict(tags or {})
            final_step = self._last_step(run_id)
            numeric = {
                k: float(v) for k, v in tags.items() if k in self.metric_names and is_number(v)
            }
            self._log_metric_dict(run_id, numeric, step=final_step)
            self._log_tags(run_id, {**tags, TAG_STATUS: status, TAG_STATUS_KIND: kind})
            for name, obj in (artifacts or {}).items():
                self._log_artifact(run_id, str(name), obj)
            self._log_curve_plot(run_id, title=f"{trial_id} ({status})")
            self.client.set_terminated(run_id, status=MLFLOW_STATUS[kind])
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
            k, v = clean_key(key), to_text(value, MAX_PARAM_LEN)
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

        items = [RunTag(clean_key(k), to_text(v, MAX_TAG_LEN)) for k, v in tags.items()]
        for i in range(0, len(items), _BATCH_PARAMS):
            self.client.log_batch(run_id, tags=items[i : i + _BATCH_PARAMS])

    def _log_metric_dict(self, run_id: str, values: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(clean_key(k), v, now, step) for k, v in values.items()]
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
        from raygrow.tracking.render import loss_curve_figure

        fig = loss_curve_figure(curve, title)
        self.client.log_figure(run_id, fig, "plots/loss_vs_flops.png")


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
