"""ASHA that writes down why it stopped a trial and survives a driver restart.

Tune's `AsyncHyperBandScheduler` keeps its rung records (the value of every trial that reached
each rung) only in memory, and `Tuner.restore` brings back the scheduler pickled in `tuner.pkl`
when the search *started* (Ray 2.60: `TuneController` never calls `scheduler.save/restore`).
A resumed search then compares schedules against empty rungs and lets through what the
uninterrupted search would have stopped (issue 13, item 6).

`RecordingASHA` keeps the same decisions as Ray's ASHA (the cutoff logic is Ray's own
`_Bracket.on_result`) and adds:

- a state file (`asha_state.json` in the experiment folder), written atomically whenever a
  rung record changes and loaded on first use, so a scheduler unpickled by `Tuner.restore`
  continues from the records the killed search had made;
- a stop reason per stopped trial: the rung (FLOPs), the cutoff, the trial's value and the
  number of trials recorded at the rung before it. The reasons live in the same state file,
  where the tracking callback (`raygrow.stop_reason`), the results table and the Optuna
  searcher (PRUNED, not COMPLETE) read them;
- a trial stopped before a kill that Tune resumes anyway (its STOP was decided, the experiment
  state not yet saved) is stopped again at its first report.
"""

from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path
from typing import Any

from ray.tune.schedulers import AsyncHyperBandScheduler, TrialScheduler
from ray.tune.schedulers.async_hyperband import _Bracket

STATE_FILE = "asha_state.json"
STATE_VERSION = 1


def state_path(experiment_dir: str | Path) -> Path:
    return Path(experiment_dir) / STATE_FILE


def load_state(path: str | Path | None) -> dict[str, Any]:
    """The saved state (`{}` when there is none, or it cannot be read)."""
    if not path or not Path(path).is_file():
        return {}
    try:
        state = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        print(f"raygrow.search: warning: cannot read {path} ({exc})", file=sys.stderr)
        return {}
    return state if isinstance(state, dict) else {}


def stop_reasons(path: str | Path | None) -> dict[str, dict[str, Any]]:
    """trial_id -> stop reason (rung_flops, cutoff, value, n_at_rung, metric) of ASHA stops."""
    return dict(load_state(path).get("stops", {}))


def describe(reason: dict[str, Any]) -> str:
    """One line: `rung 1.2e+12 FLOPs: val_loss 2.4310 worse than cutoff 2.3012 of 3 trials`."""
    cutoff = reason.get("cutoff")
    cut = f"{cutoff:.4f}" if isinstance(cutoff, int | float) else str(cutoff)
    return (
        f"rung {float(reason['rung_flops']):.3g} FLOPs: {reason.get('metric', 'value')} "
        f"{float(reason['value']):.4f} worse than cutoff {cut} of {reason['n_at_rung']} trials"
    )


def stop_texts(path: str | Path | None) -> dict[str, str]:
    """trial_id -> `describe(reason)`."""
    return {tid: describe(r) for tid, r in stop_reasons(path).items()}


class _RecordingBracket(_Bracket):
    """Ray's bracket; after each `on_result`, `last` says at which rung the trial was just
    recorded, against which cutoff and how many other records (None: nothing recorded)."""

    last: dict[str, Any] | None = None

    def on_result(self, trial: Any, cur_iter: Any, cur_rew: float | None) -> str:
        before = [trial.trial_id in recorded for _, recorded in self._rungs]
        action = super().on_result(trial, cur_iter, cur_rew)
        self.last = None
        for (milestone, recorded), was in zip(self._rungs, before, strict=True):
            if not was and trial.trial_id in recorded:
                others = {k: v for k, v in recorded.items() if k != trial.trial_id}
                cutoff = self.cutoff(others)
                self.last = {
                    "milestone": float(milestone),
                    "cutoff": None if cutoff is None else float(cutoff),
                    "reward": float(recorded[trial.trial_id]),
                    "n_at_rung": len(others),
                }
        return action


class RecordingASHA(AsyncHyperBandScheduler):
    """`ASHAScheduler` with persisted rung records and stop reasons (see the module doc)."""

    def __init__(
        self,
        *,
        time_attr: str,
        metric: str,
        mode: str,
        max_t: float,
        grace_period: float,
        reduction_factor: float = 4,
        brackets: int = 1,
        stop_last_trials: bool = True,
        state_file: str | None = None,
    ) -> None:
        super().__init__(
            time_attr=time_attr,
            metric=metric,
            mode=mode,
            max_t=max_t,
            grace_period=grace_period,
            reduction_factor=reduction_factor,
            brackets=brackets,
            stop_last_trials=stop_last_trials,
        )
        self._brackets = [
            _RecordingBracket(
                grace_period, max_t, reduction_factor, s, stop_last_trials=stop_last_trials
            )
            for s in range(brackets)
        ]
        self.state_file = state_file
        self.stop_reasons: dict[str, dict[str, Any]] = {}
        self._loaded = False

    # ------------------------------------------------------------------ persistence
    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._loaded = False  # an unpickled scheduler (Tuner.restore) reads the file again

    def start_fresh(self) -> None:
        """A new search in this folder: forget any state file left by an earlier one."""
        if self.state_file and Path(self.state_file).exists():
            Path(self.state_file).unlink()
        for _, recorded in self._rungs_all():
            recorded.clear()
        self.stop_reasons = {}
        self._num_stopped = 0
        self._loaded = True

    def _rungs_all(self) -> list[tuple[float, dict[str, float]]]:
        return [rung for bracket in self._brackets for rung in bracket._rungs]

    def state(self) -> dict[str, Any]:
        return {
            "version": STATE_VERSION,
            "time_attr": self._time_attr,
            "metric": self._metric,
            "mode": self._mode,
            "max_t": self._max_t,
            "brackets": [
                [[milestone, dict(recorded)] for milestone, recorded in b._rungs]
                for b in self._brackets
            ],
            "stops": self.stop_reasons,
            "num_stopped": self._num_stopped,
        }

    def save_state(self) -> None:
        if not self.state_file:
            return
        path = Path(self.state_file)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(self.state(), indent=1, sort_keys=True))
        os.replace(tmp, path)

    def load_state(self, state: dict[str, Any]) -> None:
        """Put saved rung records back (in place: `_trial_info` keeps its brackets)."""
        saved = state.get("brackets", [])
        if len(saved) != len(self._brackets):
            raise ValueError(
                f"{self.state_file}: {len(saved)} brackets, expected {len(self._brackets)}"
            )
        for bracket, rungs in zip(self._brackets, saved, strict=True):
            if [float(m) for m, _ in rungs] != [float(m) for m, _ in bracket._rungs]:
                raise ValueError(f"{self.state_file}: rung milestones differ from this search's")
            for (_, recorded), (_, values) in zip(bracket._rungs, rungs, strict=True):
                recorded.clear()
                recorded.update({k: float(v) for k, v in values.items()})
        self.stop_reasons = dict(state.get("stops", {}))
        self._num_stopped = int(state.get("num_stopped", len(self.stop_reasons)))

    def _ensure_loaded(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        state = load_state(self.state_file)
        if state:
            self.load_state(state)
            n = sum(len(r) for _, r in self._rungs_all())
            print(
                f"raygrow.search: ASHA restored {n} rung records and "
                f"{len(self.stop_reasons)} stops from {self.state_file}",
                flush=True,
            )

    # ------------------------------------------------------------------ Tune hooks
    def on_trial_add(self, tune_controller: Any, trial: Any) -> None:
        self._ensure_loaded()
        super().on_trial_add(tune_controller, trial)

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict) -> str:
        self._ensure_loaded()
        if trial.trial_id in self.stop_reasons:  # stopped before a restart: stays stopped
            return TrialScheduler.STOP
        bracket = self._trial_info.get(trial.trial_id)
        if bracket is not None:
            bracket.last = None
        action = super().on_trial_result(tune_controller, trial, result)
        last = getattr(bracket, "last", None)
        if last is not None:
            if action == TrialScheduler.STOP:
                self.stop_reasons[trial.trial_id] = self._reason(last, result)
            self.save_state()
        return action

    def on_trial_complete(self, tune_controller: Any, trial: Any, result: dict) -> None:
        self._ensure_loaded()
        bracket = self._trial_info.get(trial.trial_id)
        if bracket is not None:
            bracket.last = None
        super().on_trial_complete(tune_controller, trial, result)
        if getattr(bracket, "last", None) is not None:
            self.save_state()

    def _reason(self, last: dict[str, Any], result: dict) -> dict[str, Any]:
        sign = self._metric_op or 1.0  # rung records hold metric_op * value (min: -loss)
        cutoff = last["cutoff"]
        return {
            "rung_flops": last["milestone"],
            "cutoff": None if cutoff is None else sign * cutoff,
            "value": sign * last["reward"],
            "n_at_rung": last["n_at_rung"],
            "metric": self._metric,
            "mode": self._mode,
            self._time_attr: _num(result.get(self._time_attr)),
        }


def _num(value: Any) -> float | None:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None
