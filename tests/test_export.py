"""Export: the grown model as HF-Llama safetensors + config; logits survive the round trip."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from fixtures.mlflow_store import sqlite_store

from raygrow.export import (
    export_state,
    hf_name,
    load_export,
    main,
    raygrow_name,
    verify_export,
)
from raygrow.model import ModelConfig, Transformer, build_model, param_fqns
from raygrow.tracking import SearchTracker
from raygrow.train.state import TrainState, save_checkpoint

CONFIGS = {
    "untied": ModelConfig(n_layers=2, d_model=32, n_heads=4, max_seq_len=32, d_ff=48),
    "tied-gqa": ModelConfig(
        n_layers=3,
        d_model=32,
        n_heads=4,
        n_kv_heads=2,
        max_seq_len=32,
        tie_embeddings=True,
        rope_theta=50_000.0,
        norm_eps=1e-6,
    ),  # fmt: skip
}


def make_state(config: ModelConfig, seed: int = 0, **kw) -> TrainState:
    torch.manual_seed(seed)
    model = Transformer(config)
    with torch.no_grad():  # non-trivial norms, so a swapped norm mapping would show
        for p in model.parameters():
            if p.dim() == 1:
                p.uniform_(0.5, 1.5)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    return TrainState(model_config=config, model_state=state, step=40, tokens=40 * 512, **kw)


def logits(config: ModelConfig, state: dict, idx: torch.Tensor, scales=None) -> torch.Tensor:
    model = build_model(config, state).eval()
    for i, s in (scales or {}).items():
        model.layers[i].branch_scale = s
    with torch.no_grad():
        return model(idx)


IDX = torch.randint(0, 256, (2, 24), generator=torch.Generator().manual_seed(1))


def test_name_mapping_is_a_bijection() -> None:
    for config in CONFIGS.values():
        names = param_fqns(config)
        hf = [hf_name(n) for n in names]
        assert len(set(hf)) == len(names)
        assert [raygrow_name(h) for h in hf] == names
    assert hf_name("layers.7.attn.wk.weight") == "model.layers.7.self_attn.k_proj.weight"
    assert hf_name("layers.0.mlp_norm.weight") == "model.layers.0.post_attention_layernorm.weight"
    assert hf_name("output.weight") == "lm_head.weight"
    with pytest.raises(KeyError):
        hf_name("layers.0.attn.bias")


@pytest.mark.parametrize("name", list(CONFIGS))
def test_round_trip_logits_equal(name: str, tmp_path: Path) -> None:
    config = CONFIGS[name]
    state = make_state(config)
    info = export_state(state, tmp_path, provenance={"run_id": "r1"})
    cfg = json.loads((tmp_path / "config.json").read_text())
    assert cfg["architectures"] == ["LlamaForCausalLM"]
    assert (cfg["num_key_value_heads"], cfg["tie_word_embeddings"]) == (
        config.kv_heads,
        config.tie_embeddings,
    )
    assert (cfg["rope_theta"], cfg["rms_norm_eps"], cfg["intermediate_size"]) == (
        config.rope_theta,
        config.norm_eps,
        config.ff_dim,
    )
    assert cfg["hidden_act"] == "silu" and cfg["attention_bias"] is False
    assert cfg["dtype"] == "float32" and "torch_dtype" not in cfg  # torch_dtype is deprecated
    assert info["run_id"] == "r1" and info["n_params"] == config.n_params()
    back_config, back_state = load_export(tmp_path)
    assert (back_config.kv_heads, back_config.ff_dim) == (config.kv_heads, config.ff_dim)
    assert back_config.replace(n_kv_heads=config.n_kv_heads, d_ff=config.d_ff) == config
    assert torch.equal(logits(config, state.model_state, IDX), logits(config, back_state, IDX))
    assert verify_export(state, tmp_path) == 0.0


def test_mid_ramp_branch_scale_is_folded_exactly(tmp_path: Path) -> None:
    config = CONFIGS["untied"]
    ramp = {"branch_ramps": [{"layers": [1], "steps": 100}]}
    state = make_state(
        config, growth_history=[{"operator": "random", "step": 15, "directives": ramp}]
    )
    export_state(state, tmp_path)
    scales = {1: (40 - 15) / 100}
    _, exported = load_export(tmp_path)
    ours = logits(config, state.model_state, IDX, scales)
    assert torch.allclose(ours, logits(config, exported, IDX), atol=1e-5, rtol=0)
    assert not torch.allclose(ours, logits(config, state.model_state, IDX), atol=1e-3)
    info = json.loads((tmp_path / "raygrow_export.json").read_text())
    assert info["folded_branch_scales"] == {"1": 0.25}


@pytest.mark.parametrize("name", list(CONFIGS))
def test_transformers_llama_gives_the_same_logits(name: str, tmp_path: Path) -> None:
    transformers = pytest.importorskip("transformers")
    config = CONFIGS[name]
    state = make_state(config)
    export_state(state, tmp_path)
    hf = transformers.LlamaForCausalLM.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        theirs = hf(IDX).logits
    torch.testing.assert_close(theirs, logits(config, state.model_state, IDX), atol=1e-5, rtol=1e-5)


def test_cli_from_checkpoint_and_from_run(tmp_path: Path, capsys) -> None:
    config = CONFIGS["tied-gqa"]
    ckpt = save_checkpoint(
        make_state(config), tmp_path / "run" / "checkpoints" / "ckpt-000000040.pt"
    )
    out = tmp_path / "direct"
    assert main(["--checkpoint", str(ckpt.parent), "--out", str(out)]) == 0
    assert "round-trip check: max |logits diff| = 0.00e+00" in capsys.readouterr().out
    assert {p.name for p in out.iterdir()} == {
        "model.safetensors",
        "config.json",
        "tokenizer.json",  # make_state's model has byte vocab: raygrow's byte tokenizer
        "tokenizer_config.json",
        "raygrow_export.json",
    }

    uri = sqlite_store(tmp_path / "store")
    tr = SearchTracker(uri, "exp")
    tr.start_search({}, {})
    by_tag = tr.trial_run("t-tag", {}, "grown")
    tr.finish_trial("t-tag", "completed", {"raygrow.checkpoint_path": str(ckpt)}, {})
    by_artifact = tr.trial_run("t-art", {}, "grown")
    tr.finish_trial("t-art", "completed", {}, {"checkpoints": ckpt.parent})
    missing = tr.trial_run("t-none", {}, "grown")
    tr.finish_trial("t-none", "completed", {}, {})
    for run_id in (by_tag, by_artifact):
        out = tmp_path / run_id
        assert main(["--run-id", run_id, "--tracking-uri", uri, "--out", str(out)]) == 0
        info = json.loads((out / "raygrow_export.json").read_text())
        assert info["run_id"] == run_id and info["step"] == 40
    with pytest.raises(SystemExit) as exc:
        main(["--run-id", missing, "--tracking-uri", uri, "--out", str(tmp_path / "x")])
    assert exc.value.code == 2
    assert "pass --checkpoint PATH" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["--checkpoint", str(tmp_path / "nowhere.pt")])
    assert exc.value.code == 2


def test_export_is_callable_from_python(tmp_path: Path) -> None:
    import raygrow

    config = CONFIGS["tied-gqa"]
    ckpt = save_checkpoint(make_state(config), tmp_path / "checkpoints" / "ckpt-000000040.pt")
    info = raygrow.export(ckpt.parent, tmp_path / "out")  # the module is the function
    assert info["max_logit_diff"] == 0.0 and info["checkpoint"] == str(ckpt.parent.resolve())
    assert info["n_params"] == config.n_params()
    assert (tmp_path / "out" / "model.safetensors").is_file()
