"""Depth operators: L source layers -> L' > L layers; width, embeddings and head unchanged.

All of them are described by a *layer map*: target layer j comes from source layer map[j]. The
first occurrence of each source layer is the original block; later occurrences are new blocks
whose initialisation is what distinguishes the operators (Du et al. 2024's taxonomy):

    stack         copy of the source block                          G_stack / G_direct, not FP
    zero          copy (or random) with attn.wo and mlp.w_down = 0    G_zero, exactly FP
    random        fresh random block, optionally ramped in (MSG)      G_random, FP at t=0 if ramped
    staged_depth  Shen et al.: identity (zeroed) or plain copies      FP for new_layers='id'
    incremental   Li et al.: fresh random blocks on top, old frozen   not FP

Layer maps: "stack" = [0..L-1] repeated (prts' default, 123456-123456), "interleave" =
[0,0,1,1,..] (prts' inner stacking, Shen's "alternate"), or an explicit list of source indices
(partial stacking such as 123x7-456). Non-layer tensors (embeddings, final norm, head) are copied.
Params and layer-map rules (torch-free) are in `raygrow.growth.depth_spec`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch

from raygrow.config import ModelConfig
from raygrow.growth._core import Operator, register
from raygrow.growth._fqn import BRANCH_OUT_KEYS, GLOBAL_KEYS, LAYER_KEYS, NORM_KEYS, layer_fqn
from raygrow.growth.context import GrowthContext
from raygrow.growth.depth_spec import (
    IncrementalSpec,
    RandomSpec,
    StackSpec,
    StagedDepthSpec,
    ZeroSpec,
)


def init_block_tensor(
    ctx: GrowthContext, shape: torch.Size, key: str, zero_branch: bool
) -> torch.Tensor:
    """Model init for one tensor of a new block: norms 1, matrices N(0, init_std), branch
    outputs N(0, init_std / sqrt(2 L')) or zero when `zero_branch` (identity block)."""
    if key in NORM_KEYS:
        return ctx.fresh(shape, fill=1.0)
    if key in BRANCH_OUT_KEYS:
        if zero_branch:
            return ctx.fresh(shape)
        return ctx.fresh(shape, std=ctx.new.init_std / math.sqrt(2 * ctx.new.n_layers))
    return ctx.fresh(shape, std=ctx.new.init_std)


def build_layers(
    ctx: GrowthContext,
    src: Mapping[str, torch.Tensor],
    plan: list[tuple[int, str]],
    new_grad: float,
) -> dict[str, torch.Tensor]:
    """Apply a depth plan [(source layer, kind)] where kind is one of
    orig | copy | zero_copy | random | zero_random. `new_grad` is the gradient ratio (for
    opt_policy='scale') of non-original blocks: 1 = carry their moments, 0 = fresh moments."""
    out = {k: src[k] for k in GLOBAL_KEYS if k in src}
    for j, (i, kind) in enumerate(plan):
        grad = 1.0 if kind == "orig" else new_grad
        for key in LAYER_KEYS:
            s = src[layer_fqn(i, key)]
            if kind in ("orig", "copy") or (kind == "zero_copy" and key not in BRANCH_OUT_KEYS):
                t = s
            elif kind == "zero_copy":
                t = ctx.fresh(s.shape)
            else:
                t = init_block_tensor(ctx, s.shape, key, zero_branch=kind == "zero_random")
            out[layer_fqn(j, key)] = ctx.scale(t, grad=grad)
    return out


def first_occurrence_plan(layer_map: list[int], new_kind: str) -> list[tuple[int, str]]:
    seen: set[int] = set()
    plan = []
    for i in layer_map:
        plan.append((i, "orig" if i not in seen else new_kind))
        seen.add(i)
    return plan


class Stack(StackSpec, Operator):
    """G_stack (Du et al. 2024): target layer j is a copy of source layer map[j], every tensor
    included. Not function-preserving (at d_model 128 the loss jumped by about +0.2 nats at
    growth and recovered fast).

    Optimizer: carry copies each block's moments along with its weights (prts itself restarts
    AdamW, i.e. opt_policy='reset'); scale == carry (stacking has no gradient relation)."""

    def layer_plan(
        self, old: ModelConfig, new: ModelConfig, p: Mapping[str, Any]
    ) -> list[tuple[int, str]]:
        return first_occurrence_plan(self.layer_map(old, p), "copy")

    def transform(self, ctx: GrowthContext, src: Mapping[str, torch.Tensor]) -> dict[str, Any]:
        return build_layers(ctx, src, self.layer_plan(ctx.old, ctx.new, ctx.p), 1.0)


class Zero(ZeroSpec, Operator):
    """G_zero: new blocks (later occurrences in the layer map) are copies of their source block
    (init='copy', prts' "lemon" branch) or freshly initialised (init='random'), with both
    residual-branch output projections (attn.wo, mlp.w_down) zeroed, so each new pre-norm block
    is exactly the identity: FP in exact arithmetic (no biases in this model).

    Optimizer: carry copies the moments of copied tensors, the zeroed (and random) tensors start
    fresh. scale: at growth the old blocks' gradients are exactly unchanged (identity blocks
    have identity Jacobians), so their moments are carried; every new-block tensor starts fresh
    (its gradient is 0 except for wo/w_down, unrelated to the source's)."""

    def layer_plan(
        self, old: ModelConfig, new: ModelConfig, p: Mapping[str, Any]
    ) -> list[tuple[int, str]]:
        kind = "zero_copy" if p["init"] == "copy" else "zero_random"
        return first_occurrence_plan(self.layer_map(old, p), kind)

    def transform(self, ctx: GrowthContext, src: Mapping[str, torch.Tensor]) -> dict[str, Any]:
        return build_layers(ctx, src, self.layer_plan(ctx.old, ctx.new, ctx.p), 0.0)


class Random(RandomSpec, Operator):
    """G_random / MSG depth: new blocks are freshly initialised (model init scheme at the grown
    depth, drawn from the generator). With ramp_steps > 0 the report carries a `branch_ramps`
    directive: the loop scales the new blocks' residual branches by min(1, t / ramp_steps) (MSG's
    mask), which makes growth exactly FP at t = 0. ramp_steps = 0: plain random layers, not FP.

    Optimizer: old blocks carried, new blocks fresh (zero moments, step 0) under every policy."""

    def layer_plan(
        self, old: ModelConfig, new: ModelConfig, p: Mapping[str, Any]
    ) -> list[tuple[int, str]]:
        return first_occurrence_plan(self.layer_map(old, p), "random")

    def transform(self, ctx: GrowthContext, src: Mapping[str, torch.Tensor]) -> dict[str, Any]:
        return build_layers(ctx, src, self.layer_plan(ctx.old, ctx.new, ctx.p), 0.0)

    def directives(self, ctx: GrowthContext) -> dict[str, Any]:
        if ctx.p["ramp_steps"] <= 0:
            return {}
        plan = self.layer_plan(ctx.old, ctx.new, ctx.p)
        new = [j for j, (_, kind) in enumerate(plan) if kind != "orig"]
        return {"branch_ramps": [{"layers": new, "steps": ctx.p["ramp_steps"]}]}


class StagedDepth(StagedDepthSpec, Operator):
    """Staged Training's depth operator (Shen et al. 2022), done properly for pre-norm models.

    placement='alternate' inserts new layers after each layer (1,1',2,2',..: the `alternate_id`
    setting of Staged Training's released code), 'append' stacks them on top. new_layers='id'
    makes each new layer a copy of its neighbour with attn.wo and mlp.w_down zeroed, i.e. the
    identity, so loss AND old-layer gradients are preserved. The released code instead copies
    the weights of both positions and only touches the Adam moments, which is *not*
    loss-preserving for pre-LN models; that behaviour is available as new_layers='copy' (FP is
    then not claimed). Integer factors > 2 repeat the rule (g-1 new layers per source layer).

    Optimizer: scale (Shen's training-dynamics rule for depth, restated): old blocks' moments are
    carried unchanged (their gradients are exactly unchanged), new identity blocks start fresh.
    carry also copies the source moments into the new blocks' non-zeroed tensors."""

    def layer_plan(
        self, old: ModelConfig, new: ModelConfig, p: Mapping[str, Any]
    ) -> list[tuple[int, str]]:
        kind = "zero_copy" if p["new_layers"] == "id" else "copy"
        return first_occurrence_plan(self.layer_map(old, p), kind)

    def transform(self, ctx: GrowthContext, src: Mapping[str, torch.Tensor]) -> dict[str, Any]:
        new_grad = 0.0 if ctx.p["new_layers"] == "id" else 1.0
        return build_layers(ctx, src, self.layer_plan(ctx.old, ctx.new, ctx.p), new_grad)


class Incremental(IncrementalSpec, Operator):
    """Incremental layer-wise training (Li, Fung & Huang 2024): new randomly initialised layers
    (model init at the grown depth) are added on top; the report's `freeze` directive tells the
    loop to drop the gradients of the old parameters for `phase_steps` steps (phase 1), after
    which everything trains (phase 2). freeze='layers' freezes the old blocks only (the paper's
    "freeze the old layers"); freeze='all' also freezes embeddings, final norm and head. Not FP.

    Optimizer: old tensors carried, new layers fresh, under carry and scale alike. (The paper
    keeps one optimizer through the stages; frozen params simply get no updates, which is what
    dropping their grads does in torch's AdamW: their step does not advance either.)"""

    def layer_plan(
        self, old: ModelConfig, new: ModelConfig, p: Mapping[str, Any]
    ) -> list[tuple[int, str]]:
        # a random block's source (0) only lends its tensor shapes
        L, n = old.n_layers, new.n_layers
        return [(i, "orig") for i in range(L)] + [(0, "random")] * (n - L)

    def transform(self, ctx: GrowthContext, src: Mapping[str, torch.Tensor]) -> dict[str, Any]:
        return build_layers(ctx, src, self.layer_plan(ctx.old, ctx.new, ctx.p), 0.0)

    def directives(self, ctx: GrowthContext) -> dict[str, Any]:
        if ctx.p["phase_steps"] == 0:
            return {}
        fqns = [layer_fqn(i, k) for i in range(ctx.old.n_layers) for k in LAYER_KEYS]
        if ctx.p["freeze"] == "all":
            fqns = [k for k in GLOBAL_KEYS if k in ctx.state.params] + fqns
        return {"freeze": {"fqns": fqns, "steps": ctx.p["phase_steps"]}}


for _op in (Stack(), Zero(), Random(), StagedDepth(), Incremental()):
    register(_op)
