"""`python -m raygrow.train`: one training run (single process, or Ray Train with --workers).

Settings come from defaults < `--config FILE` (JSON/TOML with TrainConfig keys) < flags.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
from pathlib import Path
from typing import Any

import torch

from raygrow.config import ModelConfig
from raygrow.errors import EXIT_RUN_FAILURE, ConfigError, cli_entry
from raygrow.train.config import TrainConfig, load_config_file

# flag name -> TrainConfig field (flags left unset do not override the config file)
FLAG_FIELDS = {
    "data": "data",
    "tokenizer": "tokenizer",
    "seq_len": "seq_len",
    "batch_size": "batch_size",
    "micro_batch_size": "micro_batch_size",
    "tokens": "tokens",
    "lr": "lr",
    "min_lr_frac": "min_lr_frac",
    "warmup_steps": "warmup_steps",
    "lr_schedule": "lr_schedule",
    "weight_decay": "weight_decay",
    "grad_clip": "grad_clip",
    "eval_every_tokens": "eval_every_tokens",
    "eval_windows": "eval_windows",
    "checkpoint_every_tokens": "checkpoint_every_tokens",
    "seed": "seed",
    "out": "out_dir",
    "device": "device",
    "threads": "threads",
    "precision": "precision",
}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m raygrow.train", description=__doc__)
    p.add_argument("--config", help="JSON or TOML file with TrainConfig fields")
    p.add_argument("--model", help="model size LxD, e.g. 4x128 (heads default to head_dim 64)")
    p.add_argument("--n-heads", type=int)
    p.add_argument("--schedule", help="growth schedule JSON (raygrow.schedule.GrowthSchedule)")
    p.add_argument(
        "--data", help="default | prepared shard folder | text path/glob | x.parquet:col"
    )
    p.add_argument("--tokenizer", help="byte (default) or bpe:V")
    p.add_argument("--seq-len", type=int)
    p.add_argument("--batch-size", type=int, help="global batch in sequences")
    p.add_argument("--micro-batch-size", type=int)
    p.add_argument("--tokens", type=int, help="token budget")
    p.add_argument("--lr", type=float)
    p.add_argument("--min-lr-frac", type=float)
    p.add_argument("--warmup-steps", type=int)
    p.add_argument("--lr-schedule", choices=["cosine", "wsd", "constant"])
    p.add_argument("--weight-decay", type=float)
    p.add_argument("--grad-clip", type=float)
    p.add_argument("--eval-every-tokens", type=int)
    p.add_argument("--eval-windows", type=int)
    p.add_argument("--checkpoint-every-tokens", type=int)
    p.add_argument("--seed", type=int)
    p.add_argument("--out", help="output folder (metrics.jsonl, checkpoints/)")
    p.add_argument("--device", help="auto | cpu | cuda")
    p.add_argument("--threads", type=int)
    p.add_argument(
        "--precision",
        help="auto (default: bf16 autocast only where measured faster on this device), fp32, bf16",
    )
    p.add_argument("--no-amp", action="store_true", help="alias of --precision fp32")
    p.add_argument("--workers", type=int, default=0, help="Ray Train workers (0 = this process)")
    p.add_argument("--use-gpu", action="store_true", help="Ray Train workers use one GPU each")
    p.add_argument("--resume", help="checkpoint file or checkpoints folder to continue from")
    p.add_argument("--smoke-test", action="store_true", help="tiny model, ~300 steps")
    return p


def smoke_overrides() -> dict[str, Any]:
    return {
        "model": ModelConfig(n_layers=2, d_model=128, n_heads=2, max_seq_len=128),
        "seq_len": 128,
        "batch_size": 16,
        "tokens": 300 * 16 * 128,
        "warmup_steps": 30,
        "eval_every_tokens": 100 * 16 * 128,
        "eval_windows": 64,
        "out_dir": "raygrow_runs/smoke-train",
    }


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    values: dict[str, Any] = smoke_overrides() if args.smoke_test else {}
    if args.config:
        values.update(load_config_file(args.config))
    for flag, name in FLAG_FIELDS.items():
        value = getattr(args, flag)
        if value is not None:
            values[name] = value
    if args.no_amp:
        if args.precision not in (None, "fp32"):
            raise ConfigError(f"--no-amp contradicts --precision {args.precision}; drop one")
        values["precision"] = "fp32"
    # TrainConfig's and ModelConfig's defaults, read from them (they live only there)
    seq_len = values["seq_len"] if "seq_len" in values else _default(TrainConfig, "seq_len")
    model = values.get("model")
    if isinstance(model, dict):
        model = ModelConfig.from_dict(model)
    shape = args.model or (model if isinstance(model, str) else None)
    if shape:
        # a bare LxD size gets a context that fits the run's seq_len
        context = max(_default(ModelConfig, "max_seq_len"), seq_len)
        model = ModelConfig.from_shape(shape, max_seq_len=context)
    if args.n_heads:
        model = (model or ModelConfig()).replace(n_heads=args.n_heads)
    if model is not None:
        values["model"] = model
    return TrainConfig.from_dict(values)


def _default(cls: type, name: str) -> Any:
    """A dataclass field's default."""
    return {f.name: f.default for f in dataclasses.fields(cls)}[name]


@cli_entry
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    config = config_from_args(args)
    schedule = None
    if args.schedule:
        from raygrow.schedule import GrowthSchedule

        schedule = GrowthSchedule.load(args.schedule)
        schedule.validate(budget_tokens=config.tokens, seq_len=config.seq_len)
    if args.workers < 0:
        raise ConfigError(f"--workers={args.workers} must be >= 0")
    from raygrow.train.dist import resolve_device
    from raygrow.train.precision import check_precision, describe, resolve_precision

    device = resolve_device("cuda" if args.use_gpu else config.device)
    check_precision(config.precision, device)  # bad input exits 2 before Ray or compute
    if args.workers > 0 or args.use_gpu:
        from raygrow.train.driver import run_distributed

        print(f"raygrow.train: precision {config.precision} (resolved on each worker)", flush=True)

        result = run_distributed(
            config,
            schedule,
            num_workers=max(1, args.workers),
            use_gpu=args.use_gpu,
            resume=args.resume,
        )
        print(json.dumps(result, default=str))
        return 0

    from raygrow.train.loop import TrainingDiverged, train

    if config.threads:
        torch.set_num_threads(config.threads)  # the measurement's key includes the threads
    resolved = resolve_precision(config.precision, device)
    print(f"raygrow.train: precision {describe(config.precision, resolved, device)}", flush=True)
    try:
        result = train(config, schedule, resume=args.resume)
    except TrainingDiverged as exc:
        print(f"raygrow.train: run failed: {exc}", file=sys.stderr)
        return EXIT_RUN_FAILURE
    final = result.final
    print(
        json.dumps(
            {
                "val_loss": final.get("val_loss"),
                "val_bpb": final.get("val_bpb"),
                "test_loss": final.get("test_loss"),  # held out: evaluated once, at the end
                "test_bpb": final.get("test_bpb"),
                "tokens": final.get("tokens"),
                "flops": final.get("flops"),
                "out_dir": str(Path(config.out_dir).resolve()),
            }
        )
    )
    if args.smoke_test:
        from raygrow.data import load_tokens, unigram_entropy

        baseline = unigram_entropy(load_tokens(config.data, config.tokenizer).train)
        verdict = "below" if final["val_loss"] < baseline else "NOT below"
        print(
            f"smoke test: val_loss {final['val_loss']:.4f} is {verdict} the unigram baseline "
            f"{baseline:.4f} nats/token"
        )
        if not math.isfinite(final["val_loss"]) or final["val_loss"] >= baseline:
            return EXIT_RUN_FAILURE
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
