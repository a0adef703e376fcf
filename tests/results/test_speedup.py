"""Speedup at matched loss, interpolation and bounds on synthetic curves."""

from __future__ import annotations

import math

import pytest

from raygrow.results.speedup import interpolate_curve, scratch_frontier, speedup_at_matched_loss

# annealed scratch at 3 budgets: loss falls by 0.1 per doubling of compute
SCRATCH = [(1e12, 2.0), (2e12, 1.9), (4e12, 1.8)]


def test_scratch_full_budget_is_exactly_one() -> None:
    s = speedup_at_matched_loss(SCRATCH, 4e12, 1.8)
    assert (s.value, s.bound) == (1.0, "exact")


def test_interpolation_in_log_compute() -> None:
    # 1.85 is half-way between 2e12 and 4e12 in log space -> 2e12 * sqrt(2)
    s = speedup_at_matched_loss(SCRATCH, 2e12, 1.85)
    assert s.bound == "exact"
    assert s.scratch_flops == pytest.approx(2e12 * math.sqrt(2))
    assert s.value == pytest.approx(math.sqrt(2))


def test_never_reached_is_a_lower_bound_not_an_extrapolation() -> None:
    s = speedup_at_matched_loss(SCRATCH, 3.5e12, 1.75)
    assert s.bound == "lower"
    assert s.value == pytest.approx(4 / 3.5)
    assert str(s) == ">1.14x"


def test_worse_than_smallest_budget_is_an_upper_bound() -> None:
    s = speedup_at_matched_loss(SCRATCH, 3e12, 2.1)
    assert s.bound == "upper"
    assert s.value == pytest.approx(1 / 3)


def test_frontier_is_monotone() -> None:
    noisy = [(4e12, 1.95), (1e12, 2.0), (2e12, 1.9)]
    assert scratch_frontier(noisy) == [(1e12, 2.0), (2e12, 1.9), (4e12, 1.9)]


def test_interpolate_curve() -> None:
    curve = [(1.0, 4.0), (100.0, 2.0)]
    assert interpolate_curve(curve, 10.0) == pytest.approx(3.0)
    assert interpolate_curve(curve, 0.5) == 4.0
    assert interpolate_curve(curve, 1e4) == 2.0
