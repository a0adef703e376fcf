"""Every benchmark script runs in `--quick` mode and writes its result file (slow tier).

The full runs are made by hand and committed under benchmarks/results/; this only guards that
each script still works end to end (real training, real Ray/MLflow where the script uses them)
and writes a report with the standard header into the folder given by --out.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = (
    "growth_validity",
    "growth_vs_scratch",
    "incremental",
    "timing_factor",
    "search_efficiency",
    "speed",
)
"""The six result benchmarks (throughput.py and overhead.py are speed.py's building blocks and
run inside its quick mode)."""
SCRIPTS = [ROOT / "benchmarks" / f"{name}.py" for name in BENCHMARKS]
QUICK_LIMIT_S = 900
"""Generous per-script limit for a loaded CI machine (quick modes take < 5 min; speed's runs
three smoke searches, before vs after, for ~8 min)."""


def test_benchmark_scripts_and_results_exist() -> None:
    for script in SCRIPTS:
        assert script.is_file(), script
        committed = ROOT / "benchmarks" / "results" / f"{script.stem}.md"
        assert committed.is_file(), f"no committed full result {committed.name}"
        assert "QUICK MODE" not in committed.read_text(), f"{committed.name} is a quick run"


def test_scripts_import_the_harness_not_each_other() -> None:
    """Shared code lives in benchmarks/harness/; no script imports another script or a private
    module beside it."""
    bench = ROOT / "benchmarks"
    scripts = {p.stem for p in bench.glob("*.py")}
    assert (bench / "harness" / "__init__.py").is_file()
    for path in bench.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                private = top.startswith("_") and top != "__future__"
                assert top not in scripts and not private, f"{path.name} imports {name}"


@pytest.mark.slow
@pytest.mark.timeout(QUICK_LIMIT_S + 60)
@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.stem)
def test_benchmark_quick_mode_writes_result(script: Path, tmp_path: Path) -> None:
    env = {**os.environ, "RAYGROW_BENCH_CACHE": str(tmp_path / "cache")}
    out = tmp_path / "results"
    proc = subprocess.run(
        [sys.executable, str(script), "--quick", "--out", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=QUICK_LIMIT_S,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    reports = list(out.glob("*.md"))
    assert reports, f"{script.name} wrote no .md into --out; stdout: {proc.stdout[-2000:]}"
    text = reports[0].read_text()
    for field in ("- date:", "- machine:", "- commit:", "- precision:"):
        assert field in text, f"{reports[0].name} lacks the standard header line {field!r}"
    assert "QUICK" in text.upper()
