"""The embedded default corpus ("registry-prose", about 31 MB of English) shipped in ``assets/``.

See ``assets/NOTICE`` for the sources and licences and ``build_corpus.py`` for how it is built.
The splits are fixed by document, so every run and every user sees the same data:

- ``val`` (19 documents, 0.56 MB) is the shipped validation file, unchanged: selection (ASHA,
  ranking, speedups) reads it;
- ``test`` (19 documents, 0.43 MB) is held out of the shipped *train* file: the
  ``max(1, n // 50)`` train documents with the smallest sha256 of
  ``TEST_SALT + source + title`` (a stable hash, independent of file order), evaluated only
  once at the end of each run;
- ``train`` is the shipped train file without the test documents (944 documents).
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
ASSET_SPLITS = ("train", "val")
"""The splits shipped as files (``registry_prose_<split>.txt.xz``)."""
SPLITS = ("train", "val", "test")
TEST_SALT = "raygrow-test-split-v1"
"""Changing it changes the test split (and every prepared folder's content hash)."""


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
    """One split of the corpus (``train``, ``val`` or ``test``; see the module docstring).
    The shipped files are decompressed (train: ~0.4 s for 30.6 MB) and checksummed."""
    if name not in SPLITS:
        raise ConfigError(
            f"embedded corpus split {name!r} does not exist; use 'train', 'val' or 'test'"
        )
    if name == "val":
        return load_asset("val", assets_dir)
    train, test = _train_and_test(str(assets_dir))
    return train if name == "train" else test


def load_asset(name: str, assets_dir: Path = ASSETS_DIR) -> EmbeddedSplit:
    """A shipped split file as it is (``train`` still holds the test documents)."""
    if name not in ASSET_SPLITS:
        raise ConfigError(f"embedded corpus file {name!r} does not exist; use 'train' or 'val'")
    return _load_asset(name, str(assets_dir))


def test_keys(assets_dir: Path = ASSETS_DIR) -> frozenset[tuple[str, str]]:
    """(source, title) of the test documents: the ``max(1, n // val_divisor)`` shipped train
    documents with the smallest ``sha256(TEST_SALT \\0 source \\0 title)``."""
    index = read_index(assets_dir)
    docs = [(str(s), str(t)) for s, t, _ in index["splits"]["train"]["documents"]]
    split = index["split"]
    n_test = max(1, int(split["n_documents"]) // int(split["val_divisor"]))

    def rank(key: tuple[str, str]) -> str:
        return hashlib.sha256(f"{TEST_SALT}\0{key[0]}\0{key[1]}".encode()).hexdigest()

    return frozenset(sorted(docs, key=rank)[:n_test])


@lru_cache(maxsize=1)
def _train_and_test(assets_dir: str) -> tuple[EmbeddedSplit, EmbeddedSplit]:
    """The shipped train file cut into train and test by document (relative order kept)."""
    raw = load_asset("train", Path(assets_dir))
    held = test_keys(Path(assets_dir))
    sep = raw.separator.encode("utf-8")
    terminator = read_index(Path(assets_dir))["terminator"].encode("utf-8")
    parts: dict[bool, tuple[list[bytes], list[DocumentInfo]]] = {True: ([], []), False: ([], [])}
    offset = 0
    for doc in raw.documents:
        texts, infos = parts[(doc.source, doc.title) in held]
        texts.append(raw.text[offset : offset + doc.n_bytes])
        infos.append(doc)
        offset += doc.n_bytes + len(sep)

    def split(name: str, is_test: bool) -> EmbeddedSplit:
        texts, infos = parts[is_test]
        text = sep.join(texts) + terminator
        return EmbeddedSplit(name, text, tuple(infos), raw.separator)

    return split("train", False), split("test", True)


@lru_cache(maxsize=2)
def _load_asset(name: str, assets_dir: str) -> EmbeddedSplit:
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
