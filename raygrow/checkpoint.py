"""The checkpoint file: magic, checksum and a `torch.save` payload; atomic writes; folder naming.

File format: an 8-byte magic, the sha256 of the payload (32 bytes), then a `torch.save` payload
(a dict carrying its own `format_version`). The hash turns truncation or corruption into a clear
error instead of a silent partial load; writes go to a temporary file that is renamed into place,
so a crash never leaves half a file.

Safe loading: a payload is plain data (tensors, dicts, lists, tuples, str, int, float, bool,
None; `plain_payload` converts numpy scalars/arrays, torch.Size, paths and enums at write time and
refuses anything else), so it is read with `torch.load(weights_only=True)` and torch's default
allow-list plus `SAFE_GLOBALS` (empty: raygrow stores nothing beyond the defaults). A file holding
any other object (a pickled class instance, a function) is refused before it is constructed.

Below train and growth on purpose: `raygrow.train.state` gives the payload its meaning
(`TrainState`), and `python -m raygrow.growth check --checkpoint` reads the model part without
importing the trainer.
"""

from __future__ import annotations

import enum
import hashlib
import io
import os
import pickle
import re
import tempfile
from collections.abc import Mapping
from pathlib import Path, PurePath
from typing import Any

import numpy as np
import torch

from raygrow.config import ModelConfig
from raygrow.errors import CheckpointError
from raygrow.model import param_fqns

MAGIC = b"RAYGROW1"
FORMAT_VERSION = 1
SAFE_GLOBALS: tuple[Any, ...] = ()
"""Globals allowed on top of torch's `weights_only` defaults (tensors, dtypes, torch.Size, plain
containers and scalars): none, since `plain_payload` keeps every payload within the defaults."""
_PLAIN_SCALARS = (str, int, float, bool, type(None))


def plain_payload(value: Any, where: str = "payload") -> Any:
    """`value` as plain data the safe loader reads back: tensors, dicts, lists, tuples, str, int,
    float, bool, None (numpy scalars/arrays, torch.Size, paths and enums converted); anything
    else is a CheckpointError naming where it sits (`where`: its key path)."""
    if type(value) in _PLAIN_SCALARS or isinstance(
        value, torch.Tensor | torch.dtype | torch.device
    ):
        return value
    if isinstance(value, Mapping):
        return {
            plain_payload(k, where): plain_payload(v, f"{where}[{k!r}]") for k, v in value.items()
        }
    if isinstance(value, list | tuple):  # torch.Size and named tuples become plain tuples
        items = [plain_payload(v, f"{where}[{i}]") for i, v in enumerate(value)]
        return items if isinstance(value, list) else tuple(items)
    if isinstance(value, enum.Enum):
        return plain_payload(value.value, where)
    if isinstance(value, np.ndarray | np.generic):
        return plain_payload(value.tolist(), where)
    if isinstance(value, PurePath):
        return str(value)
    for kind in (bool, int, float, str):  # subclasses (np.float64 is a float) -> the base type
        if isinstance(value, kind):
            return kind(value)
    raise CheckpointError(
        f"cannot write checkpoint: {where} is a {type(value).__qualname__}, outside raygrow's "
        "checkpoint format (tensors, dicts, lists, tuples, str, int, float, bool, None)"
    )


def write_payload(payload: dict[str, Any], path: str | Path) -> Path:
    """Atomically write `payload` to `path` (temp file in the same folder, then rename); the
    payload is made plain first (`plain_payload`), so `read_payload` loads it safely."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    torch.save(plain_payload(payload), buffer)
    blob = buffer.getvalue()
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(MAGIC + hashlib.sha256(blob).digest() + blob)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def find_checkpoint(path: str | Path) -> Path:
    """`path` itself, or the newest checkpoint when it is a folder; CheckpointError if none."""
    path = Path(path)
    if path.is_dir():
        path = latest_checkpoint(path) or path
    if not path.is_file():
        raise CheckpointError(
            f"checkpoint {str(path)!r} does not exist; pass a checkpoint file or a run's "
            "checkpoints folder"
        )
    return path


def read_payload(path: Path) -> dict[str, Any]:
    """The payload of the checkpoint file `path`; any damage is a CheckpointError."""
    blob = path.read_bytes()
    if len(blob) < 40 or blob[:8] != MAGIC:
        raise CheckpointError(f"checkpoint {str(path)!r} is not a raygrow checkpoint (bad header)")
    digest, payload = blob[8:40], blob[40:]
    if hashlib.sha256(payload).digest() != digest:
        raise CheckpointError(
            f"checkpoint {str(path)!r} is truncated or corrupt (checksum mismatch); "
            "use an earlier checkpoint"
        )
    return _safe_load(payload, path)


def _safe_load(blob: bytes, path: Path) -> dict[str, Any]:
    """`torch.load(weights_only=True)`: no code in the file runs, foreign objects are refused."""
    try:
        with torch.serialization.safe_globals(list(SAFE_GLOBALS)):
            payload = torch.load(io.BytesIO(blob), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"GLOBAL (\S+)|Unsupported operand \S+|invalid load key[^.\n]*", str(exc))
        what = f" ({(found.group(1) or found.group(0)).rstrip('.')})" if found else ""
        raise CheckpointError(
            f"checkpoint {str(path)!r} contains objects outside raygrow's checkpoint format"
            f"{what}; refusing to load it (only tensors and plain data are read)"
        ) from None
    except Exception as exc:  # zip reader / EOF errors of a payload that is no torch.save
        reason = str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__
        raise CheckpointError(
            f"checkpoint {str(path)!r} is not a readable torch payload ({reason}); "
            "use an earlier checkpoint"
        ) from None
    if not isinstance(payload, dict):
        raise CheckpointError(
            f"checkpoint {str(path)!r} holds a {type(payload).__name__}, not a raygrow payload dict"
        )
    return payload


def check_format(payload: dict[str, Any], source: str) -> None:
    """Reject a payload written by another format version (one-line CheckpointError)."""
    if payload.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"checkpoint {source} has format {payload.get('format_version')}, this raygrow "
            f"reads {FORMAT_VERSION}; re-create it with this version"
        )


def check_model_state(
    config: ModelConfig,
    model_state: dict[str, torch.Tensor],
    optim_state: dict[str, dict[str, torch.Tensor]],
    source: str,
) -> None:
    """Model state and optimizer state must match the config's FQNs and shapes."""
    expected = set(param_fqns(config))
    if set(model_state) != expected:
        diff = sorted(expected ^ set(model_state))[:4]
        raise CheckpointError(
            f"checkpoint {source}: model state FQNs do not match its config "
            f"{config.shape} (e.g. {diff})"
        )
    unknown = set(optim_state) - expected
    if unknown:
        raise CheckpointError(
            f"checkpoint {source}: optimizer state for unknown parameters {sorted(unknown)[:4]}"
        )
    for name, entry in optim_state.items():
        shape = model_state[name].shape
        for key in ("exp_avg", "exp_avg_sq"):
            if key in entry and entry[key].shape != shape:
                raise CheckpointError(
                    f"checkpoint {source}: optimizer {name}.{key} shape "
                    f"{tuple(entry[key].shape)} != parameter shape {tuple(shape)}"
                )


def read_model(
    path: str | Path,
) -> tuple[ModelConfig, dict[str, torch.Tensor], dict[str, dict[str, torch.Tensor]], int]:
    """(config, params, FQN-keyed AdamW state, step) of a checkpoint file or folder, checked as
    `raygrow.train.state.load_checkpoint` checks them; the rest of the payload is ignored."""
    path = find_checkpoint(path)
    payload = read_payload(path)
    check_format(payload, str(path))
    try:
        config = ModelConfig.from_dict(payload["model_config"])
        params, optim = payload["model_state"], payload.get("optim_state", {})
        step = int(payload.get("step", 0))
    except (TypeError, KeyError, ValueError) as exc:
        raise CheckpointError(f"checkpoint {path} is not a raygrow TrainState: {exc}") from None
    check_model_state(config, params, optim, str(path))
    return config, params, optim, step


def checkpoint_name(step: int) -> str:
    return f"ckpt-{step:09d}.pt"


def latest_checkpoint(folder: str | Path) -> Path | None:
    files = sorted(Path(folder).glob("ckpt-*.pt"))
    return files[-1] if files else None


def prune_checkpoints(folder: str | Path, keep: int) -> None:
    files = sorted(Path(folder).glob("ckpt-*.pt"))
    for old in files[: max(0, len(files) - keep)]:
        old.unlink(missing_ok=True)
