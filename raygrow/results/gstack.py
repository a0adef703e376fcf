"""G_stack's growth-timing guideline (Du et al. 2024), the one copy in raygrow.

    log10 d = 0.88 · log10 N + 163.27 / log10 C − 5.74

d: tokens to train the small model before stacking; N: the target's parameter count; C: the
target's compute budget 6·N·D. Fitted on 410M–3B targets; at CPU scale it predicts growth after
the whole budget, so raygrow shows it for comparison and clamps it when a schedule uses it
(`raygrow.schedule.clamped_gstack_growth_tokens`).
"""

from __future__ import annotations

import math

from raygrow.errors import ConfigError

GSTACK = {"a": 0.88, "b": 163.27, "c": -5.74}
"""The published coefficients of log10 d = a·log10 N + b / log10 C + c."""


def gstack_growth_tokens(n_params: float, compute_flops: float) -> float:
    """Du et al.'s growth timing d in tokens for a target of `n_params` and budget C = 6·N·D."""
    if n_params <= 1 or compute_flops <= 10:
        raise ConfigError(
            f"gstack_growth_tokens needs n_params > 1 and compute_flops > 10 (got {n_params}, "
            f"{compute_flops}); pass the target's parameter count and 6*N*D FLOPs"
        )
    return 10 ** (
        GSTACK["a"] * math.log10(n_params) + GSTACK["b"] / math.log10(compute_flops) + GSTACK["c"]
    )
