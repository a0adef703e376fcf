"""G_learn / LiGO (Wang et al. 2023; prts' `ligo` method): learn the growth map, then materialise.

Depth: every target layer is a learned mixture of source layers, theta_j = sum_i w_ji theta_i,
one (L' x L) matrix per block tensor type (9 of them), initialised to the one-hot stacking map
(`layer_map`), so before training the operator equals `stack`. Width (optional, d_model / n_heads
/ d_ff targets): W' = B_out W B_in^T with one expansion matrix per axis, shared by all layers:
B_d (residual, also embeddings/head/norm gains: gamma' = B_d gamma), B_q / B_k / B_v (query,
key, value dims), B_o (the attention output read by wo) and B_f (SwiGLU units, shared by
w_gate/w_up so gate and up stay paired), each initialised to [I; N(0, 1/n_new)] (LiGO's init).

The phase: for `phase_steps` steps, batches `train_batch_fn(i)` go through the *grown* model's
forward pass (built from the maps; `torch.func.functional_call`) and Adam trains only the maps;
the small model's weights stay frozen. LR: linear warm-up over `warmup_steps` to `lr`, cosine
to `min_lr` (prts: 7e-5 -> 7e-6, 50 warm-up, 100 steps, batch 1024 - these defaults are
faithful, so at tiny scale the maps barely move; raise lr for a visible effect). The phase's
compute (fwd+bwd of the grown model on every batch) and sequences are reported as
`extra_flops` / `extra_sequences`; the loop adds them to its clocks. Not FP.

Optimizer: moments are mapped through the learned linear map (carry: m' = sum w m, B m B^T;
v' = sum w^2 v, B^2 v (B^2)^T, the variance propagation of independent entries; step: max).
scale == carry. prts itself restarts AdamW after LiGO (opt_policy='reset').
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from raygrow.config import ModelConfig
from raygrow.flops import flops_per_token
from raygrow.growth._core import Operator, register
from raygrow.growth._fqn import LAYER_KEYS, layer_fqn
from raygrow.growth.context import GrowthContext
from raygrow.growth.depth_spec import resolve_layer_map
from raygrow.growth.width_spec import LearnedSpec
from raygrow.model import Transformer

# (axis of rows, axis of columns) for the width expansion; None = not expanded
LIGO_AXES: dict[str, tuple[str, str | None]] = {
    "attn_norm.weight": ("d", None),
    "attn.wq.weight": ("q", "d"),
    "attn.wk.weight": ("k", "d"),
    "attn.wv.weight": ("v", "d"),
    "attn.wo.weight": ("d", "o"),
    "mlp_norm.weight": ("d", None),
    "mlp.w_gate.weight": ("f", "d"),
    "mlp.w_up.weight": ("f", "d"),
    "mlp.w_down.weight": ("d", "f"),
}


def _axis_sizes(c: ModelConfig) -> dict[str, int]:
    q, kv = c.n_heads * c.head_dim, c.kv_heads * c.head_dim
    return {"d": c.d_model, "q": q, "k": kv, "v": kv, "o": q, "f": c.ff_dim}


class Learned(LearnedSpec, Operator):
    """LiGO-style learned growth (depth, and width when a width target is given)."""

    def _layer_map(self, ctx: GrowthContext) -> list[int]:
        if ctx.new.n_layers == ctx.old.n_layers and not isinstance(ctx.p["layer_map"], list):
            return list(range(ctx.old.n_layers))
        return resolve_layer_map(self.name, ctx.old, dict(ctx.p), keep_originals=False)

    def layer_plan(
        self, old: ModelConfig, new: ModelConfig, p: Mapping[str, Any]
    ) -> list[tuple[int, str]]:
        """Every layer is a learned mix (source = its stacking init): earlier ramps and
        freezes end here, since the map was trained with all branches at full scale."""
        if new.n_layers == old.n_layers and not isinstance(p["layer_map"], list):
            return [(i, "mixed") for i in range(old.n_layers)]
        layer_map = resolve_layer_map(self.name, old, dict(p), keep_originals=False)
        return [(i, "mixed") for i in layer_map]

    # ---- the maps
    def prepare(self, ctx: GrowthContext) -> None:
        layer_map = self._layer_map(ctx)
        L_s, L_t = ctx.old.n_layers, ctx.new.n_layers
        one_hot = torch.zeros(L_t, L_s)
        one_hot[torch.arange(L_t), torch.tensor(layer_map)] = 1.0
        depth = {key: one_hot.clone() for key in LAYER_KEYS}
        width: dict[str, torch.Tensor | None] = dict.fromkeys("dqkvof")
        if ctx.p["d_model"] is not None:
            old, new = _axis_sizes(ctx.old), _axis_sizes(ctx.new)
            for axis in width:
                if new[axis] != old[axis]:
                    extra = torch.randn(new[axis] - old[axis], old[axis], generator=ctx.generator)
                    width[axis] = torch.cat([torch.eye(old[axis]), extra / math.sqrt(new[axis])])
        ctx.plan.update(depth=depth, width=width)
        if ctx.p["phase_steps"] > 0:
            self._train(ctx)

    def _train(self, ctx: GrowthContext) -> None:
        p = ctx.p
        leaves = {f"depth/{k}": nn.Parameter(v) for k, v in ctx.plan["depth"].items()}
        leaves |= {
            f"width/{k}": nn.Parameter(v) for k, v in ctx.plan["width"].items() if v is not None
        }
        ctx.plan["depth"] = {k: leaves[f"depth/{k}"] for k in ctx.plan["depth"]}
        ctx.plan["width"] = {k: leaves.get(f"width/{k}") for k in ctx.plan["width"]}
        with torch.random.fork_rng(devices=[]):
            model = Transformer(ctx.new)
        src = {k: v.detach().float() for k, v in ctx.state.params.items()}
        opt = torch.optim.Adam(leaves.values(), lr=p["lr"], betas=(0.9, 0.95))
        losses = []
        steps, warm = p["phase_steps"], p["warmup_steps"]
        with torch.enable_grad():
            for i in range(steps):
                if i < warm:
                    lr = p["lr"] * (i + 1) / warm
                else:
                    frac = (i - warm) / max(1, steps - warm)
                    lr = p["min_lr"] + 0.5 * (p["lr"] - p["min_lr"]) * (
                        1 + math.cos(math.pi * frac)
                    )
                for group in opt.param_groups:
                    group["lr"] = lr
                x, y = ctx.train_batch_fn(i)  # type: ignore[misc]
                params = self.transform(ctx, src)
                logits = torch.func.functional_call(model, params, (x,))
                loss = F.cross_entropy(logits.flatten(0, 1).float(), y.flatten())
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                losses.append(float(loss.detach()))
                ctx.extra_sequences += int(x.shape[0])
                ctx.extra_flops += flops_per_token(ctx.new, x.shape[1]) * x.numel()
        ctx.plan["depth"] = {k: v.detach() for k, v in ctx.plan["depth"].items()}
        ctx.plan["width"] = {
            k: None if v is None else v.detach() for k, v in ctx.plan["width"].items()
        }
        ctx.extras["phase_loss_first"] = losses[0]
        ctx.extras["phase_loss_last"] = losses[-1]

    def transform(self, ctx: GrowthContext, src: Mapping[str, torch.Tensor]) -> dict[str, Any]:
        depth, width = ctx.plan["depth"], ctx.plan["width"]
        widen = any(v is not None for v in width.values())

        def expand(t: torch.Tensor, rows: str | None, cols: str | None) -> torch.Tensor:
            if not widen:
                return t
            return ctx.bilinear(t, width[rows] if rows else None, width[cols] if cols else None)

        out = {
            "tok_embeddings.weight": expand(src["tok_embeddings.weight"], None, "d"),
            "norm.weight": expand(src["norm.weight"], "d", None),
        }
        if "output.weight" in src:
            out["output.weight"] = expand(src["output.weight"], None, "d")
        L_s, L_t = ctx.old.n_layers, ctx.new.n_layers
        for key in LAYER_KEYS:
            w = depth[key]
            for j in range(L_t):
                mixed = ctx.mix([(w[j, i], src[layer_fqn(i, key)]) for i in range(L_s)])
                out[layer_fqn(j, key)] = expand(mixed, *LIGO_AXES[key])
        return out


register(Learned())
