"""Search spaces: load them, turn their samples into `GrowthSchedule`s, validate before compute.

A space is a define-by-run function `(trial: optuna.Trial) -> dict` (see `search_spaces`): it
only calls `trial.suggest_*` and returns a *growth sample* `{"stages": [stage, ...]}`, where a
stage names an operator, a growth `factor` relative to the model before it, a trigger (`at` =
fraction of the token budget, or `slope` = Staged Training's loss-slope threshold), the
operator's own params and the optimizer/LR policies. Samples are target-relative: this module
derives the start model by dividing the target by the stage factors (last stage first), asks the
operator what it would grow that model into, and insists that this is the target.

`SpaceRef` is what OptunaSearch holds: a picklable handle (a registry name or an absolute
`file.py:function`) whose call wraps the user function and adds the normalised sample (`growth`)
and a short description (`schedule`) to the trial config. Tune pickles the searcher into the
experiment folder, so a space loaded from a file must be re-loadable by path on `--resume`.
"""

from __future__ import annotations

import importlib.util
import math
import time
import warnings
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from raygrow.errors import ConfigError
from raygrow.model import ModelConfig

RESERVED_KEYS = ("growth", "schedule", "arm")
"""Config keys raygrow adds to every trial; a space must not suggest parameters by these names."""
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

SpaceFn = Callable[[Any], Mapping[str, Any] | None]


# --------------------------------------------------------------------------- loading
def registry() -> dict[str, SpaceFn]:
    from search_spaces import SPACES

    return SPACES


def resolve_space(spec: str) -> str:
    """Canonical space spec: a registry name, or `/abs/path/file.py:function` (checked now)."""
    spec = spec.strip()
    if ":" not in spec or spec in registry():
        if spec not in registry():
            raise ConfigError(
                f"unknown search space {spec!r}; use one of {', '.join(registry())} or "
                "path/to/file.py:function"
            )
        return spec
    path_str, _, fn_name = spec.rpartition(":")
    path = Path(path_str).expanduser().resolve()
    if path.suffix != ".py" or not path.is_file():
        raise ConfigError(
            f"--space {spec!r}: {str(path)!r} is not a Python file; pass path/to/file.py:function"
        )
    canon = f"{path}:{fn_name}"
    _load_file_space(canon)  # fails now (exit 2) rather than inside the search
    return canon


def _load_file_space(spec: str) -> SpaceFn:
    path_str, _, fn_name = spec.rpartition(":")
    path = Path(path_str)
    # a private module name: not registered in sys.modules, never pickled by reference
    module_name = f"_raygrow_user_space_{abs(hash(str(path)))}"
    loader_spec = importlib.util.spec_from_file_location(module_name, path)
    if loader_spec is None or loader_spec.loader is None:
        raise ConfigError(f"--space {spec!r}: cannot import {path}")
    module = importlib.util.module_from_spec(loader_spec)
    try:
        loader_spec.loader.exec_module(module)
    except Exception as exc:  # noqa: BLE001 - any import failure is bad input
        raise ConfigError(
            f"--space {spec!r}: importing {path.name} failed: {type(exc).__name__}: {exc}"
        ) from None
    fn = getattr(module, fn_name, None)
    if not callable(fn):
        names = [n for n, v in vars(module).items() if callable(v) and not n.startswith("_")]
        raise ConfigError(
            f"--space {spec!r}: {path.name} has no function {fn_name!r}; "
            f"it defines: {', '.join(names) or 'nothing callable'}"
        )
    return fn


class SpaceRef:
    """A picklable define-by-run space: `SpaceRef(spec)(trial)` -> trial config additions."""

    def __init__(self, spec: str) -> None:
        self.spec = spec
        self._fn: SpaceFn | None = None

    @property
    def name(self) -> str:
        if ":" in self.spec:
            path, _, fn = self.spec.rpartition(":")
            return f"{Path(path).stem}.{fn}"
        return self.spec

    @property
    def fn(self) -> SpaceFn:
        if self._fn is None:
            self._fn = _load_file_space(self.spec) if ":" in self.spec else registry()[self.spec]
        return self._fn

    def sample(self, trial: Any) -> dict[str, Any]:
        """Run the user's function and normalise its growth sample (ConfigError if malformed)."""
        raw = self.fn(trial)
        return normalize_sample(raw, self.name)

    def __call__(self, trial: Any) -> dict[str, Any]:
        growth = self.sample(trial)
        return {"growth": growth, "schedule": describe(growth), "arm": "grown"}

    def __getstate__(self) -> dict[str, Any]:
        return {"spec": self.spec}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.spec = state["spec"]
        self._fn = None

    def __repr__(self) -> str:
        return f"SpaceRef({self.spec!r})"


# --------------------------------------------------------------------------- samples
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
    from raygrow.growth import get_operator as _get

    for p in planned:
        grown = _get(p.operator).grown_config(current, **p.params)
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


def start_model(growth: Mapping[str, Any], target: ModelConfig) -> ModelConfig:
    planned = plan_stages(growth, target)
    return planned[0].before if planned else target


# --------------------------------------------------------------------------- validation
@dataclass(frozen=True)
class SpaceCheck:
    samples: int
    start_models: Counter
    operators: Counter
    seconds_per_sample: float

    @property
    def common_start(self) -> ModelConfig:
        """Most frequent start model (ties: the larger one), used for the small-only arm."""
        shapes = sorted(
            self.start_models.items(), key=lambda kv: (kv[1], kv[0].n_params()), reverse=True
        )
        return shapes[0][0]


def validate_space(
    ref: SpaceRef,
    target: ModelConfig,
    budget_tokens: int,
    seq_len: int,
    *,
    n: int = 64,
    seed: int = 0,
) -> SpaceCheck:
    """Dry-run `n` samples (seeded RandomSampler, each replayed through a FixedTrial) into
    validated schedules. ConfigError names the first bad sample; nothing is trained."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    starts: Counter = Counter()
    operators: Counter = Counter()
    elapsed = 0.0
    for _ in range(n):
        trial = study.ask()
        t0 = time.perf_counter()
        try:
            added = ref(trial)
        except ConfigError:
            raise
        except ValueError as exc:
            if "distribution" not in str(exc).lower():
                raise ConfigError(f"space {ref.name!r} raised ValueError: {exc}") from None
            raise ConfigError(
                f"space {ref.name!r}: {exc} Give each parameter name one fixed set of choices "
                "or range across trials (use a new name per branch)"
            ) from None
        except Exception as exc:  # noqa: BLE001 - a broken user function is bad input
            raise ConfigError(
                f"space {ref.name!r} raised {type(exc).__name__}: {exc}; a space may only call "
                "trial.suggest_* and return {'stages': [...]}"
            ) from None
        elapsed += time.perf_counter() - t0
        clash = set(trial.params) & set(RESERVED_KEYS)
        if clash:
            raise ConfigError(
                f"space {ref.name!r} suggests parameters named {sorted(clash)}, which raygrow "
                "uses for its own config keys; rename them"
            )
        try:
            replay = ref.sample(optuna.trial.FixedTrial(dict(trial.params), number=trial.number))
        except Exception:  # noqa: BLE001 - asked for a parameter the first call did not
            replay = None
        if replay != added["growth"]:
            raise ConfigError(
                f"space {ref.name!r} is not a pure function of its suggestions (same params, "
                "different sample); a space may not use randomness or I/O"
            )
        try:
            schedule = sample_to_schedule(added["growth"], target, budget_tokens, seq_len)
        except ConfigError as exc:
            raise ConfigError(
                f"space {ref.name!r} sample {trial.params} is invalid for target "
                f"{target.shape}: {exc}"
            ) from None
        starts[schedule.start if schedule else target] += 1
        for st in added["growth"]["stages"]:
            operators[st["operator"]] += 1
        study.tell(trial, 0.0)
    _check_fixed_distributions(ref.name, study.trials)
    return SpaceCheck(n, starts, operators, elapsed / max(1, n))


def _check_fixed_distributions(space: str, trials: list) -> None:
    """Each parameter name must keep one distribution (same choices/range) across trials:
    TPE raises mid-search otherwise ("dynamic value space"); RandomSampler never notices."""
    seen: dict[str, Any] = {}
    for t in trials:
        for name, dist in t.distributions.items():
            if seen.setdefault(name, dist) != dist:
                raise ConfigError(
                    f"space {space!r} suggests {name!r} with different choices or ranges in "
                    f"different trials ({seen[name]} vs {dist}); give each parameter name one "
                    "fixed set of choices or range across trials (use a new name per branch)"
                )


# --------------------------------------------------------------------------- exhaustive grid
class _GridRecorder:
    """A stand-in trial that records a space's categorical choices and answers each with
    `point[name]` (the first choice when there is no point)."""

    def __init__(self, space: str, point: Mapping[str, Any] | None = None) -> None:
        self.space = space
        self.point = dict(point or {})
        self.choices: dict[str, list[Any]] = {}

    def suggest_categorical(self, name: str, choices: Sequence[Any]) -> Any:
        self.choices[name] = list(choices)
        return self.point.get(name, self.choices[name][0])

    def _continuous(self, name: str, *args: Any, **kwargs: Any) -> Any:
        raise ConfigError(
            f"--sampler grid: space {self.space!r} suggests {name!r} from a range; a grid needs "
            "suggest_categorical only (list the values to try), or use --sampler tpe"
        )

    suggest_float = suggest_int = suggest_uniform = suggest_loguniform = _continuous


def grid_of_space(ref: SpaceRef) -> dict[str, list[Any]]:
    """The grid Optuna's GridSampler enumerates: param -> choices, read from the space itself.

    Every combination is run through the space once to make sure it asks for the same
    parameters (a conditional branch would leave grid points undefined)."""
    recorder = _GridRecorder(ref.name)
    ref.sample(recorder)
    grid = recorder.choices
    if not grid:
        raise ConfigError(f"--sampler grid: space {ref.name!r} suggests nothing to grid over")
    for point in grid_points(grid):
        seen = _GridRecorder(ref.name, point)
        ref.sample(seen)
        if seen.choices != grid:
            raise ConfigError(
                f"--sampler grid: space {ref.name!r} asks for different parameters at {point} "
                "(a conditional branch); flatten it for a grid or use --sampler tpe"
            )
    return grid


def grid_points(grid: Mapping[str, Sequence[Any]]) -> list[dict[str, Any]]:
    """Every combination of the grid's choices, in a fixed order."""
    import itertools

    names = list(grid)
    return [dict(zip(names, combo, strict=True)) for combo in itertools.product(*grid.values())]
