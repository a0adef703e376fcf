"""A Llama-style decoder-only transformer, small enough to read in one sitting.

Features: token embedding, pre-norm RMSNorm, rotary position embeddings (HF-Llama "rotate half"
layout, so weights export to `transformers` without permutation), causal attention through
`scaled_dot_product_attention` with optional grouped-query attention, SwiGLU MLP, no biases,
optional tied input/output embeddings.

Parameter FQNs are a stable contract: growth operators and optimizer state are keyed by them.

    tok_embeddings.weight          (vocab_size, d_model)
    layers.{i}.attn_norm.weight    (d_model,)
    layers.{i}.attn.wq.weight      (n_heads * head_dim, d_model)
    layers.{i}.attn.wk.weight      (n_kv_heads * head_dim, d_model)
    layers.{i}.attn.wv.weight      (n_kv_heads * head_dim, d_model)
    layers.{i}.attn.wo.weight      (d_model, n_heads * head_dim)
    layers.{i}.mlp_norm.weight     (d_model,)
    layers.{i}.mlp.w_gate.weight   (d_ff, d_model)
    layers.{i}.mlp.w_up.weight     (d_ff, d_model)
    layers.{i}.mlp.w_down.weight   (d_model, d_ff)
    norm.weight                    (d_model,)
    output.weight                  (vocab_size, d_model)   -- absent when tie_embeddings=True

Init: every matrix ~ N(0, init_std); the residual-branch output projections (`attn.wo`,
`mlp.w_down`) use init_std / sqrt(2 * n_layers) (GPT-2 / nanoGPT scaling) so the residual
stream's variance does not grow with depth; norm weights are 1.

Shape legend in comments: B batch, T time, D d_model, H heads, K kv heads, E head_dim, F d_ff.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from raygrow.errors import ConfigError


@dataclass(frozen=True, kw_only=True, slots=True)
class ModelConfig:
    """Architecture of one transformer. Frozen: growth produces a new config."""

    n_layers: int = 4
    """Number of transformer blocks (L)."""
    d_model: int = 128
    """Residual stream width (D)."""
    n_heads: int = 2
    """Query heads; head_dim = d_model // n_heads."""
    n_kv_heads: int | None = None
    """Key/value heads for grouped-query attention; None means n_heads (plain multi-head)."""
    d_ff: int | None = None
    """SwiGLU hidden width; None means 4 * d_model (compute-matched to a 4x GELU MLP: 8/3 * 1.5)."""
    vocab_size: int = 256
    """Tokenizer vocabulary size (256 for byte-level)."""
    max_seq_len: int = 256
    """Longest sequence the rotary tables are built for."""
    rope_theta: float = 10000.0
    norm_eps: float = 1e-5
    tie_embeddings: bool = False
    """Share tok_embeddings.weight with the output head (no `output.weight` FQN then)."""
    init_std: float = 0.02

    def __post_init__(self) -> None:
        for name in ("n_layers", "d_model", "n_heads", "vocab_size", "max_seq_len"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"model.{name}={value!r} must be a positive integer")
        if self.d_model % self.n_heads:
            raise ConfigError(
                f"model.n_heads={self.n_heads} does not divide model.d_model={self.d_model}; "
                f"pick n_heads from the divisors of d_model"
            )
        if self.head_dim % 2:
            raise ConfigError(
                f"head_dim = d_model/n_heads = {self.head_dim} must be even for rotary embeddings; "
                "change n_heads"
            )
        kv = self.kv_heads
        if kv < 1 or self.n_heads % kv:
            raise ConfigError(
                f"model.n_kv_heads={self.n_kv_heads} must divide model.n_heads={self.n_heads}"
            )
        if self.d_ff is not None and self.d_ff < 1:
            raise ConfigError(f"model.d_ff={self.d_ff} must be a positive integer or null")
        if self.rope_theta <= 0 or self.norm_eps <= 0 or self.init_std <= 0:
            raise ConfigError("model.rope_theta, norm_eps and init_std must be positive")

    # derived values are methods/properties, never stored fields that can drift
    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    @property
    def kv_heads(self) -> int:
        return self.n_heads if self.n_kv_heads is None else self.n_kv_heads

    @property
    def ff_dim(self) -> int:
        return 4 * self.d_model if self.d_ff is None else self.d_ff

    def replace(self, **changes: Any) -> ModelConfig:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ConfigError(
                f"unknown model config keys {sorted(unknown)}; known: {sorted(known)}"
            )
        return cls(**data)

    @classmethod
    def from_shape(cls, shape: str, **overrides: Any) -> ModelConfig:
        """Parse the CLI's `LxD` notation (e.g. `8x256`); heads default to head_dim 64."""
        try:
            layers_str, width_str = shape.lower().split("x")
            n_layers, d_model = int(layers_str), int(width_str)
        except ValueError:
            raise ConfigError(
                f"model size {shape!r} is not LxD (layers x width), e.g. 8x256"
            ) from None
        overrides.setdefault("n_heads", max(1, d_model // 64))
        return cls(n_layers=n_layers, d_model=d_model, **overrides)

    def layer_params(self) -> int:
        """Parameters of one transformer block."""
        d, e = self.d_model, self.head_dim
        attn = d * self.n_heads * e * 2 + d * self.kv_heads * e * 2
        return attn + 3 * d * self.ff_dim + 2 * d

    def n_params(self, non_embedding: bool = False) -> int:
        """Parameter count; non-embedding excludes the token embedding and the output head."""
        body = self.n_layers * self.layer_params() + self.d_model
        if non_embedding:
            return body
        head = 0 if self.tie_embeddings else self.vocab_size * self.d_model
        return body + self.vocab_size * self.d_model + head

    @property
    def shape(self) -> str:
        return f"{self.n_layers}x{self.d_model}"


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # normalise in fp32 for stability under bf16 autocast
        x32 = x.float()
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return x32.type_as(x) * self.weight


def rotary_tables(config: ModelConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin tables of shape (max_seq_len, head_dim) in HF-Llama layout."""
    e = config.head_dim
    inv_freq = 1.0 / (config.rope_theta ** (torch.arange(0, e, 2, dtype=torch.float32) / e))
    angles = torch.outer(torch.arange(config.max_seq_len, dtype=torch.float32), inv_freq)
    angles = torch.cat([angles, angles], dim=-1)  # (T, E)
    return angles.cos(), angles.sin()


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x: (B, H, T, E); cos/sin: (T, E)."""
    half = x.shape[-1] // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return x * cos + rotated * sin


class Attention(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.n_heads, self.n_kv_heads, self.head_dim = (
            config.n_heads,
            config.kv_heads,
            config.head_dim,
        )
        d = config.d_model
        self.wq = nn.Linear(d, self.n_heads * self.head_dim, bias=False)
        self.wk = nn.Linear(d, self.n_kv_heads * self.head_dim, bias=False)
        self.wv = nn.Linear(d, self.n_kv_heads * self.head_dim, bias=False)
        self.wo = nn.Linear(self.n_heads * self.head_dim, d, bias=False)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        q = self.wq(x).view(b, t, self.n_heads, self.head_dim).transpose(1, 2)  # (B, H, T, E)
        k = self.wk(x).view(b, t, self.n_kv_heads, self.head_dim).transpose(1, 2)  # (B, K, T, E)
        v = self.wv(x).view(b, t, self.n_kv_heads, self.head_dim).transpose(1, 2)  # (B, K, T, E)
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        y = F.scaled_dot_product_attention(
            q, k, v, is_causal=True, enable_gqa=self.n_kv_heads != self.n_heads
        )  # (B, H, T, E)
        return self.wo(y.transpose(1, 2).reshape(b, t, -1))  # (B, T, D)


class MLP(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.w_gate = nn.Linear(config.d_model, config.ff_dim, bias=False)
        self.w_up = nn.Linear(config.d_model, config.ff_dim, bias=False)
        self.w_down = nn.Linear(config.ff_dim, config.d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w_down(F.silu(self.w_gate(x)) * self.w_up(x))  # (B, T, F) -> (B, T, D)


class Block(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.attn_norm = RMSNorm(config.d_model, config.norm_eps)
        self.attn = Attention(config)
        self.mlp_norm = RMSNorm(config.d_model, config.norm_eps)
        self.mlp = MLP(config)
        # Scales both residual branches; <1 only while an MSG-style mask ramps a newly grown
        # block in (see raygrow.growth). A plain float, not a parameter: it is schedule state.
        self.branch_scale = 1.0

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        s = self.branch_scale
        if s == 1.0:
            x = x + self.attn(self.attn_norm(x), cos, sin)
            return x + self.mlp(self.mlp_norm(x))
        x = x + s * self.attn(self.attn_norm(x), cos, sin)
        return x + s * self.mlp(self.mlp_norm(x))


class Transformer(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.tok_embeddings = nn.Embedding(config.vocab_size, config.d_model)
        self.layers = nn.ModuleList(Block(config) for _ in range(config.n_layers))
        self.norm = RMSNorm(config.d_model, config.norm_eps)
        self.output = (
            None
            if config.tie_embeddings
            else nn.Linear(config.d_model, config.vocab_size, bias=False)
        )
        cos, sin = rotary_tables(config)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        self.init_weights()

    @torch.no_grad()
    def init_weights(self, generator: torch.Generator | None = None) -> None:
        std = self.config.init_std
        residual_std = std / math.sqrt(2 * self.config.n_layers)
        for name, p in self.named_parameters():
            if p.dim() == 1:
                p.fill_(1.0)
            elif name.endswith(("attn.wo.weight", "mlp.w_down.weight")):
                p.normal_(0.0, residual_std, generator=generator)
            else:
                p.normal_(0.0, std, generator=generator)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        """idx: (B, T) token ids -> logits (B, T, vocab_size)."""
        t = idx.shape[1]
        if t > self.config.max_seq_len:
            raise ConfigError(
                f"sequence length {t} exceeds model.max_seq_len={self.config.max_seq_len}; "
                "raise max_seq_len or shorten seq_len"
            )
        cos, sin = self.rope_cos[:t], self.rope_sin[:t]
        x = self.tok_embeddings(idx)  # (B, T, D)
        for layer in self.layers:
            x = layer(x, cos, sin)
        x = self.norm(x)
        if self.output is None:
            return F.linear(x, self.tok_embeddings.weight)  # (B, T, V)
        return self.output(x)  # (B, T, V)


def build_model(
    config: ModelConfig,
    state: dict[str, torch.Tensor] | None = None,
    device: torch.device | str = "cpu",
) -> Transformer:
    """Build a model; when `state` is given load it strictly (every FQN, every shape)."""
    model = Transformer(config).to(device)
    if state is not None:
        expected = dict(model.state_dict())
        missing, extra = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
        if missing or extra:
            raise ConfigError(
                f"model state does not match config {config.shape}: missing {missing[:4]}, "
                f"unexpected {extra[:4]}"
            )
        for name, tensor in state.items():
            if tuple(tensor.shape) != tuple(expected[name].shape):
                raise ConfigError(
                    f"model state {name} has shape {tuple(tensor.shape)}, config expects "
                    f"{tuple(expected[name].shape)}"
                )
        model.load_state_dict(state, strict=True)
    return model


def param_fqns(config: ModelConfig) -> list[str]:
    """Parameter FQNs of a model with this config, in module order (no model is built)."""
    names = ["tok_embeddings.weight"]
    for i in range(config.n_layers):
        names += [
            f"layers.{i}.attn_norm.weight",
            f"layers.{i}.attn.wq.weight",
            f"layers.{i}.attn.wk.weight",
            f"layers.{i}.attn.wv.weight",
            f"layers.{i}.attn.wo.weight",
            f"layers.{i}.mlp_norm.weight",
            f"layers.{i}.mlp.w_gate.weight",
            f"layers.{i}.mlp.w_up.weight",
            f"layers.{i}.mlp.w_down.weight",
        ]
    names.append("norm.weight")
    if not config.tie_embeddings:
        names.append("output.weight")
    return names
