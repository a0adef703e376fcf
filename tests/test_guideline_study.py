"""The guideline study's design, checked without training (issue 17): the sizes and budgets the
issue asks for, every grid cell a valid schedule for its group, parts that run in a valid order,
and a held-out group that is not among the fitted ones."""

from __future__ import annotations

import itertools
import json
import sys
from pathlib import Path

import optuna
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import guideline_study as study  # noqa: E402

from raygrow.config import ModelConfig  # noqa: E402
from raygrow.search.spaces import SpaceRef, validate_space  # noqa: E402
from search_spaces import SPACES  # noqa: E402

STEP = study.SEQ_LEN * study.BATCH


def test_sizes_budgets_and_heldout() -> None:
    fit = [g for g in study.GROUPS.values() if g.role == "fit"]
    held = [g for g in study.GROUPS.values() if g.role == "heldout"]
    sizes = sorted({g.n_params() for g in study.GROUPS.values()})
    assert len(sizes) >= 3 and sizes[-1] / sizes[0] >= 3.5
    assert {g.tokens_per_param for g in fit} >= {5, 20}
    assert len(held) == 1 and held[0].name not in {g.name for g in fit}
    h = held[0]  # a larger (budget) group inside the fitted range, so the warm start may run
    assert h.tokens_per_param == max(g.tokens_per_param for g in fit)
    assert min(g.n_params() for g in fit) <= h.n_params() <= max(g.n_params() for g in fit)
    for g in study.GROUPS.values():
        tokens = g.tokens(STEP)
        assert tokens % STEP == 0 and abs(tokens / g.n_params() - g.tokens_per_param) < 0.05


@pytest.mark.parametrize("name", sorted(study.GROUPS))
def test_every_grid_cell_is_a_valid_schedule(name: str) -> None:
    g = study.GROUPS[name]
    target = ModelConfig.from_shape(g.target)
    check = validate_space(SpaceRef(g.space), target, g.tokens(STEP), study.SEQ_LEN, n=64)
    assert check.samples == 64
    # the grid: every combination of the space's categorical choices, each a valid cell
    choices = {k: d.choices for k, d in check.distributions.items()}
    for combo in itertools.product(*choices.values()):
        params = dict(zip(choices, combo, strict=True))
        sample = SPACES[g.space](optuna.trial.FixedTrial(params))
        assert sample["stages"], params
    assert ModelConfig.from_shape(g.small).n_layers * 2 == target.n_layers


def test_parts_cover_every_search_in_a_valid_order() -> None:
    for quick, parts in ((False, study.PARTS), (True, study.QUICK_PARTS)):
        table = study.searches(quick)
        order = [n for names in parts.values() for n in names]
        assert sorted(order) == sorted(table)  # each search in exactly one part
        pos = {n: i for i, n in enumerate(order)}
        for name, s in table.items():
            slug = name.rsplit("-", 1)[0]
            if s.kind in ("operators", "confirm", "late"):
                assert pos[f"{slug}-grid"] < pos[name], name  # needs its grid first
            if s.kind == "confirm":  # its best cell may be a late one
                assert pos[f"{slug}-late"] < pos[name], name
            if s.kind == "heldout":  # after every fit search
                fits = [n for n, t in table.items() if t.kind != "heldout"]
                assert all(pos[f] < pos[name] for f in fits)


def test_commands_are_raygrow_search_with_fixed_arms(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(study, "HOME", tmp_path)
    s = study.searches(False)["8x32_5-grid"]
    cmd = study.command(s, False)
    assert cmd[1:3] == ["-m", "raygrow.search"]
    joined = " ".join(cmd)
    for flag in ("--sampler grid", "--scheduler fifo", "--lr-schedule wsd", "--seeds 0,1"):
        assert flag in joined
    operators = study.searches(False)["8x32_5-operators"]
    ops = " ".join(study.command(operators, False))  # the grid's folder is gone: retrain
    assert "--space study_operators" in ops and "--baselines-from" not in ops
    grid = study.runs_dir(False) / "8x32_5-grid"
    grid.mkdir(parents=True)
    (grid / "search.json").write_text("{}")
    ops = " ".join(study.command(operators, False))  # it is there: reuse its baselines
    assert f"--baselines-from {grid}" in ops
    settings = json.loads(study.group_file(study.GROUPS["8x32@5"], False).read_text())
    assert settings["precision"] == "fp32"  # never `auto`: one precision on every CPU
    with pytest.raises(SystemExit, match="run --predict"):
        study.command(study.searches(False)["8x32_20-heldout"], False)
