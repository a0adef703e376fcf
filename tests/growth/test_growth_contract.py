"""Contract suite: every registered growth operator, default params, the same guarantees.

A new operator joins by registering itself in `raygrow.growth.OPERATORS`. Checks: grown params
have exactly the FQNs/shapes of the grown config and load; optimizer state is keyed by the new
FQNs with consistent steps; the input state is untouched and shares no storage; results are
deterministic for a generator and leave the global RNG alone; function-preserving operators
keep loss and logits (random-init and trained models; MHA, GQA and tied variants) and the others
do change them; 20 AdamW steps after growth stay finite and close to the pre-growth loss; reports
round-trip through JSON; depth-then-width composition works; where an operator's `scale`
policy claims exact gradient ratios, they match autograd; and the torch-free spec registry
(`SPECS`, what schedules use) names the same operators and predicts the grown state's shapes.
"""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from raygrow.growth import (
    OPERATORS,
    SPECS,
    GrowthReport,
    GrowthState,
    apply_directives,
    evaluate,
    frozen_fqns,
    get_operator,
    get_spec,
    grow,
)
from raygrow.growth._fqn import expected_shapes
from raygrow.growth.check import fresh_state, toy_batch_fn, toy_config, train_briefly
from raygrow.model import build_model, param_fqns
from raygrow.train.optim import AdamWConfig, build_optimizer

OPS = list(OPERATORS)
# the learned operator's default phase (100 steps) is exercised in test_growth_ops; here a short
# phase keeps the suite fast without changing what is checked
FAST = {"learned": {"phase_steps": 4}}
VARIANTS = {
    "mha": {},
    "gqa": {"n_heads": 4, "n_kv_heads": 2},
    "tied": {"tie_embeddings": True},
}
# operators whose opt_policy='scale' claims exact gradient ratios at the growth point
EXACT_SCALE = [
    "zero",
    "random",
    "staged_depth",
    "net2net",
    "hypercloning",
    "staged_width",
    "zero_width",
]
BATCHES = toy_batch_fn(64, batch=8, seq_len=32)
PROBE = BATCHES(5_000)
HELDOUT = [BATCHES(6_000 + i) for i in range(4)]


@pytest.fixture(scope="module")
def states() -> dict[tuple[str, str], GrowthState]:
    out = {}
    for name, overrides in VARIANTS.items():
        config = toy_config("2x64", **overrides)
        fresh = fresh_state(config, seed=1)
        out[(name, "random")] = fresh
        out[(name, "trained")] = train_briefly(fresh, BATCHES, 30)[0]
    return out


def run(op: str, state: GrowthState, policy: str = "carry", seed: int = 0, **params):
    return grow(
        state,
        op,
        generator=torch.Generator().manual_seed(seed),
        opt_policy=policy,
        probe_batch=PROBE,
        train_batch_fn=lambda i: BATCHES(20_000 + i),
        **{**FAST.get(op, {}), **params},
    )


def heldout_loss(model: torch.nn.Module) -> float:
    with torch.no_grad():
        return sum(
            float(F.cross_entropy(model(x).flatten(0, 1), y.flatten())) for x, y in HELDOUT
        ) / len(HELDOUT)


def clone_state(state: GrowthState) -> GrowthState:
    return GrowthState(
        state.config,
        {k: v.clone() for k, v in state.params.items()},
        {k: {n: t.clone() for n, t in e.items()} for k, e in state.optim.items()},
        state.step,
    )


def assert_same_state(a: GrowthState, b: GrowthState) -> None:
    assert a.config == b.config and a.step == b.step
    assert list(a.params) == list(b.params)
    assert all(torch.equal(a.params[k], b.params[k]) for k in a.params)
    assert set(a.optim) == set(b.optim)
    for k, e in a.optim.items():
        assert set(e) == set(b.optim[k])
        assert all(torch.equal(e[n], b.optim[k][n]) for n in e)


# --------------------------------------------------------------------------- structure
@pytest.mark.parametrize("op", OPS)
def test_grown_params_match_grown_config(op: str, states) -> None:
    state = states[("mha", "trained")]
    new, report = run(op, state)
    expected = get_operator(op).grown_config(state.config, **FAST.get(op, {}))
    assert new.config == expected
    assert list(new.params) == param_fqns(expected)
    model = build_model(new.config, new.params)  # strict load: FQNs and shapes
    assert all(v.dtype == torch.float32 and v.is_contiguous() for v in new.params.values())
    assert sum(p.numel() for p in model.parameters()) == report.n_params_after
    assert report.n_params_after == expected.n_params() > report.n_params_before
    assert report.config_after == expected.to_dict()
    assert set(report.axes) <= {"depth", "width"}
    grew_depth = expected.n_layers > state.config.n_layers
    grew_width = (expected.d_model, expected.ff_dim) != (state.config.d_model, state.config.ff_dim)
    assert grew_depth or grew_width
    assert (not grew_depth or "depth" in report.axes) and (not grew_width or "width" in report.axes)


@pytest.mark.parametrize("policy", ["carry", "scale", "reset"])
@pytest.mark.parametrize("op", OPS)
def test_optimizer_state_matches_new_params(op: str, policy: str, states) -> None:
    state = states[("mha", "trained")]
    source_steps = {int(e["step"]) for e in state.optim.values()}
    new, _ = run(op, state, policy)
    if policy == "reset":
        assert new.optim == {}
    else:
        assert list(new.optim) == list(new.params)
        for fqn, entry in new.optim.items():
            assert set(entry) == {"step", "exp_avg", "exp_avg_sq"}
            for key in ("exp_avg", "exp_avg_sq"):
                assert entry[key].shape == new.params[fqn].shape
                assert torch.isfinite(entry[key]).all()
            assert (entry["exp_avg_sq"] >= 0).all()
            step = entry["step"]
            assert step.dim() == 0 and float(step) == int(step)
            assert int(step) in source_steps | {0}
            if int(step) == 0:  # fresh state: no stale bias correction possible
                assert not entry["exp_avg"].any() and not entry["exp_avg_sq"].any()
            else:  # carried: the moments must hold something
                assert entry["exp_avg_sq"].any()
    build_optimizer(build_model(new.config, new.params), AdamWConfig(), new.optim)


@pytest.mark.parametrize("op", OPS)
def test_input_untouched_and_unaliased(op: str, states) -> None:
    state = states[("mha", "trained")]
    before = clone_state(state)
    new, _ = run(op, state)
    assert_same_state(state, before)
    for t in new.params.values():
        t.add_(1.0)
    for e in new.optim.values():
        for t in e.values():
            t.add_(1.0)
    assert_same_state(state, before)


@pytest.mark.parametrize("op", OPS)
def test_deterministic_and_global_rng_untouched(op: str, states) -> None:
    state = states[("mha", "trained")]
    rng = torch.get_rng_state()
    a, ra = run(op, state, seed=3)
    b, rb = run(op, state, seed=3)
    assert torch.equal(torch.get_rng_state(), rng)
    assert_same_state(a, b)
    assert ra.directives == rb.directives and ra.loss_after == rb.loss_after


# --------------------------------------------------------------------------- torch-free spec
def test_specs_and_operators_agree() -> None:
    assert list(SPECS) == list(OPERATORS)
    for name, op in OPERATORS.items():
        spec = SPECS[name]
        assert isinstance(op, type(spec)) and op.describe() == spec.describe()


@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("op", OPS)
def test_spec_grown_config_matches_grown_state(op: str, variant: str, states) -> None:
    state = states[(variant, "random")]
    new, _ = run(op, state)
    config = get_spec(op).grown_config(state.config, **FAST.get(op, {}))
    assert new.config == config
    assert {k: tuple(v.shape) for k, v in new.params.items()} == expected_shapes(config)


# --------------------------------------------------------------------------- function
@pytest.mark.parametrize("which", ["random", "trained"])
@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("op", OPS)
def test_function_preservation(op: str, variant: str, which: str, states) -> None:
    state = states[(variant, which)]
    new, report = run(op, state)
    loss, logits = evaluate(new.config, new.params, PROBE, report.directives)
    assert loss == pytest.approx(report.loss_after, abs=1e-6)
    if report.fp_claimed:
        assert abs(report.loss_after - report.loss_before) < 1e-5, report.to_dict()
        assert report.max_logit_diff < 1e-4
    else:  # a non-FP operator that changes nothing would be a silent no-op
        assert report.max_logit_diff > 1e-5


@pytest.mark.parametrize("op", OPS)
def test_training_continues_after_growth(op: str, states) -> None:
    state = states[("mha", "trained")]
    small = build_model(state.config, state.params)
    loss_before = heldout_loss(small)
    new, report = run(op, state)
    model = build_model(new.config, new.params)
    opt = build_optimizer(model, AdamWConfig(lr=3e-3), new.optim)
    named = dict(model.named_parameters())
    losses = []
    for i in range(20):
        apply_directives(model, report.directives, i)
        x, y = BATCHES(100 + i)
        loss = F.cross_entropy(model(x).flatten(0, 1), y.flatten())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        for fqn in frozen_fqns(report.directives, i):
            named[fqn].grad = None
        opt.step()
        losses.append(float(loss.detach()))
    assert all(torch.isfinite(torch.tensor(losses)))
    apply_directives(model, report.directives, 20)
    # FP operators start where the small model was; the others are allowed their growth jump
    margin = 0.02 if report.fp_claimed else 0.1
    assert heldout_loss(model) < loss_before + margin, (loss_before, losses)


@pytest.mark.parametrize("op", OPS)
def test_report_round_trips_and_params_re_resolve(op: str, states) -> None:
    state = states[("mha", "trained")]
    new, report = run(op, state)
    data = json.loads(json.dumps(report.to_dict()))
    assert GrowthReport.from_dict(data) == report
    assert get_operator(op).grown_config(state.config, **report.params) == new.config
    assert report.operator == op and report.opt_policy == "carry" and report.seconds > 0


# --------------------------------------------------------------------------- composition
DEPTH_OPS = [n for n, o in OPERATORS.items() if o.axes == ("depth",)]
WIDTH_OPS = [n for n, o in OPERATORS.items() if o.axes == ("width",)]


@pytest.mark.parametrize(
    "first,second",
    [(d, "hypercloning") for d in DEPTH_OPS] + [("stack", w) for w in WIDTH_OPS],
)
def test_depth_then_width(first: str, second: str, states) -> None:
    state = states[("gqa", "trained")]
    mid, _ = run(first, state)
    new, report = run(second, mid, seed=1)
    assert new.config.n_layers == mid.config.n_layers > state.config.n_layers
    assert list(new.params) == param_fqns(new.config) == list(new.optim)
    build_model(new.config, new.params)
    if report.fp_claimed:
        assert abs(report.loss_after - report.loss_before) < 1e-5


# --------------------------------------------------------------------------- scale policy
def grads(state: GrowthState, directives=None) -> dict[str, torch.Tensor]:
    model = build_model(state.config, state.params)
    if directives:
        apply_directives(model, directives, 0)
    x, y = PROBE
    F.cross_entropy(model(x).flatten(0, 1), y.flatten()).backward()
    return {n: p.grad.detach().clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize("variant", ["gqa", "tied"])
@pytest.mark.parametrize("op", EXACT_SCALE)
def test_scale_policy_matches_gradient_ratio(op: str, variant: str, states) -> None:
    """Put the small model's gradient g into exp_avg (and g^2 into exp_avg_sq); after growth
    with opt_policy='scale' the carried entries must equal the grown model's own gradient."""
    state = states[(variant, "trained")]
    g = grads(state)
    fake = {k: {"step": torch.tensor(7.0), "exp_avg": v, "exp_avg_sq": v * v} for k, v in g.items()}
    scaled, report = run(op, GrowthState(state.config, state.params, fake), "scale")
    ones = {
        k: {
            "step": torch.tensor(7.0),
            "exp_avg": torch.ones_like(v),
            "exp_avg_sq": torch.ones_like(v),
        }
        for k, v in g.items()
    }
    mask_state, _ = run(op, GrowthState(state.config, state.params, ones), "carry")
    g_new = grads(scaled, report.directives)
    checked = 0
    for fqn, entry in scaled.optim.items():
        mask = mask_state.optim[fqn]["exp_avg"] != 0
        if int(entry["step"]) == 0:
            mask = torch.zeros_like(mask)  # scale made this tensor fresh
        torch.testing.assert_close(
            entry["exp_avg"][mask], g_new[fqn][mask], rtol=1e-3, atol=1e-7, msg=fqn
        )
        torch.testing.assert_close(
            entry["exp_avg_sq"][mask], g_new[fqn][mask] ** 2, rtol=2e-3, atol=1e-12, msg=fqn
        )
        checked += int(mask.sum())
    assert checked > 0.4 * sum(p.numel() for p in state.params.values())
