"""The growth contract: state in, state out, plus a report; the operator base class and registry.

An operator is a pure function over a `GrowthState` (config, FQN-keyed params, FQN-keyed AdamW
state, global step). `grow` resolves and validates the operator's params, lets the operator draw
its random choices, then runs the operator's `transform` four times over the *same* code path:
once for the parameters and once each for `exp_avg`, `exp_avg_sq` and a step-count tensor. The
`GrowthContext` primitives (`fresh`, `scale`, `mix`, `bilinear`) give each pass its own meaning,
so parameters and optimizer moments can never be mapped inconsistently:

    primitive       params            exp_avg (m)         exp_avg_sq (v)       step
    fresh(std)      N(0, std) / fill  0                   0                    0
    scale(t, a, c)  a * t             t  (scale: c * t)   t  (scale: c^2 t)    t (0 where c = 0)
    mix(w_i, t_i)   sum w_i t_i       sum w_i t_i         sum w_i^2 t_i        max over w_i != 0
    bilinear(B, t)  B_o t B_i^T       B_o t B_i^T         B_o^2 t (B_i^2)^T    max

Optimizer policies (`opt_policy`):

* ``carry``: moments follow the parameters' structural map (copy, tile, slice, mix); value
  rescalings of the parameters (e.g. HyperCloning's 1/n) are *not* applied to the moments, so
  m/sqrt(v) of every carried entry equals its source entry. Brand-new entries get zero moments.
* ``scale``: as carry, but each tensor's moments are multiplied by (c, c^2), where c is the ratio
  of the grown model's gradient to the small model's gradient for that entry at the growth point,
  derived per operator (Staged Training's m/2, v/4 is the case c = 1/2). m/sqrt(v) is unchanged;
  the moments simply start at the scale of the gradients they will be averaged with. For
  operators where no such relation exists (non function-preserving ones) the operator documents
  what it does; usually scale == carry.
* ``reset``: no optimizer state at all (`{}`): the loop's AdamW starts fresh moments.

Step rule (no stale bias correction): for carry/scale every new FQN gets an entry. Its AdamW
``step`` is the largest step among the source tensors whose moments flow into it; a tensor with no
carried entries (a brand-new tensor, or one whose moments `scale` zeroes) gets step 0 with zero
moments, which is exactly torch's fresh state. A tensor that mixes carried and new entries keeps
the source step (MSG's rule): its new entries then see bias-corrected updates of about 0.45x the
fresh-state size for the first few steps (beta 0.9/0.95), a short warm-up, never a blow-up.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from raygrow.errors import ConfigError
from raygrow.growth._fqn import check_params, expected_shapes
from raygrow.model import ModelConfig, Transformer, build_model, param_fqns

OptimState = dict[str, dict[str, torch.Tensor]]
Batch = tuple[torch.Tensor, torch.Tensor]
BatchFn = Callable[[int], Batch]

OPT_POLICIES = ("carry", "reset", "scale")
ROLES = ("param", "exp_avg", "exp_avg_sq", "step")
AXES = ("depth", "width")


@dataclass(frozen=True)
class GrowthState:
    """Everything a growth operator maps: config, parameters, optimizer state, global step."""

    config: ModelConfig
    params: dict[str, torch.Tensor]
    """FQN -> tensor, i.e. `model.state_dict()` (fp32, CPU)."""
    optim: OptimState = field(default_factory=dict)
    """FQN-keyed AdamW state `{fqn: {"step", "exp_avg", "exp_avg_sq"}}`; {} before any step."""
    step: int = 0
    """Global optimizer step at growth time (recorded in the report)."""


@dataclass(frozen=True, kw_only=True)
class GrowthReport:
    """What one growth event did and measured; `to_dict()` is JSON-able (the loop logs it)."""

    operator: str
    params: dict[str, Any]
    """Resolved operator params (defaults and derived values filled in)."""
    axes: list[str]
    opt_policy: str
    config_before: dict[str, Any]
    config_after: dict[str, Any]
    n_params_before: int
    n_params_after: int
    fp_claimed: bool
    """Whether the operator (with these params) claims function preservation at t = 0."""
    loss_before: float
    loss_after: float
    """Loss on the probe batch (fp32), after applying the directives at t = 0."""
    max_logit_diff: float
    """max |logits_after - logits_before| on the probe batch."""
    seconds: float
    directives: dict[str, Any] = field(default_factory=dict)
    """Instructions for the loop: `branch_ramps`, `freeze`, `extra_flops`, `extra_sequences`."""
    step: int = 0
    extras: dict[str, Any] = field(default_factory=dict)
    """Operator-specific measurements (e.g. the learned operator's phase losses)."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> GrowthReport:
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


# --------------------------------------------------------------------------- operator params
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


# --------------------------------------------------------------------------- the context
@dataclass
class GrowthContext:
    """What `prepare`/`transform` see; role-aware primitives keep params and moments consistent."""

    old: ModelConfig
    new: ModelConfig
    p: dict[str, Any]
    """Resolved operator params."""
    generator: torch.Generator
    policy: str
    state: GrowthState
    train_batch_fn: BatchFn | None = None
    role: str = "param"
    plan: dict[str, Any] = field(default_factory=dict)
    """Random choices drawn once in `prepare`, shared by all four transform passes."""
    extra_flops: float = 0.0
    extra_sequences: int = 0
    extras: dict[str, Any] = field(default_factory=dict)
    """Operator-specific measurements for the report (JSON-able), e.g. a trained phase's loss."""

    @property
    def is_param(self) -> bool:
        return self.role == "param"

    def new_shapes(self) -> dict[str, tuple[int, ...]]:
        return expected_shapes(self.new)

    def fresh(
        self, shape: Sequence[int], std: float = 0.0, fill: float | None = None
    ) -> torch.Tensor:
        """A new tensor: N(0, std) (or `fill`) for params, zeros for moments and steps."""
        if self.role != "param":
            return torch.zeros(tuple(shape))
        if fill is not None:
            return torch.full(tuple(shape), float(fill))
        if std == 0.0:
            return torch.zeros(tuple(shape))
        return torch.randn(tuple(shape), generator=self.generator) * std

    def scale(
        self,
        t: torch.Tensor,
        value: float | torch.Tensor = 1.0,
        grad: float | torch.Tensor = 1.0,
    ) -> torch.Tensor:
        """Multiply params by `value`; under `scale` multiply m by `grad`, v by `grad`^2."""
        if self.role == "param":
            return t * value if not _is_one(value) else t
        if self.policy != "scale" or _is_one(grad):
            return t
        if self.role == "exp_avg":
            return t * grad
        if self.role == "exp_avg_sq":
            return t * (grad * grad)
        # step: entries whose moments were zeroed become fresh (step 0)
        zero = (torch.as_tensor(grad) == 0).to(t.dtype)
        return t * (1.0 - zero) if zero.any() else t

    def mix(self, terms: Sequence[tuple[float | torch.Tensor, torch.Tensor]]) -> torch.Tensor:
        """Linear combination sum_i w_i t_i (v uses w_i^2; step takes the max over w_i != 0)."""
        if self.role == "step":
            used = [t for w, t in terms if float(w) != 0.0]
            if not used:
                return torch.zeros_like(terms[0][1])
            return torch.stack(used).amax(0)
        power = 2 if self.role == "exp_avg_sq" else 1
        out = torch.zeros_like(terms[0][1])
        for w, t in terms:
            out = out + (w**power) * t
        return out

    def bilinear(
        self, t: torch.Tensor, out: torch.Tensor | None, inp: torch.Tensor | None
    ) -> torch.Tensor:
        """`out @ t @ inp.T` (either side may be None = identity; 1-D `t` uses `out` only)."""
        if self.role == "step":
            return torch.full(_bilinear_shape(t, out, inp), float(t.max()) if t.numel() else 0.0)
        if self.role == "exp_avg_sq":
            out = None if out is None else out * out
            inp = None if inp is None else inp * inp
        if out is not None:
            t = out @ t
        if inp is not None and t.dim() == 2:
            t = t @ inp.T
        return t


def _bilinear_shape(
    t: torch.Tensor, out: torch.Tensor | None, inp: torch.Tensor | None
) -> tuple[int, ...]:
    shape = list(t.shape)
    if out is not None:
        shape[0] = out.shape[0]
    if inp is not None and t.dim() == 2:
        shape[1] = inp.shape[0]
    return tuple(shape)


def _is_one(x: float | torch.Tensor) -> bool:
    return isinstance(x, (int, float)) and x == 1.0


# --------------------------------------------------------------------------- operators
class Operator:
    """Base class of growth operators. Subclasses set the class attributes and override hooks.

    Hooks: `check(config, p)` validates and fills derived params, `target(config, p)` returns the
    grown config, `prepare(ctx)` draws random choices (or trains a phase), `transform(ctx, src)`
    maps a `{fqn: tensor}` dict (called once per role), `directives(ctx)` returns loop
    instructions, `claims_fp(p)` says whether the result is function-preserving.
    """

    name: ClassVar[str] = ""
    axes: ClassVar[tuple[str, ...]] = ()
    summary: ClassVar[str] = ""
    fp_note: ClassVar[str] = "no"
    """Human-readable function-preservation claim for `list` (e.g. 'yes', 'when ramp_steps>0')."""
    params: ClassVar[tuple[Param, ...]] = ()
    needs_train_batches: ClassVar[bool] = False
    scale_note: ClassVar[str] = "same as carry"
    """What opt_policy='scale' means for this operator."""

    # ---- params and configs (no tensors)
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

    # ---- tensors
    def prepare(self, ctx: GrowthContext) -> None:
        """Draw random choices into `ctx.plan` (runs once, before the param pass)."""

    def transform(self, ctx: GrowthContext, src: Mapping[str, torch.Tensor]) -> dict[str, Any]:
        raise NotImplementedError

    def directives(self, ctx: GrowthContext) -> dict[str, Any]:
        return {}

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


OPERATORS: dict[str, Operator] = {}


def register(op: Operator) -> Operator:
    """Add an operator to the registry (and with it to the contract test suite)."""
    if not op.name or op.name in OPERATORS:
        raise ValueError(f"operator name {op.name!r} is empty or already registered")
    if not op.axes or set(op.axes) - set(AXES):
        raise ValueError(f"operator {op.name!r} axes {op.axes} must be a subset of {AXES}")
    OPERATORS[op.name] = op
    return op


def get_operator(name: str | Operator) -> Operator:
    if isinstance(name, Operator):
        return name
    if name not in OPERATORS:
        raise ConfigError(
            f"unknown growth operator {name!r}; choose one of: {', '.join(OPERATORS)} "
            "(python -m raygrow.growth list)"
        )
    return OPERATORS[name]


# --------------------------------------------------------------------------- directives
def apply_directives(model: Transformer, directives: Mapping[str, Any], steps_since: int) -> None:
    """Set `branch_scale` of ramped blocks to min(1, steps_since / ramp steps) (MSG mask)."""
    for ramp in directives.get("branch_ramps", []):
        scale = min(1.0, steps_since / max(1, int(ramp["steps"])))
        for i in ramp["layers"]:
            model.layers[i].branch_scale = scale


def frozen_fqns(directives: Mapping[str, Any], steps_since: int) -> list[str]:
    """FQNs whose gradients the loop must drop `steps_since` steps after growth."""
    freeze = directives.get("freeze")
    if freeze and steps_since < int(freeze["steps"]):
        return list(freeze["fqns"])
    return []


# --------------------------------------------------------------------------- grow
def default_probe_batch(config: ModelConfig, batch: int = 4, seq_len: int = 64) -> Batch:
    """A seeded random (x, y) batch; used when the caller gives no probe batch."""
    g = torch.Generator().manual_seed(1234)
    t = min(seq_len, config.max_seq_len)
    tokens = torch.randint(0, config.vocab_size, (batch, t + 1), generator=g)
    return tokens[:, :-1], tokens[:, 1:]


def evaluate(
    config: ModelConfig,
    params: Mapping[str, torch.Tensor],
    batch: Batch,
    directives: Mapping[str, Any] | None = None,
) -> tuple[float, torch.Tensor]:
    """(loss, logits) of the model `params` on `batch` in fp32, directives applied at t = 0."""
    with torch.random.fork_rng(devices=[]):  # model init must not consume the caller's RNG
        model = build_model(config, {k: v.float() for k, v in params.items()})
    if directives:
        apply_directives(model, directives, 0)
    x, y = batch
    model.eval()
    with torch.no_grad():
        logits = model(x).float()
        loss = F.cross_entropy(logits.flatten(0, 1), y.flatten())
    return float(loss), logits


def _check_optim(state: GrowthState) -> None:
    for fqn, entry in state.optim.items():
        if fqn not in state.params:
            raise ConfigError(
                f"optimizer state has entry {fqn!r} that is not a parameter of the model; "
                "pass FQN-keyed state from optimizer_state_by_fqn"
            )
        for key in ("exp_avg", "exp_avg_sq"):
            if key in entry and tuple(entry[key].shape) != tuple(state.params[fqn].shape):
                raise ConfigError(
                    f"optimizer state {fqn}.{key} has shape {tuple(entry[key].shape)}, the "
                    f"parameter has {tuple(state.params[fqn].shape)}"
                )


def _role_sources(state: GrowthState, role: str) -> dict[str, torch.Tensor]:
    out = {}
    for fqn, p in state.params.items():
        entry = state.optim.get(fqn) or {}
        has = "exp_avg" in entry and "exp_avg_sq" in entry
        if role == "step":
            step = float(entry["step"]) if has and "step" in entry else 0.0
            out[fqn] = torch.full(p.shape, step)
        else:
            out[fqn] = entry[role].float() if has else torch.zeros(p.shape)
    return out


def _unalias(
    tensors: dict[str, torch.Tensor], taken: set[int], dtype: torch.dtype | None = None
) -> dict[str, torch.Tensor]:
    """Fresh, contiguous tensors that share storage with no input and with each other."""
    out = {}
    for name, t in tensors.items():
        t = t.detach()
        if dtype is not None and t.dtype != dtype:
            t = t.to(dtype)
        ptr = t.untyped_storage().data_ptr()
        if ptr in taken or not t.is_contiguous():
            t = t.clone(memory_format=torch.contiguous_format)
            ptr = t.untyped_storage().data_ptr()
        taken.add(ptr)
        out[name] = t
    return out


def grow(
    state: GrowthState,
    operator: str | Operator,
    *,
    generator: torch.Generator | None = None,
    opt_policy: str = "carry",
    probe_batch: Batch | None = None,
    train_batch_fn: BatchFn | None = None,
    **params: Any,
) -> tuple[GrowthState, GrowthReport]:
    """Apply a growth operator to a training state; returns (new state, report).

    The input state is never modified and shares no storage with the output. All randomness
    comes from `generator` (None -> a generator seeded with 0). `probe_batch` (B, T) int64 is only
    used to measure function preservation; `train_batch_fn(i)` feeds operators that train a phase.
    """
    start = time.perf_counter()
    op = get_operator(operator)
    if opt_policy not in OPT_POLICIES:
        raise ConfigError(
            f"opt_policy={opt_policy!r} is unknown; use one of {', '.join(OPT_POLICIES)}"
        )
    check_params(state.config, state.params, "growth state params")
    _check_optim(state)
    p = op.resolve(state.config, params)
    new_config = op.target(state.config, p)
    if op.needs_train_batches and train_batch_fn is None:
        raise ConfigError(
            f"operator {op.name!r} trains its own phase and needs train_batch_fn; pass one "
            "(the loop does) or pick another operator"
        )
    ctx = GrowthContext(
        old=state.config,
        new=new_config,
        p=p,
        generator=generator if generator is not None else torch.Generator().manual_seed(0),
        policy=opt_policy,
        state=state,
        train_batch_fn=train_batch_fn,
    )
    op.prepare(ctx)
    ctx.role = "param"
    src = {k: v.detach().float() for k, v in state.params.items()}
    new_params = op.transform(ctx, src)
    check_params(new_config, new_params, f"operator {op.name!r} output")
    new_params = {k: new_params[k] for k in param_fqns(new_config)}  # module order
    taken = {t.untyped_storage().data_ptr() for t in state.params.values()}
    taken |= {t.untyped_storage().data_ptr() for e in state.optim.values() for t in e.values()}
    dtypes = {t.dtype for t in state.params.values()}
    new_params = _unalias(new_params, taken, dtypes.pop() if len(dtypes) == 1 else None)

    new_optim: OptimState = {}
    if opt_policy != "reset":
        by_role = {}
        for role in ("exp_avg", "exp_avg_sq", "step"):
            ctx.role = role
            by_role[role] = op.transform(ctx, _role_sources(state, role))
            check_params(new_config, by_role[role], f"operator {op.name!r} {role} output")
        step_dtype = next(
            (
                e["step"].dtype
                for e in state.optim.values()
                if isinstance(e.get("step"), torch.Tensor)
            ),
            torch.float32,
        )
        moments = {
            f"{fqn}\0{role}": by_role[role][fqn]
            for role in ("exp_avg", "exp_avg_sq")
            for fqn in new_params
        }
        moments = _unalias(moments, taken, torch.float32)
        for fqn in new_params:
            steps = by_role["step"][fqn]
            step = float(steps.max()) if steps.numel() else 0.0
            new_optim[fqn] = {
                "step": torch.tensor(round(step), dtype=step_dtype),
                "exp_avg": moments[f"{fqn}\0exp_avg"],
                "exp_avg_sq": moments[f"{fqn}\0exp_avg_sq"],
            }
    ctx.role = "param"
    directives = op.directives(ctx)
    if ctx.extra_flops or ctx.extra_sequences:
        directives["extra_flops"] = float(ctx.extra_flops)
        directives["extra_sequences"] = int(ctx.extra_sequences)

    probe = probe_batch if probe_batch is not None else default_probe_batch(state.config)
    loss_before, logits_before = evaluate(state.config, state.params, probe)
    loss_after, logits_after = evaluate(new_config, new_params, probe, directives)
    report = GrowthReport(
        operator=op.name,
        params=p,
        axes=list(op.axes),
        opt_policy=opt_policy,
        config_before=state.config.to_dict(),
        config_after=new_config.to_dict(),
        n_params_before=state.config.n_params(),
        n_params_after=new_config.n_params(),
        fp_claimed=op.claims_fp(p),
        loss_before=loss_before,
        loss_after=loss_after,
        max_logit_diff=float((logits_after - logits_before).abs().max()),
        seconds=time.perf_counter() - start,
        directives=directives,
        step=state.step,
        extras=dict(ctx.extras),
    )
    return GrowthState(new_config, new_params, new_optim, state.step), report
