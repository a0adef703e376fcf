"""`TrainState`: everything needed to continue a run bit-identically, and its checkpoint file.

File format: an 8-byte magic, the sha256 of the payload (32 bytes), then a `torch.save` payload.
The hash turns truncation or corruption into a clear error instead of a silent partial load;
writes go to a temporary file that is renamed into place, so a crash never leaves half a file.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from raygrow.errors import CheckpointError
from raygrow.model import ModelConfig, param_fqns

MAGIC = b"RAYGROW1"
FORMAT_VERSION = 1


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
        if payload.get("format_version") != FORMAT_VERSION:
            raise CheckpointError(
                f"checkpoint {source} has format {payload.get('format_version')}, this raygrow "
                f"reads {FORMAT_VERSION}; re-create it with this version"
            )
        payload = dict(payload)
        payload.pop("format_version")
        try:
            payload["model_config"] = ModelConfig.from_dict(payload["model_config"])
            state = cls(**payload)
        except (TypeError, KeyError, ValueError) as exc:
            raise CheckpointError(
                f"checkpoint {source} is not a raygrow TrainState: {exc}"
            ) from None
        state.check_consistent(source)
        return state

    def check_consistent(self, source: str = "state") -> None:
        """Model state and optimizer state must match the config's FQNs and shapes."""
        expected = set(param_fqns(self.model_config))
        if set(self.model_state) != expected:
            diff = sorted(expected ^ set(self.model_state))[:4]
            raise CheckpointError(
                f"checkpoint {source}: model state FQNs do not match its config "
                f"{self.model_config.shape} (e.g. {diff})"
            )
        unknown = set(self.optim_state) - expected
        if unknown:
            raise CheckpointError(
                f"checkpoint {source}: optimizer state for unknown parameters {sorted(unknown)[:4]}"
            )
        for name, entry in self.optim_state.items():
            shape = self.model_state[name].shape
            for key in ("exp_avg", "exp_avg_sq"):
                if key in entry and entry[key].shape != shape:
                    raise CheckpointError(
                        f"checkpoint {source}: optimizer {name}.{key} shape "
                        f"{tuple(entry[key].shape)} != parameter shape {tuple(shape)}"
                    )


def save_checkpoint(state: TrainState, path: str | Path) -> Path:
    """Atomically write `state` to `path` (temp file in the same folder, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    torch.save(state.to_payload(), buffer)
    payload = buffer.getvalue()
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(MAGIC + hashlib.sha256(payload).digest() + payload)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load_checkpoint(path: str | Path) -> TrainState:
    """Read a checkpoint file (or the newest one in a folder); any damage is a CheckpointError."""
    path = Path(path)
    if path.is_dir():
        path = latest_checkpoint(path) or path
    if not path.is_file():
        raise CheckpointError(
            f"checkpoint {str(path)!r} does not exist; pass a checkpoint file or a run's "
            "checkpoints folder"
        )
    blob = path.read_bytes()
    if len(blob) < 40 or blob[:8] != MAGIC:
        raise CheckpointError(f"checkpoint {str(path)!r} is not a raygrow checkpoint (bad header)")
    digest, payload = blob[8:40], blob[40:]
    if hashlib.sha256(payload).digest() != digest:
        raise CheckpointError(
            f"checkpoint {str(path)!r} is truncated or corrupt (checksum mismatch); "
            "use an earlier checkpoint"
        )
    data = torch.load(io.BytesIO(payload), map_location="cpu", weights_only=False)
    return TrainState.from_payload(data, str(path))


def checkpoint_name(step: int) -> str:
    return f"ckpt-{step:09d}.pt"


def latest_checkpoint(folder: str | Path) -> Path | None:
    files = sorted(Path(folder).glob("ckpt-*.pt"))
    return files[-1] if files else None


def prune_checkpoints(folder: str | Path, keep: int) -> None:
    files = sorted(Path(folder).glob("ckpt-*.pt"))
    for old in files[: max(0, len(files) - keep)]:
        old.unlink(missing_ok=True)
