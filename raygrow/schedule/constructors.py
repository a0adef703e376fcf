"""Schedule constructors: one fixed stage, several stages, a slope-triggered stage, G_stack."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from raygrow.config import ModelConfig
from raygrow.errors import ConfigError
from raygrow.growth import get_spec
from raygrow.schedule.core import GrowthSchedule, GrowthStage
from raygrow.schedule.guideline import SLOPE_DEPTH, clamped_gstack_growth_tokens
from raygrow.schedule.trigger import Trigger


def _trigger(at: float, unit: str, fraction: bool | None) -> Trigger:
    # an absolute time of <= 1 token or FLOP is meaningless, so small values mean "fraction"
    return Trigger(unit=unit, at=at, fraction=at <= 1.0 if fraction is None else fraction)


def fixed(
    start: ModelConfig,
    operator: str,
    at: float,
    *,
    unit: str = "tokens",
    fraction: bool | None = None,
    opt_policy: str = "carry",
    lr_policy: str = "continue",
    lr_params: Mapping[str, float] | None = None,
    seed: int = 0,
    **params: Any,
) -> GrowthSchedule:
    """One growth stage at a fixed time. `at` <= 1 is read as a fraction of the budget unless
    `fraction` says otherwise. Example: fixed(cfg_2L, "stack", 0.1, factor=4)."""
    stage = GrowthStage(
        trigger=_trigger(at, unit, fraction),
        operator=operator,
        params=params,
        opt_policy=opt_policy,
        lr_policy=lr_policy,
        lr_params=dict(lr_params or {}),
        seed=seed,
    )
    schedule = GrowthSchedule(start, (stage,))
    schedule.configs()
    return schedule


def multi_stage(
    start: ModelConfig,
    operator: str,
    at: Sequence[float],
    *,
    unit: str = "tokens",
    fraction: bool | None = None,
    opt_policy: str = "carry",
    lr_policy: str = "continue",
    lr_params: Mapping[str, float] | None = None,
    seed: int = 0,
    stage_params: Sequence[Mapping[str, Any]] | None = None,
    **params: Any,
) -> GrowthSchedule:
    """Several stages of one operator, e.g. 2 -> 4 -> 8 layers:
    multi_stage(cfg_2L, "stack", at=[0.1, 0.3], factor=2). `stage_params[i]` overrides the
    shared `params` for stage i."""
    if stage_params is not None and len(stage_params) != len(at):
        raise ConfigError(f"stage_params has {len(stage_params)} entries for {len(at)} stages")
    stages = tuple(
        GrowthStage(
            trigger=_trigger(t, unit, fraction),
            operator=operator,
            params={**params, **(stage_params[i] if stage_params else {})},
            opt_policy=opt_policy,
            lr_policy=lr_policy,
            lr_params=dict(lr_params or {}),
            seed=seed + i,
        )
        for i, t in enumerate(at)
    )
    schedule = GrowthSchedule(start, stages)
    schedule.configs()
    return schedule


def slope_triggered(
    start: ModelConfig,
    operator: str,
    threshold: float = SLOPE_DEPTH,
    *,
    window: int = 5,
    min_at: float | None = None,
    max_at: float | None = None,
    unit: str = "tokens",
    fraction: bool = True,
    opt_policy: str = "scale",
    lr_policy: str = "rescale",
    lr_params: Mapping[str, float] | None = None,
    seed: int = 0,
    **params: Any,
) -> GrowthSchedule:
    """One stage fired by the Staged Training slope rule (depth -0.0575, width -0.0475), bounded
    by min_at / max_at (fractions of the budget by default). Defaults follow Staged Training:
    transformed optimizer state (scale) and a re-warmed LR (rescale)."""
    stage = GrowthStage(
        trigger=Trigger(
            unit=unit,
            slope=threshold,
            window=window,
            min_at=min_at,
            max_at=max_at,
            fraction=fraction,
        ),
        operator=operator,
        params=params,
        opt_policy=opt_policy,
        lr_policy=lr_policy,
        lr_params=dict(lr_params or {}),
        seed=seed,
    )
    schedule = GrowthSchedule(start, (stage,))
    schedule.configs()
    return schedule


def from_guideline(
    target: ModelConfig,
    small: ModelConfig,
    budget_tokens: float,
    seq_len: int,
    *,
    operator: str = "stack",
    max_fraction: float = 0.2,
    min_fraction: float = 0.0,
    opt_policy: str = "reset",
    lr_policy: str = "restart",
    lr_params: Mapping[str, float] | None = None,
    seed: int = 0,
    **params: Any,
) -> GrowthSchedule:
    """G_stack per Du et al.: grow `small` into `target` (depth factor target.L / small.L) at the
    clamped guideline time for the target's N (total params) and C = 6 N D. Defaults follow prts:
    fresh AdamW (reset) and a restarted LR schedule."""
    if target.n_layers % small.n_layers:
        raise ConfigError(
            f"from_guideline: target has {target.n_layers} layers, not a multiple of the small "
            f"model's {small.n_layers}; pick a divisor"
        )
    factor = target.n_layers // small.n_layers
    grown = get_spec(operator).grown_config(small, factor=factor, **params)
    if grown != target:
        raise ConfigError(
            f"from_guideline: {operator} x{factor} turns {small.shape} into {grown.shape}, not the "
            f"target {target.shape} (all other fields must match too); fix `small`"
        )
    d = clamped_gstack_growth_tokens(
        target.n_params(), budget_tokens, max_fraction=max_fraction, min_fraction=min_fraction
    )
    schedule = fixed(
        small,
        operator,
        d,
        unit="tokens",
        fraction=False,
        opt_policy=opt_policy,
        lr_policy=lr_policy,
        lr_params=lr_params,
        seed=seed,
        factor=factor,
        **params,
    )
    schedule.validate(budget_tokens, seq_len)
    return schedule
