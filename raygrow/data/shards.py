"""On-disk token format: Parquet shards plus ``manifest.json``.

A prepared folder holds ``train-00000.parquet``, ..., ``val-00000.parquet``, ... and
``test-00000.parquet``, ... (the held-out test split), the tokenizer file for BPE, and
``manifest.json``. Each shard has one binary column ``tokens``: row ``i`` holds tokens
``[i * CHUNK_TOKENS, (i + 1) * CHUNK_TOKENS)`` of the shard as little-endian ``manifest.dtype``
bytes (the schema metadata repeats dtype and chunk size). The manifest
records the sha256 of every split's token bytes, so a truncated or edited shard is detected
when the folder is opened.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from raygrow.errors import ConfigError

MANIFEST_FILE = "manifest.json"
FORMAT_NAME = "raygrow-tokens"
FORMAT_VERSION = 2
"""2: a held-out test split (1 had train and val only: its folders must be prepared again)."""
SHARD_TOKENS = 1 << 22  # 4 Mi tokens per shard: about 1.6 MB on disk for byte tokens
CHUNK_TOKENS = 1 << 16  # tokens per Parquet row
TOKEN_COLUMN = "tokens"
SPLITS = ("train", "val", "test")
_FIX = "re-run python -m raygrow.data prepare"


def tokens_sha256(tokens: np.ndarray) -> str:
    """sha256 of the little-endian bytes of a token array."""
    arr = np.ascontiguousarray(tokens, dtype=tokens.dtype.newbyteorder("<"))
    return hashlib.sha256(memoryview(arr).cast("B")).hexdigest()


def combined_sha256(dtype: str, split_hashes: dict[str, str]) -> str:
    """Content hash of a whole prepared folder: dtype + every split's token hash."""
    text = dtype + "".join(f"\n{s}:{split_hashes[s]}" for s in SPLITS)
    return hashlib.sha256(text.encode("ascii")).hexdigest()


@dataclass(frozen=True, slots=True)
class SplitInfo:
    """Per-split statistics and files."""

    tokens: int
    documents: int
    text_bytes: int  # UTF-8 bytes of the split's text: the bits-per-byte denominator
    sha256: str  # of the token bytes (little-endian)
    shards: tuple[str, ...]

    @property
    def bytes_per_token(self) -> float:
        return self.text_bytes / self.tokens if self.tokens else 0.0


@dataclass(frozen=True, slots=True)
class Manifest:
    """Everything a consumer needs to know about a prepared token folder."""

    source: str  # the spec given to prepare
    source_kind: str  # default | text | parquet
    tokenizer: str  # canonical spec: byte | bpe:V
    vocab_size: int
    dtype: str  # numpy dtype name of the tokens
    splits: dict[str, SplitInfo]
    split: dict[str, Any]  # how the documents were split (method, seed, val/test_fraction)
    content_sha256: str
    tokenizer_file: str | None = None  # tokenizer.json for BPE
    separator: str = "\n\n"  # byte: between documents (+ final "\n"); BPE: "<|endoftext|>",
    # which ends every document
    smoke_test: bool = False
    source_fingerprint: str = ""
    raygrow_version: str = ""
    format: str = FORMAT_NAME
    format_version: int = FORMAT_VERSION
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def train(self) -> SplitInfo:
        return self.splits["train"]

    @property
    def val(self) -> SplitInfo:
        return self.splits["val"]

    @property
    def test(self) -> SplitInfo:
        return self.splits["test"]

    def to_json(self) -> str:
        blob = asdict(self)
        splits = sorted(self.splits.items())
        blob["splits"] = {k: {**asdict(v), "shards": list(v.shards)} for k, v in splits}
        return json.dumps(blob, indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str, where: Path) -> Manifest:
        """Parse and check a manifest; ConfigError names ``where`` and the fix."""
        try:
            blob = json.loads(text)
            if blob.get("format") != FORMAT_NAME:
                raise ValueError(f"format is {blob.get('format')!r}, not {FORMAT_NAME!r}")
            version = blob.get("format_version")
            if version == 1:
                raise ValueError("format_version 1 has no test split")
            if version != FORMAT_VERSION:
                raise ValueError(f"format_version {version} is not supported")
            splits = {}
            for name in SPLITS:
                d = blob["splits"][name]
                splits[name] = SplitInfo(
                    tokens=int(d["tokens"]),
                    documents=int(d["documents"]),
                    text_bytes=int(d["text_bytes"]),
                    sha256=str(d["sha256"]),
                    shards=tuple(str(x) for x in d["shards"]),
                )
            blob["splits"] = splits
            manifest = cls(**blob)
            np.dtype(manifest.dtype)
            hashes = {k: v.sha256 for k, v in splits.items()}
            if combined_sha256(manifest.dtype, hashes) != manifest.content_sha256:
                raise ValueError("content_sha256 does not match the split hashes")
        except (ValueError, KeyError, TypeError) as exc:
            raise ConfigError(f"{where / MANIFEST_FILE} is invalid ({exc}); {_FIX}") from None
        return manifest


def write_split(folder: Path, split: str, tokens: np.ndarray) -> tuple[str, ...]:
    """Write one split as Parquet shards; returns the shard file names (relative to folder)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    little = np.ascontiguousarray(tokens, dtype=tokens.dtype.newbyteorder("<"))
    meta = {"raygrow.dtype": little.dtype.name, "raygrow.chunk_tokens": str(CHUNK_TOKENS)}
    names = []
    # at least one shard, so an empty split still has a (zero-row) file
    for i, start in enumerate(range(0, max(len(little), 1), SHARD_TOKENS)):
        shard = little[start : start + SHARD_TOKENS]
        rows = [shard[j : j + CHUNK_TOKENS].tobytes() for j in range(0, len(shard), CHUNK_TOKENS)]
        table = pa.table({TOKEN_COLUMN: pa.array(rows, type=pa.binary())}).replace_schema_metadata(
            meta
        )
        name = f"{split}-{i:05d}.parquet"
        # raw chunks + zstd: 0.4 bytes/token for English bytes, and reading is a decompress +
        # memcpy (3-5x faster than a flat integer column, which Parquet stores as int32)
        pq.write_table(
            table, folder / name, compression="zstd", use_dictionary=False, write_statistics=False
        )
        names.append(name)
    return tuple(names)


def _chunk_bytes(column: Any) -> list[memoryview]:
    """The raw bytes of every row of a Parquet-read binary column, without a Python loop per row."""
    out = []
    for arr in column.chunks:
        if arr.null_count:
            raise ValueError("null rows")
        _validity, offsets, data = arr.buffers()
        offs = np.frombuffer(offsets, dtype=np.int32)[arr.offset : arr.offset + len(arr) + 1]
        if len(arr):
            out.append(memoryview(data)[int(offs[0]) : int(offs[-1])])
    return out


def read_split(folder: Path, split: str, info: SplitInfo, dtype: np.dtype[Any]) -> np.ndarray:
    """Read and verify one split; ConfigError on a missing, truncated or altered shard."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    out = np.empty(info.tokens, dtype=dtype.newbyteorder("<"))  # tokens are stored little-endian
    raw = out.view(np.uint8)  # filled in place, chunk by chunk
    pos = 0
    for name in info.shards:
        path = folder / name
        try:
            column = pq.read_table(path, columns=[TOKEN_COLUMN]).column(TOKEN_COLUMN)
            if not pa.types.is_binary(column.type):
                raise ValueError(f"column {TOKEN_COLUMN!r} is {column.type}, not binary")
            pieces = _chunk_bytes(column)
        except (OSError, ValueError, KeyError, pa.ArrowException) as exc:
            raise ConfigError(f"token shard {path} is unreadable ({exc}); {_FIX}") from None
        for piece in pieces:
            if pos + len(piece) > raw.size:
                raise ConfigError(f"token shard {path} holds more tokens than the manifest; {_FIX}")
            raw[pos : pos + len(piece)] = np.frombuffer(piece, dtype=np.uint8)
            pos += len(piece)
    if pos != raw.size:
        raise ConfigError(
            f"{folder} {split} split has {pos // dtype.itemsize} tokens, manifest says "
            f"{info.tokens}; {_FIX}"
        )
    if tokens_sha256(out) != info.sha256:
        raise ConfigError(f"{folder} {split} tokens fail the manifest sha256; {_FIX}")
    return out.astype(dtype.newbyteorder("="), copy=False)  # no-op on little-endian machines


def read_manifest(folder: Path) -> Manifest:
    """Load ``folder/manifest.json``; ConfigError if missing or invalid."""
    path = folder / MANIFEST_FILE
    if not path.is_file():
        raise ConfigError(
            f"{folder} has no {MANIFEST_FILE}; prepare it with "
            f"python -m raygrow.data prepare --source SOURCE --out {folder}"
        )
    return Manifest.from_json(path.read_text(encoding="utf-8"), folder)
