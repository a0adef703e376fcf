"""Model shapes, FQN contract, GQA/tied variants, config validation, init scheme."""

from __future__ import annotations

import math

import pytest
import torch

from raygrow.errors import ConfigError
from raygrow.model import ModelConfig, Transformer, apply_rotary, build_model, param_fqns


def small(**kw) -> ModelConfig:
    base = dict(n_layers=2, d_model=64, n_heads=2, max_seq_len=32)
    base.update(kw)
    return ModelConfig(**base)


@pytest.mark.parametrize(
    "config",
    [small(), small(n_kv_heads=1), small(tie_embeddings=True), small(d_ff=96, n_heads=4)],
    ids=["mha", "gqa", "tied", "custom-ff"],
)
def test_forward_shape_and_fqns(config: ModelConfig) -> None:
    model = Transformer(config)
    logits = model(torch.randint(0, config.vocab_size, (3, 17)))
    assert logits.shape == (3, 17, config.vocab_size)
    assert list(model.state_dict()) == param_fqns(config)
    assert sum(p.numel() for p in model.parameters()) == config.n_params()
    assert ("output.weight" in model.state_dict()) is (not config.tie_embeddings)


def test_documented_fqn_shapes() -> None:
    c = small(n_kv_heads=1, d_ff=96)
    sd = Transformer(c).state_dict()
    assert sd["layers.1.attn.wq.weight"].shape == (64, 64)
    assert sd["layers.1.attn.wk.weight"].shape == (32, 64)  # one kv head of dim 32
    assert sd["layers.0.mlp.w_gate.weight"].shape == (96, 64)
    assert sd["layers.0.mlp.w_down.weight"].shape == (64, 96)
    assert sd["norm.weight"].shape == (64,)
    assert sd["output.weight"].shape == (256, 64)


def test_causality() -> None:
    torch.manual_seed(0)
    model = Transformer(small()).eval()
    x = torch.randint(0, 256, (1, 12))
    y = x.clone()
    y[0, 8:] = (y[0, 8:] + 1) % 256
    with torch.no_grad():
        a, b = model(x), model(y)
    assert torch.allclose(a[0, :8], b[0, :8], atol=1e-6)
    assert not torch.allclose(a[0, 8:], b[0, 8:])


def test_residual_init_is_scaled() -> None:
    torch.manual_seed(0)
    c = small(n_layers=8, d_model=128, n_heads=2)
    sd = Transformer(c).state_dict()
    wq_std = sd["layers.0.attn.wq.weight"].std().item()
    wo_std = sd["layers.0.attn.wo.weight"].std().item()
    assert wq_std == pytest.approx(0.02, rel=0.05)
    assert wo_std == pytest.approx(0.02 / math.sqrt(16), rel=0.05)
    assert torch.all(sd["layers.3.mlp_norm.weight"] == 1)


def test_rotary_preserves_norm_and_is_relative() -> None:
    c = small()
    model = Transformer(c)
    q = torch.randn(1, 1, 8, c.head_dim)
    rq = apply_rotary(q, model.rope_cos[:8], model.rope_sin[:8])
    assert torch.allclose(rq.norm(dim=-1), q.norm(dim=-1), atol=1e-5)
    # <R_m q, R_n k> depends only on m - n
    k = torch.randn(1, 1, 1, c.head_dim)
    kk = k.expand(1, 1, 8, c.head_dim)
    qq = q[:, :, :1].expand(1, 1, 8, c.head_dim)
    rq2 = apply_rotary(qq, model.rope_cos[:8], model.rope_sin[:8])
    rk2 = apply_rotary(kk, model.rope_cos[:8], model.rope_sin[:8])
    dots = (rq2 * rk2).sum(-1)
    assert torch.allclose(dots, dots[..., :1].expand_as(dots), atol=1e-5)


def test_build_model_rejects_mismatched_state() -> None:
    state = Transformer(small()).state_dict()
    with pytest.raises(ConfigError, match="missing"):
        build_model(small(n_layers=3), state)
    with pytest.raises(ConfigError, match="shape"):
        build_model(small(d_ff=128), state)


def test_sequence_longer_than_max_seq_len() -> None:
    with pytest.raises(ConfigError, match="max_seq_len"):
        Transformer(small())(torch.zeros(1, 33, dtype=torch.long))


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"d_model": 64, "n_heads": 3}, "n_heads"),
        ({"n_layers": 0}, "n_layers"),
        ({"n_kv_heads": 3, "n_heads": 4}, "n_kv_heads"),
        ({"d_model": 48, "n_heads": 16}, "head_dim"),
    ],
)
def test_config_validation_names_the_field(kwargs: dict, field: str) -> None:
    with pytest.raises(ConfigError, match=field):
        small(**kwargs)


def test_from_shape() -> None:
    c = ModelConfig.from_shape("8x256")
    assert (c.n_layers, c.d_model, c.n_heads, c.head_dim) == (8, 256, 4, 64)
    with pytest.raises(ConfigError, match="LxD"):
        ModelConfig.from_shape("eight")
    assert ModelConfig.from_dict(c.to_dict()) == c
