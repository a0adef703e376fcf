"""LR schedules and growth-time LR policies."""

from __future__ import annotations

import pytest

from raygrow.errors import ConfigError
from raygrow.train.lr import LRSchedule, LRState, apply_lr_policy


def test_cosine_warmup_and_floor() -> None:
    s = LRSchedule(peak=1e-3, total_steps=1000, warmup_steps=100, min_frac=0.1)
    assert s.lr_at(0) == pytest.approx(1e-5)
    assert s.lr_at(99) == pytest.approx(1e-3)
    assert s.lr_at(550) == pytest.approx(0.55e-3, rel=1e-3)
    assert s.lr_at(1000) == pytest.approx(1e-4)


def test_wsd_is_flat_then_decays() -> None:
    s = LRSchedule(peak=1e-3, total_steps=1000, warmup_steps=10, kind="wsd", decay_frac=0.2)
    assert s.lr_at(500) == s.lr_at(799) == 1e-3
    assert s.lr_at(900) == pytest.approx(0.55e-3)
    assert s.lr_at(1000) == pytest.approx(1e-4)


def test_continue_policy_changes_nothing() -> None:
    s = LRSchedule(peak=1e-3, total_steps=1000, warmup_steps=10)
    st = apply_lr_policy(LRState(), "continue", 400)
    assert [s.lr_at(i, st) for i in (400, 700)] == [s.lr_at(400), s.lr_at(700)]


def test_restart_rewarms_and_anneals_to_the_floor() -> None:
    s = LRSchedule(peak=1e-3, total_steps=1000, warmup_steps=10)
    st = apply_lr_policy(LRState(), "restart", 400, lr_scale=0.5, rewarm_steps=50)
    assert s.lr_at(400, st) == pytest.approx(0.5e-3 / 50)
    assert s.lr_at(449, st) == pytest.approx(0.5e-3, rel=1e-3)
    assert s.lr_at(1000, st) == pytest.approx(0.5e-4)


def test_rescale_multiplies_current_lr() -> None:
    s = LRSchedule(peak=1e-3, total_steps=1000, warmup_steps=10)
    st = apply_lr_policy(LRState(), "rescale", 500, lr_scale=0.5)
    assert s.lr_at(600, st) == pytest.approx(0.5 * s.lr_at(600))


def test_bad_policy_and_values() -> None:
    with pytest.raises(ConfigError, match="lr_policy"):
        apply_lr_policy(LRState(), "sideways", 1)
    with pytest.raises(ConfigError, match="lr="):
        LRSchedule(peak=-1.0, total_steps=10)
