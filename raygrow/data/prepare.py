"""``prepare``: text source -> tokenizer -> Parquet token shards + ``manifest.json``.

Every input check (source, tokenizer spec, split fraction, output folder) runs before any text is
read or tokenized. Output is written into a temporary sibling folder and renamed into place, so a
crash never leaves a half-written folder that looks complete.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

import raygrow
from raygrow.data import corpus, shards
from raygrow.data.shards import Manifest, SplitInfo
from raygrow.data.sources import (
    SINGLE_DOC_PIECES,
    ResolvedSource,
    cut_into_pieces,
    read_documents,
    resolve_source,
    split_documents,
)
from raygrow.data.tokenizer import (
    DOC_SEPARATOR,
    EOT_TOKEN,
    TOKENIZER_FILE,
    BPETokenizer,
    ByteTokenizer,
    Tokenizer,
    canonical_spec,
    join_documents,
    parse_tokenizer_spec,
    require_tokenizers,
)
from raygrow.errors import ConfigError

DEFAULT_VAL_FRACTION = 0.02
DEFAULT_TEST_FRACTION = 0.02
DEFAULT_SPLIT_SEED = 0
SMOKE_TRAIN_CHARS = 1_000_000  # --smoke-test: about 1 MB of train text ...
SMOKE_VAL_CHARS = 100_000  # ... and 100 kB of validation (and of test) text


@dataclass(frozen=True, slots=True)
class PrepareRequest:
    """Checked arguments of ``prepare`` (built by ``check_request``)."""

    source: ResolvedSource
    tokenizer: str  # canonical spec
    val_fraction: float | None  # None for the embedded corpus (fixed split)
    split_seed: int
    smoke_test: bool
    test_fraction: float | None = None  # None for the embedded corpus (fixed split)

    def default_out(self) -> Path:
        """``raygrow_runs/data/<source>-<tokenizer>[-smoke]`` under the working directory."""
        suffix = "-smoke" if self.smoke_test else ""
        name = f"{self.source.short_name}-{self.tokenizer.replace(':', '')}{suffix}"
        return Path("raygrow_runs") / "data" / name


def check_request(
    source: str,
    tokenizer: str = "byte",
    val_fraction: float | None = None,
    split_seed: int = DEFAULT_SPLIT_SEED,
    smoke_test: bool = False,
    test_fraction: float | None = None,
) -> PrepareRequest:
    """Validate everything about a prepare call without reading text."""
    spec = canonical_spec(tokenizer)
    if parse_tokenizer_spec(spec)[0] == "bpe":
        require_tokenizers()  # fail now, not after reading the corpus
    resolved = resolve_source(source)
    if resolved.kind == "default":
        for flag, value in (("--val-fraction", val_fraction), ("--test-fraction", test_fraction)):
            if value is not None:
                raise ConfigError(
                    f"{flag}: the embedded default corpus has a fixed 2% document split; "
                    f"drop {flag}"
                )
    else:
        val_fraction = DEFAULT_VAL_FRACTION if val_fraction is None else float(val_fraction)
        test_fraction = DEFAULT_TEST_FRACTION if test_fraction is None else float(test_fraction)
        for flag, value in (("--val-fraction", val_fraction), ("--test-fraction", test_fraction)):
            if not 0.0 < value < 1.0:
                raise ConfigError(
                    f"{flag} {value:g} must be between 0 and 1 (exclusive), e.g. 0.02"
                )
    return PrepareRequest(
        resolved, spec, val_fraction, int(split_seed), bool(smoke_test), test_fraction
    )


def _check_out(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file; choose a folder")
    if out.is_dir() and any(out.iterdir()) and not (out / shards.MANIFEST_FILE).is_file():
        raise ConfigError(
            f"--out {out} is a non-empty folder without {shards.MANIFEST_FILE}; "
            "choose a new or empty folder"
        )


def _subset(docs: Sequence[str], budget: int) -> list[str]:
    """Leading documents up to ``budget`` characters (the last one cut), at least one."""
    out: list[str] = []
    used = 0
    for doc in docs:
        if used >= budget:
            break
        piece = doc[: budget - used]
        out.append(piece)
        used += len(piece)
    return out


def _embedded_split_notes() -> dict[str, object]:
    return {
        "method": "fixed (embedded corpus)",
        "seed": corpus.read_index()["split"]["seed"],
        "test": f"hashed from the shipped train documents ({corpus.TEST_SALT})",
    }


def _split_texts(req: PrepareRequest) -> tuple[dict[str, list[str]], dict[str, object]]:
    """Documents of each split, plus notes for the manifest about how they were split."""
    if req.source.kind == "default":
        docs = {s: corpus.load_split(s).document_texts() for s in shards.SPLITS}
        return docs, _embedded_split_notes()
    assert req.val_fraction is not None and req.test_fraction is not None  # check_request
    texts = read_documents(req.source)
    notes: dict[str, object] = {
        "method": "seeded document shuffle",
        "seed": req.split_seed,
        "val_fraction": req.val_fraction,
        "test_fraction": req.test_fraction,
    }
    if len(texts) == 1:  # one document: cut it so a document-level split is possible
        texts = cut_into_pieces(texts[0], SINGLE_DOC_PIECES)
        notes["single_document_pieces"] = len(texts)
    train, val, test = split_documents(texts, req.val_fraction, req.split_seed, req.test_fraction)
    return {"train": train, "val": val, "test": test}, notes


def build(req: PrepareRequest, folder: Path) -> tuple[Manifest, dict[str, np.ndarray]]:
    """Tokenize the request's source and write shards + manifest into ``folder`` (must exist).

    Returns the manifest and the (read-only) token arrays by split (train, val, test).
    """
    kind, vocab = parse_tokenizer_spec(req.tokenizer)
    fast_default = req.source.kind == "default" and kind == "byte" and not req.smoke_test
    if fast_default:
        # The shipped text is already the byte token stream (documents joined by "\n\n").
        parts = {s: corpus.load_split(s) for s in shards.SPLITS}
        tokens = {s: np.frombuffer(p.text, dtype=np.uint8) for s, p in parts.items()}
        n_docs = {s: len(p.documents) for s, p in parts.items()}
        text_bytes = {s: len(p.text) for s, p in parts.items()}
        split_notes = _embedded_split_notes()
        tok: Tokenizer = ByteTokenizer()
    else:
        docs, split_notes = _split_texts(req)
        if req.smoke_test:
            budgets = {"train": SMOKE_TRAIN_CHARS, "val": SMOKE_VAL_CHARS, "test": SMOKE_VAL_CHARS}
            docs = {s: _subset(d, budgets[s]) for s, d in docs.items()}
        if kind == "byte":
            tok = ByteTokenizer()
        else:  # train split only: no val/test leakage
            tok = BPETokenizer.train(docs["train"], vocab)
        tokens = {s: tok.encode_documents(d) for s, d in docs.items()}
        n_docs = {s: len(d) for s, d in docs.items()}
        text_bytes = {s: len(join_documents(d).encode("utf-8")) for s, d in docs.items()}

    extra: dict[str, object] = {}
    tokenizer_file = None
    if isinstance(tok, BPETokenizer):
        tok.save(folder / TOKENIZER_FILE)
        tokenizer_file = TOKENIZER_FILE
        extra = {"learned_vocab_size": tok.learned_vocab_size, "eot_id": tok.eot_id}
    if req.source.kind == "default":
        extra["corpus_index_sha256"] = corpus.index_sha256()

    infos = {}
    for s in shards.SPLITS:
        arr = tokens[s]
        arr.flags.writeable = False
        infos[s] = SplitInfo(
            tokens=int(arr.size),
            documents=n_docs[s],
            text_bytes=text_bytes[s],
            sha256=shards.tokens_sha256(arr),
            shards=shards.write_split(folder, s, arr),
        )
    dtype = str(tokens["train"].dtype)
    manifest = Manifest(
        source=req.source.spec,
        source_kind=req.source.kind,
        tokenizer=req.tokenizer,
        vocab_size=vocab,
        dtype=dtype,
        splits=infos,
        split=split_notes,
        content_sha256=shards.combined_sha256(dtype, {s: i.sha256 for s, i in infos.items()}),
        tokenizer_file=tokenizer_file,
        separator=DOC_SEPARATOR if kind == "byte" else EOT_TOKEN,
        smoke_test=req.smoke_test,
        source_fingerprint=req.source.fingerprint(),
        raygrow_version=raygrow.__version__,
        extra=extra,
    )
    # the manifest goes last: a folder with a manifest is a complete folder
    (folder / shards.MANIFEST_FILE).write_text(manifest.to_json(), encoding="utf-8")
    return manifest, tokens


def temp_sibling(final: Path) -> Path:
    """A fresh, unique temporary folder next to ``final`` (same file system: rename is atomic)."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".{final.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    return tmp


def publish(tmp: Path, final: Path, *, replace: bool) -> bool:
    """Move a finished ``tmp`` folder to ``final``; returns False if another writer won.

    ``replace=False`` (caches): if ``final`` already exists, ``tmp`` is dropped. ``replace=True``
    (``--out``): an existing folder is swapped out and removed.
    """
    try:
        os.rename(tmp, final)  # atomic; succeeds onto a missing or empty folder
        return True
    except OSError:
        if not replace:
            shutil.rmtree(tmp, ignore_errors=True)
            return False
    old = final.parent / f".{final.name}.old-{uuid.uuid4().hex[:8]}"
    os.rename(final, old)
    os.rename(tmp, final)
    shutil.rmtree(old, ignore_errors=True)
    return True


def prepare(
    source: str = "default",
    out: str | Path | None = None,
    *,
    tokenizer: str = "byte",
    val_fraction: float | None = None,
    split_seed: int = DEFAULT_SPLIT_SEED,
    smoke_test: bool = False,
    test_fraction: float | None = None,
) -> tuple[Path, Manifest]:
    """Tokenize ``source`` into Parquet shards + manifest in ``out``; returns (folder, manifest).

    ``out`` defaults to ``raygrow_runs/data/<source>-<tokenizer>``; an earlier prepared folder
    there is replaced, any other non-empty folder is refused (ConfigError).
    """
    req = check_request(source, tokenizer, val_fraction, split_seed, smoke_test, test_fraction)
    final = Path(out) if out is not None else req.default_out()
    _check_out(final)
    tmp = temp_sibling(final)
    try:
        manifest, _ = build(req, tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    publish(tmp, final, replace=True)
    return final, manifest
