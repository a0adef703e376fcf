"""The prefix store: pre-growth training states that later runs resume instead of retraining.

Two runs that start from the same model with the same seed, data, batch geometry and LR
schedule are identical until the first growth of either (data order is a pure function of
(seed, position), init of the seed; resume is bit-identical). So a run leaves the states of its
*un-grown* phase here, and a later run whose prefix matches resumes the latest stored state at
or before its own first growth, then trains the rest itself. Nothing is ever waited for: a run
that finds nothing trains from step 0.

**Keys.** Everything that determines the state at step k: the start model, every trajectory
field of the TrainConfig but the budget, evaluation cadence and windows (the validation curve
drives slope triggers and is replayed), micro-batching, threads, device, and the data's
content hash. The budget enters through the LR schedule:

- cosine: the LR at every step depends on the total, so the total is part of the key;
- WSD and constant: the LR does not depend on the total before the cooldown (WSD) or at all
  (constant), so runs of *different budgets* share one **trunk** up to their decay start
  (`trunk_until`). Steps after it (the cooldown, the final evaluation) go to a **branch** key
  that adds the total. A WSD scratch frontier is then one trunk with a cooldown branch per
  budget, each bit-identical to a separate run to that budget.

**What is stored.** Per key a folder `<root>/<digest>/` with `key.json` (the key's fields),
and per stored step `step-<k>.json` (the run's evaluation records up to k, replayed by the
resuming run so its curve is complete) and `step-<k>.pt` (the checkpoint). Written at every
evaluation of the un-grown phase, just before the first growth, at `landmarks` (e.g. the
decay starts of a search's baseline budgets) and at the end of an un-grown run (a finished
baseline a later search reuses). Files are written atomically; a damaged checkpoint is skipped
with a warning and removed. The store has a size cap: the least recently used steps go first.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from raygrow.config import ModelConfig
from raygrow.errors import CheckpointError
from raygrow.flops import flops_per_token
from raygrow.train.config import TRAJECTORY_FIELDS, TrainConfig
from raygrow.train.state import TrainState, load_checkpoint, save_checkpoint

if TYPE_CHECKING:
    from raygrow.schedule import GrowthSchedule

KEY_FILE = "key.json"
MB = 1 << 20


def wsd_decay_start(total_steps: int, decay_frac: float) -> int:
    """First step of a WSD run's cooldown (the rule of `raygrow.train.lr.LRSchedule`)."""
    return total_steps - max(1, round(decay_frac * total_steps))


@dataclass(frozen=True)
class PrefixKey:
    fields: dict[str, Any]
    """What determines the state (JSON-ready), without the budget."""
    total_steps: int
    trunk_until: int
    """Last step whose state does not depend on the budget (cosine: the total itself)."""
    budget_in_trunk: bool
    """cosine: the trunk key already holds the total."""

    @property
    def trunk(self) -> str:
        extra = {"total_steps": self.total_steps} if self.budget_in_trunk else {}
        return _digest({**self.fields, **extra})

    @property
    def branch(self) -> str:
        return _digest({**self.fields, "total_steps": self.total_steps})

    def digest_for(self, step: int) -> str:
        """Where the state at `step` of this run is stored."""
        return self.trunk if step <= self.trunk_until else self.branch


def _digest(fields: dict[str, Any]) -> str:
    text = json.dumps(fields, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def prefix_key(
    config: TrainConfig, model: ModelConfig, data_id: str, *, threads: int, device: str
) -> PrefixKey:
    """The key of a run's un-grown phase: `model` is the start model actually built."""
    values = config.to_dict()
    fields = {k: values[k] for k in TRAJECTORY_FIELDS if k != "tokens"}
    fields.update(
        model=model.to_dict(),
        data_id=data_id,
        eval_every_steps=config.every_steps(config.eval_every_tokens),
        eval_windows=config.eval_windows,
        micro_batch_size=config.micro_batch_size,
        threads=threads,
        device=device,
    )
    total = config.total_steps
    if config.lr_schedule == "cosine":
        return PrefixKey(fields, total, total, True)
    if config.lr_schedule == "wsd":
        until = wsd_decay_start(total, config.wsd_decay_frac)
    else:  # constant: only the forced final evaluation depends on the total
        until = total - 1
    return PrefixKey(fields, total, until, False)


@dataclass
class Found:
    state: TrainState
    records: list[dict[str, Any]]
    path: Path


@dataclass
class PrefixStore:
    root: Path
    cap_mb: float = 2048.0
    also_read: tuple[Path, ...] = ()
    """Further stores searched read-only (`--baselines-from`)."""
    landmarks: frozenset[int] = frozenset()
    """Steps at which un-grown states are stored besides the evaluations."""
    log: Callable[[str], None] = field(default=lambda msg: print(msg, file=sys.stderr))

    def __post_init__(self) -> None:
        self.root = Path(self.root)

    # ---------------------------------------------------------------------------- write
    def save(self, key: PrefixKey, state: TrainState, records: list[dict[str, Any]]) -> bool:
        """Store the un-grown `state` (step k) with its evaluation records up to k. Returns
        whether a file was written (False: already there, or the state is not storable)."""
        step = state.step
        if state.schedule_cursor or state.growth_history or step > key.total_steps:
            return False
        folder = self.root / key.digest_for(step)
        pt = folder / f"step-{step:08d}.pt"
        if pt.exists():
            return False
        folder.mkdir(parents=True, exist_ok=True)
        key_file = folder / KEY_FILE
        if not key_file.exists():
            fields = dict(key.fields)
            if step > key.trunk_until or key.budget_in_trunk:
                fields["total_steps"] = key.total_steps
            _atomic_text(key_file, json.dumps(fields, indent=1, sort_keys=True))
        payload = {"step": step, "records": [r for r in records if r["step"] <= step]}
        _atomic_text(pt.with_suffix(".json"), json.dumps(payload))
        save_checkpoint(state, pt)  # last: a .pt implies its records exist
        self.prune()
        return True

    def prune(self) -> None:
        """Delete least recently used steps until the store is under its cap."""
        entries = sorted(self._entries(self.root), key=lambda p: p.stat().st_mtime)
        total = sum(p.stat().st_size for p in entries)
        while entries and total > self.cap_mb * MB:
            victim = entries.pop(0)
            total -= victim.stat().st_size
            victim.unlink(missing_ok=True)
            victim.with_suffix(".json").unlink(missing_ok=True)

    # ---------------------------------------------------------------------------- read
    def find(
        self, key: PrefixKey, usable: Callable[[int, list[dict[str, Any]]], bool]
    ) -> Found | None:
        """The latest stored state this run may resume: at most its total, on the trunk only
        up to its own `trunk_until`, and `usable(step, records)` (no growth due before)."""
        candidates: list[tuple[int, Path]] = []
        for root in (self.root, *self.also_read):
            for digest, limit in ((key.branch, key.total_steps), (key.trunk, key.trunk_until)):
                for pt in self._entries(root / digest):
                    step = int(pt.stem.split("-")[1])
                    if step <= limit:
                        candidates.append((step, pt))
        for step, pt in sorted(set(candidates), reverse=True):
            try:
                records = json.loads(pt.with_suffix(".json").read_text())["records"]
            except (OSError, ValueError, KeyError):
                continue  # being pruned or written by another run: not ours to judge
            if not usable(step, records):
                continue
            try:
                state = load_checkpoint(pt)
            except CheckpointError as exc:
                self.log(f"raygrow: warning: skipping damaged prefix checkpoint ({exc})")
                if pt.is_relative_to(self.root):
                    pt.unlink(missing_ok=True)
                continue
            except OSError:
                continue
            if state.step != step or state.schedule_cursor or state.growth_history:
                self.log(
                    f"raygrow: warning: skipping prefix checkpoint {pt}: not an un-grown state"
                )
                continue
            _touch(pt)
            return Found(state, records, pt)
        return None

    def summary(self) -> dict[str, Any]:
        """What the store keeps: keys, stored steps, size."""
        entries = list(self._entries(self.root))
        return {
            "root": str(self.root),
            "keys": len({p.parent for p in entries}),
            "checkpoints": len(entries),
            "mb": sum(p.stat().st_size for p in entries) / MB,
            "cap_mb": self.cap_mb,
        }

    @staticmethod
    def _entries(folder: Path) -> Iterable[Path]:
        if not folder.is_dir():
            return []
        return [p for p in folder.rglob("step-*.pt") if p.is_file()]


def growth_free_until(
    step: int,
    records: list[dict[str, Any]],
    is_due: Callable[[float, float, list[tuple[float, float]]], bool] | None,
    tokens_per_step: int,
    flops_per_token: float,
) -> bool:
    """Whether a run whose first growth stage is `is_due(tokens, flops, val_curve)` grows at
    no step before `step`, replaying the loop's clocks and validation curve exactly."""
    if is_due is None:
        return True
    by_step = sorted(records, key=lambda r: r["step"])
    tokens, flops, seen = 0, 0.0, 0
    for j in range(step):
        while seen < len(by_step) and by_step[seen]["step"] <= j:
            seen += 1
        curve = [(r["flops"], r["val_loss"]) for r in by_step[:seen]]
        if is_due(tokens, flops, curve):
            return False
        tokens += tokens_per_step
        flops += flops_per_token * tokens_per_step
    return True


def _atomic_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _touch(path: Path) -> None:
    try:
        os.utime(path)
    except OSError:
        pass


class PrefixLink:
    """One run's use of the store: what it may resume, and which of its states it leaves.

    `is_due(tokens, flops, val_curve)` is the run's first growth trigger (None: the run never
    grows); `flops_per_token` that of its start model."""

    def __init__(
        self,
        store: PrefixStore,
        key: PrefixKey,
        *,
        tokens_per_step: int,
        flops_per_token: float,
        is_due: Callable[[float, float, list[tuple[float, float]]], bool] | None,
    ) -> None:
        self.store, self.key = store, key
        self.tokens_per_step, self.flops_per_token = tokens_per_step, flops_per_token
        self.is_due = is_due
        self.complete = True
        """False when the run's records before its start are unknown (a regular resume):
        nothing of it may be stored, a resuming run could not replay its curve."""

    def resume(self) -> Found | None:
        def usable(step: int, records: list[dict[str, Any]]) -> bool:
            return growth_free_until(
                step, records, self.is_due, self.tokens_per_step, self.flops_per_token
            )

        return self.store.find(self.key, usable)

    def offer(
        self, state: TrainState, records: list[dict[str, Any]], snapshot: Callable[[], TrainState]
    ) -> None:
        """Store the run's current state if it is un-grown and not stored yet (`snapshot`
        fills the state's tensors only then: it costs a copy of the model and optimizer)."""
        step = state.step
        if not self.complete or step == 0 or state.schedule_cursor or state.growth_history:
            return
        folder = self.store.root / self.key.digest_for(step)
        if (folder / f"step-{step:08d}.pt").exists():
            return
        try:
            self.store.save(self.key, snapshot(), records)
        except OSError as exc:  # a full disk costs sharing, never the run
            self.store.log(f"raygrow: warning: cannot store prefix at step {step} ({exc})")

    def wants(self, step: int, evaluated: bool, last: bool) -> bool:
        """Steps worth storing: evaluations, landmarks (e.g. decay starts), the end."""
        return evaluated or last or step in self.store.landmarks


def link_run(
    store: PrefixStore,
    config: TrainConfig,
    start: ModelConfig,
    schedule: GrowthSchedule | None,
    *,
    data_id: str,
    threads: int,
    device: str,
    budget_flops: float,
) -> PrefixLink:
    """The link of a run that starts from `start` (with its vocab) under `schedule`."""
    key = prefix_key(config, start, data_id, threads=threads, device=device)
    due = None
    if schedule is not None and schedule.stages:

        def due(tokens: float, flops: float, curve: list[tuple[float, float]]) -> bool:
            return schedule.is_due(0, tokens, flops, config.tokens, budget_flops, curve)

    return PrefixLink(
        store,
        key,
        tokens_per_step=config.tokens_per_step,
        flops_per_token=flops_per_token(start, config.seq_len),
        is_due=due,
    )
