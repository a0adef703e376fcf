"""Search spaces: load them (registry name or `file.py:function`), dry-run them before compute,
and list a space's grid for `--sampler grid`.

A space is a define-by-run function `(trial: optuna.Trial) -> dict` (see `search_spaces`): it
only calls `trial.suggest_*` and returns a growth sample (`raygrow.search.samples` normalises it
and turns it into a `GrowthSchedule`).

`SpaceRef` is what OptunaSearch holds: a picklable handle (a registry name or an absolute
`file.py:function`) whose call wraps the user function and adds the normalised sample (`growth`)
and a short description (`schedule`) to the trial config. Tune pickles the searcher into the
experiment folder, so a space loaded from a file must be re-loadable by path on `--resume`.
"""

from __future__ import annotations

import importlib.util
import time
import warnings
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from raygrow.config import ModelConfig
from raygrow.errors import ConfigError
from raygrow.search.samples import describe, normalize_sample, sample_to_schedule

RESERVED_KEYS = ("growth", "schedule", "arm")
"""Config keys raygrow adds to every trial; a space must not suggest parameters by these names."""
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


# --------------------------------------------------------------------------- validation
@dataclass(frozen=True)
class SpaceCheck:
    samples: int
    start_models: Counter
    operators: Counter
    seconds_per_sample: float
    distributions: dict[str, Any] = field(default_factory=dict)
    """Parameter name -> its Optuna distribution (one per name, checked)."""

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
    distributions = _check_fixed_distributions(ref.name, study.trials)
    return SpaceCheck(n, starts, operators, elapsed / max(1, n), distributions)


def _check_fixed_distributions(space: str, trials: list) -> dict[str, Any]:
    """Each parameter name must keep one distribution (same choices/range) across trials:
    TPE raises mid-search otherwise ("dynamic value space"); RandomSampler never notices.
    Returns name -> distribution."""
    seen: dict[str, Any] = {}
    for t in trials:
        for name, dist in t.distributions.items():
            if seen.setdefault(name, dist) != dist:
                raise ConfigError(
                    f"space {space!r} suggests {name!r} with different choices or ranges in "
                    f"different trials ({seen[name]} vs {dist}); give each parameter name one "
                    "fixed set of choices or range across trials (use a new name per branch)"
                )
    return seen


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
