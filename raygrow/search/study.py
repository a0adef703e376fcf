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
- **Seed replicates** (`--seeds 0,1,2`). One Optuna trial is one schedule; it runs as one Tune
  trial per seed (the config's `seed` key), asked once and handed to the next Tune trials in
  turn. ASHA sees every replicate as a trial of its own (a rung compares single runs, which is
  what its cutoffs are made of). Optuna gets the first seed's intermediate values and is told
  once every replicate ended: COMPLETE with the mean over seeds, PRUNED if ASHA stopped any,
  FAIL if any failed; the per-seed values are the trial's user attribute
  `raygrow.seed_values`.
- **Warm start** (`--warm-start guidelines.csv`, `raygrow.search.warm_start`). The CLI enqueues
  the guideline's schedules into the persisted study before the search starts; `ask` hands
  out enqueued trials first, so they are the first sampled trials (replicated across seeds
  like any other). They carry WARM_START_ATTR; a study that has them is never enqueued to
  again (`--resume`), and `start_fresh` keeps them.
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
SEED_KEY = "seed"
"""The Tune config key of a seed replicate's training seed (`raygrow.search.trainable`)."""
SEEDS_ATTR = "raygrow.seed_values"
WARM_START_ATTR = "raygrow.warm_start"
"""User attribute of a trial enqueued by `--warm-start`: {rank, params, predicted}."""

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


def enqueue_warm_start(study: optuna.Study, entries: list[dict[str, Any]]) -> int:
    """Enqueue each entry's `params` as the study's next trials, in order, marked with
    WARM_START_ATTR; nothing when the study holds warm-start trials already (a resumed search
    must not enqueue them twice). Returns how many were enqueued."""
    if warm_start_entries(study):
        return 0
    for rank, entry in enumerate(entries):
        attr = {**entry, "rank": rank}
        study.enqueue_trial(dict(entry["params"]), user_attrs={WARM_START_ATTR: attr})
    return len(entries)


def warm_start_entries(study: optuna.Study) -> list[dict[str, Any]]:
    """The study's warm-start trials (any state) as WARM_START_ATTR values, in rank order."""
    found = [
        t.user_attrs[WARM_START_ATTR]
        for t in study.get_trials(deepcopy=False)
        if WARM_START_ATTR in t.user_attrs
    ]
    return sorted(found, key=lambda entry: entry.get("rank", 0))


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


class GrowthOptunaSearch(OptunaSearch):
    """OptunaSearch with raygrow's study conventions (see the module doc).

    `stop_file`: the `RecordingASHA` state file whose stop reasons mark trials PRUNED (None:
    no early stopping, e.g. `--scheduler fifo`).
    """

    def __init__(
        self,
        *args: Any,
        stop_file: str | None = None,
        seeds: tuple[int, ...] = (),
        **kwargs: Any,
    ) -> None:
        self.stop_file = stop_file
        self.seeds = tuple(seeds)
        self._queued: list[tuple[str, dict, int]] = []
        """(primary Tune trial, params, seed) replicates waiting for a Tune trial."""
        self._primary: dict[str, str] = {}
        """Tune trial -> the Tune trial that asked Optuna for its parameters."""
        self._outcomes: dict[str, dict[str, tuple[str, float | None]]] = {}
        """primary -> Tune trial -> (COMPLETE | PRUNED | FAIL, value) of finished replicates."""
        self._seeds_given: dict[str, int] = {}
        self._group_params: dict[str, dict] = {}
        """primary -> the parameters Optuna suggested for its group."""
        super().__init__(*args, **kwargs)

    # ------------------------------------------------------------------ study life cycle
    def start_fresh(self) -> None:
        """A new search in this folder: drop a study an earlier, unrestorable one left (its
        `--warm-start` trials are enqueued again, first)."""
        if self._storage is None or self._ot_study is None:
            return
        if self._ot_study.trials:
            warm = warm_start_entries(self._ot_study)
            optuna.delete_study(study_name=self._study_name, storage=self._storage)
            self._ot_trials = {}
            self._completed_trials = set()
            self._setup_study(self._mode)
            enqueue_warm_start(self._ot_study, warm)  # --warm-start's schedules still go first

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

    # ------------------------------------------------------------------ seed replicates
    def _replicated(self) -> bool:
        return len(getattr(self, "seeds", ())) > 1  # a searcher pickled before replicates

    def _group_of(self, trial_id: str) -> str:
        return self._primary.get(trial_id, trial_id)

    def _replicate_done(
        self, trial_id: str, result: dict | None, error: bool, stopped: bool
    ) -> None:
        """Record one replicate's end; tell Optuna once every replicate of the group ended:
        FAIL if any failed, PRUNED (the primary's value) if ASHA stopped any, else COMPLETE
        with the mean over seeds."""
        group = self._group_of(trial_id)
        value = (result or {}).get(self.metric) if isinstance(self.metric, str) else None
        state = "FAIL" if error or not _finite(value) else "PRUNED" if stopped else "COMPLETE"
        outcomes = self._outcomes.setdefault(group, {})
        outcomes[trial_id] = (state, float(value) if _finite(value) else None)
        self._completed_trials.add(trial_id)
        if len(outcomes) < len(self.seeds):  # a group has one Tune trial per seed
            return
        ot_trial = self._ot_trials.get(group)
        if ot_trial is None:
            return
        states = [st for st, _ in outcomes.values()]
        values = [v for _, v in outcomes.values() if v is not None]
        per_seed = {str(self._seed_of(t)): v for t, (_, v) in outcomes.items()}
        try:
            ot_trial.set_user_attr(SEEDS_ATTR, per_seed)
            if "FAIL" in states:
                self._ot_study.tell(ot_trial, state=TrialState.FAIL)
            elif "PRUNED" in states:
                self._ot_study.tell(ot_trial, state=TrialState.PRUNED)
            else:
                self._ot_study.tell(ot_trial, sum(values) / len(values))
        except Exception as exc:  # noqa: BLE001 - e.g. told already before a restart
            logger.warning("Optuna: cannot tell replicate group %s: %s", group, exc)

    def _seed_of(self, trial_id: str) -> int:
        return self._seeds_given.get(trial_id, self.seeds[0])

    # ------------------------------------------------------------------ Searcher API
    def suggest(self, trial_id: str) -> dict | None:
        if not self._replicated():
            params = self._suggest(trial_id)
            if params is not None and getattr(self, "seeds", ()):
                params = {**params, SEED_KEY: self.seeds[0]}
            return params
        if trial_id in self._seeds_given:  # asked again (restore): the same answer
            params = self._group_params.get(self._group_of(trial_id))
            if params is not None:
                return {**params, SEED_KEY: self._seeds_given[trial_id]}
        if self._queued:
            group, params, seed = self._queued.pop(0)
            self._primary[trial_id] = group
            self._seeds_given[trial_id] = seed
            return {**params, SEED_KEY: seed}
        params = self._suggest(trial_id)
        if params is None:
            return None
        self._group_params[trial_id] = params
        self._seeds_given[trial_id] = self.seeds[0]
        self._queued += [(trial_id, params, seed) for seed in self.seeds[1:]]
        return {**params, SEED_KEY: self.seeds[0]}

    def _suggest(self, trial_id: str) -> dict | None:
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
        if trial_id in self._primary:  # Optuna's intermediate values are the first seed's
            return None
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
        if self._replicated():
            if trial_id in self._completed_trials:
                return None
            stopped = bool(result) and not error
            stopped = stopped and trial_id in asha.stop_reasons(self.stop_file)
            if trial_id not in self._primary:
                self._adopt(trial_id)
                if result and not error:
                    self._report_last(trial_id, result)
            return self._replicate_done(trial_id, result, error, stopped)
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

    def _report_last(self, trial_id: str, result: dict) -> None:
        ot_trial = self._ot_trials.get(trial_id)
        value = result.get(self.metric)
        if ot_trial is not None and _finite(value):
            self._report(ot_trial, float(value), result)

    @staticmethod
    def _report(ot_trial: optuna.trial.Trial, value: float, result: dict) -> None:
        step = result.get(STEP_KEY, result.get("training_iteration"))
        if not _finite(step):
            return
        with warnings.catch_warnings():  # a resumed trial re-reports steps: Optuna keeps the first
            warnings.simplefilter("ignore", UserWarning)
            ot_trial.report(value, int(step))
