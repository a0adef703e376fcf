"""Load prepared tokens and cut them into deterministic training batches.

* ``TokenData``: the train, val and test token arrays of a prepared folder plus its manifest,
  verified against the manifest's sha256 when opened. Val is for selection (evaluated during
  training); test is held out, evaluated once at the end of a run.
* ``load_tokens``: a prepared folder, or any ``prepare`` source tokenized once into a cache.
* ``BatchSampler``: a *stateless* sampler. The batch at ``position`` (sequences consumed so far,
  globally) is a pure function of (data, seq_len, seed, position, batch size, rank, world size),
  so a checkpoint only stores ``position`` and resuming, re-sharding or re-running is exact.
* ``val_windows``: fixed evaluation windows of a split (val or test); ``unigram_entropy``: the
  no-context baseline loss.

Random numbers come from a SplitMix64-style integer hash implemented here, not from NumPy's
generators, so the order of the data does not change with the NumPy version.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from raygrow.data import shards
from raygrow.data.prepare import build, check_request, publish, temp_sibling
from raygrow.data.shards import Manifest
from raygrow.data.tokenizer import Tokenizer, canonical_spec, get_tokenizer
from raygrow.errors import ConfigError

if TYPE_CHECKING:
    import torch

DEFAULT_VAL_SEED = 1234
_MASK64 = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15
_TAG_EPOCH = 0x5EED_0001  # separate hash streams for the epoch permutations ...
_TAG_VAL = 0x5EED_0002  # ... and the validation window starts


# ---------------------------------------------------------------------------------------------
# Integer hashing (SplitMix64 finaliser): portable, vectorised, seedable


def _mix64(x: int) -> int:
    z = (x + _GOLDEN) & _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return z ^ (z >> 31)


def _stream_key(*parts: int) -> int:
    key = 0
    for part in parts:
        key = _mix64(key ^ (part & _MASK64))
    return key


def _hashed_counters(key: int, n: int) -> np.ndarray:
    """``n`` pseudo-random uint64 values: the finaliser applied to key, key+1, ... (a bijection,
    so the values are distinct)."""
    z = np.arange(n, dtype=np.uint64) + np.uint64(key)  # uint64 arrays wrap silently
    z += np.uint64(_GOLDEN)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def epoch_permutation(n: int, seed: int, epoch: int) -> np.ndarray:
    """The order in which epoch ``epoch`` visits the ``n`` windows (int64 permutation)."""
    keys = _hashed_counters(_stream_key(_TAG_EPOCH, seed, epoch), n)
    return np.argsort(keys, kind="stable").astype(np.int64, copy=False)


# ---------------------------------------------------------------------------------------------
# Batches


def _torch() -> Any:
    import torch  # lazy: `python -m raygrow.data prepare` does not need torch

    return torch


class BatchSampler:
    """Deterministic, stateless batches of (x, y) windows from a token array.

    The tokens are cut into ``num_windows`` non-overlapping windows of ``seq_len + 1`` tokens
    (stride ``seq_len``, so ``y`` is ``x`` shifted by one and every token is a target once per
    epoch). Epoch ``e`` visits the windows in a permutation seeded by ``(seed, e)``. The global
    stream of sequences is epoch 0's permutation, then epoch 1's, ...; ``position`` counts
    sequences consumed from it, globally across ranks. A global batch is the next
    ``global_batch_size`` sequences; rank ``r`` gets the ``r``-th contiguous slice of it.
    """

    def __init__(self, data: np.ndarray, seq_len: int, seed: int = 0) -> None:
        if seq_len < 1:
            raise ConfigError(f"seq_len {seq_len} must be >= 1")
        data = np.asarray(data)
        if data.ndim != 1:
            raise ConfigError(f"BatchSampler needs a 1-D token array, got shape {data.shape}")
        self.data = data
        self.seq_len = int(seq_len)
        self.seed = int(seed)
        self.num_windows = (len(data) - 1) // self.seq_len
        if self.num_windows < 1:
            raise ConfigError(
                f"{len(data)} tokens are too few for one window of seq_len+1 = {seq_len + 1}; "
                "use a shorter seq_len or a larger source"
            )
        self._offsets = np.arange(self.seq_len + 1, dtype=np.int64)
        self._perms: dict[int, np.ndarray] = {}  # memo of recent epochs (pure cache)

    def _perm(self, epoch: int) -> np.ndarray:
        perm = self._perms.get(epoch)
        if perm is None:
            if len(self._perms) >= 2:
                self._perms.pop(next(iter(self._perms)))
            perm = self._perms[epoch] = epoch_permutation(self.num_windows, self.seed, epoch)
        return perm

    def epoch(self, position: int) -> float:
        """Epochs completed at ``position`` (fractional)."""
        return position / self.num_windows

    def window_indices(self, position: int, count: int) -> np.ndarray:
        """Window ids of global sequences ``position .. position + count - 1`` (int64)."""
        if position < 0 or count < 0:
            raise ConfigError(f"position {position} and count {count} must be >= 0")
        g = np.arange(position, position + count, dtype=np.int64)
        epochs, within = np.divmod(g, self.num_windows)
        out = np.empty(count, dtype=np.int64)
        for e in np.unique(epochs):  # one or two epochs unless the batch exceeds an epoch
            sel = epochs == e
            out[sel] = self._perm(int(e))[within[sel]]
        return out

    def windows(self, position: int, count: int) -> np.ndarray:
        """Token windows (count, seq_len + 1) of the given global sequences, data's dtype."""
        starts = self.window_indices(position, count) * self.seq_len
        return self.data[starts[:, None] + self._offsets]  # one vectorised gather

    def global_batch(
        self, position: int, global_batch_size: int, rank: int = 0, world_size: int = 1
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """This rank's slice of the global batch at ``position``: int64 ``(x, y)``, each of shape
        ``(global_batch_size // world_size, seq_len)``. Advance ``position`` by
        ``global_batch_size`` after every step."""
        if world_size < 1 or not 0 <= rank < world_size:
            raise ConfigError(f"rank {rank} / world_size {world_size}: need 0 <= rank < world_size")
        if global_batch_size < 1 or global_batch_size % world_size:
            raise ConfigError(
                f"global_batch_size {global_batch_size} must be a positive multiple of "
                f"world_size {world_size}"
            )
        rows = global_batch_size // world_size
        block = self.windows(position + rank * rows, rows).astype(np.int64)
        torch = _torch()
        return torch.from_numpy(block[:, :-1].copy()), torch.from_numpy(block[:, 1:].copy())


def val_windows(
    val_tokens: np.ndarray,
    seq_len: int,
    n_windows: int,
    seed: int = DEFAULT_VAL_SEED,
    split: str = "val",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Fixed evaluation windows of a split's tokens (val, or test): ``n_windows`` seeded random
    starts, int64 ``(x, y)`` of shape ``(n_windows, seq_len)``. Same arguments, same windows,
    on any machine. ``split`` only names the split in errors."""
    n = len(val_tokens)
    if seq_len < 1 or n_windows < 1:
        raise ConfigError(f"seq_len {seq_len} and n_windows {n_windows} must be >= 1")
    if n < seq_len + 1:
        raise ConfigError(
            f"{'validation' if split == 'val' else split} split has {n} tokens, fewer than "
            f"seq_len+1 = {seq_len + 1}; use a larger "
            f"source, a larger --{split}-fraction or a shorter seq_len"
        )
    keys = _hashed_counters(_stream_key(_TAG_VAL, seed), n_windows)
    starts = (keys % np.uint64(n - seq_len)).astype(np.int64)
    block = np.asarray(val_tokens)[starts[:, None] + np.arange(seq_len + 1)].astype(np.int64)
    torch = _torch()
    return torch.from_numpy(block[:, :-1].copy()), torch.from_numpy(block[:, 1:].copy())


def unigram_entropy(tokens: np.ndarray) -> float:
    """Entropy (nats/token) of the unigram distribution of ``tokens``: the loss of a model that
    ignores context, so a trained model must beat it."""
    tokens = np.asarray(tokens).ravel()
    if tokens.size == 0:
        raise ConfigError("unigram_entropy: no tokens")
    counts = np.zeros(int(tokens.max()) + 1, dtype=np.int64)
    step = 1 << 22  # chunked: bincount would otherwise make an int64 copy of all tokens
    for start in range(0, tokens.size, step):
        chunk = np.bincount(tokens[start : start + step], minlength=counts.size)
        counts += chunk
    p = counts[counts > 0] / tokens.size
    return float(-(p * np.log(p)).sum())


# ---------------------------------------------------------------------------------------------
# Prepared data


@dataclass(frozen=True, slots=True, eq=False)
class TokenData:
    """Train, val and test tokens (read-only 1-D arrays) of a prepared folder, and its
    manifest."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    manifest: Manifest
    path: Path

    @classmethod
    def open(cls, path: str | Path) -> TokenData:
        """Load and verify a prepared folder (manifest, shard sizes, sha256 of the tokens)."""
        folder = Path(path)
        manifest = shards.read_manifest(folder)
        dtype = np.dtype(manifest.dtype)
        arrays = {}
        for split in shards.SPLITS:
            arr = shards.read_split(folder, split, manifest.splits[split], dtype)
            arr.flags.writeable = False
            arrays[split] = arr
        return cls(arrays["train"], arrays["val"], arrays["test"], manifest, folder)

    @property
    def vocab_size(self) -> int:
        return self.manifest.vocab_size

    @property
    def tokenizer_spec(self) -> str:
        return self.manifest.tokenizer

    def tokenizer(self) -> Tokenizer:
        """The tokenizer that produced these tokens (e.g. to decode samples)."""
        return get_tokenizer(self.manifest.tokenizer, self.path)

    def bytes_per_token(self, split: str = "val") -> float:
        """Text bytes per token of a split: val_bpb = val_loss / ln(2) / bytes_per_token."""
        return self.manifest.splits[split].bytes_per_token

    def sampler(self, seq_len: int, seed: int = 0) -> BatchSampler:
        """A ``BatchSampler`` over the train split."""
        return BatchSampler(self.train, seq_len, seed)

    def val_windows(
        self, seq_len: int, n_windows: int, seed: int = DEFAULT_VAL_SEED
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Fixed windows of the val split (see ``val_windows``)."""
        return val_windows(self.val, seq_len, n_windows, seed)

    def test_windows(
        self, seq_len: int, n_windows: int, seed: int = DEFAULT_VAL_SEED
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Fixed windows of the held-out test split (evaluate them once, at the end)."""
        return val_windows(self.test, seq_len, n_windows, seed, split="test")

    def __repr__(self) -> str:
        m = self.manifest
        return (
            f"TokenData({str(self.path)!r}, tokenizer={m.tokenizer!r}, "
            f"train={m.train.tokens:,} tokens, val={m.val.tokens:,} tokens, "
            f"test={m.test.tokens:,} tokens)"
        )


def default_cache_dir() -> Path:
    """``$RAYGROW_CACHE_DIR/data``, else ``$XDG_CACHE_HOME/raygrow/data``, else
    ``~/.cache/raygrow/data``."""
    if os.environ.get("RAYGROW_CACHE_DIR"):
        return Path(os.environ["RAYGROW_CACHE_DIR"]).expanduser() / "data"
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "raygrow" / "data"


def _cache_entry(
    source: str,
    tokenizer: str | None,
    cache_dir: str | Path | None,
    val_fraction: float | None,
    split_seed: int,
    test_fraction: float | None = None,
) -> tuple[Any, Path]:
    """Checked prepare request of a raw source and its cache folder (which may not exist).
    The key holds the format version, so a folder of an older format is never reused."""
    req = check_request(source, tokenizer or "byte", val_fraction, split_seed, False, test_fraction)
    key_parts = [shards.FORMAT_VERSION, req.source.fingerprint(), req.tokenizer]
    key_parts += [req.val_fraction, req.split_seed, req.test_fraction]
    key = hashlib.sha256(json.dumps(key_parts).encode("utf-8")).hexdigest()[:16]
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    return req, root / f"{req.source.short_name}-{req.tokenizer.replace(':', '')}-{key}"


def manifest_of(
    source: str = "default",
    tokenizer: str | None = None,
    cache_dir: str | Path | None = None,
    *,
    val_fraction: float | None = None,
    split_seed: int = 0,
    test_fraction: float | None = None,
) -> tuple[Manifest, Path]:
    """The manifest and folder ``load_tokens`` would use for these arguments.

    Reads only ``manifest.json`` when the folder (a prepared one, or the cache entry of a raw
    source) exists; otherwise prepares the source with ``load_tokens`` first.
    """
    folder = Path(str(source)).expanduser()
    if not (folder / shards.MANIFEST_FILE).is_file():
        _, folder = _cache_entry(
            str(source), tokenizer, cache_dir, val_fraction, split_seed, test_fraction
        )
    if (folder / shards.MANIFEST_FILE).is_file():
        try:
            return shards.read_manifest(folder), folder
        except ConfigError:
            pass  # a corrupt cache entry: load_tokens rebuilds it
    data = load_tokens(
        source,
        tokenizer,
        cache_dir,
        val_fraction=val_fraction,
        split_seed=split_seed,
        test_fraction=test_fraction,
    )
    return data.manifest, data.path


def load_tokens(
    source: str = "default",
    tokenizer: str | None = None,
    cache_dir: str | Path | None = None,
    *,
    val_fraction: float | None = None,
    split_seed: int = 0,
    test_fraction: float | None = None,
) -> TokenData:
    """Tokens for ``source``: a prepared folder (has manifest.json), or any ``prepare`` source.

    Raw sources are prepared once into ``cache_dir/<name>-<hash>`` (default
    ``default_cache_dir()``) and reused while the source files are unchanged; concurrent
    processes are safe (each writes a temporary folder, the first rename wins). ``tokenizer``
    defaults to ``byte`` for raw sources and to the manifest's for a prepared folder (a
    different explicit value is an error).
    """
    folder = Path(str(source)).expanduser()
    if (folder / shards.MANIFEST_FILE).is_file():
        data = TokenData.open(folder)
        if tokenizer is not None and canonical_spec(tokenizer) != data.tokenizer_spec:
            raise ConfigError(
                f"{folder} was prepared with tokenizer {data.tokenizer_spec}, not {tokenizer}; "
                "drop the tokenizer argument or prepare the source again"
            )
        return data

    req, final = _cache_entry(
        str(source), tokenizer, cache_dir, val_fraction, split_seed, test_fraction
    )
    if (final / shards.MANIFEST_FILE).is_file():
        try:
            return TokenData.open(final)
        except ConfigError:  # corrupt cache entry: move it aside and rebuild
            stale = final.parent / f".{final.name}.stale-{uuid.uuid4().hex[:8]}"
            try:
                os.rename(final, stale)
            except OSError:
                pass  # another process already moved it
            shutil.rmtree(stale, ignore_errors=True)

    tmp = temp_sibling(final)
    try:
        manifest, arrays = build(req, tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if publish(tmp, final, replace=False):
        return TokenData(arrays["train"], arrays["val"], arrays["test"], manifest, final)
    return TokenData.open(final)  # another process finished first: use its (identical) copy
