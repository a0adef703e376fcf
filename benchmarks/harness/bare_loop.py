"""The two training loops the speed benchmarks time side by side (throughput.py, speed.py):
the smallest honest torch loop (`bare_loop_steps`) and raygrow's own `Trainer.step_once`, on
batches of the same shape.
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from raygrow.model import ModelConfig, Transformer
from raygrow.train.config import TrainConfig
from raygrow.train.loop import Trainer
from raygrow.train.precision import autocast_dtype


def bare_loop_steps(
    config: ModelConfig, x: torch.Tensor, y: torch.Tensor, steps: int, precision: str = "fp32"
) -> float:
    """The reference: the smallest honest training loop, in a resolved `precision` (`fp32`, or
    `bf16` = autocast around the forward pass). Returns seconds for `steps` steps."""
    torch.manual_seed(0)
    model = Transformer(config)
    decay = [p for p in model.parameters() if p.dim() >= 2]
    other = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.1}, {"params": other, "weight_decay": 0.0}],
        lr=1e-3,
        betas=(0.9, 0.95),
        foreach=False,
    )
    dtype = autocast_dtype(precision)
    autocast = torch.autocast("cpu", dtype=dtype) if dtype else contextlib.nullcontext()
    start = time.perf_counter()
    for _ in range(steps):
        with autocast:
            logits = model(x)
        loss = F.cross_entropy(logits.float().view(-1, logits.size(-1)), y.view(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
    return time.perf_counter() - start


def raygrow_steps(trainer: Trainer, steps: int) -> float:
    start = time.perf_counter()
    for _ in range(steps):
        trainer.step_once()
    return time.perf_counter() - start


def bare_tokens_per_s(
    config: ModelConfig, x: torch.Tensor, y: torch.Tensor, steps: int, precision: str
) -> float:
    """Tokens/s of `bare_loop_steps` on the batch `x` (`steps` steps, a fresh model)."""
    return steps * x.numel() / bare_loop_steps(config, x, y, steps, precision)


def make_trainer(shape: str, out_dir: Path, steps: int) -> Trainer:
    """raygrow's Trainer for `shape` (batch 16 x 256, precision `auto`), room for `steps` steps;
    `trainer.config.precision` is what `auto` resolved to."""
    config = TrainConfig(
        model=ModelConfig.from_shape(shape),
        batch_size=16,
        seq_len=256,
        tokens=16 * 256 * steps,
        eval_every_tokens=10**12,
        out_dir=str(out_dir / shape),
    )
    return Trainer(config, verbose=False)
