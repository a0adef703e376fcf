"""Growth samples: normalise what a space returns, describe it, turn it into a schedule.

A space (see `raygrow.search.spaces`) returns a *growth sample* `{"stages": [stage, ...]}`,
where a stage names an operator, a growth `factor` relative to the model before it, a trigger
(`at` = fraction of the token budget, or `slope` = Staged Training's loss-slope threshold), the
operator's own params and the optimizer/LR policies. Samples are target-relative: this module
derives the start model by dividing the target by the stage factors (last stage first), asks the
operator what it would grow that model into, and insists that this is the target.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from raygrow.config import ModelConfig
from raygrow.errors import ConfigError

STAGE_KEYS = (
    "operator",
    "factor",
    "at",
    "slope",
    "params",
    "opt_policy",
    "lr_policy",
    "lr_params",
    "width",
    "axis",
)
SHAPE_FIELDS = ("n_layers", "d_model", "n_heads", "kv_heads", "ff_dim", "vocab_size")
"""What must match between a schedule's final model and the target (operators may adjust
numerics such as zero_width's norm_eps correction)."""


# --------------------------------------------------------------------------- normalising
def normalize_sample(raw: Any, space: str = "space") -> dict[str, Any]:
    """A space's return value -> `{"stages": [full stage dicts]}` (ConfigError if malformed)."""
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        raise ConfigError(
            f"space {space!r} returned {type(raw).__name__}; return a dict like "
            '{"stages": [stage("stack", 2, at=0.25)]}'
        )
    unknown = set(raw) - {"stages"}
    if unknown:
        raise ConfigError(
            f"space {space!r} returned keys {sorted(unknown)}; return only "
            '{"stages": [...]} (suggested values are recorded by Optuna already)'
        )
    stages = raw.get("stages", [])
    if not isinstance(stages, list | tuple):
        raise ConfigError(f"space {space!r}: 'stages' must be a list of stage dicts")
    out = []
    for i, st in enumerate(stages):
        if not isinstance(st, Mapping) or "operator" not in st:
            raise ConfigError(
                f"space {space!r}: stage {i} must be a dict with an 'operator' (use "
                "search_spaces._common.stage)"
            )
        bad = set(st) - set(STAGE_KEYS)
        if bad:
            raise ConfigError(
                f"space {space!r}: stage {i} has unknown keys {sorted(bad)}; known: "
                f"{', '.join(STAGE_KEYS)}"
            )
        factor = st.get("factor", 2)
        if isinstance(factor, bool) or not isinstance(factor, int) or factor < 2:
            raise ConfigError(f"space {space!r}: stage {i} factor={factor!r} must be an int >= 2")
        at, slope = st.get("at"), st.get("slope")
        if at is None and slope is None:
            raise ConfigError(
                f"space {space!r}: stage {i} needs a trigger: at=<fraction of the budget> "
                "or slope=<threshold>"
            )
        if at is not None and not (isinstance(at, int | float) and 0 < at < 1):
            raise ConfigError(
                f"space {space!r}: stage {i} at={at!r} must be a fraction of the budget in (0, 1)"
            )
        if slope is not None and not (isinstance(slope, int | float) and math.isfinite(slope)):
            raise ConfigError(f"space {space!r}: stage {i} slope={slope!r} must be a number")
        width = st.get("width", "all")
        if width not in ("all", "mlp"):
            raise ConfigError(f"space {space!r}: stage {i} width={width!r} must be all or mlp")
        axis = st.get("axis")
        if axis not in (None, "depth", "width"):
            raise ConfigError(f"space {space!r}: stage {i} axis={axis!r} must be depth or width")
        out.append(
            {
                "operator": str(st["operator"]),
                "factor": int(factor),
                "at": None if at is None else float(at),
                "slope": None if slope is None else float(slope),
                "params": dict(st.get("params") or {}),
                "opt_policy": str(st.get("opt_policy", "carry")),
                "lr_policy": str(st.get("lr_policy", "continue")),
                "lr_params": dict(st.get("lr_params") or {}),
                "width": width,
                "axis": axis,
            }
        )
    return {"stages": out}


def describe(growth: Mapping[str, Any]) -> str:
    """Short human description of a sample, e.g. `stack x2 @25% [layer_map=interleave]`."""
    parts = []
    for st in growth.get("stages", []):
        axis = f" {st['axis']}" if st.get("axis") else ""
        mlp = " mlp" if st.get("width") == "mlp" else ""
        what = f"{st['operator']}{axis}{mlp} x{st['factor']}"
        when = []
        if st.get("slope") is not None:
            when.append(f"slope>{st['slope']:.3g}")
        if st.get("at") is not None:
            when.append(f"{'<=' if st.get('slope') is not None else ''}{st['at']:.0%}")
        extras = [f"{k}={_short(v)}" for k, v in sorted(st.get("params", {}).items())]
        if st.get("opt_policy", "carry") != "carry":
            extras.append(f"opt={st['opt_policy']}")
        if st.get("lr_policy", "continue") != "continue":
            lr = st["lr_policy"]
            if st.get("lr_params"):
                lr += "(" + ",".join(f"{_short(v)}" for _, v in sorted(st["lr_params"].items()))
                lr += ")"
            extras.append(f"lr={lr}")
        text = f"{what} @{' '.join(when)}"
        if extras:
            text += f" [{', '.join(extras)}]"
        parts.append(text)
    return " -> ".join(parts) if parts else "no growth"


def _short(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    if isinstance(value, list):
        return "[" + ",".join(map(str, value)) + "]"
    return str(value)


# --------------------------------------------------------------------------- schedules
def _same_shape(a: ModelConfig, b: ModelConfig) -> bool:
    return all(getattr(a, f) == getattr(b, f) for f in SHAPE_FIELDS)


def _shrink(
    op_name: str, axes: tuple[str, ...], st: Mapping[str, Any], after: ModelConfig
) -> tuple[ModelConfig, dict[str, Any]]:
    """The model before a stage and the operator params that grow it into `after`."""
    g = st["factor"]
    params = dict(st["params"])
    where = f"operator {op_name!r} x{g} into {after.shape}"
    if len(axes) > 1:  # an operator that can grow either axis: the stage says which
        axes = (st.get("axis") or "depth",)
    if axes == ("depth",):
        if after.n_layers % g:
            raise ConfigError(
                f"{where}: {after.n_layers} layers are not divisible by {g}; pick a target whose "
                "layer count is a multiple of every depth factor"
            )
        params.setdefault("n_layers", after.n_layers)
        return after.replace(n_layers=after.n_layers // g), params
    if axes == ("width",):
        if st.get("width") == "mlp":
            if after.ff_dim % g:
                raise ConfigError(f"{where}: d_ff={after.ff_dim} is not divisible by {g}")
            params.setdefault("d_ff", after.ff_dim)
            return after.replace(d_ff=after.ff_dim // g), params
        heads, kv = after.n_heads, after.kv_heads
        if after.d_model % g or heads % g or kv % g or after.ff_dim % g:
            raise ConfigError(
                f"{where}: d_model={after.d_model}, n_heads={heads}, kv heads={kv} and "
                f"d_ff={after.ff_dim} must all be divisible by {g} (head_dim stays "
                f"{after.head_dim}); pick a wider target"
            )
        before = after.replace(
            d_model=after.d_model // g,
            n_heads=heads // g,
            n_kv_heads=None if after.n_kv_heads is None else kv // g,
            d_ff=None if after.d_ff is None else after.d_ff // g,
        )
        params.setdefault("d_model", after.d_model)
        if after.d_ff is not None:
            params.setdefault("d_ff", after.d_ff)
        return before, params
    raise ConfigError(f"operator {op_name!r}: unknown axes {axes}")


@dataclass(frozen=True)
class PlannedStage:
    operator: str
    params: dict[str, Any]
    before: ModelConfig
    after: ModelConfig
    spec: dict[str, Any]


def plan_stages(growth: Mapping[str, Any], target: ModelConfig) -> list[PlannedStage]:
    """Derive the start model backwards from the target and check each operator forwards."""
    from raygrow.growth import get_operator

    stages = list(growth.get("stages", []))
    planned: list[PlannedStage] = []
    after = target
    for st in reversed(stages):
        op = get_operator(st["operator"])  # ConfigError for unknown names
        before, params = _shrink(op.name, tuple(op.axes), st, after)
        grown = op.grown_config(before, **params)  # ConfigError for bad params
        if not _same_shape(grown, after):
            raise ConfigError(
                f"operator {op.name!r} with {params} grows {before.shape} into {grown.shape}, "
                f"not {after.shape}; check the stage's factor and params"
            )
        planned.append(PlannedStage(op.name, params, before, grown, dict(st)))
        after = before
    planned.reverse()
    # forward pass: each stage starts from the previous stage's exact output config
    fixed: list[PlannedStage] = []
    current = planned[0].before if planned else target
    for p in planned:
        grown = get_operator(p.operator).grown_config(current, **p.params)
        fixed.append(PlannedStage(p.operator, p.params, current, grown, p.spec))
        current = grown
    return fixed


def sample_to_schedule(
    growth: Mapping[str, Any], target: ModelConfig, budget_tokens: int, seq_len: int
) -> Any:
    """The `GrowthSchedule` of a sample for this target and budget (None = no growth).

    Raises ConfigError for unknown operators, impossible factors and anything
    `GrowthSchedule.validate` rejects.
    """
    planned = plan_stages(growth, target)
    if not planned:
        return None
    from raygrow.schedule import GrowthSchedule

    schedule = GrowthSchedule(
        start=planned[0].before, stages=[_make_stage(p, budget_tokens) for p in planned]
    )
    schedule.validate(budget_tokens=budget_tokens, seq_len=seq_len)
    return schedule


def _make_stage(p: PlannedStage, budget_tokens: int) -> Any:
    from raygrow.schedule import GrowthStage

    st = p.spec
    kwargs: dict[str, Any] = {
        "operator": p.operator,
        "params": p.params,
        "opt_policy": st["opt_policy"],
        "lr_policy": st["lr_policy"],
        "lr_params": st["lr_params"],
    }
    kwargs.update(trigger_kwargs(st, budget_tokens))
    return GrowthStage(**kwargs)


def trigger_kwargs(st: Mapping[str, Any], budget_tokens: int) -> dict[str, Any]:
    """The stage's `Trigger`: `at` is a fraction of the token budget; with `slope` the stage
    fires when the loss flattens, and `at` (if given) is the latest point (`max_at`)."""
    from raygrow.schedule import Trigger

    if st.get("slope") is not None:
        trigger = Trigger(unit="tokens", slope=st["slope"], max_at=st.get("at"), fraction=True)
    else:
        trigger = Trigger(unit="tokens", at=st["at"], fraction=True)
    return {"trigger": trigger}
