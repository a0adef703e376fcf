"""When a growth stage fires: `Trigger` (fixed time or loss-slope rule) and the slope it reads.

A trigger is a fixed time in tokens or FLOPs (absolute, or a fraction of the run's budget), or a
loss-slope rule (Staged Training: grow once the validation curve flattens, i.e. the smoothed
slope d log10(loss) / d log10(compute) rises above a threshold, within optional min/max bounds).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from raygrow.errors import ConfigError

UNITS = ("tokens", "flops")


def smoothed_slope(curve: Sequence[tuple[float, float]], window: int = 5) -> float | None:
    """Staged Training's slope of a (compute, loss) curve: the mean of the last `window`
    pointwise slopes d log10 L / d log10 C, counted from the steepest point on; None while there
    are not yet `window` slopes after the steepest one."""
    pts = [(math.log10(c), math.log10(v)) for c, v in curve if c > 0 and v > 0]
    slopes = [
        (l2 - l1) / (c2 - c1) for (c1, l1), (c2, l2) in zip(pts, pts[1:], strict=False) if c2 > c1
    ]
    if not slopes:
        return None
    steepest = min(range(len(slopes)), key=slopes.__getitem__)
    after = slopes[steepest:]
    if len(after) < window:
        return None
    return sum(after[-window:]) / window


def check_fields(cls: type, data: Mapping[str, Any], what: str) -> None:
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"unknown {what} keys {unknown}; known: {sorted(known)}")


@dataclass(frozen=True, kw_only=True)
class Trigger:
    """When a stage fires: at a fixed time, or when the loss curve flattens (slope rule)."""

    unit: str = "tokens"
    """Clock of `at`, `min_at`, `max_at`: tokens or flops (training FLOPs, the loop's clock)."""
    at: float | None = None
    """Fixed time (absolute, or a fraction of the budget when `fraction`); None for slope rules."""
    fraction: bool = False
    """`at`/`min_at`/`max_at` are fractions of the run's budget in `unit`."""
    slope: float | None = None
    """Slope rule: fire once the smoothed d log10 L / d log10 C rises above this (e.g. -0.0575)."""
    window: int = 5
    """Number of pointwise slopes averaged by the slope rule."""
    min_at: float | None = None
    """Slope rule: never fire before this time."""
    max_at: float | None = None
    """Slope rule: always fire at this time, flat or not."""

    def __post_init__(self) -> None:
        if self.unit not in UNITS:
            raise ConfigError(f"trigger unit={self.unit!r} is unknown; use tokens or flops")
        if (self.at is None) == (self.slope is None):
            raise ConfigError("a trigger needs exactly one of `at` (fixed time) or `slope`")
        for name in ("at", "min_at", "max_at"):
            value = getattr(self, name)
            if value is not None and not (value > 0 and math.isfinite(value)):
                raise ConfigError(f"trigger {name}={value} must be a positive time")
            if value is not None and self.fraction and value > 1:
                raise ConfigError(f"trigger {name}={value} is a fraction of the budget; use <= 1")
        if self.slope is not None:
            if not self.slope < 0:
                raise ConfigError(
                    f"trigger slope={self.slope} must be negative (a falling loss has a negative "
                    "slope; the stage fires when it flattens above it), e.g. -0.0575"
                )
            if self.window < 1:
                raise ConfigError(f"trigger window={self.window} must be >= 1")
            if self.min_at is not None and self.max_at is not None and self.min_at >= self.max_at:
                raise ConfigError(
                    f"trigger min_at={self.min_at} must be below max_at={self.max_at}"
                )
        elif self.min_at is not None or self.max_at is not None:
            raise ConfigError("min_at/max_at bound slope triggers only; drop them or set slope")

    @property
    def is_slope(self) -> bool:
        return self.slope is not None

    def resolve(self, value: float | None, budget: float | None) -> float | None:
        """A time of this trigger in absolute units of its clock."""
        if value is None or not self.fraction:
            return value
        if budget is None:
            raise ConfigError(
                f"trigger is a fraction of the {self.unit} budget but none was given; pass "
                f"budget_{self.unit}"
            )
        return value * budget

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Trigger:
        check_fields(cls, data, "trigger")
        return cls(**data)
