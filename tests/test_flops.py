"""FLOP accounting against a hand count."""

from __future__ import annotations

from raygrow.flops import flops_per_token
from raygrow.model import ModelConfig


def test_flops_per_token_hand_count() -> None:
    c = ModelConfig(n_layers=2, d_model=64, n_heads=2, vocab_size=256)  # d_ff = 256
    # per layer: q,k,v,o = 4 * 64*64; gate, up, down = 3 * 64*256  -> 65,536 weights
    blocks = 6 * 2 * (4 * 64 * 64 + 3 * 64 * 256)
    head = 6 * 64 * 256
    attention = 12 * 2 * 128 * 64
    assert flops_per_token(c, 128) == blocks + head + attention == 1_081_344


def test_gqa_and_tied_counts() -> None:
    mha = ModelConfig(n_layers=1, d_model=64, n_heads=4)
    gqa = mha.replace(n_kv_heads=1)
    # k and v shrink from 64x64 to 16x64 each: 2 * (64*64 - 16*64) weights fewer
    assert flops_per_token(mha, 16) - flops_per_token(gqa, 16) == 6 * 2 * (64 * 64 - 16 * 64)
    # tying removes parameters but not the head's matmul
    assert flops_per_token(mha.replace(tie_embeddings=True), 16) == flops_per_token(mha, 16)


def test_flops_grow_with_depth_and_context() -> None:
    c = ModelConfig(n_layers=2, d_model=128, n_heads=2)
    assert flops_per_token(c.replace(n_layers=4), 256) > flops_per_token(c, 256)
    assert flops_per_token(c, 256) - flops_per_token(c, 128) == 12 * 2 * 128 * 128
