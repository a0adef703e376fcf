"""The growth contract: state in, state out, plus a report; the torch operator base and registry.

An operator is a pure function over a `GrowthState` (config, FQN-keyed params, FQN-keyed AdamW
state, global step). `grow` resolves and validates the operator's params, lets the operator draw
its random choices, then runs the operator's `transform` once for the parameters and once per
optimizer role through the role-aware `GrowthContext` primitives (see `raygrow.growth.context`).
The config-level half of every operator (params, `grown_config`) is its torch-free spec
(`raygrow.growth.spec`); the classes here add the tensor hooks.

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

import importlib
import time
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F

from raygrow.config import ModelConfig
from raygrow.errors import ConfigError
from raygrow.growth._fqn import check_params
from raygrow.growth.context import (
    Batch,
    BatchFn,
    GrowthContext,
    GrowthReport,
    GrowthState,
    OptimState,
)
from raygrow.growth.directives import (
    check_plan,
    combine_scales,
    identity_plan,
    ramp_scales,
    remap_scales,
)
from raygrow.growth.spec import OPT_POLICIES, SPECS, OperatorSpec
from raygrow.model import Transformer, build_model, param_fqns


# --------------------------------------------------------------------------- operators
class Operator(OperatorSpec):
    """Base class of torch growth operators: an `OperatorSpec` subclass (params, `check`,
    `target`, `claims_fp`) plus the tensor hooks. `prepare(ctx)` draws random choices (or trains
    a phase), `transform(ctx, src)` maps a `{fqn: tensor}` dict (called once per role),
    `directives(ctx)` returns loop instructions."""

    def prepare(self, ctx: GrowthContext) -> None:
        """Draw random choices into `ctx.plan` (runs once, before the param pass)."""

    def transform(self, ctx: GrowthContext, src: Mapping[str, torch.Tensor]) -> dict[str, Any]:
        raise NotImplementedError

    def directives(self, ctx: GrowthContext) -> dict[str, Any]:
        return {}

    def layer_plan(
        self, old: ModelConfig, new: ModelConfig, p: Mapping[str, Any]
    ) -> list[tuple[int, str]]:
        """[(source layer, kind)] per new layer (`raygrow.growth.directives`); identity here.
        Operators that change the depth must override it."""
        if new.n_layers != old.n_layers:
            raise NotImplementedError(f"operator {self.name!r} changes depth: define layer_plan")
        return identity_plan(old.n_layers)


OPERATORS: dict[str, Operator] = {}
# the built-in operator modules register themselves on import; they import this module, so they
# are loaded on first use (`load_operators`) instead of at the top
_BUILTIN_MODULES = ("depth", "width", "learned", "mixture")  # registry order = spec order


def register(op: Operator) -> Operator:
    """Add an operator to the registry (and with it to the contract test suite). Its spec half
    must be registered under the same name (`raygrow.growth.spec.register_spec`)."""
    spec = SPECS.get(op.name)
    if spec is None or not isinstance(op, type(spec)):
        raise ValueError(
            f"operator {op.name!r} needs a registered spec of that name that it subclasses"
        )
    if op.name in OPERATORS:
        raise ValueError(f"operator name {op.name!r} is already registered")
    OPERATORS[op.name] = op
    return op


def load_operators() -> dict[str, Operator]:
    """Import the built-in operator modules (idempotent); returns the registry."""
    for module in _BUILTIN_MODULES:
        importlib.import_module(f"raygrow.growth.{module}")
    return OPERATORS


def get_operator(name: str | Operator) -> Operator:
    if isinstance(name, Operator):
        return name
    load_operators()
    if name not in OPERATORS:
        raise ConfigError(
            f"unknown growth operator {name!r}; choose one of: {', '.join(OPERATORS)} "
            "(python -m raygrow.growth list)"
        )
    return OPERATORS[name]


# --------------------------------------------------------------------------- directives
def apply_directives(model: Transformer, directives: Mapping[str, Any], steps_since: int) -> None:
    """Set `branch_scale` of ramped blocks to min(1, steps_since / ramp steps) (MSG mask).

    One event's directives in that event's own layer indices; for a growth history (where later
    growth renumbers layers) use `raygrow.growth.directives.active_directives`."""
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
    branch_scales: Mapping[int, float] | None = None,
) -> tuple[float, torch.Tensor]:
    """(loss, logits) of the model `params` on `batch` in fp32, with `branch_scales` (active
    ramps, layer -> scale) times the directives' ramps at t = 0."""
    with torch.random.fork_rng(devices=[]):  # model init must not consume the caller's RNG
        model = build_model(config, {k: v.float() for k, v in params.items()})
    for i, s in combine_scales(branch_scales or {}, ramp_scales(directives or {}, 0)).items():
        model.layers[i].branch_scale = s
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
    used to measure function preservation (with the active ramps `state.branch_scales`);
    `train_batch_fn(i)` feeds operators that train a phase. The returned state's branch_scales
    are the grown model's at t = 0 (active ramps through the layer plan, times the new ones).
    """
    start = time.perf_counter()
    op = get_operator(operator)
    p = _validate(state, op, opt_policy, train_batch_fn, params)
    new_config = op.target(state.config, p)
    plan = check_plan(
        op.layer_plan(state.config, new_config, p),
        state.config.n_layers,
        new_config.n_layers,
        f"operator {op.name!r}",
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
    # storage the outputs must not share: every input tensor, then every output already made
    taken = {t.untyped_storage().data_ptr() for t in state.params.values()}
    taken |= {t.untyped_storage().data_ptr() for e in state.optim.values() for t in e.values()}
    new_params = _grow_params(op, ctx, taken)
    new_optim = _grow_optim(op, ctx, new_params, taken) if opt_policy != "reset" else {}
    directives = _directives(op, ctx)
    report = _report(op, ctx, new_params, directives, plan, probe_batch, start)
    # the grown model's branch scales at t = 0: active ramps carried through the plan, times
    # the operator's own ramps (what the loop runs right after growth)
    scales = combine_scales(remap_scales(state.branch_scales, plan), ramp_scales(directives, 0))
    return GrowthState(ctx.new, new_params, new_optim, state.step, scales), report


def _validate(
    state: GrowthState,
    op: Operator,
    opt_policy: str,
    train_batch_fn: BatchFn | None,
    params: Mapping[str, Any],
) -> dict[str, Any]:
    """Check policy, input state and params before any tensor work; the resolved params."""
    if opt_policy not in OPT_POLICIES:
        raise ConfigError(
            f"opt_policy={opt_policy!r} is unknown; use one of {', '.join(OPT_POLICIES)}"
        )
    check_params(state.config, state.params, "growth state params")
    _check_optim(state)
    p = op.resolve(state.config, params)
    if op.needs_train_batches and train_batch_fn is None:
        raise ConfigError(
            f"operator {op.name!r} trains its own phase and needs train_batch_fn; pass one "
            "(the loop does) or pick another operator"
        )
    return p


def _grow_params(op: Operator, ctx: GrowthContext, taken: set[int]) -> dict[str, torch.Tensor]:
    """The param pass: grown parameters in module order, in the input's dtype, unaliased."""
    ctx.role = "param"
    state = ctx.state
    src = {k: v.detach().float() for k, v in state.params.items()}
    new_params = op.transform(ctx, src)
    check_params(ctx.new, new_params, f"operator {op.name!r} output")
    new_params = {k: new_params[k] for k in param_fqns(ctx.new)}  # module order
    dtypes = {t.dtype for t in state.params.values()}
    return _unalias(new_params, taken, dtypes.pop() if len(dtypes) == 1 else None)


def _grow_optim(
    op: Operator, ctx: GrowthContext, new_params: Mapping[str, torch.Tensor], taken: set[int]
) -> OptimState:
    """The optimizer passes (exp_avg, exp_avg_sq, step): one AdamW entry per new FQN."""
    state = ctx.state
    by_role = {}
    for role in ("exp_avg", "exp_avg_sq", "step"):
        ctx.role = role
        by_role[role] = op.transform(ctx, _role_sources(state, role))
        check_params(ctx.new, by_role[role], f"operator {op.name!r} {role} output")
    ctx.role = "param"
    step_dtype = next(
        (e["step"].dtype for e in state.optim.values() if isinstance(e.get("step"), torch.Tensor)),
        torch.float32,
    )
    moments = {
        f"{fqn}\0{role}": by_role[role][fqn]
        for role in ("exp_avg", "exp_avg_sq")
        for fqn in new_params
    }
    moments = _unalias(moments, taken, torch.float32)
    new_optim: OptimState = {}
    for fqn in new_params:
        steps = by_role["step"][fqn]
        step = float(steps.max()) if steps.numel() else 0.0
        new_optim[fqn] = {
            "step": torch.tensor(round(step), dtype=step_dtype),
            "exp_avg": moments[f"{fqn}\0exp_avg"],
            "exp_avg_sq": moments[f"{fqn}\0exp_avg_sq"],
        }
    return new_optim


def _directives(op: Operator, ctx: GrowthContext) -> dict[str, Any]:
    """The operator's loop directives, plus the compute of any phase it trained."""
    ctx.role = "param"
    directives = op.directives(ctx)
    if ctx.extra_flops or ctx.extra_sequences:
        directives["extra_flops"] = float(ctx.extra_flops)
        directives["extra_sequences"] = int(ctx.extra_sequences)
    return directives


def _report(
    op: Operator,
    ctx: GrowthContext,
    new_params: Mapping[str, torch.Tensor],
    directives: dict[str, Any],
    plan: list[tuple[int, str]],
    probe_batch: Batch | None,
    start: float,
) -> GrowthReport:
    """Measure loss and logits before/after on the probe batch and describe the event. Active
    ramps count: before at `state.branch_scales`, after at those scales carried through the
    layer plan times the new directives at t = 0 (what the loop runs right after growth)."""
    state, new_config = ctx.state, ctx.new
    probe = probe_batch if probe_batch is not None else default_probe_batch(state.config)
    scales = state.branch_scales
    loss_before, logits_before = evaluate(state.config, state.params, probe, None, scales)
    loss_after, logits_after = evaluate(
        new_config, new_params, probe, directives, remap_scales(scales, plan)
    )
    return GrowthReport(
        operator=op.name,
        params=ctx.p,
        axes=list(op.axes),
        opt_policy=ctx.policy,
        config_before=state.config.to_dict(),
        config_after=new_config.to_dict(),
        n_params_before=state.config.n_params(),
        n_params_after=new_config.n_params(),
        fp_claimed=op.claims_fp(ctx.p),
        loss_before=loss_before,
        loss_after=loss_after,
        max_logit_diff=float((logits_after - logits_before).abs().max()),
        seconds=time.perf_counter() - start,
        directives=directives,
        step=state.step,
        extras=dict(ctx.extras),
        layer_map=[i for i, _ in plan],
        layer_kinds=[k for _, k in plan],
        branch_scales={str(i): float(s) for i, s in sorted(scales.items())},
    )
