"""`GrowthStage` and `GrowthSchedule`: a start model, ordered stages, validation and timing.

A `GrowthSchedule` is a start `ModelConfig` plus ordered `GrowthStage`s. Each stage has a
`Trigger`: a fixed time in tokens or FLOPs (absolute, or a fraction of the run's budget), or a
loss-slope rule (Staged Training: grow once the validation curve flattens, i.e. the smoothed
slope d log10(loss) / d log10(compute) rises above a threshold, within optional min/max bounds).
The schedule is pure data (JSON round trip, no tensors); `validate` catches bad schedules before
any compute, `is_due` is what the training loop asks every step.

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

from raygrow.config import ModelConfig
from raygrow.errors import ConfigError
from raygrow.flops import flops_per_token
from raygrow.growth import OPT_POLICIES, get_spec
from raygrow.schedule.trigger import Trigger, check_fields, smoothed_slope

LR_POLICIES = ("continue", "restart", "rescale")
LR_PARAM_KEYS = ("lr_scale", "rewarm_steps", "rewarm_tokens")
FORMAT_VERSION = 1


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
        get_spec(self.operator)
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
        check_fields(cls, data, "stage")
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
                out.append(get_spec(stage.operator).grown_config(out[-1], **stage.params))
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
