"""MixtureGrowth (Pham et al., WACV 2024) adapted to a plain (non-template) transformer.

The original parameterises every layer as W = sum_k alpha_k T_k over template sets, trains two
half-width nets, and grows to [[W_0, W_2], [W_3, W_1]]: the trained nets on the diagonal, new
off-diagonal members built as *new linear combinations of the already-trained templates*, with
coefficients orthogonal to the existing ones (`orthogonal`, the default), `copy`, `random` or
`zero`.

Adaptation (open choices, documented): raygrow's layers are not template-parameterised, so the
template bank of a tensor is the same tensor in every layer (the paper's ImageNet "bank" variant
shares one bank across depth): T_k = layers.k.<key>, and the existing member of layer l has
coefficient vector e_l. Both diagonal blocks hold the one trained small model (there is no second
independently trained net), so with coefs='zero' this is exactly staged_width (FP). New
off-diagonal blocks are sum_k c_k T_k with c a random unit vector orthogonal to e_l (and to the
layer's other new coefficient vectors while the bank has room), times coef_scale (the paper's
coefs_noise_growing = 1): the paper's "last right-singular vector" is arbitrary within that
complement when the existing coefficients are one-hot, so a random direction is drawn.
Embeddings, head and norms are tiled as in staged_width (final norm / n). Not FP for coefs other
than 'zero' (the off-diagonal blocks couple the copies immediately, as in the paper).

Optimizer: carry mixes the templates' moments with the same coefficients (m: sum c_k m_k,
v: sum c_k^2 v_k, step: max). scale additionally applies staged_width's factors (m/n, v/n^2,
final norm unchanged); with non-zero off-diagonal blocks this is an approximation.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from raygrow.growth._core import Operator, register
from raygrow.growth._fqn import layer_fqn, split_fqn
from raygrow.growth.context import GrowthContext
from raygrow.growth.width import block_grow
from raygrow.growth.width_spec import MixtureSpec


class Mixture(MixtureSpec, Operator):
    """MixtureGrowth width growth: diagonal = trained weights, off-diagonal = new template mixes."""

    def prepare(self, ctx: GrowthContext) -> None:
        L, n, mode = ctx.old.n_layers, ctx.new.d_model // ctx.old.d_model, ctx.p["coefs"]
        coefs: dict[tuple[str, int, int], torch.Tensor] = {}
        for fqn, t in ctx.state.params.items():
            layer, _ = split_fqn(fqn)
            if layer is None or t.dim() != 2:
                continue
            basis = [torch.eye(L)[layer]]  # existing member's coefficients: one-hot e_l
            for a in range(n):
                for b in range(n):
                    if a == b:
                        continue
                    if mode == "zero":
                        c = torch.zeros(L)
                    elif mode == "copy":
                        c = torch.eye(L)[layer]
                    else:
                        c = torch.randn(L, generator=ctx.generator)
                        if mode == "orthogonal":
                            for v in basis:  # Gram-Schmidt against the existing coefficients
                                c = c - (c @ v) * v
                        c = c / c.norm().clamp(min=1e-12)
                        if mode == "orthogonal" and len(basis) < L:
                            basis.append(c)
                        elif mode == "orthogonal":  # bank exhausted: orthogonal to e_l only
                            basis = basis[:1]
                    coefs[(fqn, a, b)] = c * ctx.p["coef_scale"]
        ctx.plan["coefs"] = coefs

    def transform(self, ctx: GrowthContext, src: Mapping[str, torch.Tensor]) -> dict[str, Any]:
        n, L = ctx.new.d_model // ctx.old.d_model, ctx.old.n_layers
        coefs = ctx.plan["coefs"]

        def offdiag(fqn: str, a: int, b: int) -> torch.Tensor:
            _, key = split_fqn(fqn)
            c = coefs[(fqn, a, b)]
            return ctx.mix([(float(c[k]), src[layer_fqn(k, key)]) for k in range(L)])

        return block_grow(ctx, src, n, offdiag)


register(Mixture())
