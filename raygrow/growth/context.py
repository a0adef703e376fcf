"""What a growth operator sees and returns: `GrowthState`, `GrowthReport` and `GrowthContext`.

`grow` runs an operator's `transform` four times over the *same* code path: once for the
parameters and once each for `exp_avg`, `exp_avg_sq` and a step-count tensor. The
`GrowthContext` primitives give each pass its own meaning, so parameters and optimizer moments
can never be mapped inconsistently:

    primitive       params            exp_avg (m)         exp_avg_sq (v)       step
    fresh(std)      N(0, std) / fill  0                   0                    0
    scale(t, a, c)  a * t             t  (scale: c * t)   t  (scale: c^2 t)    t (0 where c = 0)
    mix(w_i, t_i)   sum w_i t_i       sum w_i t_i         sum w_i^2 t_i        max over w_i != 0
    bilinear(B, t)  B_o t B_i^T       B_o t B_i^T         B_o^2 t (B_i^2)^T    max
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from raygrow.config import ModelConfig
from raygrow.growth._fqn import expected_shapes

OptimState = dict[str, dict[str, torch.Tensor]]
Batch = tuple[torch.Tensor, torch.Tensor]
BatchFn = Callable[[int], Batch]


@dataclass(frozen=True)
class GrowthState:
    """Everything a growth operator maps: config, parameters, optimizer state, global step."""

    config: ModelConfig
    params: dict[str, torch.Tensor]
    """FQN -> tensor, i.e. `model.state_dict()` (fp32, CPU)."""
    optim: OptimState = field(default_factory=dict)
    """FQN-keyed AdamW state `{fqn: {"step", "exp_avg", "exp_avg_sq"}}`; {} before any step."""
    step: int = 0
    """Global optimizer step at growth time (recorded in the report)."""
    branch_scales: dict[int, float] = field(default_factory=dict)
    """Residual-branch scales of layers still ramping in (MSG masks of earlier growth events,
    layer -> scale in the current indices; absent = 1). The report measures function
    preservation with them: "before" runs at these scales, "after" at these scales carried
    through the operator's layer plan times the operator's own directives at t = 0."""


@dataclass(frozen=True, kw_only=True)
class GrowthReport:
    """What one growth event did and measured; `to_dict()` is JSON-able (the loop logs it)."""

    operator: str
    params: dict[str, Any]
    """Resolved operator params (defaults and derived values filled in)."""
    axes: list[str]
    opt_policy: str
    config_before: dict[str, Any]
    config_after: dict[str, Any]
    n_params_before: int
    n_params_after: int
    fp_claimed: bool
    """Whether the operator (with these params) claims function preservation at t = 0."""
    loss_before: float
    loss_after: float
    """Loss on the probe batch (fp32), after applying the directives at t = 0."""
    max_logit_diff: float
    """max |logits_after - logits_before| on the probe batch."""
    seconds: float
    directives: dict[str, Any] = field(default_factory=dict)
    """Instructions for the loop: `branch_ramps`, `freeze`, `extra_flops`, `extra_sequences`."""
    step: int = 0
    extras: dict[str, Any] = field(default_factory=dict)
    """Operator-specific measurements (e.g. the learned operator's phase losses)."""
    layer_map: list[int] = field(default_factory=list)
    """New layer i comes from source layer layer_map[i] (identity for width operators)."""
    layer_kinds: list[str] = field(default_factory=list)
    """What new layer i is: orig (first occurrence), copy, zero_copy, zero_random, random or
    mixed; earlier events' ramps and freezes follow orig/copy layers
    (`raygrow.growth.directives`)."""
    branch_scales: dict[str, float] = field(default_factory=dict)
    """Active branch scales (layer -> scale) the "before" measurement ran with."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> GrowthReport:
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


# --------------------------------------------------------------------------- the context
@dataclass
class GrowthContext:
    """What `prepare`/`transform` see; role-aware primitives keep params and moments consistent."""

    old: ModelConfig
    new: ModelConfig
    p: dict[str, Any]
    """Resolved operator params."""
    generator: torch.Generator
    policy: str
    state: GrowthState
    train_batch_fn: BatchFn | None = None
    role: str = "param"
    plan: dict[str, Any] = field(default_factory=dict)
    """Random choices drawn once in `prepare`, shared by all four transform passes."""
    extra_flops: float = 0.0
    extra_sequences: int = 0
    extras: dict[str, Any] = field(default_factory=dict)
    """Operator-specific measurements for the report (JSON-able), e.g. a trained phase's loss."""

    def new_shapes(self) -> dict[str, tuple[int, ...]]:
        return expected_shapes(self.new)

    def fresh(
        self, shape: Sequence[int], std: float = 0.0, fill: float | None = None
    ) -> torch.Tensor:
        """A new tensor: N(0, std) (or `fill`) for params, zeros for moments and steps."""
        if self.role != "param":
            return torch.zeros(tuple(shape))
        if fill is not None:
            return torch.full(tuple(shape), float(fill))
        if std == 0.0:
            return torch.zeros(tuple(shape))
        return torch.randn(tuple(shape), generator=self.generator) * std

    def scale(
        self,
        t: torch.Tensor,
        value: float | torch.Tensor = 1.0,
        grad: float | torch.Tensor = 1.0,
    ) -> torch.Tensor:
        """Multiply params by `value`; under `scale` multiply m by `grad`, v by `grad`^2."""
        if self.role == "param":
            return t * value if not _is_one(value) else t
        if self.policy != "scale" or _is_one(grad):
            return t
        if self.role == "exp_avg":
            return t * grad
        if self.role == "exp_avg_sq":
            return t * (grad * grad)
        # step: entries whose moments were zeroed become fresh (step 0)
        zero = (torch.as_tensor(grad) == 0).to(t.dtype)
        return t * (1.0 - zero) if zero.any() else t

    def mix(self, terms: Sequence[tuple[float | torch.Tensor, torch.Tensor]]) -> torch.Tensor:
        """Linear combination sum_i w_i t_i (v uses w_i^2; step takes the max over w_i != 0)."""
        if self.role == "step":
            used = [t for w, t in terms if float(w) != 0.0]
            if not used:
                return torch.zeros_like(terms[0][1])
            return torch.stack(used).amax(0)
        power = 2 if self.role == "exp_avg_sq" else 1
        out = torch.zeros_like(terms[0][1])
        for w, t in terms:
            out = out + (w**power) * t
        return out

    def bilinear(
        self, t: torch.Tensor, out: torch.Tensor | None, inp: torch.Tensor | None
    ) -> torch.Tensor:
        """`out @ t @ inp.T` (either side may be None = identity; 1-D `t` uses `out` only)."""
        if self.role == "step":
            return torch.full(_bilinear_shape(t, out, inp), float(t.max()) if t.numel() else 0.0)
        if self.role == "exp_avg_sq":
            out = None if out is None else out * out
            inp = None if inp is None else inp * inp
        if out is not None:
            t = out @ t
        if inp is not None and t.dim() == 2:
            t = t @ inp.T
        return t


def _bilinear_shape(
    t: torch.Tensor, out: torch.Tensor | None, inp: torch.Tensor | None
) -> tuple[int, ...]:
    shape = list(t.shape)
    if out is not None:
        shape[0] = out.shape[0]
    if inp is not None and t.dim() == 2:
        shape[1] = inp.shape[0]
    return tuple(shape)


def _is_one(x: float | torch.Tensor) -> bool:
    return isinstance(x, (int, float)) and x == 1.0
