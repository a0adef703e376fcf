"""The training loop on the embedded corpus: learning, bit-identical resume, metrics, growth."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from raygrow.data import load_tokens, unigram_entropy
from raygrow.model import ModelConfig
from raygrow.train.config import TrainConfig
from raygrow.train.loop import train
from raygrow.train.state import load_checkpoint

TINY = ModelConfig(n_layers=2, d_model=32, n_heads=2, max_seq_len=32)


def tiny_config(out: Path, steps: int = 40, batch_size: int = 8, **kw) -> TrainConfig:
    base = dict(
        model=TINY,
        seq_len=32,
        batch_size=batch_size,
        tokens=steps * batch_size * 32,
        warmup_steps=5,
        eval_every_tokens=10 * batch_size * 32,
        eval_windows=16,
        out_dir=str(out),
        log_every_steps=0,
    )
    base.update(kw)
    return TrainConfig(**base)


def test_learns_below_unigram_baseline(tmp_path: Path) -> None:
    cfg = tiny_config(tmp_path, steps=150, lr=3e-3, batch_size=16)
    result = train(cfg, verbose=False)
    baseline = unigram_entropy(load_tokens("default").train)
    assert result.history[0]["val_loss"] > 5.0  # ~ln(256) at init
    assert result.final["val_loss"] < baseline - 0.3
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == len(result.history) == 16  # step 0 + every 10 steps
    rec = json.loads(lines[-1])
    for key in ("val_loss", "val_bpb", "train_loss", "tokens", "flops", "tokens_per_s", "lr"):
        assert key in rec
    assert rec["tokens"] == 150 * 16 * 32
    # the time split the speed benchmark charges against a trial's wall time
    assert result.history[0]["train_s"] == 0.0 and result.history[0]["eval_s"] > 0
    assert rec["train_s"] > 0 and rec["eval_s"] > 0
    assert rec["tokens_per_s"] == pytest.approx(10 * 16 * 32 / rec["train_s"])
    # the held-out test split: evaluated once, on the final model, never before
    records = [json.loads(x) for x in lines]
    assert [("test_loss" in r, "test_bpb" in r) for r in records] == [(False, False)] * 15 + [
        (True, True)
    ]
    assert [("test_loss" in r) for r in result.history] == [False] * 15 + [True]
    assert rec["test_loss"] == result.final["test_loss"] < baseline
    assert rec["test_bpb"] == pytest.approx(rec["test_loss"] / math.log(2))  # bytes: 1/token
    assert rec["test_loss"] != rec["val_loss"]  # other documents


def test_resume_is_bit_identical(tmp_path: Path) -> None:
    full = train(tiny_config(tmp_path / "full"), verbose=False)
    half = tiny_config(tmp_path / "half", checkpoint_every_tokens=20 * 8 * 32)
    first = train(half, verbose=False)
    ckpt = tmp_path / "half" / "checkpoints" / "ckpt-000000020.pt"
    assert ckpt.exists()
    resumed = train(half.replace(out_dir=str(tmp_path / "resumed")), resume=ckpt, verbose=False)
    full_curve = [(r["step"], r["val_loss"], r["train_loss"]) for r in full.history]
    resumed_curve = [(r["step"], r["val_loss"], r["train_loss"]) for r in resumed.history]
    assert resumed_curve == full_curve[-len(resumed_curve) :]
    assert first.final["val_loss"] == full.final["val_loss"]
    assert resumed.final["test_loss"] == full.final["test_loss"]
    assert all("test_loss" not in r for r in resumed.history[:-1])
    for k, v in full.state.model_state.items():
        assert torch.equal(v, resumed.state.model_state[k]), k


def test_resume_with_changed_trajectory_is_rejected(tmp_path: Path) -> None:
    from raygrow.errors import CheckpointError

    cfg = tiny_config(tmp_path, steps=10, checkpoint_every_tokens=10 * 8 * 32)
    train(cfg, verbose=False)
    with pytest.raises(CheckpointError, match="lr"):
        train(cfg.replace(lr=1e-4), resume=tmp_path / "checkpoints", verbose=False)


def test_gradient_accumulation_matches_full_batch(tmp_path: Path) -> None:
    a = train(tiny_config(tmp_path / "a", steps=10), verbose=False)
    b = train(tiny_config(tmp_path / "b", steps=10, micro_batch_size=2), verbose=False)
    for ra, rb in zip(a.history, b.history, strict=True):
        assert ra["val_loss"] == pytest.approx(rb["val_loss"], abs=1e-5)


def test_final_checkpoint_holds_the_run(tmp_path: Path) -> None:
    result = train(tiny_config(tmp_path, steps=10), verbose=False)
    state = load_checkpoint(tmp_path / "checkpoints")
    assert state.step == 10 and state.tokens == result.final["tokens"]
    assert state.flops == pytest.approx(result.final["flops"])
    assert set(state.optim_state) == set(state.model_state)


def two_stage_schedule():
    from raygrow.schedule import GrowthSchedule, GrowthStage, Trigger

    start = TINY.replace(n_layers=1)
    return GrowthSchedule(
        start=start,
        stages=(
            GrowthStage(
                trigger=Trigger(at=0.25, fraction=True), operator="stack", params={"factor": 2}
            ),
            GrowthStage(
                trigger=Trigger(at=0.5, fraction=True),
                operator="hypercloning",
                params={"d_model": 64},
                lr_policy="rescale",
                lr_params={"lr_scale": 0.5, "rewarm_steps": 3},
            ),
        ),
    )


def test_two_stage_growth_and_resume_after_growth(tmp_path: Path) -> None:
    schedule = two_stage_schedule()
    cfg = tiny_config(tmp_path / "full", steps=40, checkpoint_every_tokens=30 * 8 * 32)
    full = train(cfg, schedule, verbose=False)
    state = full.state
    assert [e["operator"] for e in state.growth_history] == ["stack", "hypercloning"]
    assert [e["step"] for e in state.growth_history] == [10, 20]
    assert (state.model_config.n_layers, state.model_config.d_model) == (2, 64)
    # FLOPs are summed over stages: less than training the final model all the way
    from raygrow.flops import flops_per_token

    assert state.flops < flops_per_token(state.model_config, 32) * cfg.tokens
    # resume from the step-30 checkpoint (taken after both growth events)
    ckpt = tmp_path / "full" / "checkpoints" / "ckpt-000000030.pt"
    resumed = train(cfg.replace(out_dir=str(tmp_path / "r")), schedule, resume=ckpt, verbose=False)
    assert resumed.final["val_loss"] == full.final["val_loss"]
    assert resumed.state.model_config == state.model_config
    # a grown run evaluates test at its own end, on the grown model
    assert resumed.final["test_loss"] == full.final["test_loss"]
    assert [r for r in full.history if "test_loss" in r] == [full.final]


def test_incremental_freeze_and_msg_ramp_directives(tmp_path: Path) -> None:
    from raygrow.schedule import fixed
    from raygrow.train.loop import Trainer

    start = TINY.replace(n_layers=1)
    sched = fixed(start, "incremental", 0.25, factor=2, phase_steps=5)
    trainer = Trainer(tiny_config(tmp_path / "inc", steps=20), sched, verbose=False)
    while trainer.state.step < 6:  # grows at step 5 (a quarter of 20 steps)
        trainer.step_once()
    assert trainer.model_config.n_layers == 2
    old = trainer.model.state_dict()["layers.0.attn.wq.weight"].clone()
    trainer.step_once()  # inside the freeze phase: layer 0 must not move
    assert torch.equal(trainer.model.state_dict()["layers.0.attn.wq.weight"], old)
    for _ in range(4):
        trainer.step_once()  # phase over: everything trains
    assert not torch.equal(trainer.model.state_dict()["layers.0.attn.wq.weight"], old)

    sched = fixed(start, "random", 0.25, factor=2, ramp_steps=4)
    trainer = Trainer(tiny_config(tmp_path / "msg", steps=20), sched, verbose=False)
    scales = []
    while trainer.state.step < 12:
        trainer.step_once()
        scales.append(trainer.model.layers[-1].branch_scale)
    assert scales[4:11] == [1.0, 0.0, 0.25, 0.5, 0.75, 1.0, 1.0]
