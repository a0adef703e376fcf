"""The embedded default corpus ("registry-prose", about 31 MB of English) shipped in ``assets/``.

See ``assets/NOTICE`` for the sources and licences and ``build_corpus.py`` for how it is built.
The train/validation split is fixed by document, so every run and every user sees the same data.
"""

from __future__ import annotations

import hashlib
import json
import lzma
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from raygrow.errors import ConfigError

ASSETS_DIR = Path(__file__).resolve().parent / "assets"
INDEX_FILE = "registry_prose.json"
SPLITS = ("train", "val")


@dataclass(frozen=True, slots=True)
class DocumentInfo:
    """Where one document of the embedded corpus came from."""

    source: str  # shakespeare, austen, kjv, sotu, mobydick, brown
    title: str
    n_bytes: int  # UTF-8 bytes of the document text


@dataclass(frozen=True, slots=True)
class EmbeddedSplit:
    """One split of the embedded corpus: its exact text and its documents."""

    name: str
    text: bytes  # documents joined by the separator, plus the terminator (UTF-8)
    documents: tuple[DocumentInfo, ...]
    separator: str

    def document_texts(self) -> list[str]:
        """The documents as strings, cut out of ``text`` with the index's byte lengths."""
        sep = len(self.separator.encode("utf-8"))
        out, offset = [], 0
        for doc in self.documents:
            out.append(self.text[offset : offset + doc.n_bytes].decode("utf-8"))
            offset += doc.n_bytes + sep
        return out


def read_index(assets_dir: Path = ASSETS_DIR) -> dict[str, Any]:
    """The corpus index (document lists, sizes and checksums)."""
    path = assets_dir / INDEX_FILE
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(
            f"embedded corpus index {path} is unreadable ({exc}); reinstall raygrow or rebuild it "
            "with python -m raygrow.data.build_corpus"
        ) from None


def index_sha256(assets_dir: Path = ASSETS_DIR) -> str:
    """Checksum of the index; it pins the text checksums, so it identifies the corpus version."""
    return hashlib.sha256((assets_dir / INDEX_FILE).read_bytes()).hexdigest()


def load_split(name: str, assets_dir: Path = ASSETS_DIR) -> EmbeddedSplit:
    """Decompress one split (train: ~0.4 s for 30.6 MB) and verify its text checksum."""
    if name not in SPLITS:
        raise ConfigError(f"embedded corpus split {name!r} does not exist; use 'train' or 'val'")
    return _load_split(name, str(assets_dir))


@lru_cache(maxsize=2)
def _load_split(name: str, assets_dir: str) -> EmbeddedSplit:
    index = read_index(Path(assets_dir))
    info = index["splits"][name]
    path = Path(assets_dir) / info["file"]
    try:
        text = lzma.decompress(path.read_bytes())
    except (OSError, lzma.LZMAError) as exc:
        raise ConfigError(
            f"embedded corpus file {path} is unreadable ({exc}); reinstall raygrow"
        ) from None
    if hashlib.sha256(text).hexdigest() != info["text_sha256"]:
        raise ConfigError(f"embedded corpus file {path} fails its checksum; reinstall raygrow")
    docs = tuple(DocumentInfo(s, t, int(n)) for s, t, n in info["documents"])
    return EmbeddedSplit(name=name, text=text, documents=docs, separator=index["separator"])
