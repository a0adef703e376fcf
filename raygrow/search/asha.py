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
  state not yet saved) is stopped again at its first report;
- growth-aware stopping (issue 15): the loss right after a growth event mispredicts the final
  loss, so a report within `growth_lag_tokens` tokens after the trial's last growth
  (`tokens - last_growth_tokens < growth_lag_tokens`) is neither judged nor recorded at any
  rung. A rung milestone passed inside the lag is remembered (in the state file) and judged,
  with the trial's value then, at its first report after the lag - also when that report has
  passed a higher rung too (Ray's bracket alone would record only the higher one). The stop
  reason says whether the lag applied (`lag_deferred`, `growth_lag_tokens`). A trial that
  ends inside its lag (`on_trial_complete`) has its final value recorded at the rungs it
  passed, as Ray records a final result, without a judgement.
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
    """One line: `rung 1.2e+12 FLOPs: val_loss 2.4310 worse than cutoff 2.3012 of 3 trials`,
    with `; judged after growth lag (N tokens)` appended when the growth lag deferred it."""
    cutoff = reason.get("cutoff")
    cut = f"{cutoff:.4f}" if isinstance(cutoff, int | float) else str(cutoff)
    text = (
        f"rung {float(reason['rung_flops']):.3g} FLOPs: {reason.get('metric', 'value')} "
        f"{float(reason['value']):.4f} worse than cutoff {cut} of {reason['n_at_rung']} trials"
    )
    if reason.get("lag_deferred"):  # absent in state files written before growth-aware stopping
        lag = reason.get("growth_lag_tokens")
        text += (
            f"; judged after growth lag ({int(lag)} tokens)" if lag else "; judged after growth lag"
        )
    return text


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

    def judge_at(self, trial: Any, milestone: float, cur_rew: float | None) -> str:
        """Ray's decision and record at one given rung (a rung deferred by the growth lag,
        which `on_result` would skip once the trial has passed a higher rung); sets `last`."""
        self.last = None
        for m, recorded in self._rungs:
            if float(m) != float(milestone) or trial.trial_id in recorded:
                continue
            cutoff = self.cutoff(recorded)
            stop = cutoff is not None and cur_rew is not None and cur_rew < cutoff
            if cur_rew is not None:
                recorded[trial.trial_id] = cur_rew
                self.last = {
                    "milestone": float(m),
                    "cutoff": None if cutoff is None else float(cutoff),
                    "reward": float(cur_rew),
                    "n_at_rung": len(recorded) - 1,
                }
            return TrialScheduler.STOP if stop else TrialScheduler.CONTINUE
        return TrialScheduler.CONTINUE


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
        growth_lag_tokens: int = 0,
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
        self.growth_lag_tokens = int(growth_lag_tokens or 0)
        # trial_id -> rungs passed inside the growth lag, not yet judged: one dict per rung
        # (milestone, and the flops / tokens / last_growth_tokens of the report that passed it)
        self.lag_deferred: dict[str, list[dict[str, Any]]] = {}
        self._loaded = False

    # ------------------------------------------------------------------ persistence
    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.__dict__.setdefault("growth_lag_tokens", 0)  # pickled before growth-aware stopping
        self.__dict__.setdefault("lag_deferred", {})
        self._loaded = False  # an unpickled scheduler (Tuner.restore) reads the file again

    def start_fresh(self) -> None:
        """A new search in this folder: forget any state file left by an earlier one."""
        if self.state_file and Path(self.state_file).exists():
            Path(self.state_file).unlink()
        for _, recorded in self._rungs_all():
            recorded.clear()
        self.stop_reasons = {}
        self.lag_deferred = {}
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
            "growth_lag_tokens": self.growth_lag_tokens,
            "lag_deferred": self.lag_deferred,
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
        self.lag_deferred = {  # absent in state files written before growth-aware stopping
            tid: [dict(d) for d in rungs] for tid, rungs in state.get("lag_deferred", {}).items()
        }

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
        tid = trial.trial_id
        if tid in self.stop_reasons:  # stopped before a restart: stays stopped
            return TrialScheduler.STOP
        bracket = self._trial_info.get(tid)
        if bracket is not None:
            bracket.last = None
        judged = (
            bracket is not None
            and self._time_attr in result
            and self._metric in result
            and not (result[self._time_attr] >= self._max_t and self._stop_last_trials)
        )
        if judged and self._in_lag(result):
            if self._defer(bracket, tid, result):
                self.save_state()
            return TrialScheduler.CONTINUE  # nothing judged or recorded inside the lag
        deferred = self.lag_deferred.get(tid, []) if judged else []
        if deferred:  # first report after the lag: judge the rungs passed inside it first
            reward = self._metric_op * result[self._metric]
            for rung in sorted(deferred, key=lambda d: float(d["milestone"])):
                action = bracket.judge_at(trial, rung["milestone"], reward)
                if action == TrialScheduler.STOP:
                    self._num_stopped += 1
                    self._stop(tid, bracket.last, result, rung)
                    return action
            del self.lag_deferred[tid]
            bracket.last = None
        action = super().on_trial_result(tune_controller, trial, result)
        last = getattr(bracket, "last", None)
        if last is not None or deferred:
            if last is not None and action == TrialScheduler.STOP:
                self.stop_reasons[tid] = self._reason(last, result)
            self.save_state()
        return action

    def on_trial_complete(self, tune_controller: Any, trial: Any, result: dict) -> None:
        self._ensure_loaded()
        tid = trial.trial_id
        bracket = self._trial_info.get(tid)
        if bracket is not None:
            bracket.last = None
        super().on_trial_complete(tune_controller, trial, result)
        changed = getattr(bracket, "last", None) is not None
        deferred = self.lag_deferred.pop(tid, None)
        if deferred:  # ended inside (or right after) its lag: the final value at those rungs
            changed = True
            if bracket is not None and self._metric in result:
                reward = self._metric_op * result[self._metric]
                for rung in deferred:
                    bracket.judge_at(trial, rung["milestone"], reward)  # record, no stop
        if changed:
            self.save_state()

    def on_trial_remove(self, tune_controller: Any, trial: Any) -> None:
        super().on_trial_remove(tune_controller, trial)
        if self.lag_deferred.pop(trial.trial_id, None) is not None:
            self.save_state()

    # ------------------------------------------------------------------ growth lag
    def _in_lag(self, result: dict) -> bool:
        """The report lies within `growth_lag_tokens` tokens after the trial's last growth."""
        if self.growth_lag_tokens <= 0:
            return False
        tokens, grown = _num(result.get("tokens")), _num(result.get("last_growth_tokens"))
        return tokens is not None and grown is not None and tokens - grown < self.growth_lag_tokens

    def _defer(self, bracket: _RecordingBracket, tid: str, result: dict) -> bool:
        """Remember the rungs this in-lag report has passed unrecorded; True if any is new.

        Without `stop_last_trials` Ray never records a trial below a rung it is recorded at
        (a rung jumped over stays empty), so such rungs are not deferred either."""
        now = result[self._time_attr]
        known = {float(d["milestone"]) for d in self.lag_deferred.get(tid, [])}
        if not self._stop_last_trials:
            done = [float(m) for m, recorded in bracket._rungs if tid in recorded]
            known |= {float(m) for m, _ in bracket._rungs if done and float(m) < max(done)}
        new = [
            {
                "milestone": float(milestone),
                self._time_attr: _num(now),
                "tokens": _num(result.get("tokens")),
                "last_growth_tokens": _num(result.get("last_growth_tokens")),
            }
            for milestone, recorded in bracket._rungs
            if now >= milestone and tid not in recorded and float(milestone) not in known
        ]
        if new:
            self.lag_deferred.setdefault(tid, []).extend(new)
        return bool(new)

    def _stop(
        self, tid: str, last: dict[str, Any] | None, result: dict, rung: dict[str, Any]
    ) -> None:
        if last is not None:
            reason = self._reason(last, result)
            reason.update(
                lag_deferred=True,
                deferred_at_flops=rung.get(self._time_attr),
                last_growth_tokens=rung.get("last_growth_tokens"),
                tokens=_num(result.get("tokens")),
            )
            self.stop_reasons[tid] = reason
        self.lag_deferred.pop(tid, None)
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
            "lag_deferred": False,
            "growth_lag_tokens": self.growth_lag_tokens,
        }


def _num(value: Any) -> float | None:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None
