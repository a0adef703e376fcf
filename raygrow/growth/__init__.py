"""Growth operators: map a small model's training state onto a larger model's.

    from raygrow.growth import GrowthState, grow, OPERATORS, get_operator
    new_state, report = grow(state, "stack", generator=g, opt_policy="carry", factor=2)

Every operator is a pure function over a `GrowthState` (config, FQN-keyed params and AdamW
state, step) that returns the grown state and a `GrowthReport` (JSON-able: loss before/after on a
probe batch, max logit difference, directives for the loop). `python -m raygrow.growth list`
prints the catalogue; see `_core` for the optimizer-state rules shared by all operators.

Two halves, one set of names. The torch-free half (`spec`, `depth_spec`, `width_spec`) holds
each operator's params and shape rules: `get_spec(name).grown_config(config, **params)` gives the
grown config without tensors, and importing this package loads only that half. The torch half
(`grow`, `get_operator`, `OPERATORS`, ...) is imported on first access to one of its names.
"""

from __future__ import annotations

import importlib
from typing import Any

from raygrow.growth import depth_spec, width_spec  # noqa: F401  (register the specs)
from raygrow.growth.spec import (
    OPT_POLICIES,
    SPECS,
    OperatorSpec,
    Param,
    get_spec,
    register_spec,
)

# torch-side names -> the module that defines them (loaded lazily: PEP 562)
_TORCH_NAMES = {
    "OPERATORS": "_core",
    "active_directives": "directives",
    "Operator": "_core",
    "apply_directives": "_core",
    "default_probe_batch": "_core",
    "evaluate": "_core",
    "frozen_fqns": "_core",
    "get_operator": "_core",
    "grow": "_core",
    "register": "_core",
    "GrowthContext": "context",
    "GrowthReport": "context",
    "GrowthState": "context",
    "OptimState": "context",
}

__all__ = [
    "OPT_POLICIES",
    "SPECS",
    "OperatorSpec",
    "Param",
    "get_spec",
    "register_spec",
    *_TORCH_NAMES,
]


def __getattr__(name: str) -> Any:
    if name not in _TORCH_NAMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from raygrow.growth import _core

    _core.load_operators()  # every torch name implies a complete registry
    value = getattr(importlib.import_module(f"raygrow.growth.{_TORCH_NAMES[name]}"), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_TORCH_NAMES))
