"""Per-operator guarantees beyond the contract suite, and the grow() API's error handling."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from raygrow.errors import ConfigError
from raygrow.flops import flops_per_token
from raygrow.growth import GrowthState, apply_directives, frozen_fqns, get_operator, grow
from raygrow.growth._fqn import LAYER_KEYS
from raygrow.growth.check import fresh_state, toy_batch_fn, toy_config, train_briefly
from raygrow.model import build_model
from raygrow.train.optim import AdamWConfig, build_optimizer

BATCHES = toy_batch_fn(64, batch=8, seq_len=32)
PROBE = BATCHES(5_000)
WQ, WO, DOWN = "attn.wq.weight", "attn.wo.weight", "mlp.w_down.weight"


def L(i: int, key: str) -> str:
    return f"layers.{i}.{key}"


@pytest.fixture(scope="module")
def trained_gqa() -> GrowthState:
    config = toy_config("2x64", n_heads=4, n_kv_heads=2)
    return train_briefly(fresh_state(config, seed=2), BATCHES, 30)[0]


def run(state, op, policy="carry", seed=0, **params):
    return grow(
        state,
        op,
        generator=torch.Generator().manual_seed(seed),
        opt_policy=policy,
        probe_batch=PROBE,
        train_batch_fn=lambda i: BATCHES(20_000 + i),
        **params,
    )


def one_line_error(fn, *match: str) -> str:
    with pytest.raises(ConfigError) as info:
        fn()
    msg = str(info.value)
    assert "\n" not in msg
    for m in match:
        assert m in msg, msg
    return msg


# --------------------------------------------------------------------------- stack
def test_stack_layer_maps(trained) -> None:
    p, m = trained.params, trained.optim
    new, report = run(trained, "stack", factor=2)
    for j, i in enumerate([0, 1, 0, 1]):
        assert torch.equal(new.params[L(j, WQ)], p[L(i, WQ)])
        assert torch.equal(new.optim[L(j, WQ)]["exp_avg"], m[L(i, WQ)]["exp_avg"])
    assert not report.fp_claimed and report.loss_after != pytest.approx(report.loss_before)

    new, _ = run(trained, "stack", layer_map="interleave", n_layers=4)
    for j, i in enumerate([0, 0, 1, 1]):
        assert torch.equal(new.params[L(j, DOWN)], p[L(i, DOWN)])

    new, report = run(trained, "stack", layer_map=[0, 1, 1, 1, 0])
    assert new.config.n_layers == 5 and report.params["factor"] is None
    assert torch.equal(new.params[L(4, WO)], p[L(0, WO)])


@pytest.mark.parametrize(
    "params,match",
    [
        ({"factor": 1}, "factor=1"),
        ({"factor": 2.5}, "factor=2.5"),
        ({"factor": 2, "n_layers": 5}, "disagree"),
        ({"n_layers": 2}, "n_layers=2"),
        ({"layer_map": [0, 2, 1]}, "[2]"),
        ({"layer_map": [0, 1]}, "layer_map"),
        ({"layer_map": "zigzag"}, "layer_map='zigzag'"),
        ({"foo": 1}, "'foo'"),
    ],
)
def test_stack_bad_params_are_one_line_config_errors(trained, params, match) -> None:
    one_line_error(lambda: run(trained, "stack", **params), match)
    one_line_error(lambda: get_operator("stack").grown_config(trained.config, **params), match)


# --------------------------------------------------------------------------- zero / staged_depth
@pytest.mark.parametrize("init", ["copy", "random"])
def test_zero_new_blocks_are_identity(trained, init) -> None:
    new, report = run(trained, "zero", layer_map="interleave", init=init)
    for j in (1, 3):  # the second occurrences are new
        assert not new.params[L(j, WO)].any() and not new.params[L(j, DOWN)].any()
        same = torch.equal(new.params[L(j, WQ)], trained.params[L(j // 2, WQ)])
        assert same is (init == "copy")
    assert torch.equal(new.params[L(2, WO)], trained.params[L(1, WO)])
    assert abs(report.loss_after - report.loss_before) < 1e-6
    one_line_error(lambda: run(trained, "zero", layer_map=[1, 0, 0, 1]), "first occurrences")


def test_staged_depth_variants_and_scale_policy(trained) -> None:
    new, report = run(trained, "staged_depth", "scale")
    assert report.fp_claimed and abs(report.loss_after - report.loss_before) < 1e-6
    assert report.params == {
        "factor": 2,
        "n_layers": 4,
        "placement": "alternate",
        "new_layers": "id",
    }
    step = int(trained.optim[L(0, WQ)]["step"])
    for j, orig in ((0, 0), (2, 1)):  # originals: moments exactly carried
        assert torch.equal(new.optim[L(j, WQ)]["exp_avg"], trained.optim[L(orig, WQ)]["exp_avg"])
        assert int(new.optim[L(j, WQ)]["step"]) == step
    for j in (1, 3):  # new identity layers: fresh
        assert int(new.optim[L(j, WQ)]["step"]) == 0 and not new.optim[L(j, WQ)]["exp_avg"].any()
    carried, _ = run(trained, "staged_depth", "carry")
    assert torch.equal(carried.optim[L(1, WQ)]["exp_avg"], trained.optim[L(0, WQ)]["exp_avg"])

    copy, report = run(trained, "staged_depth", new_layers="copy", placement="append")
    assert not report.fp_claimed and report.max_logit_diff > 1e-4
    assert torch.equal(copy.params[L(2, WO)], trained.params[L(0, WO)])


# --------------------------------------------------------------------------- random (MSG)
def test_random_ramp_directive(trained) -> None:
    new, report = run(trained, "random")
    assert report.directives == {"branch_ramps": [{"layers": [2, 3], "steps": 100}]}
    assert report.fp_claimed and abs(report.loss_after - report.loss_before) < 1e-6
    model = build_model(new.config, new.params)
    for t, scale in ((0, 0.0), (50, 0.5), (100, 1.0), (500, 1.0)):
        apply_directives(model, report.directives, t)
        assert [b.branch_scale for b in model.layers] == [1.0, 1.0, scale, scale]
    assert int(new.optim[L(2, WQ)]["step"]) == 0  # new blocks start fresh

    plain, report = run(trained, "random", ramp_steps=0, layer_map="interleave")
    assert report.directives == {} and not report.fp_claimed
    assert report.max_logit_diff > 1e-4
    assert torch.equal(plain.params[L(2, WQ)], trained.params[L(1, WQ)])  # originals kept


# --------------------------------------------------------------------------- incremental
def test_incremental_freeze_directive(trained) -> None:
    new, report = run(trained, "incremental", phase_steps=5)
    old = [f"layers.{i}.{k}" for i in range(2) for k in LAYER_KEYS]
    assert report.directives == {"freeze": {"fqns": old, "steps": 5}}
    model = build_model(new.config, new.params)
    opt = build_optimizer(model, AdamWConfig(lr=1e-2), new.optim)
    named = dict(model.named_parameters())
    for i in range(5):
        x, y = BATCHES(300 + i)
        F.cross_entropy(model(x).flatten(0, 1), y.flatten()).backward()
        for fqn in frozen_fqns(report.directives, i):
            named[fqn].grad = None
        opt.step()
        opt.zero_grad(set_to_none=True)
    assert frozen_fqns(report.directives, 5) == []
    for fqn in old:
        assert torch.equal(named[fqn].detach(), trained.params[fqn]), fqn
    assert not torch.equal(named[L(3, WQ)].detach(), new.params[L(3, WQ)])

    _, report = run(trained, "incremental", freeze="all")
    assert {"tok_embeddings.weight", "norm.weight", "output.weight"} <= set(
        report.directives["freeze"]["fqns"]
    )
    _, report = run(trained, "incremental", phase_steps=0)
    assert report.directives == {}


# --------------------------------------------------------------------------- learned (LiGO)
def test_learned_reports_phase_cost(trained) -> None:
    new, report = run(trained, "learned", phase_steps=3)
    d = report.directives
    assert d["extra_sequences"] == 3 * 8
    assert d["extra_flops"] == pytest.approx(3 * 8 * 32 * flops_per_token(new.config, 32))
    assert {"phase_loss_first", "phase_loss_last"} <= set(report.extras)
    one_line_error(lambda: grow(trained, "learned", phase_steps=3), "train_batch_fn")


def test_learned_without_phase_equals_stack_and_training_helps(trained) -> None:
    stacked, stack_report = run(trained, "stack")
    untrained, report = run(trained, "learned", phase_steps=0)
    assert all(torch.equal(untrained.params[k], v) for k, v in stacked.params.items())
    assert "extra_flops" not in report.directives
    learned, report = run(trained, "learned", phase_steps=15, lr=3e-2, warmup_steps=2)
    assert not torch.equal(learned.params[L(2, WQ)], stacked.params[L(2, WQ)])
    assert report.loss_after < stack_report.loss_after  # the learned map beats plain stacking


def test_learned_default_phase(trained) -> None:
    _, report = run(trained, "learned", n_layers=3)
    assert report.params["phase_steps"] == 100 and report.directives["extra_sequences"] == 800


def test_learned_width_with_gqa(trained_gqa) -> None:
    new, report = run(trained_gqa, "learned", d_model=128, n_layers=3, phase_steps=5)
    assert (new.config.n_layers, new.config.d_model, new.config.n_heads) == (3, 128, 8)
    assert new.config.kv_heads == 4 and report.directives["extra_sequences"] == 40
    assert math.isfinite(report.loss_after)
    assert list(new.optim) == list(new.params)


# --------------------------------------------------------------------------- staged width
def test_staged_width_structure_and_adam_rule(trained) -> None:
    new, report = run(trained, "staged_width", "scale")
    w, w2 = trained.params[L(0, WQ)], new.params[L(0, WQ)]
    assert torch.equal(w2[:64, :64], w) and torch.equal(w2[64:, 64:], w)
    assert not w2[:64, 64:].any() and not w2[64:, :64].any()
    assert torch.equal(new.params["norm.weight"], trained.params["norm.weight"].repeat(2) / 2)
    m, v = trained.optim[L(0, WQ)]["exp_avg"], trained.optim[L(0, WQ)]["exp_avg_sq"]
    m2, v2 = new.optim[L(0, WQ)]["exp_avg"], new.optim[L(0, WQ)]["exp_avg_sq"]
    torch.testing.assert_close(m2[64:, 64:], m / 2, rtol=0, atol=0)
    torch.testing.assert_close(v2[:64, :64], v / 4, rtol=0, atol=0)
    assert not m2[:64, 64:].any() and not v2[64:, :64].any()
    ratio, ratio2 = (
        m / v.sqrt().clamp(min=1e-30),
        m2[:64, :64] / v2[:64, :64].sqrt().clamp(min=1e-30),
    )
    torch.testing.assert_close(ratio2, ratio)  # m / sqrt(v) is invariant
    assert torch.equal(
        new.optim["norm.weight"]["exp_avg"][:64], trained.optim["norm.weight"]["exp_avg"]
    )
    assert int(new.optim[L(0, WQ)]["step"]) == int(trained.optim[L(0, WQ)]["step"])
    carried, _ = run(trained, "staged_width", "carry")
    assert torch.equal(carried.optim[L(0, WQ)]["exp_avg"][:64, :64], m)
    one_line_error(lambda: run(trained, "staged_width", d_ff=768), "same integer factor")
    one_line_error(lambda: run(trained, "staged_width", d_model=80), "multiple of head_dim")


# --------------------------------------------------------------------------- hypercloning
def test_hypercloning_factor_three_noise_and_ff_only(trained_gqa) -> None:
    state = trained_gqa
    clean, report = run(state, "hypercloning", d_model=192)
    assert (clean.config.n_heads, clean.config.kv_heads) == (12, 6)
    assert abs(report.loss_after - report.loss_before) < 1e-5
    w = state.params[L(1, WQ)]
    torch.testing.assert_close(clean.params[L(1, WQ)], w.repeat(3, 3) / 3)
    noisy, report = run(state, "hypercloning", d_model=192, noise_snr_db=10.0)
    assert abs(report.loss_after - report.loss_before) < 1e-5  # noise cancels across copies
    noise = noisy.params[L(1, WQ)] - clean.params[L(1, WQ)]
    snr_db = 10 * math.log10(clean.params[L(1, WQ)].pow(2).mean() / noise.pow(2).mean())
    assert 7 < snr_db < 13  # zero-sum projection removes 1/n of the drawn noise power
    for m in (clean, noisy):  # m / sqrt(v) of every copy equals the source's (carry)
        mm, vv = m.optim[L(1, WQ)]["exp_avg"], m.optim[L(1, WQ)]["exp_avg_sq"]
        src = state.optim[L(1, WQ)]
        torch.testing.assert_close(
            mm / vv.sqrt(), (src["exp_avg"] / src["exp_avg_sq"].sqrt()).repeat(3, 3)
        )
    ff, report = run(state, "hypercloning", d_ff=512)
    assert ff.config.d_model == 64 and ff.config.ff_dim == 512
    assert abs(report.loss_after - report.loss_before) < 1e-5
    one_line_error(lambda: run(state, "hypercloning", d_ff=300), "integer growth factors")


# --------------------------------------------------------------------------- net2net
def test_net2net_uneven_ff_split_is_exact(trained) -> None:
    new, report = run(trained, "net2net", d_ff=300, seed=5)
    assert new.config.d_model == 64 and new.config.ff_dim == 300
    assert abs(report.loss_after - report.loss_before) < 1e-5
    down, down2 = trained.params[L(0, DOWN)], new.params[L(0, DOWN)]
    gate, gate2 = trained.params[L(0, "mlp.w_gate.weight")], new.params[L(0, "mlp.w_gate.weight")]
    src = [int(torch.nonzero((gate == row).all(1))[0]) for row in gate2]  # recover the map g
    counts = torch.bincount(torch.tensor(src), minlength=256)
    assert src[:256] == list(range(256)) and counts.max() >= 2  # identity, then random picks
    for j in range(300):
        torch.testing.assert_close(down2[:, j], down[:, src[j]] / counts[src[j]])
    _, report = run(trained, "net2net", d_model=128, noise=0.05)
    assert not report.fp_claimed and report.max_logit_diff > 1e-4
    one_line_error(lambda: run(trained, "net2net", d_model=96), "integer factor")
    one_line_error(
        lambda: run(trained, "net2net", d_model=128, n_heads=3), "n_heads=3", "pass only one"
    )


# --------------------------------------------------------------------------- zero / random width
def test_zero_width_is_exact_and_trainable(trained) -> None:
    new, report = run(trained, "zero_width", "scale")
    assert new.config.norm_eps == pytest.approx(trained.config.norm_eps / 2)
    assert abs(report.loss_after - report.loss_before) < 1e-6
    assert not new.params["tok_embeddings.weight"][:, 64:].any()
    assert not new.params[L(0, WO)][64:].any() and not new.params[L(0, WO)][:, 64:].any()
    assert new.params[L(0, WQ)][64:].abs().sum() > 0  # readers of new units are random
    model = build_model(new.config, new.params)
    opt = build_optimizer(model, AdamWConfig(lr=1e-2), new.optim)
    for i in range(3):
        x, y = BATCHES(400 + i)
        F.cross_entropy(model(x).flatten(0, 1), y.flatten()).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    assert model.tok_embeddings.weight[:, 64:].abs().sum() > 0  # the new width trains

    _, report = run(trained, "random_width")
    assert not report.fp_claimed and report.max_logit_diff > 1e-3


# --------------------------------------------------------------------------- mixture
def test_mixture_coefficients(trained) -> None:
    staged, _ = run(trained, "staged_width")
    zero, report = run(trained, "mixture", coefs="zero")
    assert report.fp_claimed
    assert all(torch.equal(zero.params[k], v) for k, v in staged.params.items())
    ortho, report = run(trained, "mixture")
    assert not report.fp_claimed
    # with 2 layers the only direction orthogonal to e_0 is +-e_1: off-diagonal = +-layer 1
    off = ortho.params[L(0, WQ)][:64, 64:]
    w1 = trained.params[L(1, WQ)]
    assert torch.allclose(off, w1) or torch.allclose(off, -w1)
    copy, _ = run(trained, "mixture", coefs="copy", coef_scale=0.5)
    torch.testing.assert_close(copy.params[L(1, DOWN)][64:, :256], trained.params[L(1, DOWN)] / 2)
    one_layer = fresh_state(toy_config("1x64"))
    one_line_error(lambda: run(one_layer, "mixture"), "coefs='orthogonal'")


# --------------------------------------------------------------------------- optimizer rules
def test_step_rule_and_empty_optimizer_state(trained) -> None:
    fresh = fresh_state(toy_config("2x64"))
    new, _ = run(fresh, "hypercloning")
    assert set(new.optim) == set(new.params)
    assert all(int(e["step"]) == 0 and not e["exp_avg"].any() for e in new.optim.values())
    new, _ = run(trained, "zero_width")  # old block carried, new entries zero: source step
    step = int(trained.optim[L(0, WQ)]["step"])
    assert int(new.optim[L(0, WQ)]["step"]) == step
    assert not new.optim[L(0, WQ)]["exp_avg"][64:].any()
    assert run(trained, "stack", "reset")[0].optim == {}


def test_grow_api_errors(trained) -> None:
    one_line_error(lambda: run(trained, "nope"), "unknown growth operator 'nope'", "stack")
    one_line_error(lambda: run(trained, "stack", policy="keep"), "opt_policy='keep'")
    broken = GrowthState(trained.config, dict(list(trained.params.items())[1:]), {})
    one_line_error(lambda: run(broken, "stack"), "missing")
    wrong = GrowthState(trained.config.replace(d_model=128, n_heads=4), trained.params, {})
    one_line_error(lambda: run(wrong, "stack"), "shape")
    bad_optim = GrowthState(trained.config, trained.params, {"x.weight": {}})
    one_line_error(lambda: run(bad_optim, "stack"), "'x.weight'")
