"""Learning-rate schedules (warmup + cosine / WSD / constant) and the growth-time LR policies.

The schedule is a pure function of (step, LRState). Growth policies only edit the small
`LRState` record, which is checkpointed, so a resumed run computes exactly the same LRs.

Policies at a growth event (see raygrow.schedule.GrowthStage.lr_policy):
- `continue`: the global schedule goes on as if nothing happened (the pilot's choice).
- `restart`: prts restarts warmup on the grown model; here the schedule re-warms linearly from 0
  over `rewarm_steps` and then decays from (peak * lr_scale) to the floor over the *remaining*
  steps of the budget (the budget is fixed, so a full-length restart would never anneal).
- `rescale`: staged training resumes the grown model at a factor of the current LR; the
  multiplier `lr_scale` is applied from the growth step on, with an optional short re-warmup.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Literal

from raygrow.errors import ConfigError
from raygrow.schedule.core import LR_POLICIES

ScheduleKind = Literal["cosine", "wsd", "constant"]


@dataclass(kw_only=True, slots=True)
class LRState:
    """Edits made to the base schedule by growth policies (checkpointed)."""

    origin_step: int = 0
    """Step where the schedule (re)starts; >0 only after a `restart`."""
    restart_warmup: int = 0
    """Warmup steps of the restarted schedule (then it decays over the remaining steps)."""
    scale: float = 1.0
    """Multiplier on the whole schedule (peak and floor), from `restart`/`rescale`."""
    ramp_start: int = 0
    ramp_steps: int = 0
    """Linear re-warmup from 0 over ramp_steps after ramp_start (0 = none)."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LRState:
        return cls(**data)


@dataclass(frozen=True, kw_only=True, slots=True)
class LRSchedule:
    peak: float
    total_steps: int
    warmup_steps: int = 100
    min_frac: float = 0.1
    kind: ScheduleKind = "cosine"
    decay_frac: float = 0.2
    """WSD only: fraction of the run spent in the final (linear) cooldown."""

    def __post_init__(self) -> None:
        if self.peak <= 0:
            raise ConfigError(f"lr={self.peak} must be positive, e.g. 2e-3")
        if self.kind not in ("cosine", "wsd", "constant"):
            raise ConfigError(f"lr_schedule={self.kind!r} is unknown; use cosine, wsd or constant")
        if not 0 <= self.min_frac <= 1:
            raise ConfigError(f"min_lr_frac={self.min_frac} must be in [0, 1]")
        if not 0 < self.decay_frac <= 1:
            raise ConfigError(f"wsd_decay_frac={self.decay_frac} must be in (0, 1]")
        if self.warmup_steps < 0:
            raise ConfigError(f"warmup_steps={self.warmup_steps} must be >= 0")

    def lr_at(self, step: int, state: LRState | None = None) -> float:
        state = state or LRState()
        origin = state.origin_step
        warmup = self.warmup_steps if origin == 0 else state.restart_warmup
        lr = self._base(step - origin, self.total_steps - origin, warmup) * state.scale
        if state.ramp_steps > 0 and step < state.ramp_start + state.ramp_steps:
            lr *= (step - state.ramp_start + 1) / state.ramp_steps
        return lr

    def _base(self, step: int, total: int, warmup: int) -> float:
        if step < warmup:
            return self.peak * (step + 1) / warmup
        if self.kind == "constant":
            return self.peak
        floor = self.peak * self.min_frac
        if self.kind == "cosine":
            progress = min(1.0, (step - warmup) / max(1, total - warmup))
            return floor + (self.peak - floor) * 0.5 * (1 + math.cos(math.pi * progress))
        decay_start = total - max(1, round(self.decay_frac * total))
        if step < decay_start:
            return self.peak
        progress = min(1.0, (step - decay_start) / max(1, total - decay_start))
        return self.peak + (floor - self.peak) * progress


def apply_lr_policy(
    state: LRState, policy: str, step: int, *, lr_scale: float = 1.0, rewarm_steps: int = 0
) -> LRState:
    """The LRState after a growth event at `step` (a new object; the input is not modified)."""
    if policy not in LR_POLICIES:
        raise ConfigError(f"lr_policy={policy!r} is unknown; use one of {', '.join(LR_POLICIES)}")
    if lr_scale <= 0:
        raise ConfigError(f"lr_scale={lr_scale} must be positive")
    if policy == "continue":
        return LRState(**state.to_dict())
    if policy == "restart":
        return LRState(origin_step=step, restart_warmup=max(1, rewarm_steps), scale=lr_scale)
    return LRState(
        origin_step=state.origin_step,
        restart_warmup=state.restart_warmup,
        scale=state.scale * lr_scale,
        ramp_start=step,
        ramp_steps=rewarm_steps,
    )
