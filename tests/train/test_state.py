"""TrainState checkpoints: round trip (incl. FQN optimizer state), atomicity, damage detection."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from raygrow.errors import CheckpointError
from raygrow.model import ModelConfig, Transformer
from raygrow.train.optim import AdamWConfig, build_optimizer, optimizer_state_by_fqn
from raygrow.train.state import (
    TrainState,
    latest_checkpoint,
    load_checkpoint,
    prune_checkpoints,
    save_checkpoint,
)


def trained_state() -> TrainState:
    torch.manual_seed(0)
    config = ModelConfig(n_layers=2, d_model=32, n_heads=2, max_seq_len=16)
    model = Transformer(config)
    opt = build_optimizer(model, AdamWConfig())
    for _ in range(3):
        model(torch.randint(0, 256, (2, 16))).logsumexp(-1).mean().backward()
        opt.step()
        opt.zero_grad()
    return TrainState(
        model_config=config,
        model_state={k: v.clone() for k, v in model.state_dict().items()},
        optim_state=optimizer_state_by_fqn(model, opt),
        step=3,
        tokens=96,
        flops=1.5e9,
        data_position=6,
        growth_history=[{"operator": "stack", "step": 2}],
        val_curve=[(0.0, 5.5), (1.0e9, 5.0)],
    )


def test_round_trip_including_optimizer_state(tmp_path: Path) -> None:
    state = trained_state()
    path = save_checkpoint(state, tmp_path / "ckpt-000000003.pt")
    loaded = load_checkpoint(path)
    assert loaded.model_config == state.model_config
    assert (loaded.step, loaded.tokens, loaded.flops, loaded.data_position) == (3, 96, 1.5e9, 6)
    assert loaded.growth_history == state.growth_history
    for k, v in state.model_state.items():
        assert torch.equal(loaded.model_state[k], v)
    assert set(loaded.optim_state) == set(state.optim_state)
    for k, entry in state.optim_state.items():
        for key, tensor in entry.items():
            assert torch.equal(loaded.optim_state[k][key], tensor), (k, key)
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt-000000003.pt"]  # no temp files left


@pytest.mark.parametrize("damage", ["truncate", "flip", "garbage", "empty"])
def test_damaged_checkpoint_is_a_clear_error(tmp_path: Path, damage: str) -> None:
    path = save_checkpoint(trained_state(), tmp_path / "ckpt.pt")
    blob = bytearray(path.read_bytes())
    if damage == "truncate":
        blob = blob[: len(blob) // 2]
    elif damage == "flip":
        blob[len(blob) // 2] ^= 0xFF
    elif damage == "garbage":
        blob = bytearray(b"not a checkpoint at all" * 10)
    else:
        blob = bytearray()
    path.write_bytes(bytes(blob))
    with pytest.raises(CheckpointError, match="ckpt.pt"):
        load_checkpoint(path)


def test_mismatched_state_is_rejected(tmp_path: Path) -> None:
    state = trained_state()
    state.model_state.pop("layers.1.mlp.w_up.weight")
    path = save_checkpoint(state, tmp_path / "ckpt.pt")
    with pytest.raises(CheckpointError, match="FQNs do not match"):
        load_checkpoint(path)
    state = trained_state()
    state.optim_state["norm.weight"]["exp_avg"] = torch.zeros(5)
    save_checkpoint(state, path)
    with pytest.raises(CheckpointError, match="shape"):
        load_checkpoint(path)


def test_missing_checkpoint_and_folder_lookup(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nope.pt")
    for step in (1, 2, 3):
        save_checkpoint(trained_state(), tmp_path / f"ckpt-{step:09d}.pt")
    assert latest_checkpoint(tmp_path).name == "ckpt-000000003.pt"
    prune_checkpoints(tmp_path, keep=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt-000000002.pt", "ckpt-000000003.pt"]
    assert load_checkpoint(tmp_path).step == 3
