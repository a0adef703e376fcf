"""README matches the code: CI's test command, the Layout section, the public API."""

from __future__ import annotations

import re
from pathlib import Path

import raygrow

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def section(title: str) -> str:
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", README, re.M | re.S)
    assert match, f"README has no '## {title}' section"
    return match.group(1)


def test_ci_finds_the_test_command() -> None:
    block = re.search(r"<!-- test-command -->\n```\w*\n(.+?)\n```\n<!-- /test-command -->", README)
    assert block, "README lost the test-command markers that .ci/run reads"
    assert "pytest" in block.group(1)
    # the default tier leaves the slow checks to CI's second pass
    assert "not slow" in (ROOT / "pyproject.toml").read_text()


def test_layout_lists_every_unit_and_only_real_paths() -> None:
    layout = section("Layout")
    paths = re.findall(r"^([\w./-]+/?)\s{2,}", layout, re.M)
    assert paths, "no paths found in the Layout block"
    for path in paths:
        assert (ROOT / path).exists(), f"README Layout names {path}, which does not exist"
    units = {
        p.name + ("/" if p.is_dir() else "")
        for p in (ROOT / "raygrow").iterdir()
        if not p.name.startswith("__") and (p.is_dir() or p.suffix == ".py")
    }
    listed = {p.removeprefix("raygrow/") for p in paths if p.startswith("raygrow/")}
    assert units <= listed, f"README Layout misses {sorted(units - listed)}"


def test_public_api_in_the_readme_is_the_package_api() -> None:
    names = set()
    for line in re.findall(r"^from raygrow import (.+)$", section("Python API"), re.M):
        names |= {n.strip() for n in line.strip("() ").split(",") if n.strip()}
    assert names == set(raygrow.__all__) - {"__version__"}
