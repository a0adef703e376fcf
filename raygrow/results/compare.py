"""Growth vs scratch over `TrialRecord`s: the scratch frontier, speedups and the validity rule.

Frontier. The completed `scratch` records of a group (one per annealed budget and seed) give
(FLOPs, final loss) points. A record is compared with
- `paired`: the scratch runs of its own seed, when that seed covers every scratch budget of the
  group (same data order, so seed noise mostly cancels);
- `pooled`: otherwise the seed-mean FLOPs and loss at each budget.
A scratch run therefore meets its own point: the full-budget scratch arm's speedup is exactly
1.0 whenever it has the lowest scratch loss of its seed. Speedup itself (interpolation in
log-compute, bounds outside the measured range) is `raygrow.results.speedup`.

Split. `compare(records, split=...)` reads each run's final `val` loss (the default: what the
search selects on) or its held-out `test` loss; a test comparison uses only the records (scratch
points included) that have a test loss. The target's loss and the validity rule read val.

Validity (one rule for the search, the guidelines and the benchmarks). The target from scratch
at the full budget must beat the small model alone, otherwise "growth beats scratch" may only
mean "the small model was better all along":
- both arms with >= 2 seeds: margin = mean(small) - mean(target) must exceed twice the larger
  of the two arms' seed standard deviations (sample std over per-seed losses);
- otherwise the margin only has to be > 0 and the verdict is reported as `single seed`: seed
  noise is unknown, so a small margin may be noise.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field

from raygrow.results.records import Split, TrialRecord
from raygrow.results.speedup import Speedup, speedup_at_matched_loss

Point = tuple[float, float]


def _budget_key(record: TrialRecord) -> float:
    return round(record.budget_frac, 6)


def completed_scratch(records: Iterable[TrialRecord], split: Split = "val") -> list[TrialRecord]:
    return [r for r in records if r.arm == "scratch" and r.completed_on(split)]


def _mean_per_budget(records: Sequence[TrialRecord], split: Split = "val") -> list[Point]:
    by_budget: dict[float, list[TrialRecord]] = {}
    for r in records:
        by_budget.setdefault(_budget_key(r), []).append(r)
    return [
        (
            statistics.fmean(float(r.flops or 0.0) for r in group),
            statistics.fmean(float(r.loss(split) or 0.0) for r in group),
        )
        for _, group in sorted(by_budget.items())
    ]


def _seeds(records: Iterable[TrialRecord]) -> set[int]:
    return {r.seed for r in records if r.seed is not None}


def scratch_points(
    records: Sequence[TrialRecord], seed: int | None = None, split: Split = "val"
) -> tuple[list[Point], str]:
    """The scratch points (FLOPs, final `split` loss) a run of `seed` is compared with, and the
    basis (`paired (seed 3)` / `pooled (4 seeds)`); none without a completed scratch run."""
    scratch = completed_scratch(records, split)
    if not scratch:
        return [], "no completed scratch arm"
    budgets = {_budget_key(r) for r in scratch}
    if seed is not None:
        own = [r for r in scratch if r.seed == seed]
        if {_budget_key(r) for r in own} >= budgets:
            return _mean_per_budget(own, split), f"paired (seed {seed})"
    n = max(1, len(_seeds(scratch)))
    return _mean_per_budget(scratch, split), f"pooled ({n} seed{'s' * (n != 1)})"


@dataclass(frozen=True, slots=True)
class Comparison:
    """A record's speedup vs the scratch frontier of its group (None when it has no annealed
    final point, or the group has no completed scratch run)."""

    speedup: Speedup | None
    basis: str


def compare(records: Sequence[TrialRecord], split: Split = "val") -> list[Comparison]:
    """One Comparison per record, in order, at matched `split` loss; frontiers are built per
    `group`."""
    groups: dict[str, list[TrialRecord]] = {}
    for r in records:
        groups.setdefault(r.group, []).append(r)
    out = []
    for r in records:
        points, basis = scratch_points(groups[r.group], r.seed, split)
        if not points or not r.completed_on(split):
            out.append(Comparison(None, basis if not points else ""))
            continue
        flops, loss = float(r.flops), float(r.loss(split))  # type: ignore[arg-type]
        out.append(Comparison(speedup_at_matched_loss(points, flops, loss), basis))
    return out


def target_loss(records: Iterable[TrialRecord]) -> float | None:
    """Mean final loss of the target from scratch at the full budget (what growth must reach)."""
    full = [r.val_loss for r in completed_scratch(records) if r.full_budget]
    return statistics.fmean(float(v) for v in full) if full else None  # type: ignore[arg-type]


def _per_seed(records: Sequence[TrialRecord]) -> dict[int | None, float]:
    """Final loss per seed (a seed's repeated runs averaged)."""
    by_seed: dict[int | None, list[float]] = {}
    for r in records:
        by_seed.setdefault(r.seed, []).append(float(r.val_loss))  # type: ignore[arg-type]
    return {seed: statistics.fmean(v) for seed, v in by_seed.items()}


def _std(values: Sequence[float]) -> float:
    return statistics.stdev(values) if len(values) >= 2 else math.nan


@dataclass(frozen=True, slots=True)
class Validity:
    """The validity verdict of one group (see the module docstring for the rule)."""

    checked: bool
    valid: bool | None = None
    target_loss: float = math.nan
    small_loss: float = math.nan
    margin: float = math.nan
    """mean(small) - mean(target), nats per token: > 0 when the target is better."""
    n_seeds_target: int = 0
    n_seeds_small: int = 0
    std_target: float = math.nan
    std_small: float = math.nan
    threshold: float = math.nan
    """What the margin must exceed: 2 x the larger seed std, or 0 with a single seed."""
    paired: tuple[float, ...] = field(default_factory=tuple)
    """small - target per seed that both arms ran."""
    note: str = ""
    """`` (valid with seed noise known) | `single seed` | `margin within 2x seed noise` |
    `no completed scratch arm` | `no completed small arm`."""

    @property
    def seed_noise(self) -> float:
        return max(
            (s for s in (self.std_target, self.std_small) if not math.isnan(s)), default=math.nan
        )

    @property
    def text(self) -> str:
        if not self.checked:
            return f"not checked ({self.note})"
        head = (
            f"target from scratch {self.target_loss:.4f} vs small alone {self.small_loss:.4f}: "
            f"margin {self.margin:+.4f}"
        )
        if self.note == "single seed":
            verdict = "valid" if self.valid else "NOT VALID"
            return (
                f"{head} > 0 -> {verdict} (single seed: seed noise unknown; run >= 2 seeds)"
                if self.valid
                else f"{head} -> {verdict}: the small model is as good as the target at this "
                "budget, so beating scratch says little about growth; raise the budget or the "
                "size gap"
            )
        need = f"required > 2 x seed std {self.seed_noise:.4f} = {self.threshold:.4f}"
        if self.valid:
            return f"{head}, {need} -> valid ({self.n_seeds_target}/{self.n_seeds_small} seeds)"
        return (
            f"{head}, {need} -> NOT VALID: the target does not beat the small model by more than "
            "seed noise; raise the budget or the size gap, or add seeds"
        )

    def to_dict(self) -> dict[str, object]:
        out = asdict(self)
        out["paired"] = list(self.paired)
        out["seed_noise"] = self.seed_noise
        out["text"] = self.text
        return out


def validity(records: Sequence[TrialRecord]) -> Validity:
    """Does the full-budget target from scratch beat the small model alone (one group)?"""
    target = [r for r in completed_scratch(records) if r.full_budget]
    small = [r for r in records if r.arm == "small" and r.completed]
    if not target or not small:
        missing = "scratch" if not target else "small"
        return Validity(checked=False, note=f"no completed {missing} arm")
    t, s = _per_seed(target), _per_seed(small)
    mt, ms = statistics.fmean(t.values()), statistics.fmean(s.values())
    sd_t, sd_s = _std(list(t.values())), _std(list(s.values()))
    margin = ms - mt
    paired = tuple(s[k] - t[k] for k in sorted(set(t) & set(s), key=lambda x: (x is None, x)))
    several = len(t) >= 2 and len(s) >= 2
    if several:
        threshold = 2 * max(sd_t, sd_s)
        valid = margin > threshold
        note = "" if valid else "margin within 2x seed noise"
    else:
        threshold, valid, note = 0.0, margin > 0, "single seed"
    return Validity(
        checked=True,
        valid=bool(valid),
        target_loss=mt,
        small_loss=ms,
        margin=margin,
        n_seeds_target=len(t),
        n_seeds_small=len(s),
        std_target=sd_t,
        std_small=sd_s,
        threshold=threshold,
        paired=paired,
        note=note,
    )
