"""`TrialRecord`: what the results core needs to know about one finished (or not) run.

Every producer converts to it: the search (from its trial plans and Tune's last results),
`raygrow.analysis` (from MLflow runs) and the benchmarks (from their own run dicts). The arm is
a field and the budget a number — nothing is parsed from a human-readable description.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

from raygrow.results.status import StatusKind, status_kind

ArmKind = Literal["grown", "scratch", "small"]
Split = Literal["val", "test"]
"""Which loss a comparison reads: `val` (selection: ASHA, ranking, the headline speedup) or
`test` (the held-out split, evaluated once at each run's end; reported, never selected on)."""
ARMS: tuple[ArmKind, ...] = ("grown", "scratch", "small")
"""`grown`: a growth schedule; `scratch`: the target from scratch with its own annealed LR
schedule at its budget (several budgets make the frontier); `small`: the start model alone at
the full budget (the validity check needs it)."""


@dataclass(frozen=True, slots=True)
class TrialRecord:
    arm: ArmKind
    status: str
    """Status text (`raygrow.results.status`); its first word is the kind."""
    flops: float | None = None
    """Training FLOPs spent, operator phases included."""
    val_loss: float | None = None
    """Final validation loss (annealed only when completed)."""
    budget_frac: float = 1.0
    """The run's token budget as a fraction of the search's full budget (scratch arms < 1)."""
    seed: int | None = None
    trial_id: str = ""
    schedule: str = ""
    """Human-readable description, for tables only."""
    group: str = ""
    """What the run is compared within (an experiment, a benchmark): frontiers never mix groups."""
    test_loss: float | None = None
    """Final loss on the held-out test split (completed runs only; None when not evaluated)."""

    def __post_init__(self) -> None:
        if self.arm not in ARMS:
            raise ValueError(f"arm {self.arm!r} must be one of {', '.join(ARMS)}")
        if not 0 < self.budget_frac <= MAX_BUDGET_FRAC + 1e-9:
            raise ValueError(f"budget_frac={self.budget_frac} must be in (0, {MAX_BUDGET_FRAC:g}]")

    @property
    def kind(self) -> StatusKind:
        return status_kind(self.status)

    @property
    def completed(self) -> bool:
        """A completed run with a finite loss and positive FLOPs: it has an annealed point."""
        return (
            self.kind == "completed"
            and finite(self.val_loss)
            and finite(self.flops)
            and float(self.flops or 0.0) > 0
        )

    def loss(self, split: Split = "val") -> float | None:
        return self.val_loss if split == "val" else self.test_loss

    def completed_on(self, split: Split = "val") -> bool:
        """`completed`, with a finite final loss on `split`."""
        return self.completed and finite(self.loss(split))

    @property
    def full_budget(self) -> bool:
        return math.isclose(self.budget_frac, 1.0, rel_tol=0, abs_tol=1e-9)


MAX_BUDGET_FRAC = 4.0
"""Scratch budgets may run past the search's budget (up to 4x) so that a grown run that beats
the full-budget scratch run gets a measured speedup instead of a lower bound."""


def finite(value: Any) -> bool:
    """A real, finite number (not None, not bool, not NaN)."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
