"""Means with 95% t-intervals over seed replicates."""

from __future__ import annotations

import pytest

from raygrow.results import mean_interval


def test_t_interval_matches_the_textbook() -> None:
    ci = mean_interval([1.0, 2.0, 3.0])
    # t(0.975, 2) = 4.303; std 1; half width 4.303 / sqrt(3)
    assert ci.mean == 2.0 and ci.high - ci.mean == pytest.approx(4.3027 / 3**0.5, rel=1e-4)
    assert ci.low == pytest.approx(2 * ci.mean - ci.high)
    assert not ci.clears(0.0) and mean_interval([1.0, 1.1, 1.2]).clears(0.8)


def test_one_value_has_no_interval() -> None:
    ci = mean_interval([1.5])
    assert (ci.mean, ci.low, ci.high, ci.n) == (1.5, None, None, 1) and not ci.clears(0.0)
    with pytest.raises(ValueError):
        mean_interval([])
