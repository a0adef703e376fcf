"""Speedup at matched loss: how much less compute a schedule needs than training from scratch.

Scratch is represented by *annealed* runs at several budgets — each with its own complete LR
schedule — because a point in the middle of a long cosine run is not what scratch achieves at
that budget: in a CPU pilot (6 layers, d=128, ~7 tokens per parameter) runs with their own shorter
cosine ended far from the long run's curve at the same step, so only annealed points compare.

    speedup = C_scratch(L) / C_run

where C_scratch(L) is the compute at which scratch reaches the run's final loss L, by linear
interpolation of loss against log-compute between annealed budgets. Outside the measured range
nothing is extrapolated:
- L below every scratch loss: scratch never got there; speedup > C_max / C_run ("lower" bound).
- L above every scratch loss: scratch got there before its smallest budget; speedup
  < C_min / C_run ("upper" bound).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

Bound = Literal["exact", "lower", "upper"]


@dataclass(frozen=True, slots=True)
class Speedup:
    value: float
    bound: Bound
    scratch_flops: float
    """Scratch compute that reaches the loss (or the budget edge used for a bound)."""

    def __str__(self) -> str:
        mark = {"exact": "", "lower": ">", "upper": "<"}[self.bound]
        return f"{mark}{self.value:.2f}x"

    def to_dict(self) -> dict[str, float | str]:
        return {
            "speedup_vs_scratch": self.value,
            "speedup_bound": self.bound,
            "speedup_text": str(self),
            "scratch_flops_at_loss": self.scratch_flops,
        }


def scratch_frontier(points: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    """(flops, loss) of annealed scratch runs -> sorted by flops, loss made non-increasing.

    More compute never makes scratch worse in expectation; a noisy larger budget that ended
    higher is replaced by the best loss seen at a smaller budget (a conservative envelope).
    """
    clean = sorted((float(c), float(v)) for c, v in points if c > 0 and math.isfinite(v))
    frontier: list[tuple[float, float]] = []
    best = math.inf
    for c, v in clean:
        best = min(best, v)
        frontier.append((c, best))
    return frontier


def flops_to_reach(frontier: Sequence[tuple[float, float]], loss: float) -> tuple[float, Bound]:
    """Compute scratch needs to reach `loss`, interpolated in log-compute; bound if outside."""
    if not frontier:
        raise ValueError("no scratch runs to compare against")
    if loss < frontier[-1][1]:
        return frontier[-1][0], "lower"
    if loss > frontier[0][1]:
        return frontier[0][0], "upper"
    for (c0, v0), (c1, v1) in zip(frontier, frontier[1:], strict=False):
        if v1 <= loss <= v0:
            if loss == v1:
                return c1, "exact"  # exact hit: no rounding through log/exp
            if loss == v0:
                return c0, "exact"
            t = (v0 - loss) / (v0 - v1)
            return math.exp(math.log(c0) + t * (math.log(c1) - math.log(c0))), "exact"
    return frontier[0][0], "exact"  # loss equals the only point


def speedup_at_matched_loss(
    scratch_points: Sequence[tuple[float, float]], run_flops: float, run_loss: float
) -> Speedup:
    """Speedup of a run that spent `run_flops` and ended at `run_loss` vs annealed scratch."""
    frontier = scratch_frontier(scratch_points)
    c_star, bound = flops_to_reach(frontier, run_loss)
    return Speedup(value=c_star / run_flops, bound=bound, scratch_flops=c_star)


def interpolate_curve(curve: Sequence[tuple[float, float]], flops: float) -> float:
    """Loss of a (flops, loss) curve at `flops` (linear in log-compute; clamped at the ends)."""
    pts = sorted((c, v) for c, v in curve if c > 0)
    if not pts:
        raise ValueError("empty curve")
    if flops <= pts[0][0]:
        return pts[0][1]
    if flops >= pts[-1][0]:
        return pts[-1][1]
    for (c0, v0), (c1, v1) in zip(pts, pts[1:], strict=False):
        if c0 <= flops <= c1:
            t = (math.log(flops) - math.log(c0)) / (math.log(c1) - math.log(c0))
            return v0 + t * (v1 - v0)
    return pts[-1][1]
