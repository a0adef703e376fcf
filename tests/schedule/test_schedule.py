"""Growth schedules: JSON round trip, validation errors, guideline formula, triggers."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest

from raygrow.errors import ConfigError
from raygrow.flops import flops_per_token
from raygrow.model import ModelConfig
from raygrow.schedule import (
    SLOPE_DEPTH,
    GrowthSchedule,
    GrowthStage,
    Trigger,
    clamped_gstack_growth_tokens,
    fixed,
    from_guideline,
    gstack_growth_tokens,
    multi_stage,
    slope_triggered,
    smoothed_slope,
    suggest_growth,
)

SMALL = ModelConfig(n_layers=2, d_model=64, n_heads=2, vocab_size=64, max_seq_len=64)
BUDGET = 1_000_000


def one_line_error(fn, *match: str) -> str:
    with pytest.raises(ConfigError) as info:
        fn()
    msg = str(info.value)
    assert "\n" not in msg
    for m in match:
        assert m in msg, msg
    return msg


def stage(at: float, operator: str = "stack", **kw) -> GrowthStage:
    return GrowthStage(trigger=Trigger(at=at, fraction=at <= 1), operator=operator, **kw)


# --------------------------------------------------------------------------- structure and JSON
def test_multi_stage_configs_and_json_round_trip(tmp_path) -> None:
    s = multi_stage(
        SMALL, "stack", at=[0.1, 0.3], factor=2, lr_policy="restart", lr_params={"rewarm_steps": 50}
    )
    assert [c.shape for c in s.configs()] == ["2x64", "4x64", "8x64"]
    assert s.final_config() == SMALL.replace(n_layers=8)
    assert [st.seed for st in s.stages] == [0, 1]
    mixed = GrowthSchedule(
        SMALL,
        (
            stage(0.1, params={"factor": 2}, opt_policy="reset"),
            GrowthStage(
                trigger=Trigger(unit="flops", at=1e12),
                operator="hypercloning",
                params={"d_model": 128},
                lr_policy="rescale",
                lr_params={"lr_scale": 0.5},
            ),
            GrowthStage(
                trigger=Trigger(slope=-0.05, min_at=0.5, max_at=0.9, fraction=True),
                operator="zero",
                params={"layer_map": [0, 1, 2, 3, 0, 1, 2, 3]},
            ),
        ),
    )
    assert mixed.final_config().shape == "8x128"
    for sched in (s, mixed):
        text = sched.to_json()
        json.loads(text)
        assert GrowthSchedule.from_json(text) == sched
        sched.save(tmp_path / "s.json")
        assert GrowthSchedule.load(tmp_path / "s.json") == sched
    one_line_error(lambda: GrowthSchedule.from_json("{"), "not valid JSON")
    one_line_error(lambda: GrowthSchedule.from_dict({"start": SMALL.to_dict(), "x": 1}), "'x'")
    bad_stage = {
        "start": SMALL.to_dict(),
        "stages": [{"operator": "stack", "trigger": {"at": 0.1, "fraction": True}, "when": 3}],
    }
    one_line_error(lambda: GrowthSchedule.from_dict(bad_stage), "'when'")
    one_line_error(lambda: GrowthSchedule.load(tmp_path / "missing.json"), "does not exist")


def test_fraction_is_inferred_and_rewarm_tokens_convert() -> None:
    assert fixed(SMALL, "stack", 0.25).stages[0].trigger.fraction
    assert not fixed(SMALL, "stack", 250_000).stages[0].trigger.fraction
    st = stage(0.1, lr_params={"rewarm_tokens": 10_000})
    assert st.rewarm_steps(tokens_per_step=4096) == 3
    assert stage(0.1, lr_params={"rewarm_steps": 7}).rewarm_steps(4096) == 7


def test_stage_tokens_converts_flop_triggers() -> None:
    fpt = flops_per_token(SMALL, 64)
    s = GrowthSchedule(
        SMALL, (GrowthStage(trigger=Trigger(unit="flops", at=1e5 * fpt), operator="stack"),)
    )
    assert s.stage_tokens(BUDGET, 64) == [pytest.approx(1e5)]
    big = SMALL.replace(n_layers=4)
    expected = fpt * 1e5 + flops_per_token(big, 64) * (BUDGET - 1e5)
    assert s.estimate_flops(BUDGET, 64) == pytest.approx(expected)


# --------------------------------------------------------------------------- validation
@pytest.mark.parametrize(
    "stages,match",
    [
        ((stage(2 * BUDGET),), "after the end"),
        ((stage(1.0),), "after the end"),
        ((stage(0.1, params={"factor": 0}),), "factor=0"),
        ((stage(0.1, params={"factor": 1}),), "factor=1"),
        ((stage(0.3), stage(0.1)), "not after the previous stage"),
        ((stage(0.1, "hypercloning", params={"d_model": 80}),), "multiple of head_dim"),
        ((stage(0.1, "net2net", params={"n_heads": 3, "d_model": 128}),), "n_heads=3"),
        ((stage(0.1, "grow_big"),), "unknown growth operator 'grow_big'"),
        ((stage(0.1, opt_policy="keep"),), "opt_policy='keep'"),
        ((stage(0.1, lr_policy="warm"),), "lr_policy='warm'"),
        ((stage(0.1, lr_params={"lr": 1.0}),), "lr_params ['lr']"),
        ((stage(0.1, lr_params={"lr_scale": 0}),), "lr_scale=0"),
        (
            (GrowthStage(trigger=Trigger(unit="flops", at=0.5, fraction=True), operator="stack"),),
            "budget_flops",
        ),
        (
            (
                GrowthStage(
                    trigger=Trigger(slope=-0.05, max_at=1.0, fraction=True), operator="stack"
                ),
            ),
            "max_at",
        ),
    ],
)
def test_validation_errors_are_one_line(stages, match) -> None:
    one_line_error(lambda: GrowthSchedule(SMALL, stages).validate(BUDGET, 64), match)


def test_validation_of_budget_and_triggers() -> None:
    ok = fixed(SMALL, "stack", 0.2)
    ok.validate(BUDGET, 64)
    one_line_error(lambda: ok.validate(BUDGET, 128), "seq_len=128")
    one_line_error(lambda: ok.validate(0, 64), "budget_tokens")
    one_line_error(lambda: Trigger(at=0.1, slope=-0.05), "exactly one")
    one_line_error(lambda: Trigger(slope=0.01), "must be negative")
    one_line_error(lambda: Trigger(slope=-0.01, min_at=0.5, max_at=0.2, fraction=True), "below")
    one_line_error(lambda: Trigger(at=2.0, fraction=True), "fraction")
    one_line_error(lambda: Trigger(at=0.1, unit="steps"), "unit='steps'")
    one_line_error(lambda: Trigger(at=100, min_at=10), "slope triggers only")


# --------------------------------------------------------------------------- guideline
@pytest.mark.parametrize(
    "n_params,tokens,expected",
    [(7e9, 2e12, 11.11e9), (13e9, 2e12, 15.84e9), (70e9, 2e12, 42.48e9), (8e9, 15e12, 6.58e9)],
    ids=["llama2-7b", "llama2-13b", "llama2-70b", "llama3-8b"],
)
def test_gstack_formula_reproduces_readme_table(n_params, tokens, expected) -> None:
    # the README uses the nominal sizes and C = 6 N D (6.74e9 for "7B" would give 10.88B)
    d = gstack_growth_tokens(n_params, 6 * n_params * tokens)
    assert d == pytest.approx(expected, abs=0.006e9)


def test_guideline_clamp_at_small_scale() -> None:
    assert gstack_growth_tokens(124e6, 6 * 124e6 * 2.5e9) == pytest.approx(20.8e9, rel=0.01)
    assert gstack_growth_tokens(25e6, 6 * 25e6 * 0.5e9) == pytest.approx(27.9e9, rel=0.01)
    assert clamped_gstack_growth_tokens(25e6, 0.5e9) == pytest.approx(0.1e9)  # 20 % cap
    assert clamped_gstack_growth_tokens(25e6, 0.5e9, max_fraction=0.05) == pytest.approx(25e6)
    # inside the fitted range the clamp does nothing
    assert clamped_gstack_growth_tokens(7e9, 2e12) == pytest.approx(
        gstack_growth_tokens(7e9, 6 * 7e9 * 2e12)
    )
    assert clamped_gstack_growth_tokens(7e9, 2e12, min_fraction=0.1) == pytest.approx(0.2e12)
    one_line_error(lambda: clamped_gstack_growth_tokens(1e6, 1e9, max_fraction=1.5), "fraction")
    one_line_error(lambda: gstack_growth_tokens(0, 1e20), "n_params")
    s = suggest_growth(25e6, 0.5e9)
    assert s["clamped"] and s["fraction"] == pytest.approx(0.2) and s["factor"] == 4


def test_from_guideline() -> None:
    target = SMALL.replace(n_layers=8)
    s = from_guideline(target, SMALL, 1e7, 64)
    st = s.stages[0]
    assert st.operator == "stack" and st.params == {"factor": 4}
    assert st.opt_policy == "reset" and st.lr_policy == "restart"
    assert st.trigger.at == pytest.approx(2e6) and not st.trigger.fraction  # clamped: 20 %
    assert s.final_config() == target
    one_line_error(lambda: from_guideline(SMALL.replace(n_layers=7), SMALL, 1e7, 64), "multiple")
    one_line_error(
        lambda: from_guideline(target.replace(d_model=128, n_heads=4), SMALL, 1e7, 64), "target"
    )


# --------------------------------------------------------------------------- triggers
def test_is_due_fixed_triggers() -> None:
    s = multi_stage(SMALL, "stack", at=[0.1, 0.3], factor=2)
    assert not s.is_due(0, 99_999, 0.0, BUDGET, None, [])
    assert s.is_due(0, 100_000, 0.0, BUDGET, None, [])
    assert not s.is_due(1, 200_000, 0.0, BUDGET, None, [])
    assert s.is_due(1, 300_000, 0.0, BUDGET, None, [])
    assert not s.is_due(2, BUDGET, 0.0, BUDGET, None, [])  # past the last stage
    f = fixed(SMALL, "stack", 0.5, unit="flops")
    assert not f.is_due(0, 10**9, 4e11, BUDGET, 1e12, [])
    assert f.is_due(0, 0, 5e11, BUDGET, 1e12, [])
    one_line_error(lambda: f.is_due(0, 0, 5e11, BUDGET, None, []), "budget_flops")


def power_law_curve(n: int = 60) -> list[tuple[float, float]]:
    """L(C) = 1.5 + 40 C^-0.15 sampled log-uniformly: steep early, flattening later."""
    return [(c, 1.5 + 40 * c**-0.15) for c in (10 ** (9 + 6 * i / (n - 1)) for i in range(n))]


def analytic_slope(c: float) -> float:  # d log10 L / d log10 C of the curve above
    return -0.15 * 40 * c**-0.15 / (1.5 + 40 * c**-0.15)


def test_slope_trigger_fires_when_the_curve_flattens() -> None:
    curve = power_law_curve()
    s = slope_triggered(SMALL, "stack", SLOPE_DEPTH, unit="flops", fraction=False)
    fired = next(
        i for i in range(len(curve)) if s.is_due(0, 0, curve[i][0], None, None, curve[: i + 1])
    )
    crossing = next(i for i, (c, _) in enumerate(curve) if analytic_slope(c) > SLOPE_DEPTH)
    # the running mean over 5 slopes lags the true slope by a few evaluations, never leads it
    assert crossing <= fired <= crossing + 5
    assert smoothed_slope(curve[: fired + 1]) > SLOPE_DEPTH > smoothed_slope(curve[:fired])
    # too few points after the steepest one: no decision yet
    assert smoothed_slope(curve[:4]) is None


def test_slope_trigger_bounds_and_warmup_plateau() -> None:
    curve = power_law_curve()
    flat_then_steep = [(c, 4.0) for c, _ in curve[:5]] + curve[5:20]
    s = slope_triggered(
        SMALL, "stack", -0.0575, unit="flops", fraction=True, min_at=0.2, max_at=0.8
    )
    steep = curve[:8]
    flat = [(1e12 * (1 + i), 2.0) for i in range(10)]
    assert not s.is_due(0, 0, 1e11, None, 1e12, flat)  # before min_at, even though flat
    assert s.is_due(0, 0, 3e11, None, 1e12, flat)
    assert not s.is_due(0, 0, 3e11, None, 1e12, steep)  # still steep
    assert s.is_due(0, 0, 8e11, None, 1e12, steep)  # max_at forces growth
    # a flat warm-up start is ignored: only slopes after the steepest point count
    assert not s.is_due(0, 0, 3e11, None, 1e12, flat_then_steep)
    assert math.isfinite(smoothed_slope(flat_then_steep))


def test_light_core_imports_without_torch() -> None:
    """Schedules, configs, FLOP accounting, train config and growth specs never load torch."""
    code = (
        "import sys, raygrow.schedule, raygrow.config, raygrow.flops, raygrow.train.config, "
        "raygrow.growth; raygrow.growth.get_spec('stack'); "
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
