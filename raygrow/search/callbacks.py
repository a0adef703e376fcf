"""Tune callbacks on the search driver: MLflow tracking of every trial as it runs.

`TrackingCallback` forwards Tune's trial events to `raygrow.tracking.SearchTracker` (one child
run per trial under the search's parent run): params at start, eval metrics at step = tokens,
the growth events each report carries (`growth_reports`, logged as they arrive), and at the end
the status (`completed` / `stopped by ASHA at FLOPs X` / `failed: reason`), for an ASHA stop its
reason (tag `raygrow.stop_reason`: rung, cutoff, value, trials at the rung), the schedule/train
config as artifacts and the tag `raygrow.checkpoint_artifact` (the `runs:/` URI of the newest
checkpoint the trial uploaded itself, see `raygrow.tracking.artifacts`). Everything comes from
the trial's reports and plan, never from files: on a cluster the trial's folder is on the node
that trained it. This is where post-trial bookkeeping must live: the trial's own code never
runs after ASHA stops it.

Tune pickles callbacks into the experiment folder (for `Tuner.restore`), so the callback holds
only plain settings; the tracker itself lives in a per-process cache (`get_tracker`). Tracking
never stops the search: an MLflow error is printed once per kind and the search goes on.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from ray.tune import Callback

from raygrow.search.config import SearchConfig
from raygrow.search.results import TrialInfo, one_line_error
from raygrow.search.trainable import CHECKPOINT_ARTIFACT_KEY, plan_trial
from raygrow.tracking.schema import TAG_CHECKPOINT_ARTIFACT
from raygrow.train.worker import GROWTH_REPORTS_KEY

_TRACKERS: dict[tuple[str, str], Any] = {}


def get_tracker(tracking_uri: str, experiment: str) -> Any:
    """The process's SearchTracker for (uri, experiment), created on first use."""
    key = (tracking_uri, experiment)
    if key not in _TRACKERS:
        from raygrow.tracking import SearchTracker

        _TRACKERS[key] = SearchTracker(tracking_uri, experiment)
    return _TRACKERS[key]


def trial_params(config: dict[str, Any]) -> dict[str, Any]:
    """MLflow params of a trial: its suggestions, description and growth sample."""
    return {k: v for k, v in config.items() if not k.startswith("_")}


class TrackingCallback(Callback):
    def __init__(self, search: dict[str, Any]) -> None:
        self.search = search
        self._cfg: SearchConfig | None = None
        self._warned: set[str] = set()
        self._last_step: dict[str, int] = {}
        self._finished: set[str] = set()
        self._params_logged: set[str] = set()
        self._checkpoint_uri: dict[str, str] = {}

    def __getstate__(self) -> dict[str, Any]:
        return {"search": self.search}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["search"])  # type: ignore[misc]

    # ------------------------------------------------------------------ helpers
    @property
    def cfg(self) -> SearchConfig:
        if self._cfg is None:
            self._cfg = SearchConfig.from_dict(self.search)
        return self._cfg

    @property
    def tracker(self) -> Any:
        return get_tracker(self.cfg.tracking_uri, self.cfg.experiment)

    def _safe(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - tracking must never stop the search
            if what not in self._warned:
                self._warned.add(what)
                print(
                    f"raygrow.search: warning: MLflow {what} failed ({type(exc).__name__}: "
                    f"{exc}); the search goes on",
                    file=sys.stderr,
                )
            return None

    def _plan(self, trial: Any) -> Any:
        return plan_trial(self.cfg, dict(trial.config), trial.trial_id)

    # ------------------------------------------------------------------ Tune hooks
    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        plan = self._safe("planning", self._plan, trial)
        arm = plan.arm if plan is not None else "grown"
        self._finished.discard(trial.trial_id)
        params = trial_params(trial.config)
        if plan is not None:
            params["seed"] = plan.seed  # every trial's training seed, replicate or not
        self._safe(
            "trial_run",
            self.tracker.trial_run,
            trial.trial_id,
            params,
            arm,
            run_name=plan.description if plan is not None and plan.description else None,
        )

    def on_trial_result(
        self, iteration: int, trials: list, trial: Any, result: dict, **info: Any
    ) -> None:
        if "tokens" not in result:
            return
        events = result.get(GROWTH_REPORTS_KEY)
        if events:  # a resumed trial re-reporting an event overwrites the same records
            self._safe(
                "log_growth_events", self.tracker.log_growth_events, trial.trial_id, list(events)
            )
        if result.get(CHECKPOINT_ARTIFACT_KEY):
            self._checkpoint_uri[trial.trial_id] = str(result[CHECKPOINT_ARTIFACT_KEY])
        step = int(result["tokens"])
        if step <= self._last_step.get(trial.trial_id, -1) and step > 0:
            return  # a resumed trial re-reporting what is logged already
        self._last_step[trial.trial_id] = step
        self._safe("log_metrics", self.tracker.log_metrics, trial.trial_id, result, step)
        if "precision" in result and trial.trial_id not in self._params_logged:
            self._params_logged.add(trial.trial_id)  # what `auto` resolved to where it ran
            params = {"precision": result["precision"]}
            self._safe("log_params", self.tracker.log_trial_params, trial.trial_id, params)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._finish(trial, error=None)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        text = None
        path = getattr(trial, "error_file", None)
        if path and Path(path).is_file():
            text = Path(path).read_text()
        self._finish(trial, error=one_line_error(text))

    def _finish(self, trial: Any, error: str | None) -> None:
        if trial.trial_id in self._finished:
            return
        self._finished.add(trial.trial_id)
        plan = self._safe("planning", self._plan, trial)
        info = TrialInfo(
            trial_id=trial.trial_id,
            arm=plan.arm if plan else "grown",
            schedule=plan.description if plan else "",
            tune_status="ERROR" if error is not None else "TERMINATED",
            planned_tokens=plan.train.tokens if plan else 0,
            last_result=dict(trial.last_result or {}),
            error=error,
        )
        status = info.status
        artifacts: dict[str, Any] = {}
        if plan is not None:
            artifacts["train_config.json"] = plan.train.to_dict()
            if plan.schedule is not None:
                artifacts["schedule.json"] = plan.schedule.to_dict()
        tags = {"raygrow.schedule": info.schedule}
        reason = self._stop_reason(trial) if status.startswith("stopped") else None
        if reason:
            tags["raygrow.stop_reason"] = reason
        checkpoint = self._checkpoint_uri.get(trial.trial_id) or info.last_result.get(
            CHECKPOINT_ARTIFACT_KEY
        )
        if checkpoint:
            tags[TAG_CHECKPOINT_ARTIFACT] = str(checkpoint)
        self._safe(
            "finish_trial", self.tracker.finish_trial, trial.trial_id, status, tags, artifacts
        )

    def _stop_reason(self, trial: Any) -> str | None:
        """Why ASHA stopped the trial (RecordingASHA's state file; None: not by ASHA)."""
        if self.cfg.scheduler != "asha" or not self.cfg.out:
            return None
        from raygrow.search.asha import state_path, stop_texts

        return stop_texts(state_path(self.cfg.experiment_dir)).get(trial.trial_id)
