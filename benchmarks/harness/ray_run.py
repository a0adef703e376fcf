"""The 1-worker Ray Train throughput run the speed benchmarks time against the bare loop
(overhead.py, speed.py): a 4x128 model, seq 128, batch 16, `NUM_CPUS` threads, evaluating
every 1/8 and checkpointing every 1/4 of the run.
"""

from __future__ import annotations

import json
import os
import statistics
from pathlib import Path
from typing import Any

NUM_CPUS = 2


def throughput_config(out_dir: Path, steps: int) -> Any:
    """The TrainConfig of the throughput runs: `steps` steps, writing into `out_dir`."""
    from raygrow.model import ModelConfig
    from raygrow.train.config import TrainConfig

    step_tokens = 16 * 128
    return TrainConfig(
        model=ModelConfig(n_layers=4, d_model=128, n_heads=2, max_seq_len=128),
        seq_len=128,
        batch_size=16,
        tokens=steps * step_tokens,
        warmup_steps=10,
        eval_every_tokens=steps // 8 * step_tokens,
        checkpoint_every_tokens=steps // 4 * step_tokens,
        eval_windows=32,
        threads=NUM_CPUS,
        log_every_steps=0,
        out_dir=str(out_dir),
    )


def run_ray(out_dir: Path, steps: int, env: dict[str, str] | None = None) -> dict[str, float]:
    """One 1-worker Ray Train run of `throughput_config` (on the Ray instance already started;
    `env`, default `FAST_START_ENV`, set first): tokens/s from the first to the last report, the
    median step-only tokens/s and the interval between evaluations."""
    from raygrow.train.driver import FAST_START_ENV, build_trainer, fit

    os.environ.update(env or FAST_START_ENV)
    config = throughput_config(out_dir, steps)
    trainer = build_trainer(config, num_workers=1, cpus_per_worker=NUM_CPUS, verbose=False)
    metrics = fit(trainer).metrics
    step_tps = [
        json.loads(line)["tokens_per_s"]
        for line in (out_dir / "metrics.jsonl").read_text().splitlines()
    ]
    return {
        "tokens_per_s": metrics["tokens"] / metrics["elapsed_s"],
        "step_tokens_per_s": statistics.median([t for t in step_tps if t]),
        "eval_interval_s": metrics["elapsed_s"] / (len(step_tps) - 1),
    }
