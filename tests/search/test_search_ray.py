"""raygrow.search on a real local Ray cluster: Optuna trials + baselines, ASHA, failures, resume.

- A smoke search (4x64 target, tiny budget) runs the four baseline arms and three sampled
  schedules. The test space makes the outcome deterministic by trial number: a good schedule, a
  schedule whose LR collapses after growth (ASHA must stop it at a rung, on the FLOP clock) and
  one whose LR explodes (NaN -> the trial is marked failed with the reason; the search goes on).
  Afterwards no Train actor or placement group is left, and MLflow holds one child run per trial.
- The CLI driver is SIGKILLed mid-search; `--resume DIR` finishes it with every trial exactly
  once in the results and in MLflow, without re-running finished trials.

Each trial costs ~15 s of Ray Train start-up on the standard machine (more under load).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from fixtures.search_runs import (
    check_study_and_stop_reasons,
    end_session,
    evals,
    mlflow_children,
    trial_dirs,
)

from raygrow.model import ModelConfig
from raygrow.search.config import SMOKE_TRAIN, SearchConfig

pytestmark = pytest.mark.ray

RUN_CLASSES = {"TrainController", "RayTrainWorker", "SynchronizationActor", "ImplicitFunc"}
"""Train's per-run actors and Tune's trial actors (Train's detached PlacementGroupCleaner may
outlive a run by design)."""

SPACE = '''
KINDS = ["good", "collapse", "explode"]


def scripted(trial):
    """Trial n gets KINDS[n % 3] (a test fixture: no suggestions, the order is the point)."""
    kind = KINDS[trial.number % 3]
    lr = {"good": {}, "collapse": {"lr_scale": 1e-6}, "explode": {"lr_scale": 1e30}}[kind]
    return {"stages": [{
        "operator": "stack", "factor": 2, "at": 0.2,
        "lr_policy": "rescale" if lr else "continue", "lr_params": lr,
    }]}
'''


def search_config(tmp_path: Path, space: str, num_samples: int) -> SearchConfig:
    return SearchConfig(
        space=space,
        target=ModelConfig.from_shape("4x64"),
        tokens=96 * 8 * 64,
        train=SMOKE_TRAIN.replace(threads=1),
        num_samples=num_samples,
        experiment="test-search",
        tracking_uri=f"sqlite:///{tmp_path}/mlflow.db",
        out=str(tmp_path),
        seed=0,
        grace_frac=0.3,
        reduction_factor=2,
        small=ModelConfig.from_shape("2x64"),
    )


def live_train_state() -> tuple[list, list]:
    from ray.util.state import list_actors, list_placement_groups

    actors = list_actors(filters=[("state", "=", "ALIVE")], raise_on_missing_output=False)
    pgs = list_placement_groups(raise_on_missing_output=False)
    return (
        [a.class_name for a in actors if a.class_name in RUN_CLASSES],
        [pg.placement_group_id for pg in pgs if pg.state != "REMOVED"],
    )


def test_smoke_search(ray_cluster, tmp_path) -> None:
    from raygrow.search.spaces import resolve_space
    from raygrow.search.tuner import run_search

    space_file = tmp_path / "scripted.py"
    space_file.write_text(SPACE)
    cfg = search_config(tmp_path, resolve_space(f"{space_file}:scripted"), num_samples=3)
    cfg.save()
    outcome = run_search(cfg)
    assert outcome.complete

    table = pd.read_parquet(tmp_path / "results.parquet")
    assert (tmp_path / "results.md").read_text().count("| stack x2 @20%") == 3
    assert len(table) == 7 and table["trial_id"].is_unique
    base = table[table["arm"] != "grown"]
    assert sorted(base["arm"]) == ["scratch", "scratch", "scratch", "small"]
    assert (base["status"] == "completed").all()
    assert base["speedup"].notna().all()

    grown = table[table["arm"] == "grown"].set_index("schedule")
    kinds = {s.split("lr=")[-1] if "lr=" in s else "good": row for s, row in grown.iterrows()}
    good, collapse, explode = (
        kinds["good"],
        kinds["rescale(1e-06)]"],
        kinds["rescale(1e+30)]"],
    )
    assert good["status"] == "completed" and good["speedup"]
    # ASHA stopped the collapsed run early, on the compute clock
    assert collapse["status"].startswith("stopped by ASHA at FLOPs")
    assert collapse["flops"] < cfg.budget_flops and collapse["tokens"] < cfg.tokens
    assert pd.isna(collapse["speedup"])
    # the NaN run failed with its reason, was not retried into the same NaN, search went on
    assert explode["status"].startswith("failed: diverged: train loss is nan")
    assert "validity" in outcome.summary and outcome.summary["complete"]
    # the held-out test split: a final number of every completed run (never of a stopped one),
    # and a speedup at matched test loss beside the selection (val) one
    done_rows = table[table["status"] == "completed"]
    assert done_rows["test_loss"].notna().all() and pd.isna(collapse["test_loss"])
    assert done_rows["speedup_test"].notna().all()
    assert "held-out test split" in outcome.summary["splits"]

    deadline = time.monotonic() + 60  # Train's cleaner removes a killed run's group in ~5 s
    while live_train_state() != ([], []):
        assert time.monotonic() < deadline, f"left behind: {live_train_state()}"
        time.sleep(1)

    children = mlflow_children(tmp_path, "test-search")
    assert sorted(children["tags.raygrow.trial_id"]) == sorted(table["trial_id"])
    by_trial = children.set_index("tags.raygrow.trial_id")["tags.raygrow.status"]
    for _, row in table.iterrows():
        assert by_trial[row["trial_id"]] == row["status"]
    check_study_and_stop_reasons(tmp_path, "test-search", table, children)
    # MLflow: test_loss / test_bpb logged once, at the end of each completed trial
    from mlflow.tracking import MlflowClient

    client = MlflowClient(cfg.tracking_uri)
    finished = children[children["tags.raygrow.status"] == "completed"]
    assert len(finished) == 5 and finished["metrics.test_loss"].notna().all()
    assert finished["metrics.test_bpb"].notna().all()
    stopped = children[children["tags.raygrow.status"].str.startswith("stopped")]
    assert "metrics.test_loss" in children and stopped["metrics.test_loss"].isna().all()
    for run_id, trial_id in zip(finished["run_id"], finished["tags.raygrow.trial_id"], strict=True):
        history = client.get_metric_history(run_id, "test_loss")
        row = table.set_index("trial_id").loc[trial_id]
        assert [(m.step, m.value) for m in history] == [(int(row["tokens"]), row["test_loss"])]
    assert (children["params.seed"] == "0").all()  # every trial logs its training seed

    # the grown trials start from the small arm's model, seed, data and LR schedule: each
    # resumed that arm's stored un-grown state instead of training it (the FLOP ledger)
    assert (table.loc[table["arm"] == "grown", "flops_reused"] > 0).all()
    assert (table.loc[table["arm"] != "grown", "flops_reused"] == 0).all()
    summary = outcome.summary
    spent = (table["flops"].fillna(0) - table["flops_reused"]).sum()
    assert summary["search_flops"] == pytest.approx(spent)
    assert summary["search_flops"] < summary["search_flops_naive"]
    import mlflow

    parent = mlflow.search_runs(
        experiment_names=["test-search"], filter_string="tags.`raygrow.role` = 'search'"
    )
    assert parent["metrics.search_flops"].iloc[0] == pytest.approx(summary["search_flops"])

    # every trial that wrote a checkpoint uploaded it to its MLflow run (not a node-local path),
    # and the good schedule exports by run id with the trial folders gone (other machines)
    assert "tags.raygrow.checkpoint_path" not in children or (
        children["tags.raygrow.checkpoint_path"].isna().all()
    )
    done = children[children["tags.raygrow.status"] == "completed"]
    assert done["tags.raygrow.checkpoint_artifact"].str.startswith("runs:/").all()
    from raygrow.export import main as export_main

    good_run = children.set_index("tags.raygrow.trial_id").loc[good["trial_id"], "run_id"]
    for folder in ("trials", "ray", "prefixes"):
        shutil.rmtree(tmp_path / folder, ignore_errors=True)
    exported = tmp_path / "exported"
    argv = ["--run-id", good_run, "--tracking-uri", cfg.tracking_uri, "--out", str(exported)]
    assert export_main(argv) == 0
    assert (exported / "model.safetensors").is_file() and (exported / "tokenizer.json").is_file()
    assert parent["metrics.search_flops_naive"].iloc[0] == pytest.approx(
        spent + table["flops_reused"].sum()
    )


@pytest.mark.slow  # two Ray start-ups and ~7 trials: about 3 minutes on a quiet machine
def test_kill_driver_and_resume(tmp_path) -> None:
    out = tmp_path / "exp"
    cmd = [sys.executable, "-m", "raygrow.search", "--smoke-test", "--num-samples", "2"]
    cmd += ["--tokens", str(96 * 8 * 64), "--out", str(out)]
    # its own local cluster and its own MLflow store
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI")}
    log = open(tmp_path / "first.log", "w")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=tmp_path, start_new_session=True
    )
    try:
        deadline = time.monotonic() + 900
        while True:  # kill once a sampled trial (5th trial folder) is training
            dirs = trial_dirs(out) if (out / "trials").exists() else []
            if (out / "ray" / "search").exists() and len(dirs) >= 5 and evals(dirs[-1]) >= 2:
                break
            assert proc.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "the search did not reach a sampled trial"
            time.sleep(1)
        evals_at_kill = {d.name: evals(d) for d in dirs}
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        end_session(proc, log)

    resumed = subprocess.run(
        [sys.executable, "-m", "raygrow.search", "--resume", str(out)],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=900,
    )
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    table = pd.read_parquet(out / "results.parquet")
    assert len(table) == 4 + 2 and table["trial_id"].is_unique
    assert (table[table["arm"] != "grown"]["status"] == "completed").all()
    assert table["status"].str.match(r"^(completed|stopped by ASHA|failed)").all()
    for tid in table[table["arm"] != "grown"]["trial_id"]:  # finished: not trained again
        assert evals(out / "trials" / tid) == evals_at_kill[tid], tid
    children = mlflow_children(out, json.loads((out / "search.json").read_text())["experiment"])
    assert sorted(children["tags.raygrow.trial_id"]) == sorted(table["trial_id"])
