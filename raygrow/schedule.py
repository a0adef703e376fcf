"""Growth schedules: when to grow, with which operator, and what happens to optimizer and LR.

A `GrowthSchedule` is a start `ModelConfig` plus ordered `GrowthStage`s. Each stage has a
`Trigger`: a fixed time in tokens or FLOPs (absolute, or a fraction of the run's budget), or a
loss-slope rule (Staged Training: grow once the validation curve flattens, i.e. the smoothed
slope d log10(loss) / d log10(compute) rises above a threshold, within optional min/max bounds).
The schedule is pure data (JSON round trip, no tensors); `validate` catches bad schedules before
any compute, `is_due` is what the training loop asks every step.

Growth timing guideline (Du et al. 2024, G_stack README): log10(d) = 0.88 log10(N) +
163.27 / log10(C) - 5.74, d in tokens, N target parameters, C = 6 N D the target's compute. With
the nominal sizes (7e9, 13e9, 70e9, 8e9) it reproduces the README table (11.11B, 15.84B, 42.48B,
6.58B tokens). Far below the fitted range (N ~ 0.4-3B) it predicts d larger than the whole budget
(124M params / 2.5B tokens -> 20.8B), so `clamped_gstack_growth_tokens` caps it at a fraction
of the budget (default 20 %, the digest's recommendation).

LR policies at growth (applied by the loop; `lr_params` keys: lr_scale, rewarm_steps,
rewarm_tokens): ``continue`` keeps the LR schedule position; ``restart`` re-warms from 0 over the
rewarm length to lr_scale x the peak and runs the schedule again from the growth step (prts'
G_stack recipe); ``rescale`` keeps the position but multiplies the LR by lr_scale, re-warming
over the rewarm length (Staged Training's short re-warm-up).
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from raygrow.errors import ConfigError
from raygrow.flops import flops_per_token
from raygrow.growth import OPT_POLICIES, get_operator
from raygrow.model import ModelConfig

UNITS = ("tokens", "flops")
LR_POLICIES = ("continue", "restart", "rescale")
LR_PARAM_KEYS = ("lr_scale", "rewarm_steps", "rewarm_tokens")
FORMAT_VERSION = 1

# Staged Training's thresholds on the smoothed d log10 L / d log10 C (recalibrate on your curves)
SLOPE_DEPTH = -0.0575
SLOPE_WIDTH = -0.0475
SLOPE_STOP = -0.052


# --------------------------------------------------------------------------- guideline formula
def gstack_growth_tokens(n_params: float, compute_flops: float) -> float:
    """Du et al.'s growth timing d (tokens): 10**(0.88 log10 N + 163.27 / log10 C - 5.74).

    `n_params` is the target model's parameter count, `compute_flops` its budget C = 6 N D.
    Only meaningful near the fitted range (targets of ~0.4-3B parameters); see the clamp."""
    if n_params <= 1 or compute_flops <= 10:
        raise ConfigError(
            f"gstack_growth_tokens needs n_params > 1 and compute_flops > 10 (got {n_params}, "
            f"{compute_flops}); pass the target's parameter count and 6*N*D FLOPs"
        )
    return 10 ** (0.88 * math.log10(n_params) + 163.27 / math.log10(compute_flops) - 5.74)


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
    """The digest's `suggest_growth(N, D)`: clamped timing plus Du et al.'s g = 4."""
    raw = gstack_growth_tokens(n_params, 6.0 * n_params * budget_tokens)
    tokens = clamped_gstack_growth_tokens(n_params, budget_tokens, max_fraction=max_fraction)
    return {
        "tokens": tokens,
        "raw_tokens": raw,
        "fraction": tokens / budget_tokens,
        "clamped": tokens != raw,
        "factor": 4,
    }


# --------------------------------------------------------------------------- slope
def smoothed_slope(curve: Sequence[tuple[float, float]], window: int = 5) -> float | None:
    """Staged Training's slope of a (compute, loss) curve: the mean of the last `window`
    pointwise slopes d log10 L / d log10 C, counted from the steepest point on; None while there
    are not yet `window` slopes after the steepest one."""
    pts = [(math.log10(c), math.log10(v)) for c, v in curve if c > 0 and v > 0]
    slopes = [
        (l2 - l1) / (c2 - c1) for (c1, l1), (c2, l2) in zip(pts, pts[1:], strict=False) if c2 > c1
    ]
    if not slopes:
        return None
    steepest = min(range(len(slopes)), key=slopes.__getitem__)
    after = slopes[steepest:]
    if len(after) < window:
        return None
    return sum(after[-window:]) / window


# --------------------------------------------------------------------------- data classes
def _check_fields(cls: type, data: Mapping[str, Any], what: str) -> None:
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"unknown {what} keys {unknown}; known: {sorted(known)}")


@dataclass(frozen=True, kw_only=True)
class Trigger:
    """When a stage fires: at a fixed time, or when the loss curve flattens (slope rule)."""

    unit: str = "tokens"
    """Clock of `at`, `min_at`, `max_at`: tokens or flops (training FLOPs, the loop's clock)."""
    at: float | None = None
    """Fixed time (absolute, or a fraction of the budget when `fraction`); None for slope rules."""
    fraction: bool = False
    """`at`/`min_at`/`max_at` are fractions of the run's budget in `unit`."""
    slope: float | None = None
    """Slope rule: fire once the smoothed d log10 L / d log10 C rises above this (e.g. -0.0575)."""
    window: int = 5
    """Number of pointwise slopes averaged by the slope rule."""
    min_at: float | None = None
    """Slope rule: never fire before this time."""
    max_at: float | None = None
    """Slope rule: always fire at this time, flat or not."""

    def __post_init__(self) -> None:
        if self.unit not in UNITS:
            raise ConfigError(f"trigger unit={self.unit!r} is unknown; use tokens or flops")
        if (self.at is None) == (self.slope is None):
            raise ConfigError("a trigger needs exactly one of `at` (fixed time) or `slope`")
        for name in ("at", "min_at", "max_at"):
            value = getattr(self, name)
            if value is not None and not (value > 0 and math.isfinite(value)):
                raise ConfigError(f"trigger {name}={value} must be a positive time")
            if value is not None and self.fraction and value > 1:
                raise ConfigError(f"trigger {name}={value} is a fraction of the budget; use <= 1")
        if self.slope is not None:
            if not self.slope < 0:
                raise ConfigError(
                    f"trigger slope={self.slope} must be negative (a falling loss has a negative "
                    "slope; the stage fires when it flattens above it), e.g. -0.0575"
                )
            if self.window < 1:
                raise ConfigError(f"trigger window={self.window} must be >= 1")
            if self.min_at is not None and self.max_at is not None and self.min_at >= self.max_at:
                raise ConfigError(
                    f"trigger min_at={self.min_at} must be below max_at={self.max_at}"
                )
        elif self.min_at is not None or self.max_at is not None:
            raise ConfigError("min_at/max_at bound slope triggers only; drop them or set slope")

    @property
    def is_slope(self) -> bool:
        return self.slope is not None

    def resolve(self, value: float | None, budget: float | None) -> float | None:
        """A time of this trigger in absolute units of its clock."""
        if value is None or not self.fraction:
            return value
        if budget is None:
            raise ConfigError(
                f"trigger is a fraction of the {self.unit} budget but none was given; pass "
                f"budget_{self.unit}"
            )
        return value * budget

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Trigger:
        _check_fields(cls, data, "trigger")
        return cls(**data)


@dataclass(frozen=True, kw_only=True)
class GrowthStage:
    """One growth event: trigger, operator (+ params), optimizer policy, LR policy, seed."""

    trigger: Trigger
    operator: str
    params: dict[str, Any] = field(default_factory=dict)
    """Operator params (JSON-able), validated against the config at this stage."""
    opt_policy: str = "carry"
    """carry | reset | scale (see raygrow.growth)."""
    lr_policy: str = "continue"
    """continue | restart | rescale (see the module docstring)."""
    lr_params: dict[str, float] = field(default_factory=dict)
    """lr_scale (default 1), rewarm_steps or rewarm_tokens (default 0)."""
    seed: int = 0
    """Mixed into the growth generator's seed by the loop."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "params", dict(self.params))
        object.__setattr__(self, "lr_params", dict(self.lr_params))
        if isinstance(self.trigger, Mapping):
            object.__setattr__(self, "trigger", Trigger.from_dict(self.trigger))

    def rewarm_steps(self, tokens_per_step: int) -> int:
        """The LR re-warm length in optimizer steps (rewarm_tokens converted, rounded up)."""
        steps = int(self.lr_params.get("rewarm_steps", 0))
        tokens = float(self.lr_params.get("rewarm_tokens", 0))
        return max(steps, math.ceil(tokens / tokens_per_step) if tokens else 0)

    def check(self) -> None:
        """Validate what does not depend on the model or the budget (one-line ConfigError)."""
        get_operator(self.operator)
        if self.opt_policy not in OPT_POLICIES:
            raise ConfigError(
                f"opt_policy={self.opt_policy!r} is unknown; use one of {', '.join(OPT_POLICIES)}"
            )
        if self.lr_policy not in LR_POLICIES:
            raise ConfigError(
                f"lr_policy={self.lr_policy!r} is unknown; use one of {', '.join(LR_POLICIES)}"
            )
        unknown = sorted(set(self.lr_params) - set(LR_PARAM_KEYS))
        if unknown:
            raise ConfigError(f"lr_params {unknown} unknown; use {', '.join(LR_PARAM_KEYS)}")
        if float(self.lr_params.get("lr_scale", 1.0)) <= 0:
            raise ConfigError(f"lr_scale={self.lr_params['lr_scale']} must be positive")
        for key in ("rewarm_steps", "rewarm_tokens"):
            if float(self.lr_params.get(key, 0)) < 0:
                raise ConfigError(f"{key}={self.lr_params[key]} must be >= 0")
        if self.lr_params.get("rewarm_steps") and self.lr_params.get("rewarm_tokens"):
            raise ConfigError("pass only one of rewarm_steps and rewarm_tokens")

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["trigger"] = self.trigger.to_dict()
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> GrowthStage:
        _check_fields(cls, data, "stage")
        data = dict(data)
        if "trigger" not in data or "operator" not in data:
            raise ConfigError("a growth stage needs `trigger` and `operator`")
        data["trigger"] = Trigger.from_dict(data["trigger"])
        return cls(**data)


@dataclass(frozen=True)
class GrowthSchedule:
    """A start model and the ordered growth stages that turn it into the final model."""

    start: ModelConfig
    stages: tuple[GrowthStage, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "stages", tuple(self.stages))

    # ---- configs
    def configs(self) -> tuple[ModelConfig, ...]:
        """configs()[0] is the start model, configs()[i + 1] the model after stage i."""
        out = [self.start]
        for i, stage in enumerate(self.stages):
            try:
                out.append(get_operator(stage.operator).grown_config(out[-1], **stage.params))
            except ConfigError as exc:
                raise ConfigError(f"stage {i} ({stage.operator}): {exc}") from None
        return tuple(out)

    def final_config(self) -> ModelConfig:
        return self.configs()[-1]

    # ---- timing
    def stage_tokens(
        self, budget_tokens: float, seq_len: int, budget_flops: float | None = None
    ) -> list[float]:
        """Token position of every stage (FLOP triggers converted along the schedule's configs).

        Slope stages are placed at their lower bound (min_at, or the previous stage): the
        earliest they can fire. LiGO-style phase costs are ignored in the conversion."""
        configs = self.configs()
        tokens, flops, out = 0.0, 0.0, []
        for i, stage in enumerate(self.stages):
            trig = stage.trigger
            fpt = flops_per_token(configs[i], seq_len)
            budget = budget_tokens if trig.unit == "tokens" else budget_flops
            try:
                when = trig.resolve(trig.min_at if trig.is_slope else trig.at, budget)
            except ConfigError as exc:
                raise ConfigError(f"stage {i} ({stage.operator}): {exc}") from None
            if when is None:
                t = tokens
            elif trig.unit == "tokens":
                t = when
            else:
                t = tokens + (when - flops) / fpt
            flops += (t - tokens) * fpt
            tokens = t
            out.append(t)
        return out

    def estimate_flops(
        self, budget_tokens: float, seq_len: int, budget_flops: float | None = None
    ) -> float:
        """Training FLOPs of the whole run (slope stages at their earliest time: an upper bound
        for growth that only adds parameters)."""
        configs = self.configs()
        times = [0.0, *self.stage_tokens(budget_tokens, seq_len, budget_flops), budget_tokens]
        return sum(
            flops_per_token(configs[i], seq_len) * max(0.0, times[i + 1] - times[i])
            for i in range(len(configs))
        )

    def validate(
        self, budget_tokens: float, seq_len: int, budget_flops: float | None = None
    ) -> None:
        """Raise a one-line ConfigError for anything that would fail (or make no sense) mid-run:
        unknown operators/policies, bad operator params (factor < 2, width not a multiple of
        head_dim, ...), growth at or after the end of the budget, stages out of order."""
        if not budget_tokens > 0:
            raise ConfigError(f"budget_tokens={budget_tokens} must be positive")
        if seq_len < 1 or seq_len > self.start.max_seq_len:
            raise ConfigError(
                f"seq_len={seq_len} must be in 1..model.max_seq_len={self.start.max_seq_len}"
            )
        for i, stage in enumerate(self.stages):
            try:
                stage.check()
            except ConfigError as exc:
                raise ConfigError(f"stage {i} ({stage.operator}): {exc}") from None
        self.configs()
        times = self.stage_tokens(budget_tokens, seq_len, budget_flops)
        prev = 0.0
        for i, (stage, t) in enumerate(zip(self.stages, times, strict=True)):
            trig, name = stage.trigger, f"stage {i} ({stage.operator})"
            if t >= budget_tokens:
                raise ConfigError(
                    f"{name} grows at {t:.4g} tokens, at or after the end of the "
                    f"{budget_tokens:.4g}-token budget; move it earlier (e.g. a fraction < 1)"
                )
            if trig.is_slope:
                budget = budget_tokens if trig.unit == "tokens" else budget_flops
                hi = trig.resolve(trig.max_at, budget)
                end = budget_tokens if trig.unit == "tokens" else budget_flops
                if hi is not None and end is not None and hi >= end:
                    raise ConfigError(f"{name}: max_at is at or after the end of the budget")
            if (not trig.is_slope or trig.min_at is not None) and t <= prev and i > 0:
                raise ConfigError(
                    f"{name} at {t:.4g} tokens is not after the previous stage at {prev:.4g}; "
                    "order stages by time"
                )
            prev = t

    def is_due(
        self,
        cursor: int,
        tokens: float,
        flops: float,
        budget_tokens: float | None,
        budget_flops: float | None,
        val_curve: Sequence[tuple[float, float]] = (),
    ) -> bool:
        """Whether stage `cursor` (the next one to run) should run now. `val_curve` is the
        (flops, val_loss) history since the last growth, used by slope triggers."""
        if cursor >= len(self.stages):
            return False
        trig = self.stages[cursor].trigger
        clock = tokens if trig.unit == "tokens" else flops
        budget = budget_tokens if trig.unit == "tokens" else budget_flops
        if not trig.is_slope:
            at = trig.resolve(trig.at, budget)
            return at is not None and clock >= at
        lo, hi = trig.resolve(trig.min_at, budget), trig.resolve(trig.max_at, budget)
        if lo is not None and clock < lo:
            return False
        if hi is not None and clock >= hi:
            return True
        slope = smoothed_slope(val_curve, trig.window)
        return slope is not None and slope > trig.slope  # type: ignore[operator]

    # ---- serialisation
    def to_dict(self) -> dict[str, Any]:
        return {
            "version": FORMAT_VERSION,
            "start": self.start.to_dict(),
            "stages": [s.to_dict() for s in self.stages],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> GrowthSchedule:
        unknown = sorted(set(data) - {"version", "start", "stages"})
        if unknown or "start" not in data:
            raise ConfigError(
                f"a growth schedule is {{version, start, stages}}; got keys {sorted(data)}"
            )
        if data.get("version", FORMAT_VERSION) != FORMAT_VERSION:
            raise ConfigError(f"schedule format version {data['version']} is not supported")
        return cls(
            ModelConfig.from_dict(data["start"]),
            tuple(GrowthStage.from_dict(s) for s in data.get("stages", [])),
        )

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_json(cls, text: str) -> GrowthSchedule:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(
                f"growth schedule is not valid JSON ({exc.msg} at line {exc.lineno})"
            ) from None
        if not isinstance(data, dict):
            raise ConfigError("growth schedule JSON must be an object {version, start, stages}")
        return cls.from_dict(data)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(self.to_json() + "\n")

    @classmethod
    def load(cls, path: str | Path) -> GrowthSchedule:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"growth schedule {str(p)!r} does not exist; pass a JSON file")
        return cls.from_json(p.read_text())


# --------------------------------------------------------------------------- constructors
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
    grown = get_operator(operator).grown_config(small, factor=factor, **params)
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
