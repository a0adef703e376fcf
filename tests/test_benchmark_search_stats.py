"""Benchmark 5's per-seed summary (issue 17): failures count, the median is over all seeds."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from harness.search import fmt_cost, rate_ci, seed_summary  # noqa: E402


def _wilson(k: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    p = k / n
    mid = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return mid - half, mid + half


def test_rate_ci_is_wilson() -> None:
    for k, n in ((39, 50), (29, 50), (0, 10), (10, 10)):
        assert rate_ci(k, n) == pytest.approx(_wilson(k, n), abs=1e-9)


def test_failures_count_in_rates_and_median() -> None:
    costs: list[float | None] = [0.1, 0.2, None, 0.5, None]
    s = seed_summary(costs)
    assert (s["n"], s["found"], s["within"]) == (5, 3, 2)  # 0.5 > 1/3
    assert s["median"] == 0.5  # sorted 0.1, 0.2, 0.5, inf, inf: failures are the largest
    assert s["mean_found"] == pytest.approx(0.8 / 3)  # successes only, what was reported before
    assert s["found_ci"] == pytest.approx(_wilson(3, 5))
    assert s["within_ci"] == pytest.approx(_wilson(2, 5))


def test_median_is_not_found_when_half_or_more_fail() -> None:
    assert seed_summary([0.1, None, None])["median"] == math.inf
    assert seed_summary([0.1, 0.2, None, None])["median"] == math.inf  # mean of 0.2 and inf
    assert seed_summary([0.1, 0.2, 0.3, None])["median"] == pytest.approx(0.25)
    assert fmt_cost(math.inf) == "not found" and fmt_cost(0.254) == "0.25"
