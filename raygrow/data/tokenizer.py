"""Tokenizers behind one small interface: raw bytes (default) or a ByteLevel BPE.

Specs are strings so they can live in configs, manifests and cache keys: ``"byte"`` (vocab 256, no
artefact, loss / ln 2 is bits per byte) or ``"bpe:V"`` (a ByteLevel BPE with at most V ids, trained
with the optional ``tokenizers`` library by ``python -m raygrow.data prepare`` and saved as
``tokenizer.json`` next to the token shards).
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from raygrow.errors import ConfigError

DOC_SEPARATOR = "\n\n"  # byte level: documents are joined by a blank line ...
TEXT_TERMINATOR = "\n"  # ... and the stream ends with a newline (same as the embedded corpus)
EOT_TOKEN = "<|endoftext|>"  # BPE: ends every document instead of the blank line
BPE_MIN_VOCAB = 257  # 256 byte symbols + the end-of-text token
BPE_MAX_VOCAB = 1 << 20
TOKENIZER_FILE = "tokenizer.json"


def token_dtype(vocab_size: int) -> np.dtype[Any]:
    """Smallest unsigned integer dtype that holds every id below ``vocab_size``."""
    if vocab_size <= 1 << 8:
        return np.dtype(np.uint8)
    if vocab_size <= 1 << 16:
        return np.dtype(np.uint16)
    return np.dtype(np.uint32)


def join_documents(texts: Sequence[str]) -> str:
    """Canonical text of a split: documents joined by a blank line, plus a final newline.

    Its UTF-8 length is the split's ``text_bytes`` for every tokenizer (the bits-per-byte
    denominator), and it is exactly the byte tokenizer's token stream.
    """
    return DOC_SEPARATOR.join(texts) + TEXT_TERMINATOR


@runtime_checkable
class Tokenizer(Protocol):
    """What the data pipeline needs from a tokenizer."""

    @property
    def spec(self) -> str:
        """Spec string that recreates this kind of tokenizer, e.g. ``"byte"`` or ``"bpe:4096"``."""
        ...

    @property
    def vocab_size(self) -> int:
        """Every id is below this; the model's embedding size."""
        ...

    def encode(self, text: str) -> np.ndarray:
        """Token ids of ``text`` (no separators added), dtype ``token_dtype(vocab_size)``."""
        ...

    def decode(self, ids: Sequence[int] | np.ndarray) -> str:
        """Text of ``ids``; ``decode(encode(t)) == t`` for any string ``t``."""
        ...

    def encode_documents(self, texts: Sequence[str]) -> np.ndarray:
        """One token stream for a list of documents, with this tokenizer's separators."""
        ...


class ByteTokenizer:
    """UTF-8 bytes as tokens (vocab 256). Documents are joined as ``join_documents`` does."""

    spec = "byte"
    name = "byte"
    vocab_size = 256

    def encode(self, text: str) -> np.ndarray:
        return np.frombuffer(text.encode("utf-8"), dtype=np.uint8).copy()

    def decode(self, ids: Sequence[int] | np.ndarray) -> str:
        # errors="replace": a window cut inside a multi-byte character still decodes
        return np.asarray(ids, dtype=np.uint8).tobytes().decode("utf-8", errors="replace")

    def encode_documents(self, texts: Sequence[str]) -> np.ndarray:
        return self.encode(join_documents(texts))

    def __repr__(self) -> str:
        return "ByteTokenizer()"


def require_tokenizers() -> Any:
    """The optional ``tokenizers`` module, imported lazily (it is the ``bpe`` extra)."""
    try:
        return importlib.import_module("tokenizers")
    except ImportError:
        raise ConfigError(
            "tokenizer bpe:V needs the 'tokenizers' package; pip install 'raygrow[bpe]' "
            "or use --tokenizer byte"
        ) from None


class BPETokenizer:
    """ByteLevel BPE (``tokenizers``): byte alphabet + learned merges + ``<|endoftext|>``.

    Build one with ``BPETokenizer.train`` or load a saved one with ``BPETokenizer.from_file``.
    ``vocab_size`` is the requested V (ids are guaranteed below it); on a small corpus fewer
    merges may be learned, see ``learned_vocab_size``.
    """

    name = "bpe"

    def __init__(self, backend: Any, vocab_size: int) -> None:
        self._tok = backend
        self._vocab_size = vocab_size
        eot = backend.token_to_id(EOT_TOKEN)
        if eot is None or backend.get_vocab_size() > vocab_size:
            raise ConfigError(
                f"BPE tokenizer file is not a raygrow bpe:{vocab_size} tokenizer (needs "
                f"{EOT_TOKEN} and at most {vocab_size} ids); re-run python -m raygrow.data prepare"
            )
        self.eot_id: int = eot
        self._dtype = token_dtype(vocab_size)

    @classmethod
    def train(
        cls, texts: Iterable[str], vocab_size: int, *, min_frequency: int = 2
    ) -> BPETokenizer:
        """Train a ByteLevel BPE with at most ``vocab_size`` ids on ``texts`` (documents)."""
        _check_bpe_vocab(vocab_size)
        tk = require_tokenizers()
        backend = tk.Tokenizer(tk.models.BPE())
        # add_prefix_space=False keeps encode/decode an exact round trip of arbitrary text
        backend.pre_tokenizer = tk.pre_tokenizers.ByteLevel(add_prefix_space=False)
        backend.decoder = tk.decoders.ByteLevel()
        trainer = tk.trainers.BpeTrainer(
            vocab_size=vocab_size,
            min_frequency=min_frequency,
            special_tokens=[EOT_TOKEN],  # id 0
            initial_alphabet=tk.pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
        backend.train_from_iterator(texts, trainer=trainer)
        return cls(backend, vocab_size)

    @classmethod
    def from_file(cls, path: str | Path, vocab_size: int | None = None) -> BPETokenizer:
        """Load a tokenizer saved by ``save``; ``vocab_size`` defaults to its learned size."""
        path = Path(path)
        if not path.is_file():
            raise ConfigError(
                f"BPE tokenizer file {path} not found; re-run python -m raygrow.data prepare"
            )
        tk = require_tokenizers()
        try:
            backend = tk.Tokenizer.from_file(str(path))
        except Exception as exc:  # the tokenizers library raises plain Exceptions
            raise ConfigError(
                f"cannot read BPE tokenizer {path} ({exc}); re-run python -m raygrow.data prepare"
            ) from None
        return cls(backend, vocab_size or int(backend.get_vocab_size()))

    def save(self, path: str | Path) -> None:
        """Write the tokenizer JSON (``tokenizers`` format; the requested V is the spec's)."""
        self._tok.save(str(path))

    @property
    def spec(self) -> str:
        return f"bpe:{self._vocab_size}"

    @property
    def vocab_size(self) -> int:
        return self._vocab_size

    @property
    def learned_vocab_size(self) -> int:
        """Ids actually in use (<= vocab_size)."""
        return int(self._tok.get_vocab_size())

    def encode(self, text: str) -> np.ndarray:
        return np.asarray(self._tok.encode(text).ids, dtype=self._dtype)

    def decode(self, ids: Sequence[int] | np.ndarray) -> str:
        return str(self._tok.decode(np.asarray(ids).tolist(), skip_special_tokens=False))

    def encode_documents(self, texts: Sequence[str]) -> np.ndarray:
        # encode_batch runs in parallel in Rust; every document ends with <|endoftext|>
        encodings = self._tok.encode_batch(list(texts))
        parts: list[np.ndarray] = []
        eot = np.array([self.eot_id], dtype=self._dtype)
        for enc in encodings:
            parts.append(np.asarray(enc.ids, dtype=self._dtype))
            parts.append(eot)
        return np.concatenate(parts) if parts else np.zeros(0, dtype=self._dtype)

    def __repr__(self) -> str:
        return f"BPETokenizer(vocab_size={self._vocab_size}, learned={self.learned_vocab_size})"


def _check_bpe_vocab(vocab_size: int) -> None:
    if not BPE_MIN_VOCAB <= vocab_size <= BPE_MAX_VOCAB:
        raise ConfigError(
            f"tokenizer bpe:{vocab_size}: V must be between {BPE_MIN_VOCAB} and {BPE_MAX_VOCAB}, "
            "e.g. bpe:4096"
        )


def parse_tokenizer_spec(spec: str) -> tuple[str, int]:
    """``"byte"`` -> ``("byte", 256)``; ``"bpe:4096"`` -> ``("bpe", 4096)``; else ConfigError."""
    text = spec.strip().lower()
    if text == "byte":
        return "byte", 256
    kind, _, size = text.partition(":")
    if kind == "bpe" and size.isdigit():
        _check_bpe_vocab(int(size))
        return "bpe", int(size)
    raise ConfigError(f"unknown tokenizer {spec!r}; use 'byte' or 'bpe:V' (e.g. bpe:4096)")


def canonical_spec(spec: str) -> str:
    """Normalised spec string (``" BPE:4096"`` -> ``"bpe:4096"``); validates it."""
    kind, size = parse_tokenizer_spec(spec)
    return "byte" if kind == "byte" else f"bpe:{size}"


def get_tokenizer(spec: str, path: str | Path | None = None) -> Tokenizer:
    """Tokenizer for ``spec``. ``bpe:V`` is trained data, so it needs ``path`` (tokenizer.json).

    ``path`` may be the JSON file or a prepared shard folder that contains one.
    """
    kind, size = parse_tokenizer_spec(spec)
    if kind == "byte":
        return ByteTokenizer()
    if path is None:
        raise ConfigError(
            f"tokenizer {spec} is trained per corpus; pass the prepared folder or its "
            f"{TOKENIZER_FILE} (python -m raygrow.data prepare --tokenizer {spec} writes one)"
        )
    path = Path(path)
    if path.is_dir():
        path = path / TOKENIZER_FILE
    return BPETokenizer.from_file(path, size)


def bytes_per_token(tokenizer: Tokenizer, text: str) -> float:
    """UTF-8 bytes per token of ``text`` (1.0 for bytes; about 3.8 for bpe:4096 on English)."""
    n = len(tokenizer.encode(text))
    if n == 0:
        raise ConfigError("bytes_per_token: text is empty; pass a non-empty sample")
    return len(text.encode("utf-8")) / n
