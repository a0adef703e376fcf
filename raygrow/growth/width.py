"""Width operators: grow d_model (and with it the heads, head_dim fixed for RoPE) and/or d_ff.

Params and target rules (torch-free) are in `raygrow.growth.width_spec`.

Targets: `d_model` (a multiple of head_dim; default 2x), or `n_heads` (d_model = n_heads *
head_dim), and `d_ff` (default: scaled with d_model; an explicit d_ff alone grows only the MLP
where the operator allows it). n_kv_heads scales with n_heads, so the GQA ratio is kept.

Layout conventions. Units of every axis are either *replicated* (net2net, hypercloning: the new
unit j copies source unit g(j)), *tiled in blocks* (staged_width, mixture: copy a of the whole
axis) or *appended* (zero_width, random_width: new units after the old ones). Heads are grown as
whole GQA groups: query head j uses kv head j // (H/K) in both models, so copying a kv head
together with its group of query heads keeps every query head paired with a copy of its own kv
head. Tied embeddings: the table is both the input lookup (must not be divided) and the head
(must be divided by the copy count n to keep logits), so function-preserving operators divide
the final norm gain by n instead (Staged Training's trick), which is exact.

Gradient ratios c (what opt_policy='scale' multiplies m by, and v by c^2), derived for an
FP-grown model at the growth point and checked against autograd in the tests: when every unit
of the residual stream is replicated k times, each copy receives 1/k of the small model's
gradient; in general the gradient of a weight row is divided by the copy count of the unit it
*writes* (its output unit), because the consumers of that unit divide by the count.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch

from raygrow.config import ModelConfig
from raygrow.growth._core import Operator, register
from raygrow.growth._fqn import split_fqn
from raygrow.growth.context import GrowthContext
from raygrow.growth.width_spec import (
    HyperCloningSpec,
    Net2NetSpec,
    RandomWidthSpec,
    StagedWidthSpec,
    ZeroWidthSpec,
)

# (row axis, column axis) of every tensor; axes: v vocab, d residual, q query dims, kv kv dims,
# f SwiGLU hidden units
AXES_OF: dict[str, tuple[str, ...]] = {
    "tok_embeddings.weight": ("v", "d"),
    "output.weight": ("v", "d"),
    "norm.weight": ("d",),
    "attn_norm.weight": ("d",),
    "mlp_norm.weight": ("d",),
    "attn.wq.weight": ("q", "d"),
    "attn.wk.weight": ("kv", "d"),
    "attn.wv.weight": ("kv", "d"),
    "attn.wo.weight": ("d", "q"),
    "mlp.w_gate.weight": ("f", "d"),
    "mlp.w_up.weight": ("f", "d"),
    "mlp.w_down.weight": ("d", "f"),
}
# tensors that *write* new units (residual producers): zero_width zeroes their new entries
WRITERS = ("tok_embeddings.weight", "attn.wo.weight", "mlp.w_down.weight")


# --------------------------------------------------------------------------- replication
@dataclass
class UnitMaps:
    """Per axis: for every new dim the source dim (`index`) and its copy count (`count`)."""

    index: dict[str, torch.Tensor]
    count: dict[str, torch.Tensor]
    n_old: dict[str, int]
    residual_factor: int


def unit_map(n_old: int, n_new: int, mode: str, generator: torch.Generator) -> torch.Tensor:
    """New unit -> source unit: 'tile' j mod n_old; 'random' identity then random picks."""
    if mode == "tile":
        return torch.arange(n_new) % n_old
    extra = torch.randint(0, n_old, (n_new - n_old,), generator=generator)
    return torch.cat([torch.arange(n_old), extra])


def _dims(unit_index: torch.Tensor, width: int) -> torch.Tensor:
    return (unit_index[:, None] * width + torch.arange(width)).flatten()


def build_unit_maps(
    old: ModelConfig, new: ModelConfig, head_mode: str, ff_mode: str, generator: torch.Generator
) -> UnitMaps:
    """Residual channels are always tiled (uniform replication, forced by RMSNorm); kv groups and
    SwiGLU units are tiled or picked at random (Net2Net's g)."""
    E, r = old.head_dim, old.n_heads // old.kv_heads
    k = new.d_model // old.d_model
    g_kv = unit_map(old.kv_heads, new.kv_heads, head_mode, generator)
    g_q = torch.tensor([int(g_kv[j // r]) * r + j % r for j in range(new.n_heads)])
    g_f = unit_map(old.ff_dim, new.ff_dim, ff_mode, generator)
    units = {
        "v": torch.arange(old.vocab_size),
        "d": torch.arange(new.d_model) % old.d_model,
        "q": g_q,
        "kv": g_kv,
        "f": g_f,
    }
    sizes = {
        "v": old.vocab_size,
        "d": old.d_model,
        "q": old.n_heads,
        "kv": old.kv_heads,
        "f": old.ff_dim,
    }
    count_u = {a: torch.bincount(g, minlength=sizes[a])[g].float() for a, g in units.items()}
    index = dict(units)
    count = dict(count_u)
    for a in ("q", "kv"):  # heads -> head dims
        index[a] = _dims(units[a], E)
        count[a] = count_u[a].repeat_interleave(E)
    n_old = {
        "v": old.vocab_size,
        "d": old.d_model,
        "q": old.n_heads * E,
        "kv": old.kv_heads * E,
        "f": old.ff_dim,
    }
    return UnitMaps(index, count, n_old, k)


def replicate(
    ctx: GrowthContext,
    src: Mapping[str, torch.Tensor],
    maps: UnitMaps,
    noise: Callable[[str, torch.Tensor], torch.Tensor] | None = None,
) -> dict[str, torch.Tensor]:
    """Net2WiderNet for every tensor: W'[j, i] = W[g(j), g(i)] / count(g(i)) on consumed axes.

    Value scale: columns that *read* a replicated unit are divided by its copy count, so the sum
    over copies equals the original; lookups (embedding rows) and norm gains are copied. With a
    tied head, the final norm gain is divided by the residual factor instead. Gradient ratio:
    1 / count of the unit a row writes (embedding: of its column; output head: 1)."""
    tied = ctx.old.tie_embeddings
    out = {}
    for fqn, t in src.items():
        _, key = split_fqn(fqn)
        axes = AXES_OF[key]
        w = t.index_select(0, maps.index[axes[0]])
        if len(axes) == 1:  # norm gains (d,)
            if key == "norm.weight" and tied:
                value, grad = 1.0 / maps.residual_factor, 1.0
            else:
                value, grad = 1.0, 1.0 / maps.count["d"]
        else:
            w = w.index_select(1, maps.index[axes[1]])
            if key == "tok_embeddings.weight":
                value, grad = 1.0, 1.0 / maps.count["d"][None, :]
            else:
                value = 1.0 / maps.count[axes[1]][None, :]
                grad = 1.0 / maps.count[axes[0]][:, None]
        w = ctx.scale(w, value, grad)
        if noise is not None:
            w = w + noise(fqn, w)
        out[fqn] = w
    return out


class Net2Net(Net2NetSpec, Operator):
    """Net2WiderNet (Chen et al. 2016) for SwiGLU units, attention heads and the residual stream.

    New unit j copies source unit g(j) (map='random': identity then random picks, the paper's g;
    'from_left': j mod n, bert2BERT's FPI order); every consumer of a copied unit divides its
    weight by the unit's copy count. FFN growth may be any d_ff >= the current one (non-uniform
    copy counts are exact: SwiGLU is elementwise). Head growth copies whole GQA groups (exact:
    attention is per head, head_dim is unchanged, so q.k is not doubled). The residual stream is
    the catch: RMSNorm over [x, x_dup] equals RMSNorm(x) only if every channel is copied the same
    number of times, so d_model must grow by an integer factor k with uniform (tiled)
    replication; d_model growth therefore implies k-fold heads. Exactly FP with noise=0. noise>0
    adds N(0, noise * std(W)) to the new copies' incoming weights to break symmetry (not FP).

    Optimizer: carry copies moments with the units. scale multiplies m by 1/count(written unit),
    v by its square: the exact gradient ratio at the growth point (tested)."""

    def prepare(self, ctx: GrowthContext) -> None:
        mode = "tile" if ctx.p["map"] == "from_left" else "random"
        ctx.plan["maps"] = build_unit_maps(ctx.old, ctx.new, mode, mode, ctx.generator)

    def transform(self, ctx: GrowthContext, src: Mapping[str, torch.Tensor]) -> dict[str, Any]:
        maps: UnitMaps = ctx.plan["maps"]
        rel = ctx.p["noise"]

        def noise(fqn: str, w: torch.Tensor) -> torch.Tensor:
            key = split_fqn(fqn)[1]
            axes = AXES_OF[key]
            if rel == 0 or len(axes) == 1:
                return torch.zeros(())
            # the unit a tensor writes: rows, except for the embedding lookup (columns)
            ax, dim = ("d", 1) if key == "tok_embeddings.weight" else (axes[0], 0)
            new = torch.arange(w.shape[dim]) >= maps.n_old[ax]
            if not new.any():
                return torch.zeros(())
            mask = new[None, :] if dim == 1 else new[:, None]
            return ctx.fresh(w.shape, std=rel * float(w.std())) * mask

        return replicate(ctx, src, maps, noise if rel > 0 else None)


class HyperCloning(HyperCloningSpec, Operator):
    """HyperCloning (Samragh et al. 2024): integer factors n (d_model, heads) and n_f (d_ff):
    W' = W.repeat(n_out, n_in) / n_in, norm gains and embeddings repeated (no division), head
    `output.weight.repeat(1, n) / n`; heads and kv heads multiplied by n with head_dim unchanged.
    Hidden states become [x, x, ..], so RMSNorm and logits are exact: FP by construction. Tied
    embeddings: the final norm gain is divided by n instead of the (shared) head.

    noise_snr_db (optional) adds HyperCloning's symmetry-breaking noise that cancels across the
    copies of each input unit (zero-sum over the copies, the n-way form of +N/-N) at the given
    signal-to-noise ratio (the paper uses about 10 dB): still exactly FP at growth.

    Optimizer: carry tiles the moments. scale: m / n, v / n^2 for every tensor except the
    untied head (gradient ratio 1) and, when tied, the final norm (ratio 1) - exact ratios."""

    def prepare(self, ctx: GrowthContext) -> None:
        ctx.plan["maps"] = build_unit_maps(ctx.old, ctx.new, "tile", "tile", ctx.generator)

    def transform(self, ctx: GrowthContext, src: Mapping[str, torch.Tensor]) -> dict[str, Any]:
        maps: UnitMaps = ctx.plan["maps"]
        snr = ctx.p["noise_snr_db"]
        if snr is None:
            return replicate(ctx, src, maps)

        def noise(fqn: str, w: torch.Tensor) -> torch.Tensor:
            key = split_fqn(fqn)[1]
            axes = AXES_OF[key]
            if len(axes) == 1 or key == "tok_embeddings.weight":
                return torch.zeros(())
            g = maps.index[axes[1]]  # source unit of every input column
            std = float(w.std()) * 10 ** (-snr / 20)
            z = ctx.fresh(w.shape, std=std)
            sums = torch.zeros(w.shape[0], maps.n_old[axes[1]]).index_add_(1, g, z)
            mean = sums / torch.bincount(g, minlength=maps.n_old[axes[1]]).clamp(min=1)
            return z - mean[:, g]  # zero-sum over the copies of each input unit

        return replicate(ctx, src, maps, noise)


# --------------------------------------------------------------------------- block structure
def block_grow(
    ctx: GrowthContext,
    src: Mapping[str, torch.Tensor],
    n: int,
    offdiag: Callable[[str, int, int], torch.Tensor],
) -> dict[str, torch.Tensor]:
    """Every axis tiled n times: matrices become n x n block matrices with W on the diagonal and
    `offdiag(fqn, a, b)` elsewhere; embeddings/head tiled [E, E] (no division), norm gains
    tiled, final norm gain / n. Gradient ratio 1/n except the final norm (1)."""
    out = {}
    for fqn, t in src.items():
        _, key = split_fqn(fqn)
        if key in ("tok_embeddings.weight", "output.weight"):
            out[fqn] = ctx.scale(torch.cat([t] * n, dim=1), grad=1.0 / n)
        elif t.dim() == 1:
            if key == "norm.weight":
                out[fqn] = ctx.scale(t.repeat(n), value=1.0 / n, grad=1.0)
            else:
                out[fqn] = ctx.scale(t.repeat(n), grad=1.0 / n)
        else:
            rows = [
                torch.cat([t if a == b else offdiag(fqn, a, b) for b in range(n)], dim=1)
                for a in range(n)
            ]
            out[fqn] = ctx.scale(torch.cat(rows, dim=0), grad=1.0 / n)
    return out


class StagedWidth(StagedWidthSpec, Operator):
    """Staged Training's width operator (Shen et al. 2022), RMSNorm version, factor n (2 = the
    paper): every matrix becomes block-diagonal [[W, 0], [0, W]] (Q/K/V per slice, heads and kv
    heads doubled with head_dim fixed), embeddings and head [E, E], norm gains duplicated
    (RMSNorm([x, x]) = [RMSNorm(x), RMSNorm(x)]), final norm gain halved so the doubled head
    gives exactly the same logits (tied or not).

    Optimizer: scale is the paper's training-dynamics rule m/2, v/4 (m/n, v/n^2): by symmetry
    each copy gets half the small model's gradient, so m/sqrt(v) is unchanged and the moments
    match the new gradients; the final norm (gradient ratio 1) keeps m and v. Off-diagonal
    blocks start with zero moments. carry copies moments without scaling. Caveat: off-diagonal
    blocks also get gradients, so the function can move up to ~2x faster per step; Shen et al.
    re-warm the LR (lr_policy with rewarm_steps)."""

    def transform(self, ctx: GrowthContext, src: Mapping[str, torch.Tensor]) -> dict[str, Any]:
        n = ctx.new.d_model // ctx.old.d_model

        def zero(fqn: str, a: int, b: int) -> torch.Tensor:
            return ctx.fresh(src[fqn].shape)

        return block_grow(ctx, src, n, zero)


# --------------------------------------------------------------------------- appended units
def pad_grow(
    ctx: GrowthContext,
    src: Mapping[str, torch.Tensor],
    new_entries: Callable[[str, torch.Size], torch.Tensor],
    norm_value: float,
) -> dict[str, torch.Tensor]:
    """Old tensor in the top-left corner, `new_entries(key, new_shape)` elsewhere (heads, kv
    heads and SwiGLU units are appended after the old ones). Norm gains (old and new) are
    multiplied by `norm_value`, whose gradient ratio is 1 / norm_value; all else ratio 1."""
    shapes = ctx.new_shapes()
    out = {}
    for fqn, t in src.items():
        _, key = split_fqn(fqn)
        base = new_entries(key, shapes[fqn])
        if t.dim() == 1:
            old = ctx.scale(t, value=norm_value, grad=1.0 / norm_value)
            out[fqn] = torch.cat([old, base[t.shape[0] :]])
        else:
            r, c = t.shape
            top = torch.cat([ctx.scale(t), base[:r, c:]], dim=1)
            out[fqn] = torch.cat([top, base[r:]], dim=0)
    return out


class ZeroWidth(ZeroWidthSpec, Operator):
    """G_zero for width, made exactly FP under RMSNorm. New units are appended; the tensors that
    *write* new units (embedding columns, attn.wo and mlp.w_down new rows/columns) get zeros, the
    tensors that *read* them (wq/wk/wv, w_gate/w_up, output) get N(0, init_std), so new residual
    channels stay exactly 0, new heads and SwiGLU units are multiplied by zero outputs, and the
    new parts still receive gradients (zeroing both sides, the literal zero-pad, is a saddle
    where the new width never trains, so it is not offered).

    RMSNorm over [x, 0] sees mean(x^2) * D/D'. Exactness needs two corrections: every norm gain
    is multiplied by sqrt(D/D') and the grown config's norm_eps is eps * D/D' (then
    rsqrt(mean' + eps') * sqrt(D/D') == rsqrt(mean + eps) exactly). d_ff-only growth changes no
    norm. Optimizer: old entries carried (their gradients are unchanged, except norm gains:
    ratio sqrt(D'/D), applied by scale), new entries fresh."""

    def transform(self, ctx: GrowthContext, src: Mapping[str, torch.Tensor]) -> dict[str, Any]:
        norm_value = math.sqrt(ctx.old.d_model / ctx.new.d_model)

        def new_entries(key: str, shape: torch.Size) -> torch.Tensor:
            if len(shape) == 1:
                return ctx.fresh(shape, fill=norm_value)
            if key in WRITERS:
                return ctx.fresh(shape)
            return ctx.fresh(shape, std=ctx.new.init_std)

        return pad_grow(ctx, src, new_entries, norm_value)


class RandomWidth(RandomWidthSpec, Operator):
    """G_random for width: new units appended with the model's own init (matrices
    N(0, init_std), residual outputs N(0, init_std / sqrt(2L)), new norm gains 1). MSG makes this
    FP with a mask ramp *and* norm statistics over the active units only; this model has neither
    (its RMSNorm always normalises over all of d_model), so random_width is not FP.
    Optimizer: old entries carried, new entries fresh; scale == carry."""

    def transform(self, ctx: GrowthContext, src: Mapping[str, torch.Tensor]) -> dict[str, Any]:
        residual_std = ctx.new.init_std / math.sqrt(2 * ctx.new.n_layers)

        def new_entries(key: str, shape: torch.Size) -> torch.Tensor:
            if len(shape) == 1:
                return ctx.fresh(shape, fill=1.0)
            std = residual_std if key in ("attn.wo.weight", "mlp.w_down.weight") else None
            return ctx.fresh(shape, std=std or ctx.new.init_std)

        return pad_grow(ctx, src, new_entries, 1.0)


for _op in (Net2Net(), HyperCloning(), StagedWidth(), ZeroWidth(), RandomWidth()):
    register(_op)
