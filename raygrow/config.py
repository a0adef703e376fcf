"""`ModelConfig`: the architecture of one transformer, as plain data (no torch).

Kept apart from `raygrow.model` (as litgpt keeps its Config beside model.py) so that schedules,
FLOP accounting and search spaces can reason about model shapes without importing torch.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

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
