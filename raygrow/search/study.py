"""The Optuna side of the search: a study persisted in the experiment folder, Optuna's states.

`GrowthOptunaSearch` is Ray's `OptunaSearch` (Ray 2.60 accepts `storage=` and `study_name=`
and creates the study with `load_if_exists=True`) with raygrow's conventions:

- **Persisted study.** `optuna.db` (SQLite) in the experiment folder, study name = the MLflow
  experiment name: `optuna-dashboard sqlite:///<folder>/optuna.db` shows the search while it
  runs, and `--resume` continues the same study (Tune restores the pickled searcher; its
  `RDBStorage` reconnects to the same file).
- **States.** A trial ASHA stopped is told PRUNED, with its last value reported as an
  intermediate value at its last FLOPs step (Optuna then records that value as the pruned
  trial's value); a trial that ends with a non-finite loss or an error is FAIL; the others are
  COMPLETE. Intermediate values are reported at step = FLOPs (Tune's training_iteration
  restarts when a trial resumes, FLOPs do not). Tune calls the searcher's
  `on_trial_complete` after an ASHA stop with the trial's last result, exactly as after a
  natural end; the stop is told apart by the stop reasons `RecordingASHA` writes
  (`raygrow.search.asha`).
- **No duplicates on resume.** The database is written at once, the searcher's pickle only with
  Tune's periodic experiment checkpoint. A driver killed between an `ask` and the next
  checkpoint leaves a RUNNING trial that no Tune trial owns; the next `suggest` takes that trial
  (and its stored parameters) instead of asking a new one. Each trial carries its Tune trial id
  as the user attribute `ray_trial_id`, which is how ownership is decided. A trial told
  (COMPLETE/PRUNED/FAIL) before such a kill, which Tune then runs again from its checkpoint,
  keeps what the study was told: its repeated reports and end are ignored.
"""

from __future__ import annotations

import logging
import math
import warnings
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState
from ray.tune.search.optuna import OptunaSearch

from raygrow.search import asha

STUDY_FILE = "optuna.db"
TRIAL_ID_ATTR = "ray_trial_id"
STOP_REASON_ATTR = "raygrow.stop_reason"
STEP_KEY = "flops"

logger = logging.getLogger(__name__)


def study_path(experiment_dir: str | Path) -> Path:
    return Path(experiment_dir) / STUDY_FILE


def storage_url(experiment_dir: str | Path) -> str:
    return f"sqlite:///{study_path(experiment_dir).resolve()}"


def make_storage(experiment_dir: str | Path) -> optuna.storages.RDBStorage:
    Path(experiment_dir).mkdir(parents=True, exist_ok=True)
    return optuna.storages.RDBStorage(storage_url(experiment_dir))


def load_study(experiment_dir: str | Path, study_name: str) -> optuna.Study:
    """The persisted study of a search folder (for tests and analysis)."""
    return optuna.load_study(study_name=study_name, storage=storage_url(experiment_dir))


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


class GrowthOptunaSearch(OptunaSearch):
    """OptunaSearch with raygrow's study conventions (see the module doc).

    `stop_file`: the `RecordingASHA` state file whose stop reasons mark trials PRUNED (None:
    no early stopping, e.g. `--scheduler fifo`).
    """

    def __init__(self, *args: Any, stop_file: str | None = None, **kwargs: Any) -> None:
        self.stop_file = stop_file
        super().__init__(*args, **kwargs)

    # ------------------------------------------------------------------ study life cycle
    def start_fresh(self) -> None:
        """A new search in this folder: drop a study an earlier, unrestorable one left."""
        if self._storage is None or self._ot_study is None:
            return
        if self._ot_study.trials:
            optuna.delete_study(study_name=self._study_name, storage=self._storage)
            self._ot_trials = {}
            self._completed_trials = set()
            self._setup_study(self._mode)

    def _owned(self) -> set[int]:
        return {t._trial_id for t in self._ot_trials.values()}

    def _orphan(self) -> optuna.trial.Trial | None:
        """A RUNNING trial no live Tune trial owns (asked just before a kill), if any."""
        owned = self._owned()
        known = set(self._ot_trials)
        for frozen in self._ot_study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            tid = frozen.user_attrs.get(TRIAL_ID_ATTR)
            if frozen._trial_id not in owned and (tid is None or tid not in known):
                return optuna.trial.Trial(self._ot_study, frozen._trial_id)
        return None

    def _adopt(self, trial_id: str) -> optuna.trial.Trial | None:
        """The study's trial of a Tune trial the restored searcher pickle does not know (the
        driver died between saving Tune's state and the searcher's)."""
        if trial_id in self._ot_trials:
            return self._ot_trials[trial_id]
        for frozen in self._ot_study.get_trials(deepcopy=False):
            if frozen.user_attrs.get(TRIAL_ID_ATTR) == trial_id:
                ot_trial = optuna.trial.Trial(self._ot_study, frozen._trial_id)
                self._ot_trials[trial_id] = ot_trial
                if frozen.state.is_finished():
                    self._completed_trials.add(trial_id)
                return ot_trial
        return None

    # ------------------------------------------------------------------ Searcher API
    def suggest(self, trial_id: str) -> dict | None:
        if self._ot_study is not None and trial_id not in self._ot_trials:
            orphan = self._orphan()
            if orphan is not None:
                logger.info("trial %s continues Optuna trial %d", trial_id, orphan.number)
                self._ot_trials[trial_id] = orphan
        params = super().suggest(trial_id)
        ot_trial = self._ot_trials.get(trial_id)
        if ot_trial is not None:
            ot_trial.set_user_attr(TRIAL_ID_ATTR, trial_id)
        return params

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if isinstance(self.metric, list) or trial_id in self._completed_trials:
            return super().on_trial_result(trial_id, result)
        value = result.get(self.metric)
        ot_trial = self._adopt(trial_id)
        if ot_trial is None or not _finite(value) or trial_id in self._completed_trials:
            return None
        try:
            self._report(ot_trial, float(value), result)
        except optuna.exceptions.UpdateFinishedTrialError:
            # told before a kill that came ahead of Tune's experiment checkpoint: Tune runs
            # the trial again from its checkpoint, the study keeps what it was told
            self._completed_trials.add(trial_id)
        return None

    def on_trial_complete(
        self, trial_id: str, result: dict | None = None, error: bool = False
    ) -> None:
        if trial_id not in self._completed_trials:
            self._adopt(trial_id)
        value = (result or {}).get(self.metric) if isinstance(self.metric, str) else None
        if isinstance(value, float) and not math.isfinite(value):
            result, error = None, True  # a NaN/inf value: FAIL, never left RUNNING in the study
        reason = None
        if result and not error and trial_id not in self._completed_trials:
            reason = asha.stop_reasons(self.stop_file).get(trial_id)
        if reason is None or trial_id not in self._ot_trials or not _finite(value):
            return super().on_trial_complete(trial_id, result=result, error=error)
        ot_trial = self._ot_trials[trial_id]
        try:
            self._report(ot_trial, float(value), result or {})
            ot_trial.set_user_attr(STOP_REASON_ATTR, asha.describe(reason))
            self._ot_study.tell(ot_trial, state=TrialState.PRUNED)
        except Exception as exc:  # noqa: BLE001 - e.g. told already before a restart
            logger.warning("Optuna: cannot tell trial %s PRUNED: %s", trial_id, exc)
        self._completed_trials.add(trial_id)
        return None

    @staticmethod
    def _report(ot_trial: optuna.trial.Trial, value: float, result: dict) -> None:
        step = result.get(STEP_KEY, result.get("training_iteration"))
        if not _finite(step):
            return
        with warnings.catch_warnings():  # a resumed trial re-reports steps: Optuna keeps the first
            warnings.simplefilter("ignore", UserWarning)
            ot_trial.report(value, int(step))
