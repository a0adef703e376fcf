"""raygrow's import rules, read from the AST of every module (function-level imports included).

This test is the source of truth; README's Layout section states the same rules:

1. Layers: a unit (top-level module or subpackage of raygrow) may import only units of a lower
   layer (or itself). Bottom to top:
       errors, _omp, _api  <  config, results  <  model, data  <  flops, checkpoint  <  growth
       <  schedule  <  train  <  tracking  <  search, analysis  <  export, guidelines
   so model and flops import nothing above them, growth imports no train / search / tracking /
   analysis, and units of one layer never import each other (no package cycles).
2. schedule, config, flops, the results core and analysis import no torch (not even through an
   eagerly imported raygrow module; `import` is also checked in a fresh interpreter).
3. Only raygrow/search/ and raygrow/train/{driver,worker}.py import Ray.
4. Only raygrow/tracking/ and raygrow/analysis/ import MLflow.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "raygrow"

LAYERS: tuple[tuple[str, ...], ...] = (
    ("errors", "_omp", "_api"),
    ("config", "results"),
    ("model", "data"),
    ("flops", "checkpoint"),
    ("growth",),
    ("schedule",),
    ("train",),
    ("tracking",),
    ("search", "analysis"),
    ("export", "guidelines"),
)
TORCH_FREE = ("schedule", "config", "flops", "results", "analysis")
RAY_ALLOWED = ("raygrow.search", "raygrow.train.driver", "raygrow.train.worker")
MLFLOW_ALLOWED = ("raygrow.tracking", "raygrow.analysis")


@dataclass(frozen=True)
class Import:
    module: str
    """The importing module (dotted)."""
    target: str
    """What it imports (dotted; `from a import b` gives `a.b` when a.b is a module)."""
    line: int
    lazy: bool
    """Inside a function (imported when called, not when the module loads)."""

    def __str__(self) -> str:
        where = "function-level " if self.lazy else ""
        return f"{self.module}:{self.line} {where}import {self.target}"


def module_name(path: Path, root: Path) -> str:
    parts = path.relative_to(root.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _resolve(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".")
    base = base if is_package else base[:-1]
    base = base[: len(base) - node.level + 1]
    return ".".join([*base, node.module] if node.module else base)


def imports_of(path: Path, root: Path) -> Iterator[Import]:
    """Every import statement of one file, with `from pkg import submodule` resolved."""
    module = module_name(path, root)
    tree = ast.parse(path.read_text(), filename=str(path))
    lazy_nodes = {
        id(n)
        for fn in ast.walk(tree)
        if isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef)
        for n in ast.walk(fn)
    }
    for node in ast.walk(tree):
        lazy = id(node) in lazy_nodes
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield Import(module, alias.name, node.lineno, lazy)
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(node, module, path.name == "__init__.py")
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                is_module = (root.parent / sub.replace(".", "/")).with_suffix(".py").is_file() or (
                    root.parent / sub.replace(".", "/") / "__init__.py"
                ).is_file()
                yield Import(module, sub if is_module else base, node.lineno, lazy)


def all_imports(root: Path) -> list[Import]:
    return [imp for path in sorted(root.rglob("*.py")) for imp in imports_of(path, root)]


def unit(module: str, package: str) -> str | None:
    """`raygrow.search.tuner` -> `search`; the package root itself -> None."""
    parts = module.split(".")
    if parts[0] != package or len(parts) == 1:
        return None
    return parts[1]


def layer_of(name: str) -> int:
    for i, names in enumerate(LAYERS):
        if name in names:
            return i
    raise KeyError(name)


def layer_violations(imports: list[Import], package: str) -> list[str]:
    out = []
    for imp in imports:
        src, dst = unit(imp.module, package), unit(imp.target, package)
        if src is None or dst is None or src == dst:
            continue
        try:
            ok = layer_of(dst) < layer_of(src)
        except KeyError as exc:
            out.append(f"{imp}: unit {exc} has no layer (add it to LAYERS and README's Layout)")
            continue
        if not ok:
            out.append(f"{imp}: {src} (layer {layer_of(src)}) may not import {dst} "
                       f"(layer {layer_of(dst)})")  # fmt: skip
    return out


def _top(target: str) -> str:
    return target.split(".")[0]


def third_party_violations(imports: list[Import], package: str) -> list[str]:
    out = []
    for imp in imports:
        top = _top(imp.target)
        if top == "ray" and not imp.module.startswith(
            tuple(m.replace("raygrow", package, 1) for m in RAY_ALLOWED)
        ):
            out.append(f"{imp}: only search/ and train/driver|worker import Ray")
        if top == "mlflow" and not imp.module.startswith(
            tuple(m.replace("raygrow", package, 1) for m in MLFLOW_ALLOWED)
        ):
            out.append(f"{imp}: only tracking/ and analysis/ import MLflow")
        u = unit(imp.module, package)
        if top == "torch" and u in TORCH_FREE:
            out.append(f"{imp}: {u} must not import torch")
    return out


def eager_closure(imports: list[Import], start: str, package: str) -> set[str]:
    """Modules loaded by `import start` through module-level imports (parents' __init__ too)."""
    eager: dict[str, set[str]] = {}
    for imp in imports:
        if not imp.lazy:
            eager.setdefault(imp.module, set()).add(imp.target)
    seen: set[str] = set()
    todo = [start]
    while todo:
        name = todo.pop()
        parts = name.split(".")
        for i in range(1, len(parts) + 1):  # importing a.b.c runs a/__init__ and a/b/__init__
            mod = ".".join(parts[:i])
            if mod in seen:
                continue
            seen.add(mod)
            if _top(mod) == package:
                todo.extend(eager.get(mod, ()))
    return seen


def torch_closure_violations(imports: list[Import], package: str) -> list[str]:
    out = []
    modules = sorted({imp.module for imp in imports})
    for mod in modules:
        if unit(mod, package) in TORCH_FREE:
            loaded = eager_closure(imports, mod, package)
            if "torch" in loaded:
                out.append(f"{mod}: `import {mod}` loads torch through its module-level imports")
    return out


def violations(root: Path) -> list[str]:
    package = root.name
    imports = all_imports(root)
    return [
        *layer_violations(imports, package),
        *third_party_violations(imports, package),
        *torch_closure_violations(imports, package),
    ]


# --------------------------------------------------------------------------- the rules
def test_raygrow_follows_its_import_rules() -> None:
    found = violations(ROOT)
    assert not found, "import rules broken:\n" + "\n".join(found)


def test_every_unit_has_a_layer() -> None:
    units = {p.stem if p.is_file() else p.name for p in ROOT.iterdir()}
    units = {u for u in units if not u.startswith("__") and u != "py"}
    units -= {"__init__", "__main__"}
    missing = sorted(u for u in units if (ROOT / u).is_dir() or (ROOT / f"{u}.py").is_file())
    missing = [u for u in missing if not any(u in layer for layer in LAYERS)]
    assert not missing, f"units without a layer: {missing}"


@pytest.mark.parametrize(
    ("statement", "absent"),
    [
        ("import raygrow", ("torch", "ray", "mlflow", "optuna", "pandas")),
        ("import raygrow.schedule", ("torch", "ray", "mlflow")),
        ("import raygrow.results", ("torch", "ray", "mlflow", "pandas")),
        ("import raygrow.train.config, raygrow.config, raygrow.flops", ("torch", "ray")),
        ("import raygrow.analysis.report", ("torch", "ray")),
    ],
)
def test_light_imports_in_a_fresh_interpreter(statement: str, absent: tuple[str, ...]) -> None:
    code = f"import sys; {statement}; print(sorted(m for m in {absent!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]", f"{statement} loaded {out.stdout.strip()}"


def test_public_api() -> None:
    code = (
        "import sys, raygrow\n"
        "from raygrow import ModelConfig, TrainConfig, GrowthSchedule, OPERATORS, grow, train\n"
        "from raygrow import SearchConfig, run_search, fit_guidelines, export\n"
        "import raygrow.train.loop, raygrow.export\n"
        "assert train is raygrow.train and callable(train)\n"
        "assert export is raygrow.export and callable(export)\n"
        "assert 'stack' in OPERATORS and callable(grow) and callable(run_search)\n"
        "assert callable(fit_guidelines)\n"
        "cfg = TrainConfig(model=ModelConfig.from_shape('2x32'), tokens=8192)\n"
        "print(cfg.model.shape, sorted(raygrow.__all__) == sorted(dir(raygrow)) or 'dir ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("2x32")


# --------------------------------------------------------------------------- the checker itself
def _package(tmp_path: Path, files: dict[str, str]) -> Path:
    root = tmp_path / "pkg"
    for name, text in {"__init__.py": "", **files}.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def test_the_checker_catches_each_kind_of_break(tmp_path: Path) -> None:
    root = _package(
        tmp_path,
        {
            "model.py": "from pkg.train import loop\n",  # upward, module level
            "growth/__init__.py": "",
            "growth/ops.py": "def f():\n    from pkg.search import tuner\n",  # upward, lazy
            "schedule.py": "from pkg import growth\n",
            "train/__init__.py": "",
            "train/loop.py": "import ray\n",  # Ray outside search/ and driver|worker
            "train/driver.py": "import ray\n",  # allowed
            "search/__init__.py": "",
            "search/tuner.py": "import mlflow\nfrom pkg.analysis import fit\n",  # same layer
            "analysis/__init__.py": "",
            "analysis/fit.py": "from ..growth import ops\n",  # relative import, allowed
            "results/__init__.py": "import torch\n",  # torch in the torch-free core
            "flops.py": "from pkg.growth import ops\n",  # upward
            "growth/torchy.py": "import torch\n",
            "config.py": "from pkg.growth import torchy\n",  # upward and loads torch
        },
    )
    found = "\n".join(violations(root))
    expected = [
        "pkg.model:1 import pkg.train.loop: model (layer 2) may not import train",
        "pkg.growth.ops:2 function-level import pkg.search.tuner: growth (layer 4) may not",
        "pkg.train.loop:1 import ray: only search/ and train/driver|worker import Ray",
        "pkg.search.tuner:1 import mlflow: only tracking/ and analysis/ import MLflow",
        "pkg.search.tuner:2 import pkg.analysis.fit: search (layer 8) may not import analysis",
        "pkg.results:1 import torch: results must not import torch",
        "pkg.flops:1 import pkg.growth.ops: flops (layer 3) may not import growth",
        "pkg.config: `import pkg.config` loads torch",
    ]
    for text in expected:
        assert text in found, f"missed: {text}\nfound:\n{found}"
    flagged = {line.split(":")[0] for line in found.splitlines()}
    assert not flagged & {"pkg.train.driver", "pkg.analysis.fit", "pkg.schedule"}


def test_a_clean_package_passes(tmp_path: Path) -> None:
    root = _package(
        tmp_path,
        {
            "model.py": "import torch\nfrom pkg import errors\n",
            "errors.py": "",
            "search/__init__.py": "import ray\nfrom pkg.model import x\n",
        },
    )
    assert violations(root) == []
