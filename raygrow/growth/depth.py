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
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch

from raygrow.errors import ConfigError
from raygrow.growth._core import GrowthContext, Operator, Param, register
from raygrow.growth._fqn import BRANCH_OUT_KEYS, GLOBAL_KEYS, LAYER_KEYS, NORM_KEYS, layer_fqn
from raygrow.model import ModelConfig

FACTOR = Param("factor", "int", None, "integer depth factor g >= 2: L -> g*L (default 2)")
N_LAYERS = Param("n_layers", "int", None, "target layer count L' > L (alternative to factor)")
LAYER_MAP = Param(
    "layer_map",
    "layer_map",
    "stack",
    "stack = [0..L-1]*g, interleave = [0,0,1,1,..], or a list: target layer j <- source map[j]",
    choices=("stack", "interleave"),
)


def target_layers(op: str, config: ModelConfig, p: Mapping[str, Any]) -> int:
    """Resolve factor / n_layers (either, or neither = factor 2) to the target layer count."""
    L = config.n_layers
    factor, n_layers = p.get("factor"), p.get("n_layers")
    if factor is not None and factor < 2:
        raise ConfigError(f"{op}: factor={factor} must be an integer >= 2 (L -> factor*L)")
    if n_layers is not None and n_layers <= L:
        raise ConfigError(
            f"{op}: n_layers={n_layers} must exceed the current {L} layers; pass a larger target"
        )
    if factor is not None and n_layers is not None and factor * L != n_layers:
        raise ConfigError(
            f"{op}: factor={factor} and n_layers={n_layers} disagree for a {L}-layer model; "
            "pass only one of them"
        )
    if n_layers is not None:
        return n_layers
    return (factor or 2) * L


def resolve_layer_map(
    op: str, config: ModelConfig, p: dict[str, Any], keep_originals: bool
) -> list[int]:
    """The explicit layer map; fills p['n_layers'] and p['factor'] (None if not an integer).

    `keep_originals` (zero, random, staged_depth): every source layer must appear and their
    first occurrences must be in order 0..L-1, so the original network survives intact.
    """
    L = config.n_layers
    spec = p["layer_map"]
    if isinstance(spec, list):
        if p.get("factor") is not None or p.get("n_layers") is not None:
            n = target_layers(op, config, p)
            if n != len(spec):
                raise ConfigError(
                    f"{op}: layer_map has {len(spec)} entries but the target is {n} layers; "
                    "drop factor/n_layers or make them agree"
                )
        if len(spec) <= L:
            raise ConfigError(
                f"{op}: layer_map has {len(spec)} entries; growth needs more than the current {L}"
            )
        bad = [i for i in spec if not 0 <= i < L]
        if bad:
            raise ConfigError(f"{op}: layer_map entries {bad[:3]} are not source layers 0..{L - 1}")
        layer_map = list(spec)
    else:
        n = target_layers(op, config, p)
        if spec == "stack":
            layer_map = [j % L for j in range(n)]
        else:  # interleave: each source layer repeated (about) n/L times in place
            layer_map = [j * L // n for j in range(n)]
    if keep_originals:
        firsts = [i for j, i in enumerate(layer_map) if i not in layer_map[:j]]
        if firsts != list(range(L)):
            raise ConfigError(
                f"{op}: layer_map must contain every source layer with first occurrences in "
                f"order 0..{L - 1} (the original network is kept); got {layer_map}"
            )
    n = len(layer_map)
    p["n_layers"] = n
    p["factor"] = n // L if n % L == 0 else None
    return layer_map


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


class _MapDepthOp(Operator):
    axes = ("depth",)
    keep_originals = True

    def check(self, config: ModelConfig, p: dict[str, Any]) -> None:
        resolve_layer_map(self.name, config, p, self.keep_originals)

    def target(self, config: ModelConfig, p: dict[str, Any]) -> ModelConfig:
        return config.replace(n_layers=p["n_layers"])

    def layer_map(self, ctx: GrowthContext) -> list[int]:
        return resolve_layer_map(self.name, ctx.old, dict(ctx.p), self.keep_originals)


class Stack(_MapDepthOp):
    """G_stack (Du et al. 2024): target layer j is a copy of source layer map[j], every tensor
    included. Not function-preserving (the pilot measured a +0.2 nat jump that recovers fast).

    Optimizer: carry copies each block's moments along with its weights (prts itself restarts
    AdamW, i.e. opt_policy='reset'); scale == carry (stacking has no gradient relation)."""

    name = "stack"
    summary = "copy blocks by a layer map (G_stack, prts default 0..L-1 repeated)"
    params = (FACTOR, N_LAYERS, LAYER_MAP)
    keep_originals = False

    def transform(self, ctx: GrowthContext, src: Mapping[str, torch.Tensor]) -> dict[str, Any]:
        return build_layers(ctx, src, [(i, "copy") for i in self.layer_map(ctx)], 1.0)


class Zero(_MapDepthOp):
    """G_zero: new blocks (later occurrences in the layer map) are copies of their source block
    (init='copy', prts' "lemon" branch) or freshly initialised (init='random'), with both
    residual-branch output projections (attn.wo, mlp.w_down) zeroed, so each new pre-norm block
    is exactly the identity: FP in exact arithmetic (no biases in this model).

    Optimizer: carry copies the moments of copied tensors, the zeroed (and random) tensors start
    fresh. scale: at growth the old blocks' gradients are exactly unchanged (identity blocks
    have identity Jacobians), so their moments are carried; every new-block tensor starts fresh
    (its gradient is 0 except for wo/w_down, unrelated to the source's)."""

    name = "zero"
    summary = "new blocks with zeroed attn.wo/mlp.w_down: identity blocks (G_zero)"
    fp_note = "yes"
    scale_note = "old blocks carried (gradients unchanged), new blocks fresh"
    params = (
        FACTOR,
        N_LAYERS,
        LAYER_MAP,
        Param("init", "str", "copy", "new blocks' other tensors", choices=("copy", "random")),
    )

    def transform(self, ctx: GrowthContext, src: Mapping[str, torch.Tensor]) -> dict[str, Any]:
        kind = "zero_copy" if ctx.p["init"] == "copy" else "zero_random"
        return build_layers(ctx, src, first_occurrence_plan(self.layer_map(ctx), kind), 0.0)


class Random(_MapDepthOp):
    """G_random / MSG depth: new blocks are freshly initialised (model init scheme at the grown
    depth, drawn from the generator). With ramp_steps > 0 the report carries a `branch_ramps`
    directive: the loop scales the new blocks' residual branches by min(1, t / ramp_steps) (MSG's
    mask), which makes growth exactly FP at t = 0. ramp_steps = 0: plain random layers, not FP.

    Optimizer: old blocks carried, new blocks fresh (zero moments, step 0) under every policy."""

    name = "random"
    summary = "fresh random blocks, optionally ramped in by an MSG mask (G_random)"
    fp_note = "when ramp_steps > 0 (at t=0)"
    params = (
        FACTOR,
        N_LAYERS,
        LAYER_MAP,
        Param("ramp_steps", "int", 100, "MSG mask ramp length in steps; 0 = no ramp (not FP)"),
    )

    def check(self, config: ModelConfig, p: dict[str, Any]) -> None:
        super().check(config, p)
        if p["ramp_steps"] < 0:
            raise ConfigError(f"random: ramp_steps={p['ramp_steps']} must be >= 0")

    def claims_fp(self, p: Mapping[str, Any]) -> bool:
        return p["ramp_steps"] > 0

    def transform(self, ctx: GrowthContext, src: Mapping[str, torch.Tensor]) -> dict[str, Any]:
        return build_layers(ctx, src, first_occurrence_plan(self.layer_map(ctx), "random"), 0.0)

    def directives(self, ctx: GrowthContext) -> dict[str, Any]:
        if ctx.p["ramp_steps"] <= 0:
            return {}
        plan = first_occurrence_plan(self.layer_map(ctx), "random")
        new = [j for j, (_, kind) in enumerate(plan) if kind != "orig"]
        return {"branch_ramps": [{"layers": new, "steps": ctx.p["ramp_steps"]}]}


class StagedDepth(_MapDepthOp):
    """Staged Training's depth operator (Shen et al. 2022), done properly for pre-norm models.

    placement='alternate' inserts new layers after each layer (1,1',2,2',..: the cheat-sheet's
    `alternate_id`), 'append' stacks them on top. new_layers='id' makes each new layer a copy of
    its neighbour with attn.wo and mlp.w_down zeroed, i.e. the identity, so loss AND old-layer
    gradients are preserved. The released code instead copies the weights of both positions and
    only touches the Adam moments, which is *not* loss-preserving for pre-LN models; that
    behaviour is available as new_layers='copy' (FP is then not claimed). Integer factors > 2
    repeat the rule (g-1 new layers per source layer).

    Optimizer: scale (Shen's training-dynamics rule for depth, restated): old blocks' moments are
    carried unchanged (their gradients are exactly unchanged), new identity blocks start fresh.
    carry also copies the source moments into the new blocks' non-zeroed tensors."""

    name = "staged_depth"
    summary = "Shen et al. depth growth: identity-initialised inserted/appended layers"
    fp_note = "when new_layers='id'"
    scale_note = "old blocks carried (gradients unchanged), new identity blocks fresh"
    params = (
        FACTOR,
        N_LAYERS,
        Param(
            "placement",
            "str",
            "alternate",
            "alternate (1,1',2,2',..) or append (on top)",
            choices=("alternate", "append"),
        ),
        Param(
            "new_layers",
            "str",
            "id",
            "id = copy with zeroed branch outputs (FP); copy = "
            "plain copy (released-code behaviour, not FP)",
            choices=("id", "copy"),
        ),
    )

    def check(self, config: ModelConfig, p: dict[str, Any]) -> None:
        target_layers(self.name, config, p)
        self._map(config, p)

    def _map(self, config: ModelConfig, p: dict[str, Any]) -> list[int]:
        q = dict(p, layer_map="interleave" if p["placement"] == "alternate" else "stack")
        layer_map = resolve_layer_map(self.name, config, q, keep_originals=True)
        p["n_layers"], p["factor"] = q["n_layers"], q["factor"]
        return layer_map

    def layer_map(self, ctx: GrowthContext) -> list[int]:
        return self._map(ctx.old, dict(ctx.p))

    def claims_fp(self, p: Mapping[str, Any]) -> bool:
        return p["new_layers"] == "id"

    def transform(self, ctx: GrowthContext, src: Mapping[str, torch.Tensor]) -> dict[str, Any]:
        kind = "zero_copy" if ctx.p["new_layers"] == "id" else "copy"
        new_grad = 0.0 if kind == "zero_copy" else 1.0
        return build_layers(ctx, src, first_occurrence_plan(self.layer_map(ctx), kind), new_grad)


class Incremental(Operator):
    """Incremental layer-wise training (Li, Fung & Huang 2024): new randomly initialised layers
    (model init at the grown depth) are added on top; the report's `freeze` directive tells the
    loop to drop the gradients of the old parameters for `phase_steps` steps (phase 1), after
    which everything trains (phase 2). freeze='layers' freezes the old blocks only (the paper's
    "freeze the old layers"); freeze='all' also freezes embeddings, final norm and head. Not FP.

    Optimizer: old tensors carried, new layers fresh, under carry and scale alike. (The paper
    keeps one optimizer through the stages; frozen params simply get no updates, which is what
    dropping their grads does in torch's AdamW: their step does not advance either.)"""

    name = "incremental"
    axes = ("depth",)
    summary = "random new layers on top; old params frozen for phase_steps (Li et al. 2024)"
    params = (
        FACTOR,
        N_LAYERS,
        Param("phase_steps", "int", 100, "steps the old params stay frozen (0 = no freezing)"),
        Param(
            "freeze",
            "str",
            "layers",
            "what stays frozen: old blocks, or all old tensors",
            choices=("layers", "all"),
        ),
    )

    def check(self, config: ModelConfig, p: dict[str, Any]) -> None:
        n = target_layers(self.name, config, p)
        p["n_layers"], p["factor"] = n, (n // config.n_layers if n % config.n_layers == 0 else None)
        if p["phase_steps"] < 0:
            raise ConfigError(f"incremental: phase_steps={p['phase_steps']} must be >= 0")

    def target(self, config: ModelConfig, p: dict[str, Any]) -> ModelConfig:
        return config.replace(n_layers=p["n_layers"])

    def transform(self, ctx: GrowthContext, src: Mapping[str, torch.Tensor]) -> dict[str, Any]:
        L, n = ctx.old.n_layers, ctx.new.n_layers
        plan = [(i, "orig") for i in range(L)] + [(0, "random")] * (n - L)
        return build_layers(ctx, src, plan, 0.0)

    def directives(self, ctx: GrowthContext) -> dict[str, Any]:
        if ctx.p["phase_steps"] == 0:
            return {}
        fqns = [layer_fqn(i, k) for i in range(ctx.old.n_layers) for k in LAYER_KEYS]
        if ctx.p["freeze"] == "all":
            fqns = [k for k in GLOBAL_KEYS if k in ctx.state.params] + fqns
        return {"freeze": {"fqns": fqns, "steps": ctx.p["phase_steps"]}}


for _op in (Stack(), Zero(), Random(), StagedDepth(), Incremental()):
    register(_op)
