"""What a training run hands out: its result, its side-effect hooks, its divergence error."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from raygrow.train.state import TrainState


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite."""


class LoopHooks(Protocol):
    """Side effects of a run (Ray reporting, tracking). Every rank calls every hook."""

    def on_eval(self, metrics: dict[str, Any], checkpoint: Path | None) -> None: ...

    def on_growth(self, report: dict[str, Any]) -> None: ...


class NullHooks:
    def on_eval(self, metrics: dict[str, Any], checkpoint: Path | None) -> None:
        pass

    def on_growth(self, report: dict[str, Any]) -> None:
        pass


@dataclass
class TrainResult:
    state: TrainState
    history: list[dict[str, Any]] = field(default_factory=list)

    @property
    def final(self) -> dict[str, Any]:
        return self.history[-1] if self.history else {}
