"""`TrainState`: everything needed to continue a run bit-identically, saved as a checkpoint.

The file itself (magic, checksum, atomic write, `ckpt-*.pt` naming) is `raygrow.checkpoint`;
this module gives its payload a meaning and checks it against the model config.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

# checkpoint_name, latest_checkpoint, prune_checkpoints: re-exported, the loop imports them here
from raygrow.checkpoint import (  # noqa: F401
    FORMAT_VERSION,
    check_format,
    check_model_state,
    checkpoint_name,
    find_checkpoint,
    latest_checkpoint,
    prune_checkpoints,
    read_payload,
    write_payload,
)
from raygrow.config import ModelConfig
from raygrow.errors import CheckpointError


@dataclass(kw_only=True)
class TrainState:
    model_config: ModelConfig
    model_state: dict[str, torch.Tensor]
    optim_state: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)
    lr_state: dict[str, Any] = field(default_factory=dict)
    step: int = 0
    tokens: int = 0
    flops: float = 0.0
    data_position: int = 0
    """Training sequences consumed globally (the loader is stateless given this)."""
    rng: dict[str, Any] = field(default_factory=dict)
    growth_history: list[dict[str, Any]] = field(default_factory=list)
    """One GrowthReport dict per growth event, with the step/tokens/flops it happened at."""
    schedule_cursor: int = 0
    """Index of the next growth stage to run."""
    val_curve: list[tuple[float, float]] = field(default_factory=list)
    """(flops, val_loss) of every evaluation: the slope trigger and resume need it."""
    train_config: dict[str, Any] = field(default_factory=dict)
    """The TrainConfig.to_dict() that produced this state (checked on resume)."""
    schedule: dict[str, Any] | None = None

    def to_payload(self) -> dict[str, Any]:
        payload = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        payload["model_config"] = self.model_config.to_dict()
        payload["format_version"] = FORMAT_VERSION
        return payload

    @classmethod
    def from_payload(cls, payload: dict[str, Any], source: str) -> TrainState:
        check_format(payload, source)
        payload = dict(payload)
        payload.pop("format_version")
        try:
            payload["model_config"] = ModelConfig.from_dict(payload["model_config"])
            state = cls(**payload)
        except (TypeError, KeyError, ValueError) as exc:
            raise CheckpointError(
                f"checkpoint {source} is not a raygrow TrainState: {exc}"
            ) from None
        check_model_state(state.model_config, state.model_state, state.optim_state, source)
        return state


def save_checkpoint(state: TrainState, path: str | Path) -> Path:
    """Atomically write `state` to `path` (temp file in the same folder, then rename)."""
    return write_payload(state.to_payload(), path)


def load_checkpoint(path: str | Path) -> TrainState:
    """Read a checkpoint file (or the newest one in a folder); any damage is a CheckpointError."""
    path = find_checkpoint(path)
    return TrainState.from_payload(read_payload(path), str(path))
