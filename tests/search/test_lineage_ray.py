"""A WSD search with seed replicates gives the same losses with prefix sharing on and off, at
less computed compute; MLflow holds the seed of every trial and the search's ledger."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from fixtures.search_runs import mlflow_children, small_cfg

from raygrow.model import ModelConfig

pytestmark = [pytest.mark.ray, pytest.mark.slow]  # two searches of 14 trials: ~4 minutes

SPACE = """
def two(trial):
    at = trial.suggest_categorical("at", [0.25, 0.5])
    return {"stages": [{"operator": "stack", "factor": 2, "at": at}]}
"""


def run(tmp_path: Path, share: bool) -> tuple[pd.DataFrame, dict]:
    from raygrow.search.tuner import run_search

    space = tmp_path.parent / "space.py"
    space.write_text(SPACE)
    cfg = small_cfg(
        tmp_path,
        space=f"{space}:two",
        target=ModelConfig.from_shape("4x32"),
        small=ModelConfig.from_shape("2x32"),
        tokens=96 * 8 * 64,
        train=small_cfg(tmp_path).train.replace(lr_schedule="wsd", threads=1),
        sampler="grid",
        scheduler="fifo",
        num_samples=2,
        seeds=(0, 1),
        share_prefixes=share,
    )
    cfg.save()
    outcome = run_search(cfg)
    assert outcome.complete
    return pd.read_parquet(tmp_path / "results.parquet"), outcome.summary


def test_sharing_changes_no_loss_and_saves_compute(ray_cluster, tmp_path: Path) -> None:
    (tmp_path / "on").mkdir()
    (tmp_path / "off").mkdir()
    on, on_summary = run(tmp_path / "on", True)
    off, off_summary = run(tmp_path / "off", False)
    keys = ["arm", "schedule", "seed"]
    both = on.merge(off, on=keys, suffixes=("_on", "_off"))
    assert len(both) == len(on) == len(off) == 2 * (4 + 2)  # (3 scratch + small + 2) x 2 seeds
    assert (both["val_loss_on"] == both["val_loss_off"]).all()  # bit-identical
    assert (both["flops_on"] == both["flops_off"]).all()  # flops: the schedule's full compute
    assert (off["flops_reused"] == 0).all()
    # the frontier's shorter budgets and every grown prefix came from the store
    assert (on.loc[on["budget_frac"] < 1, "flops_reused"] > 0).all()
    assert (on.loc[on["arm"] == "grown", "flops_reused"] > 0).all()
    assert on_summary["search_flops"] < 0.8 * off_summary["search_flops"]
    assert off_summary["search_flops"] == off_summary["search_flops_naive"]
    assert on_summary["search_flops_naive"] == pytest.approx(off_summary["search_flops"])
    # replicates: a per-schedule table with per-seed values, and every trial's seed in MLflow
    schedules = pd.read_parquet(tmp_path / "on" / "schedules.parquet")
    assert sorted(schedules["seeds"]) == [2, 2]
    children = mlflow_children(tmp_path / "on", "t")
    assert sorted(children["params.seed"].astype(int)) == sorted(on["seed"])
