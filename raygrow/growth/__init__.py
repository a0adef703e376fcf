"""Growth operators: map a small model's training state onto a larger model's.

    from raygrow.growth import GrowthState, grow, OPERATORS, get_operator
    new_state, report = grow(state, "stack", generator=g, opt_policy="carry", factor=2)

Every operator is a pure function over a `GrowthState` (config, FQN-keyed params and AdamW
state, step) that returns the grown state and a `GrowthReport` (JSON-able: loss before/after on a
probe batch, max logit difference, directives for the loop). `get_operator(name).grown_config`
gives the grown config without tensors. `python -m raygrow.growth list` prints the catalogue;
see `_core` for the optimizer-state rules shared by all operators.
"""

from __future__ import annotations

from raygrow.growth import depth, learned, mixture, width  # noqa: F401  (register operators)
from raygrow.growth._core import (
    OPERATORS,
    OPT_POLICIES,
    GrowthContext,
    GrowthReport,
    GrowthState,
    Operator,
    OptimState,
    Param,
    apply_directives,
    default_probe_batch,
    evaluate,
    frozen_fqns,
    get_operator,
    grow,
    register,
)

__all__ = [
    "OPERATORS",
    "OPT_POLICIES",
    "GrowthContext",
    "GrowthReport",
    "GrowthState",
    "Operator",
    "OptimState",
    "Param",
    "apply_directives",
    "default_probe_batch",
    "evaluate",
    "frozen_fqns",
    "get_operator",
    "grow",
    "register",
]
