"""Say when a finished trial's Ray Train worker group still holds its CPUs (instead of waiting).

Only trials with several workers run a nested `TorchTrainer`, whose worker placement group is
freed after the trial by Train V2's detached `PlacementGroupCleaner` (it polls the State API).
If that cleaner cannot reach the State API, the group stays reserved, and on a small cluster
the next trial's worker group can never start. `PlacementGroupWatch` attributes each worker
group to the trial that was running when it appeared and, once a trial has ended, prints one
line naming the trial if its group is still reserved after `grace_s`.

Worker groups are told apart from Tune's own trial groups by their bundles: a nested trial's
Tune bundle holds the `train_driver` resource, a Train worker bundle only CPUs/GPUs.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

from ray.tune import Callback

GRACE_S = 30.0
"""The cleaner frees a stopped run's group within ~5 s when it works."""
POLL_S = 5.0


def worker_groups(table: dict[str, dict[str, Any]], driver_resource: str) -> dict[str, float]:
    """Reserved Train worker groups in `ray.util.placement_group_table()`: id -> CPUs held."""
    out: dict[str, float] = {}
    for pg_id, info in table.items():
        if info.get("state") == "REMOVED":
            continue
        bundles = list((info.get("bundles") or {}).values())
        if not bundles or any(driver_resource in b for b in bundles):
            continue
        out[pg_id] = sum(float(b.get("CPU", 0.0)) for b in bundles)
    return out


class PlacementGroupWatch(Callback):
    def __init__(self, driver_resource: str, grace_s: float = GRACE_S) -> None:
        self.driver_resource = driver_resource
        self.grace_s = grace_s
        self._owner: dict[str, str] = {}  # placement group id -> trial id
        self._ended: dict[str, float] = {}  # trial id -> monotonic end time
        self._said: set[str] = set()
        self._next_poll = 0.0

    def __getstate__(self) -> dict[str, Any]:  # Tune pickles callbacks with the experiment
        return {"driver_resource": self.driver_resource, "grace_s": self.grace_s}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(**state)  # type: ignore[misc]

    def _table(self) -> dict[str, float]:
        import ray

        try:
            return worker_groups(ray.util.placement_group_table(), self.driver_resource)
        except Exception:  # noqa: BLE001 - a watch must never stop the search
            return {}

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info):
        for pg_id in self._table():
            self._owner.setdefault(pg_id, trial.trial_id)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._ended.setdefault(trial.trial_id, time.monotonic())

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._ended.setdefault(trial.trial_id, time.monotonic())

    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        now = time.monotonic()
        if not self._ended or now < self._next_poll:
            return
        self._next_poll = now + POLL_S
        for line in self.leaks(self._table(), now):
            print(line, file=sys.stderr, flush=True)

    def leaks(self, reserved: dict[str, float], now: float) -> list[str]:
        """One line per ended trial whose worker group is still reserved after the grace."""
        lines = []
        for pg_id, cpus in reserved.items():
            trial_id = self._owner.get(pg_id)
            ended = self._ended.get(trial_id or "")
            if trial_id is None or ended is None or pg_id in self._said:
                continue
            if now - ended >= self.grace_s:
                self._said.add(pg_id)
                api = os.environ.get("RAY_API_SERVER_ADDRESS", "unset")
                lines.append(
                    f"raygrow.search: trial {trial_id} ended {now - ended:.0f} s ago but its Ray "
                    f"Train worker group {pg_id[:12]} still holds {cpus:g} CPUs (Train's "
                    f"placement-group cleaner cannot reach the State API, "
                    f"RAY_API_SERVER_ADDRESS={api}); later trials may wait for those CPUs"
                )
        return lines
