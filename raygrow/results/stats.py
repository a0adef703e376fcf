"""Means with 95% intervals over seed replicates (Student's t: a handful of seeds, not a normal).

One seed gives a mean and no interval; an interval is never invented from one value.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Interval:
    mean: float
    low: float | None
    high: float | None
    n: int
    level: float = 0.95

    def clears(self, threshold: float) -> bool:
        """A target is met only when the interval's lower end clears it."""
        return self.low is not None and self.low > threshold

    def __str__(self) -> str:
        if self.low is None or self.high is None:
            return f"{self.mean:.3f} (n={self.n})"
        return f"{self.mean:.3f} [{self.low:.3f}, {self.high:.3f}] (n={self.n})"


def mean_interval(values: Sequence[float], level: float = 0.95) -> Interval:
    """Mean and two-sided `level` t-interval of `values` (n >= 2; else no interval)."""
    from scipy.stats import t

    xs = [float(v) for v in values]
    if not xs:
        raise ValueError("mean_interval needs at least one value")
    mean = statistics.fmean(xs)
    if len(xs) < 2:
        return Interval(mean, None, None, len(xs), level)
    half = float(t.ppf(0.5 + level / 2, len(xs) - 1)) * statistics.stdev(xs) / math.sqrt(len(xs))
    return Interval(mean, mean - half, mean + half, len(xs), level)
