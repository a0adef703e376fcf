"""`--warm-start guidelines.csv`: a guideline's predicted schedules as a search's first trials.

The table is the one `python -m raygrow.guidelines` writes: one row per (group, factor,
operator), a group being one (target, budget) with its non-embedding parameters `n_params` (N)
and `tokens_per_param` (D/N), and per row the best growth time `best_growth_frac` (a fraction
of the budget) and the speedup there (`speedup_mean`, `speedup_ci_low/high`, `speedup_bound`).

1. **Range.** The search's target and budget give (N, D/N). Outside the table's [min, max] of
   either (1 % tolerance) the guideline would extrapolate: exit 2, unless `--force` (a warning).
2. **Prediction**, per (factor, operator) present: inverse-distance weighting in
   (log N, log D/N). A group within 0.1 % of the query point (an exact hit) gives its own row;
   otherwise every group that has this (factor, operator) is weighted 1/d^2 (Shepard, power 2)
   and growth time and speedups are weighted means (a NaN leaves its row out of that mean).
   Bounds stay flagged: lower if any weighted row is a lower bound (upper likewise, "mixed"
   if both), `at_edge` if any weighted row is at the edge of its sweep.
3. **Ranking** by predicted speedup: the CI's low end where there is one, else the mean; the
   top k = min(3, --num-samples) are enqueued.
4. **Parameters.** factor -> `g`, growth time -> `grow_at`, operator -> `operator`, onto the
   distributions the space's dry run recorded (`SpaceCheck.distributions`): the nearest choice
   of a categorical parameter, clipped into a float or int range. The space's other parameters
   are left to the sampler. A factor the target's depth does not divide (depth operators), an
   operator the space cannot choose, or a schedule the space turns into an invalid one is
   skipped with a note.
5. **Enqueue** (`raygrow.search.study.enqueue_warm_start`): the persisted study's first trials,
   replicated across `--seeds` like any other; `--resume` never enqueues again. The parent
   MLflow run has the param `warm_start` (the CSV) and the tag `raygrow.warm_start` (the
   schedules).

Torch-free; pandas is imported only when a table is read.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from raygrow.config import ModelConfig
from raygrow.errors import ConfigError

COLUMNS = (
    "group",
    "target",
    "n_params",
    "budget_tokens",
    "tokens_per_param",
    "factor",
    "operator",
    "criterion",
    "best_growth_frac",
    "at_edge",
    "speedup_mean",
    "speedup_ci_low",
    "speedup_ci_high",
    "speedup_bound",
    "n_seeds",
)
"""Columns a guidelines CSV must have (`python -m raygrow.guidelines` writes them)."""
CRITERION = "speedup"
RANGE_TOL = 0.01
"""Relative tolerance of the range check (N and tokens/param)."""
EXACT = 1e-3
"""Distance in (ln N, ln D/N) below which a group is an exact hit (0.1 %)."""
MAX_SCHEDULES = 3
PARAMS = {"factor": "g", "growth_frac": "grow_at", "operator": "operator"}
"""Prediction field -> the space parameter it sets."""
PREFIX = "raygrow.search: warm start:"


# --------------------------------------------------------------------------- the table
def read_guidelines(path: str | Path) -> Any:
    """The guideline's `criterion == "speedup"` rows with a growth time (a DataFrame, typed);
    ConfigError (one line) if the file is missing, unreadable or lacks columns."""
    import pandas as pd

    path = Path(path)
    fix = "pass the guidelines.csv that `python -m raygrow.guidelines --out DIR` wrote"
    if not path.is_file():
        raise ConfigError(f"--warm-start {str(path)!r}: no such file; {fix}")
    try:
        table = pd.read_csv(path)
    except (ValueError, OSError, UnicodeDecodeError) as exc:  # EmptyDataError, ParserError
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ConfigError(
            f"--warm-start {str(path)!r} is not a readable CSV ({first}); {fix}"
        ) from None
    missing = [c for c in COLUMNS if c not in table.columns]
    if missing:
        raise ConfigError(
            f"--warm-start {str(path)!r} lacks columns {', '.join(missing)}; {fix} (a "
            f"guideline table has {', '.join(COLUMNS)})"
        )
    table = table[table["criterion"].astype(str).str.strip() == CRITERION].copy()
    raw = table.copy()  # for the messages
    numeric = ("n_params", "budget_tokens", "tokens_per_param", "best_growth_frac")
    for col in (*numeric, "factor", "speedup_mean", "speedup_ci_low", "speedup_ci_high"):
        table[col] = pd.to_numeric(table[col], errors="coerce")
    for col in ("n_params", "tokens_per_param"):
        bad = table[~(table[col] > 0) | ~table[col].map(math.isfinite)]
        if len(bad):
            raise ConfigError(
                f"--warm-start {str(path)!r}: {col} of group {bad['group'].iloc[0]!r} is "
                f"{str(raw[col][bad.index[0]])!r}, not a positive number; {fix}"
            )
    factor = table["factor"]
    bad = table[~(factor >= 2) | (factor != factor.round())]
    if len(bad):
        raise ConfigError(
            f"--warm-start {str(path)!r}: factor {str(raw['factor'][bad.index[0]])} of group "
            f"{bad['group'].iloc[0]!r} is not an integer >= 2; {fix}"
        )
    frac = table["best_growth_frac"]
    table = table[(frac > 0) & (frac < 1)].copy()
    if table.empty:
        raise ConfigError(
            f"--warm-start {str(path)!r} has no {CRITERION!r} rows with a growth time in "
            f"(0, 1); {fix}"
        )
    table["factor"] = table["factor"].astype(int)
    table["group"] = table["group"].astype(str)
    table["operator"] = table["operator"].astype(str).str.strip()
    table["at_edge"] = table["at_edge"].map(_truthy)
    table["speedup_bound"] = table["speedup_bound"].fillna("").astype(str).str.strip()
    return _valid_groups_only(table.reset_index(drop=True))


def _valid_groups_only(table: Any) -> Any:
    """Leave out groups the validity rule failed (`valid` false): there the small model alone
    matches the target, the regime where any growth "wins". Their names go to
    `table.attrs["invalid_groups"]`; a table with no valid group is kept whole and flagged
    (`attrs["no_valid_group"]`). Tables without a `valid` column predate it: kept whole."""
    table.attrs["invalid_groups"], table.attrs["no_valid_group"] = [], False
    if "valid" not in table.columns:
        return table
    known = table["valid"].map(lambda v: isinstance(v, str) or math.isfinite(float(v)))
    invalid = known & ~table["valid"].map(_truthy)
    if not invalid.any():
        return table
    if invalid.all():
        table.attrs["no_valid_group"] = True
        return table
    kept = table[~invalid].reset_index(drop=True)
    kept.attrs["invalid_groups"] = sorted(set(table["group"][invalid]))
    kept.attrs["no_valid_group"] = False
    return kept


def _truthy(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("true", "1", "yes")
    return bool(value) and not (isinstance(value, float) and math.isnan(value))


def query_point(target: ModelConfig, tokens: int) -> tuple[float, float]:
    """(N, tokens/param) of a search: non-embedding parameters of its target, its budget."""
    n = float(target.n_params(non_embedding=True))
    return n, tokens / n


def check_range(table: Any, target: ModelConfig, tokens: int, force: bool) -> str | None:
    """None inside the table's range of groups; outside: ConfigError, or with `force` the
    warning to print."""
    n, tpp = query_point(target, tokens)
    groups = table.groupby("group")[["n_params", "tokens_per_param"]].first()
    outside = []
    for name, value, col in (("N", n, "n_params"), ("tokens/param", tpp, "tokens_per_param")):
        lo, hi = float(groups[col].min()), float(groups[col].max())
        if not lo * (1 - RANGE_TOL) <= value <= hi * (1 + RANGE_TOL):
            outside.append(f"{name} in [{lo:.4g}, {hi:.4g}]")
    if not outside:
        return None
    text = (
        f"target {target.shape} (N={n:.4g}, {tpp:.4g} tokens/param) is outside the guideline's "
        f"range {' and '.join(outside)} ({len(groups)} groups)"
    )
    if not force:
        raise ConfigError(f"{text}; pass --force to extrapolate")
    return f"{text}; extrapolating it (--force)"


# --------------------------------------------------------------------------- prediction
@dataclass(frozen=True)
class Prediction:
    """The guideline at one (N, tokens/param) for one (factor, operator)."""

    factor: int
    operator: str
    growth_frac: float
    speedup_mean: float
    speedup_ci_low: float
    speedup_ci_high: float
    bound: str
    """exact | lower | upper | mixed ('' when no row had a speedup)."""
    at_edge: bool
    groups: tuple[str, ...]
    """Groups it came from, largest weight first."""
    exact: bool

    @property
    def rank_key(self) -> tuple[float, float]:
        low, mean = self.speedup_ci_low, self.speedup_mean
        first = low if math.isfinite(low) else mean
        return (
            first if math.isfinite(first) else -math.inf,
            mean if math.isfinite(mean) else -math.inf,
        )

    def describe(self) -> str:
        mark = {"lower": ">", "upper": "<"}.get(self.bound, "")
        if not math.isfinite(self.speedup_mean):
            text = "speedup unknown"
        else:
            text = f"speedup {mark}{self.speedup_mean:.2f}x"
        if math.isfinite(self.speedup_ci_low) and math.isfinite(self.speedup_ci_high):
            text += f" [{self.speedup_ci_low:.2f}, {self.speedup_ci_high:.2f}]"
        if self.bound in ("lower", "upper", "mixed"):
            text += f" ({self.bound} bound)"
        if self.at_edge:
            text += " (at the sweep's edge)"
        how = "exact" if self.exact else "interpolated"
        return f"{text} from {', '.join(self.groups)} ({how})"


def predict(table: Any, n_params: float, tokens_per_param: float) -> list[Prediction]:
    """Every (factor, operator) of the table at (N, tokens/param), best first (module doc)."""
    import numpy as np

    qx, qy = math.log(n_params), math.log(tokens_per_param)
    found = []
    for (factor, operator), rows in table.groupby(["factor", "operator"], sort=True):
        dist = np.hypot(np.log(rows["n_params"]) - qx, np.log(rows["tokens_per_param"]) - qy)
        dist = dist.to_numpy()
        exact = bool(dist.min() < EXACT)
        if exact:
            weights = (np.arange(len(dist)) == dist.argmin()).astype(float)
        else:
            weights = 1.0 / dist**2
        used = rows[weights > 0]
        w = weights[weights > 0]
        speedup = _wmean(used["speedup_mean"], w)
        with_value = used["speedup_mean"].map(math.isfinite).to_numpy()
        bounds = set(used["speedup_bound"][with_value])
        bound = _combine_bounds(bounds)
        order = np.argsort(-w, kind="stable")
        found.append(
            Prediction(
                factor=int(factor),
                operator=str(operator),
                growth_frac=_wmean(used["best_growth_frac"], w),
                speedup_mean=speedup,
                speedup_ci_low=_wmean(used["speedup_ci_low"], w),
                speedup_ci_high=_wmean(used["speedup_ci_high"], w),
                bound=bound,
                at_edge=bool(used["at_edge"].any()),
                groups=tuple(dict.fromkeys(used["group"].iloc[order])),
                exact=exact,
            )
        )
    return sorted(found, key=lambda p: p.rank_key, reverse=True)


def _wmean(values: Any, weights: Any) -> float:
    v = values.to_numpy(dtype=float)
    ok = [math.isfinite(x) for x in v]
    total = sum(w for w, good in zip(weights, ok, strict=True) if good)
    if not total:
        return math.nan
    return float(sum(w * x for w, x, good in zip(weights, v, ok, strict=True) if good) / total)


def _combine_bounds(bounds: Collection[str]) -> str:
    lower, upper = "lower" in bounds, "upper" in bounds
    if lower and upper:
        return "mixed"
    if lower or upper:
        return "lower" if lower else "upper"
    return "exact" if bounds else ""


# --------------------------------------------------------------------------- space parameters
class Skip(Exception):
    """A prediction that cannot become a schedule of this space (the reason is the note)."""


def snap(name: str, value: Any, dist: Any) -> tuple[Any, str | None]:
    """`value` in the distribution `dist` of parameter `name`: the nearest choice of a
    categorical, clipped into a float/int range (on its step). Returns (value, note or None)."""
    import optuna.distributions as od

    if isinstance(dist, od.CategoricalDistribution):
        choices = list(dist.choices)
        if value in choices and type(value) is not bool:
            return choices[choices.index(value)], None
        numeric = [c for c in choices if _is_number(c)]
        if not _is_number(value) or not numeric:
            raise Skip(f"{name}={value!r} is not among the space's choices {choices}")
        out = min(numeric, key=lambda c: abs(float(c) - float(value)))
    elif isinstance(dist, od.FloatDistribution | od.IntDistribution):
        out = min(max(float(value), dist.low), dist.high)
        if dist.step is not None:
            out = dist.low + round((out - dist.low) / dist.step) * dist.step
            out = min(out, dist.high)
        if isinstance(dist, od.IntDistribution):
            out = int(round(out))
    else:
        raise Skip(f"{name}: cannot set a {type(dist).__name__}")
    if out == value:
        return out, None
    return out, f"{name} {value:g} -> {out:g}"


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _depth_operator(operator: str) -> bool:
    """Whether `operator` grows depth (unknown names, e.g. recipes: assumed G_stack-like)."""
    import raygrow.growth  # noqa: F401 - registers the operator specs (torch-free)
    from raygrow.growth.spec import SPECS

    spec = SPECS.get(operator)
    return spec is None or "depth" in spec.axes


def to_params(
    pred: Prediction,
    distributions: Mapping[str, Any],
    target: ModelConfig,
    operators: Collection[str],
) -> tuple[dict[str, Any], list[str]]:
    """Optuna params of one prediction (+ notes on snapping); Skip if it does not fit."""
    if _depth_operator(pred.operator) and target.n_layers % pred.factor:
        raise Skip(f"the target's {target.n_layers} layers are not divisible by g={pred.factor}")
    params: dict[str, Any] = {}
    notes: list[str] = []
    values = {"factor": pred.factor, "growth_frac": pred.growth_frac, "operator": pred.operator}
    for field, name in PARAMS.items():
        if name not in distributions:
            continue
        params[name], note = snap(name, values[field], distributions[name])
        if note:
            notes.append(note)
    if "operator" not in distributions and operators and pred.operator not in operators:
        raise Skip(f"space grows with {', '.join(sorted(operators))} only")
    return params, notes


class _Answers:
    """A stand-in trial: `params` where set, else a categorical's first choice or a range's
    low end (enough to check that a schedule is valid; the sampler chooses those later)."""

    def __init__(self, params: Mapping[str, Any]) -> None:
        self.params = dict(params)

    def suggest_categorical(self, name: str, choices: Sequence[Any]) -> Any:
        return self.params.get(name, list(choices)[0])

    def suggest_float(self, name: str, low: float, high: float, **kwargs: Any) -> Any:
        return self.params.get(name, low)

    def suggest_int(self, name: str, low: int, high: int, **kwargs: Any) -> Any:
        return self.params.get(name, low)

    suggest_uniform = suggest_loguniform = suggest_discrete_uniform = suggest_float


# --------------------------------------------------------------------------- the plan
@dataclass(frozen=True)
class WarmStart:
    """One schedule to enqueue: the space's params and the prediction they come from."""

    params: dict[str, Any]
    prediction: Prediction
    notes: tuple[str, ...] = ()

    def describe(self) -> str:
        params = ", ".join(f"{k}={_fmt(v)}" for k, v in self.params.items())
        snapped = f" (snapped: {'; '.join(self.notes)})" if self.notes else ""
        return f"{params}{snapped}; predicted {self.prediction.describe()}"

    def entry(self) -> dict[str, Any]:
        """The study's record of it (`raygrow.search.study.WARM_START_ATTR`)."""
        return {"params": self.params, "predicted": self.prediction.describe()}


def _fmt(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def plan(cfg: Any, check: Any = None, log: Callable[[str], None] = print) -> list[WarmStart]:
    """The schedules `cfg.warm_start` predicts for the search `cfg` (a SearchConfig), best
    first; notes (skips, extrapolation) go to `log`. ConfigError: the CSV, the range (without
    `cfg.force`), a space without `g`/`grow_at`, or no schedule left. `check`: the space's
    SpaceCheck (dry-run again if None)."""
    from raygrow.search.samples import sample_to_schedule
    from raygrow.search.spaces import SpaceRef, validate_space

    ref = SpaceRef(cfg.space)
    if check is None:
        check = validate_space(ref, cfg.target, cfg.tokens, cfg.seq_len, seed=cfg.seed)
    missing = [p for p in ("g", "grow_at") if p not in check.distributions]
    if missing:
        raise ConfigError(
            f"--warm-start: space {ref.name!r} suggests no {' or '.join(map(repr, missing))} "
            "(growth factor g, growth time grow_at); use a space with both, e.g. gstack or "
            "timing_factor"
        )
    table = read_guidelines(cfg.warm_start)
    warning = check_range(table, cfg.target, cfg.tokens, cfg.force)
    if warning:
        log(f"raygrow.search: warning: {warning}")
    if table.attrs["invalid_groups"]:
        log(
            f"{PREFIX} left out groups that are not valid (the target did not beat the small "
            f"model by more than seed noise): {', '.join(table.attrs['invalid_groups'])}"
        )
    if table.attrs["no_valid_group"]:
        log(
            f"raygrow.search: warning: no group of {cfg.warm_start} is valid (target within "
            "seed noise of the small model, where any growth wins); its predictions may not "
            "carry over"
        )
    k = min(MAX_SCHEDULES, cfg.num_samples)
    chosen: list[WarmStart] = []
    for pred in predict(table, *query_point(cfg.target, cfg.tokens)):
        if len(chosen) == k:
            break
        what = f"g={pred.factor} {pred.operator} at {pred.growth_frac:.3g}"
        try:
            params, notes = to_params(pred, check.distributions, cfg.target, check.operators)
            if any(ws.params == params for ws in chosen):
                raise Skip(f"the same parameters as a better one ({params})")
            try:
                growth = ref.sample(_Answers(params))
                sample_to_schedule(growth, cfg.target, cfg.tokens, cfg.seq_len)
            except Exception as exc:  # noqa: BLE001 - any failure: not a schedule of this space
                raise Skip(str(exc).splitlines()[0] if str(exc) else type(exc).__name__) from None
        except Skip as why:
            log(f"{PREFIX} skipped {what} ({', '.join(pred.groups)}): {why}")
            continue
        chosen.append(WarmStart(params, pred, tuple(notes)))
    if not chosen:
        raise ConfigError(
            f"--warm-start {cfg.warm_start!r}: no predicted schedule fits space {ref.name!r} "
            f"and target {cfg.target.shape} (see the notes above); pick another space or target"
        )
    return chosen


def tag_text(cfg: Any, chosen: Sequence[WarmStart]) -> str:
    """The parent run's `raygrow.warm_start` tag: the CSV and the enqueued schedules."""
    return f"{cfg.warm_start}: " + " | ".join(ws.describe() for ws in chosen)


def enqueue(cfg: Any, chosen: Sequence[WarmStart]) -> int:
    """Enqueue the schedules into the search's persisted study (created if new); 0 when it
    holds warm-start trials already."""
    import optuna

    from raygrow.search.study import enqueue_warm_start, make_storage

    study = optuna.create_study(
        storage=make_storage(cfg.experiment_dir),
        study_name=cfg.experiment,
        direction="minimize",  # val_loss, as the searcher creates it
        load_if_exists=True,
    )
    return enqueue_warm_start(study, [ws.entry() for ws in chosen])


def start(cfg: Any, chosen: Sequence[WarmStart], log: Callable[[str], None] = print) -> None:
    """Enqueue, print one line per schedule, and tag the parent MLflow run (CLI)."""
    from raygrow.search.callbacks import get_tracker

    if not enqueue(cfg, chosen):
        log(f"{PREFIX} the study has its warm-start trials already; none enqueued")
        return
    for i, ws in enumerate(chosen, 1):
        log(f"{PREFIX} {i}/{len(chosen)} {ws.describe()}")
    get_tracker(cfg.tracking_uri, cfg.experiment).tag_search(
        {"raygrow.warm_start": tag_text(cfg, chosen)}
    )
