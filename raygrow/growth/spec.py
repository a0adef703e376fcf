"""The torch-free half of the growth registry: operator names, parameters and shape rules.

An `OperatorSpec` knows everything about an operator that does not need tensors: its name, axes,
parameters (`Param`: type, default, help), how to validate them against a `ModelConfig`
(`resolve`) and the config it grows to (`grown_config`). Schedules and search spaces use
`get_spec` to check operators and compute grown configs without importing torch. The torch
operators in `raygrow.growth` (`get_operator`) subclass these specs and register under the same
names, so a grown state always has the shapes of `grown_config` (the contract suite checks it).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from raygrow.config import ModelConfig
from raygrow.errors import ConfigError

OPT_POLICIES = ("carry", "reset", "scale")
AXES = ("depth", "width")


@dataclass(frozen=True)
class Param:
    """One operator parameter: type, default, help; validated by `Operator.resolve`."""

    name: str
    kind: str
    """int | float | str | bool | layer_map (a choice string or a list of ints)."""
    default: Any
    help: str
    choices: tuple[str, ...] | None = None

    def coerce(self, op: str, value: Any) -> Any:
        bad = ConfigError(f"{op}: {self.name}={value!r} must be {self._describe()}; {self.help}")
        if value is None:
            if self.default is None:
                return None
            raise bad
        if self.kind == "int":
            if isinstance(value, bool) or not isinstance(value, int):
                raise bad
            return value
        if self.kind == "float":
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise bad
            if not math.isfinite(value):
                raise bad
            return float(value)
        if self.kind == "bool":
            if not isinstance(value, bool):
                raise bad
            return value
        if self.kind == "str":
            if not isinstance(value, str) or (self.choices and value not in self.choices):
                raise bad
            return value
        if self.kind == "layer_map":
            if isinstance(value, str) and self.choices and value in self.choices:
                return value
            if (
                isinstance(value, (list, tuple))
                and value
                and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
            ):
                return [int(v) for v in value]
            raise bad
        raise AssertionError(f"unknown param kind {self.kind}")

    def _describe(self) -> str:
        if self.kind == "layer_map":
            return f"one of {', '.join(self.choices or ())} or a list of source-layer indices"
        if self.choices:
            return f"one of {', '.join(self.choices)}"
        article = "an" if self.kind == "int" else "a"
        return f"{article} {self.kind}" + (" or null" if self.default is None else "")


class OperatorSpec:
    """Config-level half of a growth operator. Subclasses set the class attributes and override
    `check(config, p)` (validate, fill derived params), `target(config, p)` (the grown config)
    and `claims_fp(p)` (whether the result is function-preserving)."""

    name: ClassVar[str] = ""
    axes: ClassVar[tuple[str, ...]] = ()
    summary: ClassVar[str] = ""
    fp_note: ClassVar[str] = "no"
    """Human-readable function-preservation claim for `list` (e.g. 'yes', 'when ramp_steps>0')."""
    params: ClassVar[tuple[Param, ...]] = ()
    needs_train_batches: ClassVar[bool] = False
    scale_note: ClassVar[str] = "same as carry"
    """What opt_policy='scale' means for this operator."""

    def resolve(self, config: ModelConfig, params: Mapping[str, Any]) -> dict[str, Any]:
        """Validated params with defaults filled in (and derived values); ConfigError if bad."""
        specs = {s.name: s for s in self.params}
        unknown = sorted(set(params) - set(specs))
        if unknown:
            known = ", ".join(specs) or "none"
            raise ConfigError(
                f"operator {self.name!r} has no parameter {unknown[0]!r}; its parameters: {known}"
            )
        p = {
            name: spec.coerce(self.name, params.get(name, spec.default))
            for name, spec in specs.items()
        }
        self.check(config, p)
        return p

    def grown_config(self, config: ModelConfig, **params: Any) -> ModelConfig:
        """The config this operator produces from `config` with `params` (pure, no tensors)."""
        return self.target(config, self.resolve(config, params))

    def check(self, config: ModelConfig, p: dict[str, Any]) -> None:
        """Validate resolved params against `config`; may add derived entries to `p`."""

    def target(self, config: ModelConfig, p: dict[str, Any]) -> ModelConfig:
        raise NotImplementedError

    def claims_fp(self, p: Mapping[str, Any]) -> bool:
        return self.fp_note == "yes"

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "axes": list(self.axes),
            "fp": self.fp_note,
            "summary": self.summary,
            "scale_policy": self.scale_note,
            "needs_train_batches": self.needs_train_batches,
            "params": {s.name: {"default": s.default, "help": s.help} for s in self.params},
        }


SPECS: dict[str, OperatorSpec] = {}


def register_spec(spec: OperatorSpec) -> OperatorSpec:
    """Add an operator's config-level half; its torch half must register under the same name."""
    if not spec.name or spec.name in SPECS:
        raise ValueError(f"operator name {spec.name!r} is empty or already registered")
    if not spec.axes or set(spec.axes) - set(AXES):
        raise ValueError(f"operator {spec.name!r} axes {spec.axes} must be a subset of {AXES}")
    SPECS[spec.name] = spec
    return spec


def get_spec(name: str | OperatorSpec) -> OperatorSpec:
    """The spec of operator `name` (an OperatorSpec, e.g. a torch operator, passes through)."""
    if isinstance(name, OperatorSpec):
        return name
    if name not in SPECS:
        raise ConfigError(
            f"unknown growth operator {name!r}; choose one of: {', '.join(SPECS)} "
            "(python -m raygrow.growth list)"
        )
    return SPECS[name]
