"""`python -m raygrow.export`: a trial's final (grown) model as a `transformers` Llama checkpoint.

    python -m raygrow.export --run-id ID [--tracking-uri URI] [--out DIR] [--dtype float32]
    python -m raygrow.export --checkpoint PATH [--out DIR] [--tokenizer byte|PATH|none]

Writes `model.safetensors` (Hugging Face Llama names), `config.json` (`LlamaForCausalLM` loads
the folder with `from_pretrained`), the run's tokenizer as `tokenizer.json` +
`tokenizer_config.json` (`AutoTokenizer.from_pretrained(folder)` encodes text to exactly raygrow's
ids) and `raygrow_export.json` (provenance: run, checkpoint, step, tokens, FLOPs, growth history,
the name mapping, the tokenizer).

The tokenizer is the run's (TrainConfig `data` / `tokenizer`): bytes (UTF-8 byte b is id b) are
written as a `tokenizers` byte-level BPE without merges over the 256 byte symbols; a `bpe:V` is
the `tokenizer.json` of the prepared data folder (or its cache entry) the run trained on.
`--tokenizer` overrides it: `byte`, a prepared folder or tokenizer.json, or `none` (model only).

Where the checkpoint comes from (`--run-id`): the run's artifacts `checkpoint/` (the newest
ckpt-*.pt the trial uploaded where it trained, and a BPE run's tokenizer.json, which is then the
default `--tokenizer`), downloaded from the tracking server's artifact store into a temporary
folder, so the export works on any machine that reaches the server; runs of older searches:
artifacts `checkpoints/`, else the local path of their tag `raygrow.checkpoint_path` (see
`raygrow.tracking.checkpoint_of_run`). `--checkpoint PATH` skips MLflow entirely.

Name mapping (raygrow FQN -> transformers LlamaForCausalLM):

    tok_embeddings.weight          model.embed_tokens.weight
    layers.{i}.attn.wq.weight      model.layers.{i}.self_attn.q_proj.weight
    layers.{i}.attn.wk.weight      model.layers.{i}.self_attn.k_proj.weight
    layers.{i}.attn.wv.weight      model.layers.{i}.self_attn.v_proj.weight
    layers.{i}.attn.wo.weight      model.layers.{i}.self_attn.o_proj.weight
    layers.{i}.attn_norm.weight    model.layers.{i}.input_layernorm.weight
    layers.{i}.mlp_norm.weight     model.layers.{i}.post_attention_layernorm.weight
    layers.{i}.mlp.w_gate.weight   model.layers.{i}.mlp.gate_proj.weight
    layers.{i}.mlp.w_up.weight     model.layers.{i}.mlp.up_proj.weight
    layers.{i}.mlp.w_down.weight   model.layers.{i}.mlp.down_proj.weight
    norm.weight                    model.norm.weight
    output.weight                  lm_head.weight   (absent when tied: tie_word_embeddings=true)

No permutation is needed: raygrow's RoPE already uses the "rotate half" layout of HF Llama, and
its RMSNorm (fp32 normalisation, then weight) and SwiGLU (silu) match LlamaRMSNorm / LlamaMLP.
A checkpoint taken while an MSG-style branch ramp is still running (block outputs scaled by
s < 1) is exported with s folded into that block's o_proj and down_proj, which is exact.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch

from raygrow.checkpoint import find_checkpoint
from raygrow.data import BPETokenizer, ByteTokenizer, Tokenizer, get_tokenizer, manifest_of
from raygrow.data.tokenizer import EOT_TOKEN, TOKENIZER_FILE, require_tokenizers
from raygrow.errors import ConfigError, cli_entry
from raygrow.growth import active_directives
from raygrow.model import ModelConfig, build_model
from raygrow.tracking import (
    check_reachable,
    checkpoint_of_run,
    resolve_tracking_uri,
    tracking_uri_origin,
)
from raygrow.train.state import load_checkpoint

_LAYER_MAP = {
    "attn.wq.weight": "self_attn.q_proj.weight",
    "attn.wk.weight": "self_attn.k_proj.weight",
    "attn.wv.weight": "self_attn.v_proj.weight",
    "attn.wo.weight": "self_attn.o_proj.weight",
    "attn_norm.weight": "input_layernorm.weight",
    "mlp_norm.weight": "post_attention_layernorm.weight",
    "mlp.w_gate.weight": "mlp.gate_proj.weight",
    "mlp.w_up.weight": "mlp.up_proj.weight",
    "mlp.w_down.weight": "mlp.down_proj.weight",
}
_GLOBAL_MAP = {
    "tok_embeddings.weight": "model.embed_tokens.weight",
    "norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
}
_INV_LAYER = {v: k for k, v in _LAYER_MAP.items()}
_INV_GLOBAL = {v: k for k, v in _GLOBAL_MAP.items()}
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def hf_name(fqn: str) -> str:
    """raygrow FQN -> transformers Llama parameter name."""
    if fqn in _GLOBAL_MAP:
        return _GLOBAL_MAP[fqn]
    m = re.fullmatch(r"layers\.(\d+)\.(.+)", fqn)
    if m and m.group(2) in _LAYER_MAP:
        return f"model.layers.{m.group(1)}.{_LAYER_MAP[m.group(2)]}"
    raise KeyError(f"no transformers name for raygrow parameter {fqn!r}")


def raygrow_name(name: str) -> str:
    """transformers Llama parameter name -> raygrow FQN (inverse of `hf_name`)."""
    if name in _INV_GLOBAL:
        return _INV_GLOBAL[name]
    m = re.fullmatch(r"model\.layers\.(\d+)\.(.+)", name)
    if m and m.group(2) in _INV_LAYER:
        return f"layers.{m.group(1)}.{_INV_LAYER[m.group(2)]}"
    raise KeyError(f"no raygrow name for transformers parameter {name!r}")


def to_hf_state(
    model_state: dict[str, torch.Tensor], dtype: torch.dtype = torch.float32
) -> dict[str, torch.Tensor]:
    """Rename to HF Llama names (contiguous, own storage: safetensors refuses shared tensors)."""
    return {hf_name(k): v.detach().to(dtype).contiguous().clone() for k, v in model_state.items()}


def from_hf_state(hf_state: dict[str, torch.Tensor], tied: bool) -> dict[str, torch.Tensor]:
    """HF Llama names -> raygrow FQNs (drops a tied lm_head that some savers include)."""
    out = {}
    for name, tensor in hf_state.items():
        if tied and name == "lm_head.weight":
            continue
        out[raygrow_name(name)] = tensor
    return out


def hf_config(
    config: ModelConfig, dtype: str = "float32", eos_token_id: int | None = None
) -> dict[str, Any]:
    """`config.json` for `transformers.LlamaConfig` / `LlamaForCausalLM`."""
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": config.vocab_size,
        "hidden_size": config.d_model,
        "intermediate_size": config.ff_dim,
        "num_hidden_layers": config.n_layers,
        "num_attention_heads": config.n_heads,
        "num_key_value_heads": config.kv_heads,
        "head_dim": config.head_dim,
        "hidden_act": "silu",
        "max_position_embeddings": config.max_seq_len,
        "initializer_range": config.init_std,
        "rms_norm_eps": config.norm_eps,
        "rope_theta": config.rope_theta,
        "rope_scaling": None,
        "tie_word_embeddings": config.tie_embeddings,
        "attention_bias": False,
        "attention_dropout": 0.0,
        "mlp_bias": False,
        "pretraining_tp": 1,
        "use_cache": True,
        "bos_token_id": None,
        "eos_token_id": eos_token_id,
        "pad_token_id": None,
        "dtype": dtype,  # `torch_dtype` is deprecated in transformers
    }


# ------------------------------------------------------------------------------- tokenizer
def _byte_symbols() -> list[str]:
    """GPT-2's byte -> printable character table (`tokenizers`' ByteLevel alphabet), by byte."""
    printable = [*range(33, 127), *range(161, 173), *range(174, 256)]
    others = [b for b in range(256) if b not in printable]
    chars = {b: chr(b) for b in printable} | {b: chr(256 + i) for i, b in enumerate(others)}
    return [chars[b] for b in range(256)]


def byte_level_backend() -> Any:
    """A `tokenizers.Tokenizer` with raygrow's byte ids: UTF-8 byte b is id b, no specials.

    ByteLevel maps every byte to one of 256 symbols (no regex split, no prefix space); a BPE
    without merges then makes each symbol one token, whose id is the byte value."""
    tk = require_tokenizers()
    vocab = {symbol: b for b, symbol in enumerate(_byte_symbols())}
    backend = tk.Tokenizer(tk.models.BPE(vocab=vocab, merges=[]))
    backend.pre_tokenizer = tk.pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    backend.decoder = tk.decoders.ByteLevel()
    return backend


def _tokenizer_at(path: Path) -> Tokenizer:
    """A prepared data folder's tokenizer (its manifest says which), or a BPE tokenizer.json."""
    if (path / "manifest.json").is_file():
        manifest, folder = manifest_of(str(path))
        return get_tokenizer(manifest.tokenizer, folder)
    if path.is_dir():
        path = path / TOKENIZER_FILE
    return BPETokenizer.from_file(path)


def resolve_tokenizer(state: Any, tokenizer: str | Path | None = None) -> Tokenizer | None:
    """The tokenizer to export with `state`: `tokenizer` (`byte`, `none`, a prepared folder or a
    tokenizer.json), else the one the run trained with (its TrainConfig `data` / `tokenizer`:
    a prepared folder, or the cache entry of a raw source, prepared again if missing - as
    training would). A tokenizer that does not fit the model's vocab is a ConfigError."""
    vocab = state.model_config.vocab_size
    if tokenizer is not None:
        choice = str(tokenizer)
        if choice.lower() == "none":
            return None
        tok = ByteTokenizer() if choice.lower() == "byte" else _tokenizer_at(Path(choice))
    else:
        tc = state.train_config or {}
        data, spec = tc.get("data"), tc.get("tokenizer")
        prepared = data is not None and (Path(str(data)).expanduser() / "manifest.json").is_file()
        if not prepared and (spec or "byte").strip().lower() == "byte":
            if vocab != ByteTokenizer.vocab_size:  # a prepared BPE folder that is not here
                raise ConfigError(
                    f"the run's data {data!r} (its tokenizer) is not on this machine and a vocab "
                    f"of {vocab} is not bytes; pass --tokenizer PATH (the prepared data folder "
                    "or its tokenizer.json) or --tokenizer none"
                )
            tok = ByteTokenizer()
        else:
            try:  # the folder load_tokens(data, tokenizer) used: prepared, or its cache entry
                manifest, folder = manifest_of(str(data or "default"), spec)
                tok = get_tokenizer(manifest.tokenizer, folder)
            except ConfigError as exc:
                raise ConfigError(
                    f"cannot find the run's tokenizer {spec or ''} of data {data!r} here ({exc}); "
                    "pass --tokenizer PATH (its prepared folder or tokenizer.json) or "
                    "--tokenizer none"
                ) from None
    used = getattr(tok, "learned_vocab_size", tok.vocab_size)
    if used > vocab or (isinstance(tok, ByteTokenizer) and vocab != tok.vocab_size):
        raise ConfigError(
            f"tokenizer {tok.spec} has {used} ids but the model {vocab}; pass the tokenizer "
            "the run trained with (--tokenizer PATH)"
        )
    return tok


def eos_id(tok: Tokenizer | None) -> int | None:
    """The end-of-document token (BPE's <|endoftext|>); bytes have none (a blank line)."""
    return tok.eot_id if isinstance(tok, BPETokenizer) else None


def write_tokenizer(tok: Tokenizer, out: Path, config: ModelConfig) -> list[str]:
    """tokenizer.json + tokenizer_config.json for `PreTrainedTokenizerFast`/`AutoTokenizer`.

    No cleanup of spaces and no added BOS/EOS: `decode(encode(text)) == text` as in raygrow."""
    if isinstance(tok, BPETokenizer):
        tok.save(out / TOKENIZER_FILE)
    else:
        byte_level_backend().save(str(out / TOKENIZER_FILE))
    hf_cfg: dict[str, Any] = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "clean_up_tokenization_spaces": False,
        "model_max_length": config.max_seq_len,
        "add_bos_token": False,
        "add_eos_token": False,
    }
    if eos_id(tok) is not None:
        hf_cfg["eos_token"] = EOT_TOKEN
    (out / "tokenizer_config.json").write_text(json.dumps(hf_cfg, indent=2) + "\n")
    return [TOKENIZER_FILE, "tokenizer_config.json"]


def branch_scales(state: Any) -> dict[int, float]:
    """Residual-branch scales < 1 still active at the checkpoint's step (MSG ramps), remapped
    through every later growth exactly as the training loop applies them
    (`raygrow.growth.active_directives`)."""
    scales, _ = active_directives(state.growth_history, state.step)
    return {i: s for i, s in scales.items() if s < 1.0 and i < state.model_config.n_layers}


def fold_branch_scales(
    model_state: dict[str, torch.Tensor], scales: dict[int, float]
) -> dict[str, torch.Tensor]:
    """x + s·attn(·) == x + attn(·) with o_proj scaled by s (same for the MLP's down_proj)."""
    out = dict(model_state)
    for i, s in scales.items():
        for key in (f"layers.{i}.attn.wo.weight", f"layers.{i}.mlp.w_down.weight"):
            out[key] = out[key] * s
    return out


def export_state(
    state: Any,
    out_dir: str | Path,
    dtype: str = "float32",
    provenance: dict | None = None,
    tokenizer: str | Path | None = None,
) -> dict[str, Any]:
    """Write model.safetensors + config.json + the tokenizer (`resolve_tokenizer(state,
    tokenizer)`) + raygrow_export.json for a TrainState; nothing is written on a bad input."""
    from safetensors.torch import save_file

    if dtype not in DTYPES:
        raise ConfigError(f"--dtype {dtype!r} not in {sorted(DTYPES)}")
    config: ModelConfig = state.model_config
    tok = resolve_tokenizer(state, tokenizer)
    if tok is not None and not isinstance(tok, BPETokenizer):
        require_tokenizers()  # the byte tokenizer.json needs it too: fail before writing
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    scales = branch_scales(state)
    model_state = fold_branch_scales(state.model_state, scales)
    save_file(to_hf_state(model_state, DTYPES[dtype]), out / "model.safetensors", {"format": "pt"})
    cfg = hf_config(config, dtype, eos_id(tok))
    (out / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")
    tokenizer_files = write_tokenizer(tok, out, config) if tok is not None else []
    info = {
        **(provenance or {}),
        "step": state.step,
        "tokens": state.tokens,
        "flops": state.flops,
        "model_config": config.to_dict(),
        "n_params": config.n_params(),
        "tokenizer": tok.spec if tok is not None else None,
        "tokenizer_files": tokenizer_files,
        "data": state.train_config.get("data"),
        "growth_history": [
            {k: e.get(k) for k in ("operator", "step", "tokens", "flops", "stage", "params")}
            for e in state.growth_history
        ],
        "folded_branch_scales": {str(i): s for i, s in scales.items()},
        "name_map": {k: hf_name(k) for k in model_state},
    }
    (out / "raygrow_export.json").write_text(json.dumps(info, indent=2, default=str) + "\n")
    return info


def load_export(out_dir: str | Path) -> tuple[ModelConfig, dict[str, torch.Tensor]]:
    """Read an export back into raygrow (config + FQN state); the inverse of `export_state`."""
    from safetensors.torch import load_file

    out = Path(out_dir)
    cfg = json.loads((out / "config.json").read_text())
    config = ModelConfig(
        n_layers=cfg["num_hidden_layers"],
        d_model=cfg["hidden_size"],
        n_heads=cfg["num_attention_heads"],
        n_kv_heads=cfg["num_key_value_heads"],
        d_ff=cfg["intermediate_size"],
        vocab_size=cfg["vocab_size"],
        max_seq_len=cfg["max_position_embeddings"],
        rope_theta=cfg["rope_theta"],
        norm_eps=cfg["rms_norm_eps"],
        tie_embeddings=cfg["tie_word_embeddings"],
        init_std=cfg.get("initializer_range", 0.02),
    )
    state = from_hf_state(load_file(out / "model.safetensors"), config.tie_embeddings)
    return config, {k: v.float() for k, v in state.items()}


@torch.no_grad()
def verify_export(state: Any, out_dir: str | Path, seq: int = 16) -> float:
    """max |logits| difference between the checkpoint's model and the re-read export."""
    scales = branch_scales(state)
    ours = build_model(state.model_config, state.model_state).eval()
    for i, s in scales.items():
        ours.layers[i].branch_scale = s
    config, exported = load_export(out_dir)
    theirs = build_model(config, exported).eval()
    gen = torch.Generator().manual_seed(0)
    idx = torch.randint(0, config.vocab_size, (2, min(seq, config.max_seq_len)), generator=gen)
    return float((ours(idx) - theirs(idx)).abs().max())


def export_checkpoint(
    checkpoint: str | Path,
    out_dir: str | Path,
    *,
    dtype: str = "float32",
    verify: bool = True,
    provenance: dict[str, Any] | None = None,
    tokenizer: str | Path | None = None,
) -> dict[str, Any]:
    """Export a checkpoint file (or a run's checkpoints folder: its newest file) to `out_dir`;
    `tokenizer`: see `resolve_tokenizer` (None: the run's).

    This is `raygrow.export(...)`. Returns the provenance written to raygrow_export.json, plus
    `max_logit_diff` of the round-trip check when `verify` and the export is float32."""
    state = load_checkpoint(checkpoint)
    provenance = {**(provenance or {}), "checkpoint": str(Path(checkpoint).resolve())}
    info = export_state(state, out_dir, dtype, provenance, tokenizer)
    if verify and dtype == "float32":
        info["max_logit_diff"] = verify_export(state, out_dir)
    return info


def fetch_run_checkpoint(uri: str, run_id: str, tmp: str) -> tuple[Path, str, str | None]:
    """The run's checkpoint downloaded from its MLflow artifacts into `tmp` (or, for runs of
    older searches, the local path it records): (local checkpoint, where it came from as a
    `runs:/` URI or path, the tokenizer.json stored next to it or None)."""
    folder = checkpoint_of_run(uri, run_id, tmp)
    path = find_checkpoint(folder)
    try:
        source = f"runs:/{run_id}/{path.relative_to(Path(tmp) / 'run-artifacts').as_posix()}"
    except ValueError:  # a recorded local path
        source = str(path.resolve())
    stored = path.parent / TOKENIZER_FILE
    return path, source, str(stored) if stored.is_file() and source.startswith("runs:/") else None


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m raygrow.export", description=__doc__.split("\n")[0])
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--run-id", help="MLflow run id of a trial")
    src.add_argument("--checkpoint", help="a raygrow checkpoint file or checkpoints folder")
    p.add_argument(
        "--tracking-uri",
        help="MLflow store of --run-id; precedence: this flag, else $MLFLOW_TRACKING_URI "
        "(no default)",
    )
    p.add_argument("--out", help="output folder (default ./raygrow_runs/exports/<run or ckpt>)")
    p.add_argument("--dtype", choices=sorted(DTYPES), default="float32")
    p.add_argument(
        "--tokenizer",
        help="byte, a prepared data folder or tokenizer.json, or none (default: the run's, from "
        "its TrainConfig data/tokenizer)",
    )
    p.add_argument(
        "--no-verify", action="store_true", help="skip the logits round-trip check (float32)"
    )
    return p.parse_args(argv)


@cli_entry
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    provenance: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="raygrow-export-") as tmp:
        if args.run_id:
            uri = resolve_tracking_uri(args.tracking_uri, None)
            if not uri:
                raise ConfigError(
                    "--run-id needs the store: pass --tracking-uri sqlite:////abs/path/mlflow.db "
                    "(or set MLFLOW_TRACKING_URI)"
                )
            check_reachable(uri, origin=tracking_uri_origin(args.tracking_uri))
            path, source, stored_tokenizer = fetch_run_checkpoint(uri, args.run_id, tmp)
            provenance.update(run_id=args.run_id, tracking_uri=uri, checkpoint=source)
            tokenizer = args.tokenizer or stored_tokenizer
        else:
            path, tokenizer = Path(args.checkpoint), args.tokenizer
        state = load_checkpoint(path)
        provenance.setdefault("checkpoint", str(Path(path).resolve()))
        name = args.run_id or Path(path).stem
        out = Path(args.out or Path("raygrow_runs") / "exports" / name)
        info = export_state(state, out, args.dtype, provenance, tokenizer)
    cfg = state.model_config
    print(
        f"exported {cfg.shape} ({info['n_params']:,} params, {len(state.growth_history)} growth "
        f"events, step {state.step}, tokenizer {info['tokenizer']}) -> {out.resolve()}"
    )
    if not args.no_verify and args.dtype == "float32":
        diff = verify_export(state, out)
        print(f"round-trip check: max |logits diff| = {diff:.2e}")
        if diff > 1e-4:
            print("round-trip check FAILED", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
else:  # `raygrow.export(checkpoint, out_dir)` (see raygrow/_api.py)
    from raygrow._api import make_callable

    make_callable(__name__, "raygrow.export:export_checkpoint")
