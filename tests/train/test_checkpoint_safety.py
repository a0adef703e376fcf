"""Checkpoints are read with `torch.load(weights_only=True)`: plain data loads, objects are refused.

Issue 16 (safe loading): a checkpoint file - also one found through an MLflow tag - must never run
code when it is read. What raygrow writes is plain data (`plain_payload`), so the safe loader
reads it with torch's default allow-list; anything else is one line naming the file.
"""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from raygrow.checkpoint import MAGIC, SAFE_GLOBALS, plain_payload, read_model, read_payload
from raygrow.errors import CheckpointError
from raygrow.model import ModelConfig
from raygrow.train.config import TrainConfig
from raygrow.train.loop import train
from raygrow.train.state import load_checkpoint, save_checkpoint

TINY = ModelConfig(n_layers=1, d_model=32, n_heads=2, max_seq_len=32)


def write_unchecked(payload: object, path: Path) -> Path:
    """A file exactly as the writer before safe loading made it: magic, sha256, torch.save."""
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    blob = buffer.getvalue()
    path.write_bytes(MAGIC + hashlib.sha256(blob).digest() + blob)
    return path


class Marker:
    """Unpickling this object creates a marker file: what a malicious checkpoint would do."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (os.system, (f"touch {self.path}",))


@pytest.fixture(scope="module")
def grown_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real run with a growth event and an MSG ramp: every kind of value the loop stores."""
    from raygrow.schedule import fixed

    out = tmp_path_factory.mktemp("run")
    cfg = TrainConfig(
        model=TINY,
        seq_len=32,
        batch_size=4,
        tokens=12 * 4 * 32,
        warmup_steps=2,
        eval_every_tokens=4 * 4 * 32,
        eval_windows=4,
        out_dir=str(out),
        log_every_steps=0,
    )
    train(cfg, fixed(TINY, "random", 0.25, factor=2, ramp_steps=4), verbose=False)
    return out / "checkpoints"


def test_checkpoints_of_a_real_run_load_safely_also_from_the_old_writer(
    grown_run: Path, tmp_path: Path
) -> None:
    assert SAFE_GLOBALS == ()  # the payload needs nothing beyond torch's defaults
    state = load_checkpoint(grown_run)
    assert state.growth_history and state.growth_history[0]["directives"]["branch_ramps"]
    assert state.val_curve and isinstance(state.val_curve[0], tuple)
    assert isinstance(state.rng["torch"], torch.Tensor)
    # the same payload written by the writer before plain_payload existed reads back the same
    old = write_unchecked(state.to_payload(), tmp_path / "ckpt-000000012.pt")
    again = load_checkpoint(old)
    assert again.growth_history == state.growth_history and again.val_curve == state.val_curve
    assert again.train_config == state.train_config and again.schedule == state.schedule
    for k, v in state.model_state.items():
        assert torch.equal(again.model_state[k], v)
    config, params, optim, step = read_model(old)
    assert (config, step) == (state.model_config, state.step) and set(optim) == set(params)


def test_a_pickled_object_is_refused_and_never_runs(grown_run: Path, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    payload = load_checkpoint(grown_run).to_payload()
    payload["growth_history"][0]["extras"]["note"] = Marker(marker)
    bad = write_unchecked(payload, tmp_path / "ckpt-000000099.pt")
    with pytest.raises(CheckpointError) as exc:
        load_checkpoint(tmp_path)  # the folder: its newest file is the bad one
    message = str(exc.value)
    assert "\n" not in message and str(bad) in message
    assert "contains objects outside raygrow's checkpoint format" in message
    assert "system" in message  # names the refused global
    assert not marker.exists()
    with pytest.raises(CheckpointError, match="outside raygrow's checkpoint format"):
        read_model(bad)  # python -m raygrow.growth check / export's path
    assert not marker.exists()


def test_foreign_payloads_are_one_line_errors(tmp_path: Path) -> None:
    not_a_dict = write_unchecked([torch.zeros(2)], tmp_path / "list.pt")
    with pytest.raises(CheckpointError, match="not a raygrow payload dict"):
        read_payload(not_a_dict)
    blob = b"not a torch payload at all"
    junk = tmp_path / "junk.pt"
    junk.write_bytes(MAGIC + hashlib.sha256(blob).digest() + blob)  # checksum fine, content not
    with pytest.raises(CheckpointError) as exc:
        read_payload(junk)
    assert "\n" not in str(exc.value) and str(junk) in str(exc.value)
    truncated = tmp_path / "cut.pt"
    truncated.write_bytes(not_a_dict.read_bytes()[:-10])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        read_payload(truncated)


def test_exotic_values_are_made_plain_at_save_time(grown_run: Path, tmp_path: Path) -> None:
    state = load_checkpoint(grown_run)
    state.growth_history[0]["extras"].update(
        loss=np.float64(1.5), n=np.int64(3), ok=np.bool_(True), arr=np.arange(3), path=tmp_path
    )
    state.growth_history[0]["shape"] = torch.Size([2, 3])
    back = load_checkpoint(save_checkpoint(state, tmp_path / "ckpt-000000012.pt"))
    extras, shape = back.growth_history[0]["extras"], back.growth_history[0]["shape"]
    assert extras["loss"] == 1.5 and type(extras["loss"]) is float
    assert (extras["n"], extras["ok"], extras["arr"]) == (3, True, [0, 1, 2])
    assert type(extras["n"]) is int and type(extras["ok"]) is bool
    assert extras["path"] == str(tmp_path) and shape == (2, 3) and type(shape) is tuple
    state.growth_history[0]["extras"]["bad"] = Marker(tmp_path / "never")
    with pytest.raises(CheckpointError, match=r"growth_history.*Marker, outside raygrow's"):
        save_checkpoint(state, tmp_path / "ckpt-000000013.pt")
    assert not (tmp_path / "ckpt-000000013.pt").exists()
    assert plain_payload({"a": (1, [np.float32(0.5)])}) == {"a": (1, [0.5])}
