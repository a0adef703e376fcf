"""Text sources for ``prepare``: the embedded corpus, text files, globs, or a Parquet text column.

A source spec is one string (so it fits a config or a flag):

``default``
    the embedded registry-prose corpus, with its fixed document split;
``PATH``
    a text file (one document) or a folder (every non-hidden file below it, one document each);
``GLOB``
    e.g. ``'books/**/*.txt'``: every matching file, one document each;
``FILE.parquet:COLUMN`` (FILE may be a glob)
    one document per non-null row of the string column COLUMN.

``resolve_source`` checks the spec (paths exist, the glob matches, the column exists) without
reading any text, so bad input fails before any work. User sources are split by document
(train / val / test) with a seeded shuffle; a source with a single document is first cut into
pieces at line breaks.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from raygrow.data import corpus
from raygrow.errors import ConfigError

SourceKind = Literal["default", "text", "parquet"]
SINGLE_DOC_PIECES = 100  # a one-file source is cut into this many pieces, so 2 % is 2 pieces
_GLOB_CHARS = frozenset("*?[")
_SOURCE_HELP = "use 'default', a text file, a folder, a glob or FILE.parquet:COLUMN"


@dataclass(frozen=True, slots=True)
class ResolvedSource:
    """A checked source spec: what kind it is and which files it reads."""

    spec: str
    kind: SourceKind
    files: tuple[Path, ...] = ()
    column: str | None = None

    def fingerprint(self) -> str:
        """Changes when the source's content may have changed (paths, sizes, mtimes, corpus)."""
        if self.kind == "default":
            parts: list[object] = ["default", corpus.index_sha256()]
        else:
            parts = [self.kind, self.column]
            for f in self.files:
                st = f.stat()
                parts.append([str(f), st.st_size, st.st_mtime_ns])
        return hashlib.sha256(json.dumps(parts).encode("utf-8")).hexdigest()

    @property
    def short_name(self) -> str:
        """A readable name for folders: ``default``, a file stem or a folder name."""
        if self.kind == "default":
            return "default"
        base = self.spec.rsplit(":", 1)[0] if self.kind == "parquet" else self.spec
        parts = Path(base).parts
        if _is_glob(base):  # name a glob after the folder it searches: "books/*.txt" -> books
            parts = parts[: next(i for i, p in enumerate(parts) if _is_glob(p))]
        stem = Path(*parts).stem if parts else ""
        return "".join(c if c.isalnum() or c in "-_." else "_" for c in stem) or "source"


def _is_glob(text: str) -> bool:
    return any(c in _GLOB_CHARS for c in text)


def _glob_files(pattern: str) -> list[Path]:
    matches = glob.glob(pattern, recursive=True)
    return sorted(Path(p).resolve() for p in matches if os.path.isfile(p))


def _folder_files(folder: Path) -> list[Path]:
    """Every regular, non-hidden file below ``folder``, in sorted relative-path order."""
    out = []
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder)
        if path.is_file() and not any(part.startswith(".") for part in rel.parts):
            out.append(path.resolve())
    return out


def _resolve_parquet(spec: str, files_part: str, column: str) -> ResolvedSource:
    import pyarrow as pa
    import pyarrow.parquet as pq

    if not column:
        raise ConfigError(f"source {spec!r}: empty column name; use FILE.parquet:COLUMN")
    if _is_glob(files_part):
        files = _glob_files(files_part)
        if not files:
            raise ConfigError(f"source {spec!r}: {files_part} matches no files; check the glob")
    else:
        path = Path(files_part)
        if not path.is_file():
            raise ConfigError(f"source {spec!r}: {files_part} does not exist; check the path")
        files = [path.resolve()]
    for f in files:
        try:
            schema = pq.read_schema(f)
        except (OSError, pa.ArrowException) as exc:
            raise ConfigError(f"source {spec!r}: cannot read Parquet {f} ({exc})") from None
        if column not in schema.names:
            raise ConfigError(
                f"source {spec!r}: {f.name} has no column {column!r}; "
                f"columns are {', '.join(schema.names)}"
            )
        kind = schema.field(column).type
        if not (pa.types.is_string(kind) or pa.types.is_large_string(kind)):
            raise ConfigError(
                f"source {spec!r}: column {column!r} of {f.name} is {kind}, not text; "
                "name a string column"
            )
    return ResolvedSource(spec=spec, kind="parquet", files=tuple(files), column=column)


def resolve_source(spec: str) -> ResolvedSource:
    """Check a source spec without reading its text; ConfigError names the problem and fix."""
    spec = str(spec).strip()
    if not spec:
        raise ConfigError(f"source is empty; {_SOURCE_HELP}")
    if spec == "default":
        return ResolvedSource(spec=spec, kind="default")
    path = Path(spec).expanduser()
    if not path.exists() and ":" in spec:
        files_part, column = spec.rsplit(":", 1)
        if files_part.lower().endswith(".parquet") or _is_glob(files_part):
            return _resolve_parquet(spec, str(Path(files_part).expanduser()), column)
    if path.is_file():
        if path.suffix.lower() == ".parquet":
            raise ConfigError(f"source {spec!r} is Parquet; name its text column: {spec}:COLUMN")
        return ResolvedSource(spec=spec, kind="text", files=(path.resolve(),))
    if path.is_dir():
        files = _folder_files(path)
        if not files:
            raise ConfigError(f"source {spec!r} is a folder with no files; add text files")
    elif _is_glob(spec):
        files = _glob_files(str(path))
        if not files:
            raise ConfigError(f"source {spec!r} matches no files; check the glob")
    else:
        raise ConfigError(f"source {spec!r} does not exist; {_SOURCE_HELP}")
    parquet = [f for f in files if f.suffix.lower() == ".parquet"]
    if parquet:
        raise ConfigError(
            f"source {spec!r} includes Parquet files ({parquet[0].name}); select text files only "
            "or use FILE.parquet:COLUMN"
        )
    return ResolvedSource(spec=spec, kind="text", files=tuple(files))


def read_documents(source: ResolvedSource) -> list[str]:
    """The documents of a user source, stripped, empty ones dropped, in file/row order."""
    if source.kind == "default":
        raise ConfigError("the embedded corpus has fixed splits; use corpus.load_split")
    docs: list[str] = []
    if source.kind == "text":
        for f in source.files:
            try:
                text = f.read_text(encoding="utf-8-sig")  # -sig: drop a byte-order mark
            except UnicodeDecodeError:
                raise ConfigError(
                    f"source {source.spec!r}: {f} is not UTF-8 text; convert it, or select text "
                    "files with a glob such as 'DIR/**/*.txt'"
                ) from None
            docs.append(text)
    else:
        import pyarrow.parquet as pq

        for f in source.files:
            values = pq.read_table(f, columns=[source.column]).column(0).to_pylist()
            docs.extend(v for v in values if v is not None)
    docs = [d.strip().replace("\r\n", "\n") for d in docs]
    docs = [d for d in docs if d]
    if not docs:
        raise ConfigError(f"source {source.spec!r} contains no text; point it at non-empty files")
    return docs


def cut_into_pieces(text: str, n_pieces: int = SINGLE_DOC_PIECES) -> list[str]:
    """Cut one long document into about ``n_pieces`` contiguous pieces at line breaks.

    Used when a source is a single document, so that a document-level split is still possible.
    """
    window = max(1, len(text) // n_pieces // 4)  # pieces stay within about +-25 % of equal
    bounds = [0]
    for i in range(1, n_pieces):
        target = len(text) * i // n_pieces
        lo, hi = max(bounds[-1] + 1, target - window), min(len(text), target + window)
        cut = target
        for sep in ("\n", " "):  # nearest line break, else nearest space, else exactly at target
            before, after = text.rfind(sep, lo, target), text.find(sep, target, hi)
            found = [p for p in (before, after) if p != -1]
            if found:
                cut = min(found, key=lambda p: abs(p - target)) + 1
                break
        if cut > bounds[-1]:
            bounds.append(cut)
    bounds.append(len(text))
    pieces = [text[a:b].strip() for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
    return [p for p in pieces if p]


def split_documents(
    docs: Sequence[str], val_fraction: float, seed: int, test_fraction: float = 0.0
) -> tuple[list[str], list[str], list[str]]:
    """Seeded document-level split into (train, val, test): shuffle indices, hold out the first
    ``round(n * val_fraction)`` (>= 1) for val and the next ``round(n * test_fraction)`` (>= 1
    when the fraction is > 0) for test, so val is the same with or without a test split.

    Every split keeps the documents' original relative order, so the token stream reads
    naturally; only membership is random.
    """
    n = len(docs)
    n_val = max(1, round(n * val_fraction))
    n_test = max(1, round(n * test_fraction)) if test_fraction > 0 else 0
    if n < 2 or n_val + n_test >= n:
        raise ConfigError(
            f"cannot hold out {val_fraction:g} (val) + {test_fraction:g} (test) of {n} "
            "document(s) and keep some for training; add documents or lower --val-fraction / "
            "--test-fraction"
        )
    order = list(range(n))
    random.Random(seed).shuffle(order)
    val_ids, test_ids = set(order[:n_val]), set(order[n_val : n_val + n_test])
    train = [d for i, d in enumerate(docs) if i not in val_ids and i not in test_ids]
    val = [d for i, d in enumerate(docs) if i in val_ids]
    test = [d for i, d in enumerate(docs) if i in test_ids]
    return train, val, test
