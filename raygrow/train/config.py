"""`TrainConfig`: one training run, validated at the edge (before any compute)."""

from __future__ import annotations

import dataclasses
import json
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from raygrow.config import ModelConfig
from raygrow.errors import ConfigError

PRECISIONS = ("auto", "fp32", "bf16")

# Fields that change the training trajectory: a checkpoint may only be resumed under a config
# that agrees on all of them (the others — output, logging, device — may differ).
TRAJECTORY_FIELDS = (
    "data",
    "tokenizer",
    "seq_len",
    "batch_size",
    "tokens",
    "lr",
    "min_lr_frac",
    "warmup_steps",
    "lr_schedule",
    "wsd_decay_frac",
    "weight_decay",
    "beta1",
    "beta2",
    "grad_clip",
    "precision",
    "seed",
)


@dataclass(frozen=True, kw_only=True, slots=True)
class TrainConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    """Model to train; with a growth schedule, the schedule's start model is used instead."""
    data: str = "default"
    """`default` (embedded corpus), a prepared shard folder, or any `raygrow.data` source."""
    tokenizer: str | None = None
    """`byte` or `bpe:V`; None = byte for raw text, the manifest's tokenizer for a shard folder."""
    seq_len: int = 256
    batch_size: int = 16
    """Global batch in sequences per optimizer step, fixed regardless of the number of workers."""
    micro_batch_size: int | None = None
    """Per-worker sequences per forward pass; smaller values accumulate gradients."""
    tokens: int = 2_000 * 16 * 256
    """Training budget in tokens (sets the number of steps and the LR schedule length)."""
    lr: float = 2e-3
    min_lr_frac: float = 0.1
    warmup_steps: int = 100
    lr_schedule: str = "cosine"
    wsd_decay_frac: float = 0.2
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = 1.0
    """Max global grad norm; 0 disables clipping."""
    precision: str = "auto"
    """`auto` (bf16 autocast only where measured faster on this device, else fp32), `fp32` or
    `bf16`; parameters and AdamW state stay fp32. See `raygrow.train.precision`."""
    eval_every_tokens: int = 200 * 16 * 256
    eval_windows: int = 128
    checkpoint_every_tokens: int = 0
    """0 = checkpoint only at the end; otherwise also every this many tokens."""
    keep_checkpoints: int = 2
    seed: int = 0
    out_dir: str = "raygrow_runs/train"
    device: str = "auto"
    threads: int | None = None
    log_every_steps: int = 50

    def __post_init__(self) -> None:
        positive = ("seq_len", "batch_size", "tokens", "eval_every_tokens", "eval_windows")
        for name in positive:
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name}={value!r} must be a positive integer")
        if self.seq_len > self.model.max_seq_len:
            raise ConfigError(
                f"seq_len={self.seq_len} is longer than model.max_seq_len="
                f"{self.model.max_seq_len}; lower seq_len or raise max_seq_len"
            )
        if self.lr <= 0:
            raise ConfigError(f"lr={self.lr} must be positive, e.g. 2e-3")
        if self.weight_decay < 0 or self.grad_clip < 0:
            raise ConfigError("weight_decay and grad_clip must be >= 0")
        if not (0 <= self.beta1 < 1 and 0 <= self.beta2 < 1):
            raise ConfigError(f"beta1={self.beta1}, beta2={self.beta2} must be in [0, 1)")
        if self.lr_schedule not in ("cosine", "wsd", "constant"):
            raise ConfigError(
                f"lr_schedule={self.lr_schedule!r} is unknown; use cosine, wsd or constant"
            )
        if self.micro_batch_size is not None and self.micro_batch_size < 1:
            raise ConfigError(f"micro_batch_size={self.micro_batch_size} must be positive")
        if self.total_steps < 1:
            raise ConfigError(
                f"tokens={self.tokens} is less than one step ({self.tokens_per_step} tokens); "
                "raise tokens"
            )
        if self.checkpoint_every_tokens < 0 or self.warmup_steps < 0:
            raise ConfigError("checkpoint_every_tokens and warmup_steps must be >= 0")
        if self.precision not in PRECISIONS:
            raise ConfigError(
                f"precision={self.precision!r} is unknown; use one of {', '.join(PRECISIONS)}"
            )
        if self.device not in ("auto", "cpu", "cuda") and not self.device.startswith("cuda:"):
            raise ConfigError(f"device={self.device!r} must be auto, cpu or cuda[:N]")

    @property
    def tokens_per_step(self) -> int:
        return self.batch_size * self.seq_len

    @property
    def total_steps(self) -> int:
        return self.tokens // self.tokens_per_step

    def every_steps(self, tokens: int) -> int:
        """Convert a token interval into whole steps (at least 1)."""
        return max(1, tokens // self.tokens_per_step)

    def replace(self, **changes: Any) -> TrainConfig:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["model"] = self.model.to_dict()
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        data = dict(data)
        if "amp" in data and "precision" not in data:  # configs/checkpoints before `precision`
            data["precision"] = "bf16" if data.pop("amp") else "fp32"
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ConfigError(
                f"unknown train config keys {sorted(unknown)}; known: {sorted(known)}"
            )
        if isinstance(data.get("model"), dict):
            data["model"] = ModelConfig.from_dict(data["model"])
        elif isinstance(data.get("model"), str):
            data["model"] = ModelConfig.from_shape(data["model"])
        try:
            return cls(**data)
        except TypeError as exc:
            raise ConfigError(f"bad train config: {exc}") from None

    def trajectory_mismatch(self, other: dict[str, Any]) -> list[str]:
        """Names of trajectory fields where `other` (a saved to_dict()) differs from self.

        `precision="auto"` matches any saved precision: it is resolved on the node that trains,
        and the loop compares the resolved value (a checkpoint always stores fp32 or bf16)."""
        mine = self.to_dict()
        if "amp" in other and "precision" not in other:
            other = {**other, "precision": "bf16" if other["amp"] else "fp32"}
        return [
            k
            for k in TRAJECTORY_FIELDS
            if k in other and other[k] != mine[k] and not (k == "precision" and mine[k] == "auto")
        ]


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read a JSON or TOML train config into a dict (validated later by TrainConfig)."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file {str(p)!r} does not exist; pass an existing .json/.toml")
    try:
        if p.suffix == ".toml":
            return tomllib.loads(p.read_text())
        return json.loads(p.read_text())
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"config file {str(p)!r} is not valid {p.suffix[1:]}: {exc}") from None
