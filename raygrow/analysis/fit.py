"""Growth-timing guideline: d*(N, C) fitted from searches, with bootstrap confidence intervals.

1. Group the completed `grown` trials by target size N (non-embedding parameters when the target
   shape is known), token budget D (C = 6·N·D, as in Du et al. 2024), growth factor g and
   operator: timings are compared only within one (N, C, g, operator) group, never pooled over
   factors or operators. Within a group, average the speedup over seeds at each distinct timing
   d; the optimal timing d* is the best timing, refined by the vertex of a parabola through it
   and its two neighbours in log10(d) (when it is interior; at the edge of the searched range d*
   is that edge and the group is flagged `at_edge`: the true optimum may lie outside).
   A group whose best timing is at the edge, or whose best timing's speedup is a bound (some
   seed beat every scratch budget), gives a bound on d*, not a value: it is listed with the
   reason and left out of the fit (censored, never fitted as if exact).
2. Fit, per (g, operator) family over its (N, C) groups, by least squares:
       form "gstack":   log10 d* = a·log10 N + b / log10 C + c   (G_stack's form; a vs 0.88)
       form "powerlaw": log10 d* = a·log10 N + b·log10 C + c     (d* ∝ N^a C^b)
   A term is only fitted when it varies: one target size N leaves `a` out, one budget leaves `b`
   out. The fit needs >= 3 groups and a full-rank design; otherwise it reports why, no numbers.
3. Bootstrap (default 1000 replicates): resample the trials of each group with replacement,
   recompute every d*, refit; the intervals are percentiles of the refitted coefficients (and
   of the predictions, for the plot's band). They carry the run-to-run noise of d*, not the
   model's misspecification.

G_stack's own guideline `log10 d = 0.88·log10 N + 163.27/log10 C − 5.74` was fitted on 410M–3B
targets; at CPU scale it predicts d far beyond the whole budget, so it is shown for comparison
only.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from raygrow.analysis.cells import label_groups
from raygrow.results import GSTACK, gstack_growth_tokens

FORMS = ("gstack", "powerlaw")


def optimal_timing(log_d: np.ndarray, speedup: np.ndarray) -> tuple[float, bool, int]:
    """(log10 d*, at_edge, number of distinct timings) from one group's trials."""
    xs, inverse = np.unique(np.asarray(log_d, float), return_inverse=True)
    ys = np.bincount(inverse, weights=np.asarray(speedup, float)) / np.bincount(inverse)
    k = len(xs)
    i = int(np.argmax(ys))
    if k < 3 or i in (0, k - 1):
        return float(xs[i]), True, k  # one or two timings, or the best one is an edge
    x0, x1, x2 = xs[i - 1 : i + 2]
    y0, y1, y2 = ys[i - 1 : i + 2]
    den = (x1 - x0) * (y1 - y2) - (x1 - x2) * (y1 - y0)
    if den == 0:
        return float(x1), False, k
    vertex = x1 - 0.5 * ((x1 - x0) ** 2 * (y1 - y2) - (x1 - x2) ** 2 * (y1 - y0)) / den
    return float(min(max(vertex, x0), x2)), False, k


@dataclass
class TimingGroup:
    n_params: float
    budget_tokens: float
    experiments: str
    log_d: np.ndarray
    speedup: np.ndarray
    n_seeds: int
    factor: float = math.nan
    operator: str = "none"
    bounded: np.ndarray | None = None
    """Per trial: its speedup is a bound (`>x` / `<x`), not a value."""

    @property
    def compute(self) -> float:
        return 6.0 * self.n_params * self.budget_tokens

    @property
    def family(self) -> tuple[float, str]:
        return (self.factor, self.operator)

    def d_star(self) -> tuple[float, bool, int]:
        return optimal_timing(self.log_d, self.speedup)

    def censored(self) -> str:
        """Why this group's d* is a bound ('' when it is a value the fit may use)."""
        x, edge, k = self.d_star()
        if k < 2:
            return "one timing"
        if edge:
            return "best timing at the edge of the searched range"
        if self.bounded is not None:
            xs = np.round(self.log_d, 6)
            best = xs[np.argmin(np.abs(xs - x))]
            if self.bounded[xs == best].any():
                return "best timing's speedup is a bound"
        return ""


def timing_groups(trials: pd.DataFrame) -> list[TimingGroup]:
    """Completed grown trials with a timing and a speedup, grouped by (N, D, g, operator)."""
    trials = label_groups(trials)
    trials = trials.assign(
        factor=pd.to_numeric(trials["factor"], errors="coerce").fillna(-1.0),
        operator=trials["operator"].fillna("none").astype(str),
    )
    ok = (
        (trials["arm"] == "grown")
        & (trials["status_kind"] == "completed")
        & (trials["growth_tokens"] > 0)
        & np.isfinite(trials["speedup_vs_scratch"])
        & np.isfinite(trials["n_params"])
        & np.isfinite(trials["budget_tokens"])
    )
    groups = []
    keys = ["n_params_nonemb", "budget_tokens", "factor", "operator"]
    for (n, d, g_factor, op), g in trials[ok].groupby(keys, sort=True):
        bound = g["speedup_bound"] if "speedup_bound" in g else pd.Series("", index=g.index)
        groups.append(
            TimingGroup(
                n_params=float(n),
                budget_tokens=float(d),
                experiments=",".join(sorted(set(g["experiment"]))),
                log_d=np.log10(g["growth_tokens"].to_numpy(float)),
                speedup=g["speedup_vs_scratch"].to_numpy(float),
                n_seeds=int(g["seed"].nunique()),
                factor=float(g_factor),
                operator=str(op),
                bounded=bound.fillna("").isin(["lower", "upper"]).to_numpy(),
            )
        )
    return groups


def fit_families(
    groups: Sequence[TimingGroup], form: str = "gstack", n_boot: int = 1000, seed: int = 0
) -> dict[tuple[float, str], TimingFit]:
    """One timing fit per (growth factor, operator) family over its (N, C) groups."""
    families: dict[tuple[float, str], list[TimingGroup]] = {}
    for g in groups:
        families.setdefault(g.family, []).append(g)
    return {
        fam: fit_timing(gs, form=form, n_boot=n_boot, seed=seed)
        for fam, gs in sorted(families.items())
    }


@dataclass
class TimingFit:
    form: str
    ok: bool
    note: str
    terms: list[str] = field(default_factory=list)
    coef: dict[str, float] = field(default_factory=dict)
    ci: dict[str, tuple[float, float]] = field(default_factory=dict)
    n_groups: int = 0
    residual_std: float = math.nan
    boot: np.ndarray | None = None
    level: float = 0.95

    def _design(self, n_params: np.ndarray, compute: np.ndarray) -> np.ndarray:
        return design(self.terms, self.form, n_params, compute)

    def predict(self, n_params, compute) -> np.ndarray:
        """log10 d* at (N, C)."""
        x = self._design(np.atleast_1d(n_params), np.atleast_1d(compute))
        return x @ np.array([self.coef[t] for t in self.terms])

    def band(self, n_params, compute) -> tuple[np.ndarray, np.ndarray]:
        """Bootstrap percentile band of log10 d* at (N, C)."""
        x = self._design(np.atleast_1d(n_params), np.atleast_1d(compute))
        preds = self.boot @ x.T  # (B, points)
        q = (1 - self.level) / 2 * 100
        return np.nanpercentile(preds, q, axis=0), np.nanpercentile(preds, 100 - q, axis=0)

    def table(self) -> pd.DataFrame:
        rows = []
        for t in ("a", "b", "c"):
            lo, hi = self.ci.get(t, (math.nan, math.nan))
            rows.append(
                {
                    "form": self.form,
                    "term": TERM_TEXT[self.form][t],
                    "coef": self.coef.get(t, math.nan),
                    "ci_low": lo,
                    "ci_high": hi,
                    "gstack": GSTACK[t] if self.form == "gstack" else math.nan,
                    "fitted": t in self.terms,
                    "n_groups": self.n_groups,
                    "residual_std_log10": self.residual_std,
                }
            )
        return pd.DataFrame(rows)


TERM_TEXT = {
    "gstack": {"a": "a: log10 N", "b": "b: 1/log10 C", "c": "c: intercept"},
    "powerlaw": {"a": "a: log10 N", "b": "b: log10 C", "c": "c: intercept"},
}


def design(terms: Sequence[str], form: str, n_params, compute) -> np.ndarray:
    n = np.log10(np.asarray(n_params, float))
    c = np.log10(np.asarray(compute, float))
    cols = {"a": n, "b": 1.0 / c if form == "gstack" else c, "c": np.ones_like(n)}
    return np.stack([cols[t] for t in terms], axis=1)


def fit_timing(
    groups: Sequence[TimingGroup],
    form: str = "gstack",
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> TimingFit:
    """Fit log10 d* over groups (see module docstring); `ok=False` with a note when it cannot."""
    if form not in FORMS:
        raise ValueError(f"form {form!r} not in {FORMS}")
    usable = [g for g in groups if not g.censored()]
    n_total = len(groups)
    n_censored = n_total - len(usable)
    need = (
        "a fit needs at least 3 (N, C) groups, each with completed grown trials at >= 2 "
        "growth timings, spanning >= 2 target sizes N and/or >= 2 budgets C; run more searches "
        "(other --target / --budget-flops) and pass them all with --experiment"
    )
    if len(usable) < 3:
        return TimingFit(
            form,
            False,
            f"Too few runs to fit the timing guideline: {len(usable)} usable (N, C) group(s) "
            f"of {n_total} ({n_censored} give only a bound on d*: best timing at the edge or "
            f"a bounded speedup); {need}.",
            n_groups=len(usable),
        )
    n_params = np.array([g.n_params for g in usable])
    compute = np.array([g.compute for g in usable])
    terms = [t for t, v in (("a", n_params), ("b", compute)) if len(np.unique(v)) >= 2] + ["c"]
    x = design(terms, form, n_params, compute)
    if len(terms) == 1 or np.linalg.matrix_rank(x) < len(terms):
        return TimingFit(
            form,
            False,
            "Cannot fit the timing guideline: the groups do not separate N from C (every target "
            f"size was trained at one budget proportional to it); {need}.",
            n_groups=len(usable),
        )
    y = np.array([g.d_star()[0] for g in usable])
    coef, *_ = np.linalg.lstsq(x, y, rcond=None)
    resid = y - x @ coef
    dof = len(y) - len(terms)
    rng = np.random.default_rng(seed)
    boot = np.full((n_boot, len(terms)), np.nan)
    for b in range(n_boot):
        yb = np.empty(len(usable))
        for j, g in enumerate(usable):
            pick = rng.integers(0, len(g.log_d), len(g.log_d))
            yb[j] = optimal_timing(g.log_d[pick], g.speedup[pick])[0]
        boot[b], *_ = np.linalg.lstsq(x, yb, rcond=None)
    q = (1 - level) / 2 * 100
    lo, hi = np.nanpercentile(boot, q, axis=0), np.nanpercentile(boot, 100 - q, axis=0)
    notes = []
    if "a" not in terms:
        notes.append("one target size N: the N exponent a is not identifiable")
    if "b" not in terms:
        notes.append("one budget C: the compute term b is not identifiable")
    if dof == 0:
        notes.append(
            "as many groups as coefficients: the fit is exact, intervals come from d* noise"
        )
    if n_censored:
        notes.append(
            f"{n_censored} of {n_total} groups left out: their d* is a bound (best timing at "
            "the edge of the searched range, or a bounded speedup), not a value"
        )
    return TimingFit(
        form=form,
        ok=True,
        note="; ".join(notes),
        terms=terms,
        coef={t: float(v) for t, v in zip(terms, coef, strict=True)},
        ci={t: (float(a), float(b)) for t, a, b in zip(terms, lo, hi, strict=True)},
        n_groups=len(usable),
        residual_std=float(np.sqrt(resid @ resid / dof)) if dof > 0 else 0.0,
        boot=boot,
        level=level,
    )


def groups_table(groups: Sequence[TimingGroup], n_boot: int = 200, seed: int = 0) -> pd.DataFrame:
    """One row per (N, C) group: d*, its bootstrap interval, and G_stack's prediction."""
    rng = np.random.default_rng(seed)
    rows = []
    for g in groups:
        x, edge, k = g.d_star()
        reps = [
            optimal_timing(g.log_d[p], g.speedup[p])[0]
            for p in (rng.integers(0, len(g.log_d), len(g.log_d)) for _ in range(n_boot))
        ]
        gs = gstack_growth_tokens(g.n_params, g.compute)
        rows.append(
            {
                "experiments": g.experiments,
                "factor": g.factor,
                "operator": g.operator,
                "n_params": g.n_params,
                "budget_tokens": g.budget_tokens,
                "compute_6nd": g.compute,
                "n_trials": len(g.log_d),
                "n_timings": k,
                "n_seeds": g.n_seeds,
                "d_star_tokens": 10**x,
                "d_star_ci_low": 10 ** np.percentile(reps, 2.5),
                "d_star_ci_high": 10 ** np.percentile(reps, 97.5),
                "d_star_frac": 10**x / g.budget_tokens,
                "at_edge": bool(edge),
                "censored": g.censored(),
                "best_speedup": float(np.max(g.speedup)),
                "gstack_d_tokens": gs,
                "gstack_d_over_budget": gs / g.budget_tokens,
            }
        )
    return pd.DataFrame(rows)
