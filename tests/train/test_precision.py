"""Precision chosen per machine (`auto` = bf16 only where measured faster), the per-node cache,
the OpenMP wait policy rule, and how a run records what it resolved to."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from raygrow import _omp
from raygrow.errors import ConfigError
from raygrow.model import ModelConfig
from raygrow.train import precision
from raygrow.train.config import TrainConfig
from raygrow.train.loop import train
from raygrow.train.state import load_checkpoint


@pytest.fixture
def node_cache(tmp_path, monkeypatch) -> Path:
    """A private node cache (and an empty per-process cache) for one test."""
    monkeypatch.setenv("RAYGROW_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(precision, "_PROCESS_CACHE", {})
    return tmp_path / "cache" / "node.json"


def test_unknown_precision_is_bad_input() -> None:
    with pytest.raises(ConfigError, match="fp16.*auto, fp32, bf16"):
        precision.check_precision("fp16")
    with pytest.raises(ConfigError, match="precision"):
        TrainConfig(precision="fp16")


def test_bf16_on_a_gpu_without_bf16_is_bad_input(monkeypatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a, **k: "Tesla V100")
    with pytest.raises(ConfigError, match="V100 has no bf16.*auto or fp32"):
        precision.check_precision("bf16", "cuda")
    assert precision.resolve_precision("auto", "cuda") == "fp32"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert precision.resolve_precision("auto", "cuda") == "bf16"


def test_auto_on_cpu_follows_the_measurement(node_cache, monkeypatch) -> None:
    speedup = precision.bf16_speedup()  # measured on this CPU, ~0.5 s
    assert speedup > 0
    expected = "bf16" if speedup >= precision.BF16_MIN_GAIN else "fp32"
    assert precision.resolve_precision("auto", "cpu") == expected
    assert precision.resolve_precision("fp32", "cpu") == "fp32"
    assert precision.resolve_precision("bf16", "cpu") == "bf16"  # explicit: obeyed
    assert expected in precision.describe("auto", expected, "cpu")

    # forced either way: auto picks what the measurement says
    for value, want in ((0.05, "fp32"), (2.0, "bf16")):
        monkeypatch.setattr(precision, "_PROCESS_CACHE", {})
        node_cache.unlink()
        monkeypatch.setattr(precision, "_measure_bf16_speedup", lambda v=value: v)
        assert precision.resolve_precision("auto", "cpu") == want


def test_node_cache_is_keyed_by_the_cpu(node_cache, monkeypatch) -> None:
    calls = []

    def measure() -> float:
        calls.append(1)
        return 42.0

    assert precision.node_cached("thing", measure) == 42.0
    monkeypatch.setattr(precision, "_PROCESS_CACHE", {})  # a new process on the same node
    assert precision.node_cached("thing", measure) == 42.0
    assert len(calls) == 1 and node_cache.is_file()
    keys = list(json.loads(node_cache.read_text()))
    assert any(precision.cpu_model() in k for k in keys)
    # the same host name with another CPU (machines change between sessions): measured again
    monkeypatch.setattr(precision, "_PROCESS_CACHE", {})
    monkeypatch.setattr(precision, "cpu_model", lambda: "Another CPU")
    assert precision.node_cached("thing", measure) == 42.0
    assert len(calls) == 2


def test_amp_configs_still_load_and_auto_matches_any_saved_precision() -> None:
    assert TrainConfig.from_dict({"amp": False}).precision == "fp32"
    assert TrainConfig.from_dict({"amp": True}).precision == "bf16"
    auto = TrainConfig()
    assert auto.precision == "auto"
    assert auto.trajectory_mismatch(auto.replace(precision="bf16").to_dict()) == []
    fp32 = auto.replace(precision="fp32")
    assert fp32.trajectory_mismatch(auto.replace(precision="bf16").to_dict()) == ["precision"]
    old = {k: v for k, v in fp32.to_dict().items() if k != "precision"} | {"amp": True}
    assert fp32.trajectory_mismatch(old) == ["precision"]


def test_a_run_records_the_resolved_precision(tmp_path, node_cache) -> None:
    cfg = TrainConfig(
        model=ModelConfig(n_layers=1, d_model=32, n_heads=2, max_seq_len=32),
        seq_len=32,
        batch_size=4,
        tokens=8 * 4 * 32,
        warmup_steps=1,
        eval_every_tokens=4 * 4 * 32,
        eval_windows=4,
        out_dir=str(tmp_path / "run"),
        log_every_steps=0,
    )
    result = train(cfg, verbose=False)
    resolved = precision.resolve_precision("auto", "cpu")
    assert {r["precision"] for r in result.history} == {resolved}
    assert 0 < result.final["mfu"]  # against the peak of the resolved precision
    ckpt = sorted((tmp_path / "run" / "checkpoints").glob("ckpt-*.pt"))[-1]
    assert load_checkpoint(ckpt).train_config["precision"] == resolved


def test_wait_policy_from_threads_times_processes(monkeypatch) -> None:
    monkeypatch.setattr(_omp, "USER_VALUE", None)
    assert _omp.wait_policy(threads=2, concurrent=1, cores=4) is None  # a core left free
    assert _omp.wait_policy(threads=1, concurrent=3, cores=2) is None  # no team, nothing waits
    assert _omp.wait_policy(threads=2, concurrent=1, cores=2) == "PASSIVE"  # team fills cores
    assert _omp.wait_policy_env(threads=2, concurrent=2, cores=2) == {_omp.ENV: "PASSIVE"}
    assert _omp.wait_policy_env(threads=1, concurrent=1, cores=2) == {}
    monkeypatch.setattr(_omp, "USER_VALUE", "ACTIVE")  # the user's explicit choice wins
    assert _omp.wait_policy(threads=2, concurrent=4, cores=2) == "ACTIVE"
