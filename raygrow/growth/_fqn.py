"""Parameter-FQN helpers shared by the growth operators: templates, layer remaps, shape checks.

Every operator works on plain `{fqn: tensor}` dicts keyed exactly as `raygrow.model.param_fqns`
documents; this module is the only place that knows how those names are built.
"""

from __future__ import annotations

import torch

from raygrow.errors import ConfigError
from raygrow.model import ModelConfig, param_fqns

# per-block tensors, in module order; `layers.{i}.` + key is the FQN
LAYER_KEYS = (
    "attn_norm.weight",
    "attn.wq.weight",
    "attn.wk.weight",
    "attn.wv.weight",
    "attn.wo.weight",
    "mlp_norm.weight",
    "mlp.w_gate.weight",
    "mlp.w_up.weight",
    "mlp.w_down.weight",
)
# residual-branch output projections: zeroing both makes a pre-norm block the identity
BRANCH_OUT_KEYS = ("attn.wo.weight", "mlp.w_down.weight")
NORM_KEYS = ("attn_norm.weight", "mlp_norm.weight")
GLOBAL_KEYS = ("tok_embeddings.weight", "norm.weight", "output.weight")


def layer_fqn(i: int, key: str) -> str:
    return f"layers.{i}.{key}"


def split_fqn(fqn: str) -> tuple[int | None, str]:
    """`layers.3.attn.wq.weight` -> (3, `attn.wq.weight`); globals -> (None, fqn)."""
    if fqn.startswith("layers."):
        _, idx, key = fqn.split(".", 2)
        return int(idx), key
    return None, fqn


def expected_shapes(config: ModelConfig) -> dict[str, tuple[int, ...]]:
    """FQN -> shape of every parameter of a model with `config` (no model is built)."""
    d, e, f, v = config.d_model, config.head_dim, config.ff_dim, config.vocab_size
    q, kv = config.n_heads * e, config.kv_heads * e
    per_layer = {
        "attn_norm.weight": (d,),
        "attn.wq.weight": (q, d),
        "attn.wk.weight": (kv, d),
        "attn.wv.weight": (kv, d),
        "attn.wo.weight": (d, q),
        "mlp_norm.weight": (d,),
        "mlp.w_gate.weight": (f, d),
        "mlp.w_up.weight": (f, d),
        "mlp.w_down.weight": (d, f),
    }
    shapes: dict[str, tuple[int, ...]] = {}
    for fqn in param_fqns(config):
        layer, key = split_fqn(fqn)
        if layer is not None:
            shapes[fqn] = per_layer[key]
        elif key == "norm.weight":
            shapes[fqn] = (d,)
        else:  # tok_embeddings / output
            shapes[fqn] = (v, d)
    return shapes


def check_params(config: ModelConfig, params: dict[str, torch.Tensor], what: str) -> None:
    """Raise ConfigError unless `params` has exactly the FQNs and shapes of `config`."""
    shapes = expected_shapes(config)
    missing, extra = sorted(set(shapes) - set(params)), sorted(set(params) - set(shapes))
    if missing or extra:
        raise ConfigError(
            f"{what} does not match model config {config.shape}: missing {missing[:3]}, "
            f"unexpected {extra[:3]}; pass model.state_dict() of a model built from that config"
        )
    for fqn, shape in shapes.items():
        if tuple(params[fqn].shape) != shape:
            raise ConfigError(
                f"{what} {fqn} has shape {tuple(params[fqn].shape)}, config {config.shape} "
                f"expects {shape}; pass the state dict that belongs to the config"
            )
