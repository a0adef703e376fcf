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

The config dataclass is `raygrow.config.ModelConfig` (torch-free; re-exported here).

Shape legend in comments: B batch, T time, D d_model, H heads, K kv heads, E head_dim, F d_ff.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from raygrow.config import ModelConfig  # re-exported: the config lives in the torch-free module
from raygrow.errors import ConfigError


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
