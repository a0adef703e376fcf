"""A search SIGKILLed during its sampled trials and continued with `--resume` makes the same
ASHA stop decisions as the same search run without interruption (issue 13, item 6).

The scripted space makes every trial's schedule a function of its Optuna trial number: good,
collapse (LR x 1e-6 after growth: worse at the first rung), good, collapse. The driver is killed
while the first collapsing trial trains, before it reaches the first rung, when only the first
good trial is recorded there. Tune restores the scheduler pickled when the search started (no
rung records); `RecordingASHA` reloads them from `asha_state.json`, so the collapsing trial is
still stopped, as in the uninterrupted run. Ray's own ASHA let it run to the end.
"""

from __future__ import annotations

import json
import os
import re
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

pytestmark = [pytest.mark.ray, pytest.mark.slow]

SPACE = '''
KINDS = [("good", 0.2), ("collapse", 0.2), ("good", 0.25), ("collapse", 0.25)]


def scripted(trial):
    """Trial n gets KINDS[n % 4] (a test fixture: the order is the point)."""
    kind, at = KINDS[trial.number % 4]
    lr = {"lr_scale": 1e-6} if kind == "collapse" else {}
    return {"stages": [{
        "operator": "stack", "factor": 2, "at": at,
        "lr_policy": "rescale" if lr else "continue", "lr_params": lr,
    }]}
'''
SAMPLES = 4
BASELINES = 4


def command(space: Path, out: Path) -> list[str]:
    cmd = [sys.executable, "-m", "raygrow.search", "--smoke-test", "--space", f"{space}:scripted"]
    return cmd + ["--num-samples", str(SAMPLES), "--tokens", str(96 * 8 * 64), "--out", str(out)]


def env() -> dict[str, str]:
    # its own local cluster and its own MLflow store (mlflow.set_tracking_uri in
    # mlflow_children exports MLFLOW_TRACKING_URI to this process's environment)
    drop = {"RAY_ADDRESS", "MLFLOW_TRACKING_URI"}
    return {k: v for k, v in os.environ.items() if k not in drop}


def decisions(out: Path) -> dict[int, tuple]:
    """Optuna trial number -> (status kind, stop rung, trials at the rung) of a search."""
    from raygrow.search.asha import stop_reasons
    from raygrow.search.study import TRIAL_ID_ATTR, load_study

    experiment = json.loads((out / "search.json").read_text())["experiment"]
    number = {t.user_attrs[TRIAL_ID_ATTR]: t.number for t in load_study(out, experiment).trials}
    table = pd.read_parquet(out / "results.parquet")
    reasons = stop_reasons(out / "asha_state.json")
    out_ = {}
    for _, row in table[table["arm"] == "grown"].iterrows():
        reason = reasons.get(row["trial_id"], {})
        out_[number[row["trial_id"]]] = (
            row["status"].split(" ")[0],
            reason.get("rung_flops"),
            reason.get("n_at_rung"),
        )
    children = mlflow_children(out, experiment)
    # every trial has its run; a trial the kill took before Tune's experiment checkpoint reached
    # the folder keeps an orphan run (its Optuna trial is taken over, see raygrow.search.study)
    assert set(table["trial_id"]) <= set(children["tags.raygrow.trial_id"])
    check_study_and_stop_reasons(out, experiment, table, children)
    return out_


def test_killed_and_resumed_search_stops_what_the_uninterrupted_one_stops(tmp_path) -> None:
    space = tmp_path / "scripted.py"
    space.write_text(SPACE)

    reference = tmp_path / "uninterrupted"
    done = subprocess.run(
        command(space, reference), capture_output=True, text=True, env=env(), timeout=1200
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    expected = decisions(reference)
    assert len(expected) == SAMPLES
    assert expected[1][0] == expected[3][0] == "stopped"  # both collapsing schedules
    assert expected[0][0] == "completed"

    out = tmp_path / "killed"
    log = open(tmp_path / "first.log", "w")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        command(space, out),
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env(),
        cwd=tmp_path,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 900
        while True:  # kill once the first collapsing trial (6th trial folder) is training
            dirs = trial_dirs(out) if (out / "trials").exists() else []
            if len(dirs) >= BASELINES + 2 and evals(dirs[-1]) >= 1:
                break
            assert proc.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "the search did not reach its 2nd sample"
            time.sleep(0.5)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        end_session(proc, log)
    at_kill = json.loads((out / "asha_state.json").read_text())
    first_rung = at_kill["brackets"][0][-1][1]  # rungs are stored last-milestone first
    assert len(first_rung) == 1 and not at_kill["stops"], "killed too late to test the restore"

    resumed = subprocess.run(
        [sys.executable, "-m", "raygrow.search", "--resume", str(out)],
        capture_output=True,
        text=True,
        env=env(),
        cwd=tmp_path,
        timeout=1200,
    )
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert re.search(r"ASHA restored \d+ rung records and 0 stops", resumed.stdout)
    assert decisions(out) == expected
