"""TrainConfig validation and the train CLI's bad-input contract (exit 2, one line)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from raygrow.errors import ConfigError
from raygrow.model import ModelConfig
from raygrow.train.config import TrainConfig


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"lr": -1.0}, "lr"),
        ({"seq_len": 512}, "max_seq_len"),
        ({"batch_size": 0}, "batch_size"),
        ({"tokens": 10}, "tokens"),
        ({"lr_schedule": "linear"}, "lr_schedule"),
        ({"beta2": 1.5}, "beta2"),
        ({"device": "tpu"}, "device"),
    ],
)
def test_invalid_values_name_the_field(kwargs: dict, field: str) -> None:
    with pytest.raises(ConfigError, match=field):
        TrainConfig(**kwargs)


def test_round_trip_and_unknown_keys() -> None:
    c = TrainConfig(model=ModelConfig(n_layers=3), lr=1e-3)
    assert TrainConfig.from_dict(c.to_dict()) == c
    with pytest.raises(ConfigError, match="unknown"):
        TrainConfig.from_dict({"learning_rate": 1e-3})
    assert TrainConfig.from_dict({"model": "6x128"}).model.n_layers == 6


def test_trajectory_mismatch_ignores_output_fields() -> None:
    c = TrainConfig()
    assert c.trajectory_mismatch(c.replace(out_dir="elsewhere", threads=1).to_dict()) == []
    assert c.trajectory_mismatch(c.replace(lr=1e-4).to_dict()) == ["lr"]


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--model", "4x100", "--n-heads", "3"], "n_heads"),
        (["--lr", "-0.1"], "lr"),
        (["--data", "/no/such/corpus"], "/no/such/corpus"),
        (["--tokenizer", "wordpiece"], "tokenizer"),
        (["--seq-len", "300", "--model", "2x64", "--tokens", "1"], "tokens"),
        (["--resume", "/no/such/ckpt.pt"], "does not exist"),
        (["--config", "/no/such/config.toml"], "config"),
        (["--precision", "fp16"], "precision"),
        (["--precision", "bf16", "--no-amp"], "--no-amp"),
    ],
)
def test_cli_bad_input_exits_2_with_one_line(args: list[str], needle: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "raygrow.train", *args, "--out", "/tmp/raygrow-test-bad"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr
    assert needle in lines[0]
