"""Synthetic searches with a known answer, for tests, demos and the UI screenshot.

Nothing here trains a model. Losses follow a toy compute law `L(C) = E + B·(C/1e13)^-0.3`; an
annealed scratch run at budget D ends on it; a grown run behaves like scratch with its compute
multiplied by an efficiency `s(d) = 1 + (s_max − 1)·exp(−½(log10(d/d*)/w)²)` that peaks at the
planted optimal timing d*, times an operator quality. Curves are logged through `SearchTracker`
exactly as a search would (metrics at step = tokens, growth events, status, artifacts).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from raygrow.model import ModelConfig
from raygrow.speedup import speedup_at_matched_loss

E, B, ALPHA, C0 = 1.2, 0.35, 0.3, 1e13
LOSS_INIT = math.log(256)
OPERATOR_QUALITY = {"stack": 1.0, "stack_zero": 0.97, "hypercloning": 0.93, "interleave": 0.9}


def law(flops: float | np.ndarray, offset: float = 0.0):
    """Annealed loss at compute `flops` (nats/token)."""
    return E + offset + B * (np.asarray(flops, float) / C0) ** -ALPHA


@dataclass
class Plan:
    target: ModelConfig
    budget_tokens: int
    d_star_frac: float = 0.2
    s_max: float = 1.4
    width: float = 0.35
    seq_len: int = 256

    @property
    def n_params(self) -> int:
        return self.target.n_params()

    def efficiency(self, d: float, operator: str, factor: float) -> float:
        x = math.log10(d / (self.d_star_frac * self.budget_tokens)) / self.width
        s = 1 + (self.s_max - 1) * math.exp(-0.5 * x * x)
        return s * OPERATOR_QUALITY.get(operator, 0.9) * (1.0 if factor <= 2 else 0.97)


def _curve(tokens: np.ndarray, flops: np.ndarray, final: float, loss_fn) -> np.ndarray:
    """Un-annealed curve ending exactly at `final` (the LR decay's gain arrives at the end)."""
    progress = tokens / tokens[-1]
    raw = np.minimum(loss_fn(flops) + 0.06 * (1 - progress) ** 0.5, LOSS_INIT)
    return raw - (raw[-1] - final)


def log_search(
    tracker,
    plan: Plan,
    *,
    seeds: Sequence[int] = (0,),
    timings: Sequence[float] = (0.05, 0.1, 0.2, 0.4),
    factors: Sequence[int] = (2,),
    operators: Sequence[str] = ("stack",),
    scratch_budgets: Sequence[float] = (0.5, 0.75, 1.0),
    noise: float = 0.004,
    n_evals: int = 12,
    stopped: int = 0,
    rng_seed: int = 0,
) -> dict[str, str]:
    """Log one synthetic search (parent + scratch/small/grown children); trial_id -> run_id."""
    rng = np.random.default_rng(rng_seed)
    tgt, D, seq = plan.target, plan.budget_tokens, plan.seq_len
    tracker.start_search(
        {
            "space": "synthetic",
            "target": tgt.shape,
            "budget_tokens": D,
            "seeds": list(seeds),
            "timings": list(timings),
            "factors": list(factors),
            "operators": list(operators),
        },
        {"raygrow.search": tracker.experiment, "synthetic": "true"},
    )
    runs: dict[str, str] = {}
    scratch: dict[int, list[tuple[float, float]]] = {}  # seed -> annealed (flops, loss)

    def emit(trial, arm, params, tokens, flops, loss, n_params, status, events=()):
        runs[trial] = tracker.trial_run(trial, params, arm)
        for i, (t, f, v) in enumerate(zip(tokens, flops, loss, strict=True)):
            n = n_params(t) if callable(n_params) else n_params
            tracker.log_metrics(
                trial,
                {"val_loss": v, "val_bpb": v / math.log(2), "train_loss": v + 0.01,
                 "tokens": t, "flops": f, "tokens_per_s": 9000.0 + 50 * i, "lr": 2e-3,
                 "n_params": n, "mfu": 0.21},
                step=int(t),
            )  # fmt: skip
        if events:
            tracker.log_growth_events(trial, list(events))
        tags: dict = {"budget_tokens": D}
        if arm == "scratch" and status == "completed":
            scratch.setdefault(params["seed"], []).append((float(flops[-1]), float(loss[-1])))
        if arm != "scratch" and scratch.get(params["seed"]):  # as the search reports it
            sp = speedup_at_matched_loss(scratch[params["seed"]], float(flops[-1]), float(loss[-1]))
            tags.update(speedup_vs_scratch=sp.value, speedup_text=str(sp))
        tracker.finish_trial(trial, status, tags, {"schedule": params})

    fpt = 6 * plan.n_params
    for seed in seeds:
        for frac in scratch_budgets:
            d_run = int(D * frac)
            tokens = np.linspace(d_run / n_evals, d_run, n_evals)
            flops = fpt * tokens
            final = float(law(flops[-1]) + rng.normal(0, noise))
            loss = _curve(tokens, flops, final, law)
            emit(f"scratch-{frac:g}D-s{seed}", "scratch",
                 {"seed": seed, "tokens": d_run, "model": tgt.shape},
                 tokens, flops, loss, plan.n_params, "completed")  # fmt: skip
        for g in factors:
            small = tgt.replace(n_layers=max(1, tgt.n_layers // g))
            n_s = small.n_params()
            if g == factors[0]:
                tokens = np.linspace(D / n_evals, D, n_evals)
                flops = 6 * n_s * tokens
                final = float(law(flops[-1], 0.08) + rng.normal(0, noise))
                loss = _curve(tokens, flops, final, lambda f: law(f, 0.08))
                emit(f"small-s{seed}", "small", {"seed": seed, "tokens": D, "model": small.shape},
                     tokens, flops, loss, n_s, "completed")  # fmt: skip
            for op in operators:
                for frac in timings:
                    d = int(D * frac)
                    trial = f"grow-{op}-x{g}-d{frac:g}-s{seed}"
                    tokens = np.linspace(D / n_evals, D, n_evals)
                    tokens = np.unique(np.append(tokens, d))
                    flops = np.where(
                        tokens <= d, 6 * n_s * tokens, 6 * n_s * d + fpt * (tokens - d)
                    )
                    s = plan.efficiency(d, op, g)
                    final = float(law(s * flops[-1]) + rng.normal(0, noise))

                    def loss_fn(f, d_flops=6 * n_s * d, s=s):
                        before = law(f, 0.08)
                        after = law(s * f) + 0.15 * np.exp(-(f - d_flops) / (0.15 * d_flops))
                        return np.where(f <= d_flops, before, after)

                    loss = _curve(tokens, flops, final, loss_fn)
                    status = "completed"
                    if stopped and len(runs) % 5 == 4:
                        cut = max(2, len(tokens) // 2)
                        tokens, flops, loss = tokens[:cut], flops[:cut], loss[:cut]
                        status = f"stopped by ASHA at FLOPs {flops[-1]:.3g}"
                        stopped -= 1
                    event = {
                        "operator": op, "loss_before": float(loss_fn(6 * n_s * d * 0.999)),
                        "loss_after": float(loss_fn(6 * n_s * d * 0.999)) + 0.2,
                        "n_params_before": n_s, "n_params_after": plan.n_params,
                        "config_before": small.to_dict(), "config_after": tgt.to_dict(),
                        "tokens": d, "flops": 6 * n_s * d, "stage": 0, "step": d // (16 * seq),
                    }  # fmt: skip
                    params = {
                        "seed": seed, "tokens": D, "operator": op, "factor": g,
                        "grow_at_frac": frac,
                        "stages": [{"operator": op, "at_tokens": d, "factor": g}],
                    }  # fmt: skip
                    emit(trial, "grown", params, tokens, flops, loss,
                         lambda t, d=d, n_s=n_s: n_s if t <= d else plan.n_params,
                         status, [event] if tokens[-1] >= d else [])  # fmt: skip
    return runs
