"""Data for raygrow: the embedded corpus, tokenizers, token shards and deterministic batches.

Typical use::

    from raygrow.data import load_tokens
    data = load_tokens()                        # embedded corpus, byte tokens, cached
    sampler = data.sampler(seq_len=256, seed=0)
    x, y = sampler.global_batch(position, 16, rank, world_size)
    vx, vy = data.val_windows(seq_len=256, n_windows=128)   # selection, during training
    tx, ty = data.test_windows(seq_len=256, n_windows=128)  # held out: once, at the end

CLI: ``python -m raygrow.data prepare --source default|PATH|GLOB|FILE.parquet:COLUMN
[--tokenizer byte|bpe:V] [--val-fraction F] [--test-fraction F] --out DIR``.
"""

from __future__ import annotations

from raygrow.data.loader import (
    BatchSampler,
    TokenData,
    default_cache_dir,
    epoch_permutation,
    load_tokens,
    manifest_of,
    unigram_entropy,
    val_windows,
)
from raygrow.data.prepare import prepare
from raygrow.data.shards import Manifest, SplitInfo
from raygrow.data.sources import ResolvedSource, resolve_source
from raygrow.data.tokenizer import (
    BPETokenizer,
    ByteTokenizer,
    Tokenizer,
    bytes_per_token,
    get_tokenizer,
    parse_tokenizer_spec,
)

__all__ = [
    "BPETokenizer",
    "BatchSampler",
    "ByteTokenizer",
    "Manifest",
    "ResolvedSource",
    "SplitInfo",
    "TokenData",
    "Tokenizer",
    "bytes_per_token",
    "default_cache_dir",
    "epoch_permutation",
    "get_tokenizer",
    "load_tokens",
    "manifest_of",
    "parse_tokenizer_spec",
    "prepare",
    "resolve_source",
    "unigram_entropy",
    "val_windows",
]
