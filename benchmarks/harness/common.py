"""Shared plumbing of the benchmark scripts: result folder, report header, arm statistics.

Every benchmark writes `<out>/<NAME>.md` (+ PNGs next to it). Full runs write into
`benchmarks/results/` (committed); `--quick` runs default to `benchmarks/results/quick/`
(git-ignored) so a quick check never overwrites a committed full result.
"""

from __future__ import annotations

import datetime
import math
import os
import platform
import statistics
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "benchmarks" / "results"
QUICK_RESULTS = RESULTS / "quick"


def out_dir(arg: str | None, quick: bool) -> Path:
    """The folder a benchmark writes into: --out, else results/ (full) or results/quick/."""
    path = Path(arg) if arg else (QUICK_RESULTS if quick else RESULTS)
    path.mkdir(parents=True, exist_ok=True)
    return path


def git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            cwd=ROOT,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            check=True,
            cwd=ROOT,
        ).stdout.strip()
        return out + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()} cores, {cpu}, {platform.platform()}"


def header(title: str, *, started: float, quick: bool, config_lines: Sequence[str]) -> list[str]:
    """The standard report head: title, date, machine, load, commit, versions, command, config."""
    import torch

    load = os.getloadavg()
    elapsed = datetime.datetime.now().timestamp() - started
    command = "python " + " ".join([os.path.relpath(sys.argv[0], ROOT), *sys.argv[1:]])
    lines = [
        f"# {title}",
        "",
        f"- date: {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC",
        f"- machine: {machine()}",
        f"- load average at the end (1/5/15 min): {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f}"
        " (the machine is shared; wall-clock seconds are indicative, losses and FLOPs are not "
        "affected)",
        f"- commit: {git_commit()}; torch {torch.__version__}, python {platform.python_version()}",
        f"- command: `{command}` ({elapsed / 60:.1f} min)" + (" — QUICK MODE" if quick else ""),
    ]
    lines.append(f"- precision: {precision_line()}")
    lines += [f"- {c}" for c in config_lines]
    return [*lines, ""]


def precision_line() -> str:
    """What `--precision auto` runs on this machine, measured (raygrow.train.precision)."""
    import torch

    from raygrow.train.precision import describe, resolve_precision

    device = "cuda" if torch.cuda.is_available() else "cpu"
    from raygrow import _omp

    omp = _omp.USER_VALUE or "not set by the user (raygrow's rule, raygrow/_omp.py)"
    return f"auto = {describe('auto', resolve_precision('auto', device), device)}; {_omp.ENV} {omp}"


def write_report(out: Path, name: str, lines: Sequence[str]) -> Path:
    path = out / f"{name}.md"
    path.write_text("\n".join(lines).rstrip() + "\n")
    print(f"wrote {path}")
    return path


def pyplot() -> Any:
    """matplotlib.pyplot on the file-only Agg backend (benchmarks run headless)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    pyplot().close(fig)
    print(f"wrote {path}")


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value; NaN for none)."""
    vals = [v for v in values if v is not None and math.isfinite(v)]
    if not vals:
        return math.nan, math.nan
    return statistics.fmean(vals), statistics.stdev(vals) if len(vals) > 1 else 0.0


def fmt_ms(values: Sequence[float], digits: int = 4) -> str:
    """`mean ± std (n=k)`."""
    m, s = mean_std(values)
    return f"{m:.{digits}f} ± {s:.{digits}f} (n={len(values)})"


def med_range(values: list[float], fmt: str = "{:.3f}") -> str:
    """`median [min, max] (n=k)`."""
    if not values:
        return "-"
    lo, mid, hi = min(values), statistics.median(values), max(values)
    return f"{fmt.format(mid)} [{fmt.format(lo)}, {fmt.format(hi)}] (n={len(values)})"
