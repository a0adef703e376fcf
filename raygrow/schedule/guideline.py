"""G_stack's growth-timing guideline, clamped for small models, and Staged Training's slope
threshold.

The formula (Du et al. 2024; `raygrow.results.gstack`) is log10(d) = 0.88 log10(N) +
163.27 / log10(C) - 5.74, d in tokens, N target parameters, C = 6 N D the target's compute.
With the nominal sizes (7e9, 13e9, 70e9, 8e9) it reproduces the G_stack README table (11.11B,
15.84B, 42.48B, 6.58B tokens). Far below the fitted range (N ~ 0.4-3B) it predicts d larger than
the whole budget (124M params / 2.5B tokens -> 20.8B), so `clamped_gstack_growth_tokens` caps it
at a fraction of the budget (default 20 %).
"""

from __future__ import annotations

from raygrow.errors import ConfigError
from raygrow.results.gstack import gstack_growth_tokens

# Staged Training's thresholds on the smoothed d log10 L / d log10 C (recalibrate on your curves)
SLOPE_DEPTH = -0.0575


def clamped_gstack_growth_tokens(
    n_params: float,
    budget_tokens: float,
    *,
    compute_flops: float | None = None,
    max_fraction: float = 0.2,
    min_fraction: float = 0.0,
) -> float:
    """The guideline d clamped to [min_fraction, max_fraction] x budget_tokens.

    The formula extrapolates badly to small models (it exceeds the whole budget below ~100M
    parameters), so the clamp is what decides at raygrow's scales; compute defaults to 6 N D."""
    if not 0 <= min_fraction <= max_fraction < 1:
        raise ConfigError(
            f"need 0 <= min_fraction <= max_fraction < 1 (got {min_fraction}, {max_fraction})"
        )
    c = 6.0 * n_params * budget_tokens if compute_flops is None else compute_flops
    d = gstack_growth_tokens(n_params, c)
    return min(max_fraction * budget_tokens, max(min_fraction * budget_tokens, d))


def suggest_growth(
    n_params: float, budget_tokens: float, max_fraction: float = 0.2
) -> dict[str, float | bool]:
    """Clamped guideline timing for a target of N params and a D-token budget, plus Du et
    al.'s growth factor g = 4 (raw formula and whether the clamp applied included)."""
    raw = gstack_growth_tokens(n_params, 6.0 * n_params * budget_tokens)
    tokens = clamped_gstack_growth_tokens(n_params, budget_tokens, max_fraction=max_fraction)
    return {
        "tokens": tokens,
        "raw_tokens": raw,
        "fraction": tokens / budget_tokens,
        "clamped": tokens != raw,
        "factor": 4,
    }
