"""The export loads in `transformers` with its tokenizer: same ids, same logits, it generates.

Issue 16 (export): `AutoTokenizer.from_pretrained(folder)` must encode text exactly as raygrow's
tokenizer (bytes and BPE), `config.json` uses `dtype`, the exported model's logits on real text
equal raygrow's, and `pipeline("text-generation")` runs on an exported trained model.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from raygrow.data import corpus, get_tokenizer, load_tokens, prepare
from raygrow.errors import ConfigError
from raygrow.export import export_state, main, resolve_tokenizer
from raygrow.model import ModelConfig, build_model
from raygrow.train.config import TrainConfig
from raygrow.train.loop import train
from raygrow.train.state import TrainState, load_checkpoint

transformers = pytest.importorskip("transformers")
pytest.importorskip("tokenizers")

TINY = ModelConfig(n_layers=2, d_model=32, n_heads=2, max_seq_len=32)
KINDS = ("byte", "bpe:320")
DOCS = corpus.load_split("val").document_texts()[:6]  # real prose, incl. curly quotes
TEXTS = [
    DOCS[1][:2000],
    next(p for p in DOCS[1].split("\n\n") if "’" in p),
    "naïve café — “quotes” 😀, Ahab’s\n\n  two  spaces\tand a tab\r\n",
    " leading space, trailing space ",
    "",
]


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("docs")
    for i, doc in enumerate(DOCS):
        (root / f"d{i}.txt").write_text(doc, encoding="utf-8")
    return root


@pytest.fixture(scope="module")
def runs(source: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """For each tokenizer: a prepared data folder and a tiny model trained 8 steps on it."""
    out = {}
    for kind in KINDS:
        base = tmp_path_factory.mktemp(kind.replace(":", ""))
        folder, _ = prepare(str(source), base / "data", tokenizer=kind, val_fraction=0.2)
        cfg = TrainConfig(
            model=TINY,
            data=str(folder),
            seq_len=32,
            batch_size=4,
            tokens=8 * 4 * 32,
            warmup_steps=2,
            lr=1e-2,
            eval_every_tokens=8 * 4 * 32,
            eval_windows=4,
            out_dir=str(base / "run"),
            log_every_steps=0,
        )
        train(cfg, verbose=False)
        out[kind] = base
    return out


def exported(runs: dict[str, Path], kind: str, tmp_path: Path) -> tuple[TrainState, Path]:
    state = load_checkpoint(runs[kind] / "run" / "checkpoints")
    export_state(state, tmp_path / "hf")
    return state, tmp_path / "hf"


@pytest.mark.parametrize("kind", KINDS)
def test_auto_tokenizer_encodes_exactly_like_raygrow(
    kind: str, runs: dict[str, Path], tmp_path: Path
) -> None:
    state, out = exported(runs, kind, tmp_path)
    ours = get_tokenizer(kind, runs[kind] / "data")
    theirs = transformers.AutoTokenizer.from_pretrained(out)
    for text in TEXTS:
        ids = ours.encode(text).tolist()
        assert theirs.encode(text, add_special_tokens=False) == ids, text[:40]
        assert theirs.encode(text) == ids  # no BOS/EOS is added either
        assert theirs.decode(ids) == ours.decode(ids) == text
    assert theirs("naïve café")["input_ids"] == ours.encode("naïve café").tolist()
    info = json.loads((out / "raygrow_export.json").read_text())
    assert info["tokenizer"] == kind
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["dtype"] == "float32" and "torch_dtype" not in cfg
    assert cfg["vocab_size"] == state.model_config.vocab_size == ours.vocab_size
    if kind == "byte":
        assert theirs.eos_token is None and cfg["eos_token_id"] is None
    else:  # every BPE document ends with <|endoftext|>: it is the model's EOS
        assert theirs.eos_token == "<|endoftext|>" and cfg["eos_token_id"] == ours.eot_id


@pytest.mark.parametrize("kind", KINDS)
def test_exported_model_logits_equal_raygrow_on_real_text(
    kind: str, runs: dict[str, Path], tmp_path: Path
) -> None:
    state, out = exported(runs, kind, tmp_path)
    tok = transformers.AutoTokenizer.from_pretrained(out)
    ids = torch.tensor([tok.encode(TEXTS[0])[:32], tok.encode(TEXTS[1])[:32]])
    hf = transformers.AutoModelForCausalLM.from_pretrained(out).eval()
    assert type(hf).__name__ == "LlamaForCausalLM"
    ours = build_model(state.model_config, state.model_state).eval()
    with torch.no_grad():
        torch.testing.assert_close(hf(ids).logits, ours(ids), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("kind", KINDS)
def test_pipeline_generates_text_from_the_exported_model(
    kind: str, runs: dict[str, Path], tmp_path: Path
) -> None:
    _, out = exported(runs, kind, tmp_path)
    generate = transformers.pipeline("text-generation", model=str(out), device="cpu")
    result = generate(
        "It was a ", max_new_tokens=8, min_new_tokens=4, do_sample=False, return_full_text=False
    )
    text = result[0]["generated_text"]
    assert isinstance(text, str) and text
    full = generate("It was a ", max_new_tokens=4, do_sample=False)[0]["generated_text"]
    assert full.startswith("It was a ") and len(full) > len("It was a ")


def test_tokenizer_of_a_raw_source_run_comes_from_its_cache_entry(
    source: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RAYGROW_CACHE_DIR", str(tmp_path / "cache"))
    data = load_tokens(str(source), "bpe:320")  # what the training loop loads
    state = TrainState(
        model_config=TINY.replace(vocab_size=320),
        model_state={},
        train_config={"data": str(source), "tokenizer": "bpe:320"},
    )
    tok = resolve_tokenizer(state)
    assert tok is not None and tok.spec == "bpe:320"
    assert tok.encode(TEXTS[2]).tolist() == data.tokenizer().encode(TEXTS[2]).tolist()


def test_tokenizer_choice_and_bad_input(runs: dict[str, Path], tmp_path: Path, capsys) -> None:
    bpe = load_checkpoint(runs["bpe:320"] / "run" / "checkpoints")
    byte = load_checkpoint(runs["byte"] / "run" / "checkpoints")
    # the run's data folder is gone (trained elsewhere): one line naming the fix, no folder
    bpe.train_config = {**bpe.train_config, "data": str(tmp_path / "elsewhere")}
    with pytest.raises(ConfigError) as exc:
        export_state(bpe, tmp_path / "gone")
    assert "--tokenizer" in str(exc.value) and "\n" not in str(exc.value)
    assert not (tmp_path / "gone").exists()
    # ... passing the prepared folder (or its tokenizer.json) fixes it
    export_state(bpe, tmp_path / "given", tokenizer=runs["bpe:320"] / "data" / "tokenizer.json")
    assert (tmp_path / "given" / "tokenizer.json").is_file()
    with pytest.raises(ConfigError, match="has 320 ids but the model 256"):
        export_state(byte, tmp_path / "mismatch", tokenizer=runs["bpe:320"] / "data")
    with pytest.raises(ConfigError, match="has 256 ids but the model 320"):
        export_state(bpe, tmp_path / "mismatch", tokenizer="byte")
    assert not (tmp_path / "mismatch").exists()
    info = export_state(byte, tmp_path / "bare", tokenizer="none")
    assert info["tokenizer"] is None and info["tokenizer_files"] == []
    assert not (tmp_path / "bare" / "tokenizer.json").exists()
    ckpt = runs["byte"] / "run" / "checkpoints"
    assert main(["--checkpoint", str(ckpt), "--out", str(tmp_path / "cli")]) == 0
    assert "tokenizer byte" in capsys.readouterr().out
    assert {p.name for p in (tmp_path / "cli").iterdir()} == {
        "model.safetensors",
        "config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "raygrow_export.json",
    }
