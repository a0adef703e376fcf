"""Shared by timing_factor.py and search_efficiency.py: run `python -m raygrow.search` as a
subprocess (the real CLI, Ray, MLflow) into a benchmark's experiment folder and read it back
(results.parquet + each trial's metrics.jsonl curve)."""

from __future__ import annotations

import json
import math
import re
import statistics
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .common import ROOT

SPACE_FULL = "timing_factor"
SPACE_QUICK = f"{ROOT / 'benchmarks' / 'harness' / 'spaces.py'}:timing_factor_quick"


@dataclass(frozen=True)
class SweepSetup:
    """The sweep both benchmarks share (the grid of benchmark 4 is benchmark 5's baseline)."""

    space: str
    target: str
    small: str
    tokens: int
    smoke: bool

    @classmethod
    def full(cls) -> SweepSetup:
        return cls(SPACE_FULL, "12x48", "6x48", 480 * 1024, False)

    @classmethod
    def quick(cls) -> SweepSetup:
        return cls(SPACE_QUICK, "4x16", "2x16", 60 * 512, True)

    def args(self) -> list[str]:
        out = ["--space", self.space, "--target", self.target, "--small", self.small]
        out += ["--tokens", str(self.tokens)]
        return out + (["--smoke-test"] if self.smoke else [])

    def describe(self) -> str:
        return (
            f"space `{Path(self.space.split(':')[0]).name if ':' in self.space else self.space}`"
            f", target {self.target}, small-only arm {self.small}, {self.tokens:,} tokens per "
            "full-budget arm" + (" (smoke-test training settings)" if self.smoke else "")
        )


def experiment_dir(out: Path, quick: bool, name: str) -> Path:
    """Full runs keep their search under raygrow_runs/bench/ (reused by search_efficiency)."""
    base = out / "runs" if quick else ROOT / "raygrow_runs" / "bench"
    return base / name


def run_search(setup: SweepSetup, out: Path, extra: list[str], log: Path) -> float:
    """Run the search CLI into `out` unless it already finished there; returns seconds."""
    import time

    if (out / "results.parquet").exists():
        print(f"reusing finished search {out}")
        return 0.0
    cmd = [sys.executable, "-m", "raygrow.search", *setup.args(), *extra, "--out", str(out)]
    cmd += ["--experiment", out.name]
    print("running:", " ".join(cmd), flush=True)
    t0 = time.time()
    with log.open("w") as fh:
        proc = subprocess.run(cmd, cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        raise SystemExit(f"search failed (exit {proc.returncode}); see {log}")
    return time.time() - t0


SCHEDULE_RE = re.compile(r"stack x(?P<g>\d+) @(?P<at>\d+)%")


def load_trials(exp: Path) -> list[dict[str, Any]]:
    """One dict per trial: arm, schedule, g, grow_at, status, loss, flops, curve, ended."""
    import pandas as pd

    df = pd.read_parquet(exp / "results.parquet")
    rows = []
    for rec in df.to_dict("records"):
        metrics = exp / "trials" / str(rec["trial_id"]) / "metrics.jsonl"
        curve: list[tuple[float, float]] = []
        ended = 0.0
        if metrics.exists():
            seen = set()
            for line in metrics.read_text().splitlines():
                m = json.loads(line)
                if m["flops"] in seen:  # a restored trial may repeat a report
                    continue
                seen.add(m["flops"])
                curve.append((float(m["flops"]), float(m["val_loss"])))
            ended = metrics.stat().st_mtime
        match = SCHEDULE_RE.search(str(rec["schedule"]))
        rows.append(
            {
                **rec,
                "g": int(match["g"]) if match else None,
                "grow_at": int(match["at"]) / 100 if match else None,
                "curve": sorted(curve),
                "ended": ended,
                "stopped": "stopped" in str(rec["status"]),
            }
        )
    return rows


def grown(trials: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [t for t in trials if t["arm"] == "grown" and t["g"] is not None]


# ----------------------------------------------------------------------------- per-seed summary
def rate_ci(successes: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a success rate (scipy's binomtest)."""
    from scipy.stats import binomtest

    ci = binomtest(successes, n).proportion_ci(confidence_level=level, method="wilson")
    return float(ci.low), float(ci.high)


def seed_summary(costs: list[float | None], limit: float = 1 / 3) -> dict[str, Any]:
    """Costs-to-find of every replayed seed (None: not found within its samples), over ALL
    seeds: success rate and the rate at cost <= `limit`, each with a 95 % Wilson interval, and
    the median with failures counted as not found (+inf): the median is `inf` when the middle
    value(s) of the sorted seeds include a failure (more than half failed, or exactly half with
    an even count). The mean over successes alone is kept for comparison only."""
    n = len(costs)
    found = [c for c in costs if c is not None]
    within = [c for c in found if c <= limit]
    values = sorted(math.inf if c is None else c for c in costs)
    return {
        "n": n,
        "found": len(found),
        "found_ci": rate_ci(len(found), n) if n else (math.nan, math.nan),
        "within": len(within),
        "within_ci": rate_ci(len(within), n) if n else (math.nan, math.nan),
        "median": statistics.median(values) if n else math.nan,
        "mean_found": statistics.fmean(found) if found else math.nan,
    }


def fmt_cost(value: float) -> str:
    return "not found" if math.isinf(value) else f"{value:.2f}"
