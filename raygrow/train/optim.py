"""AdamW with weight decay on matrices only, and its state keyed by parameter FQN.

torch keys optimizer state by parameter index, which is meaningless across growth (the
parameter set changes) and fragile across checkpoints; everything outside this module sees
`{fqn: {"exp_avg": T, "exp_avg_sq": T, "step": T}}` instead (torchtitan's habit).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

OptimState = dict[str, dict[str, torch.Tensor]]


@dataclass(frozen=True, kw_only=True, slots=True)
class AdamWConfig:
    lr: float = 2e-3
    betas: tuple[float, float] = (0.9, 0.95)
    eps: float = 1e-8
    weight_decay: float = 0.1


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two groups: matrices decay, vectors (norm gains) do not. Order follows named_parameters."""
    decay = [p for _, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for _, p in model.named_parameters() if p.dim() < 2]
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def build_optimizer(
    model: nn.Module, config: AdamWConfig, state: OptimState | None = None
) -> torch.optim.AdamW:
    """A fresh AdamW over `model`; `state` (FQN-keyed) is loaded where given.

    Parameters missing from `state` start with fresh moments (torch initialises them lazily).
    """
    # foreach=False keeps the update order deterministic and matches single-tensor semantics
    opt = torch.optim.AdamW(
        param_groups(model, config.weight_decay),
        lr=config.lr,
        betas=config.betas,
        eps=config.eps,
        foreach=False,
    )
    if state:
        params = dict(model.named_parameters())
        unknown = set(state) - set(params)
        if unknown:
            raise KeyError(f"optimizer state for unknown parameters {sorted(unknown)[:4]}")
        for name, entry in state.items():
            p = params[name]
            for key in ("exp_avg", "exp_avg_sq"):
                if key in entry and entry[key].shape != p.shape:
                    raise ValueError(
                        f"optimizer state {name}.{key} has shape {tuple(entry[key].shape)}, "
                        f"parameter has {tuple(p.shape)}"
                    )
            if entry:
                opt.state[p] = {
                    k: v.detach().clone().to(p.device if k != "step" else "cpu")
                    for k, v in entry.items()
                }
    return opt


def optimizer_state_by_fqn(model: nn.Module, opt: torch.optim.Optimizer) -> OptimState:
    """Snapshot the optimizer state keyed by FQN (detached clones, on CPU)."""
    out: OptimState = {}
    for name, p in model.named_parameters():
        entry = opt.state.get(p)
        if entry:
            out[name] = {k: v.detach().clone().cpu() for k, v in entry.items()}
    return out
