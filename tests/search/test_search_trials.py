"""How trials run: resources they reserve, the worker-group watch, and the CLI search that
must never hang after ASHA stops, even with another Ray instance on the machine."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from raygrow.errors import ConfigError
from raygrow.model import ModelConfig
from raygrow.search.config import SMOKE_TRAIN, SearchConfig
from raygrow.search.tuner import DRIVER_RESOURCE, trial_env, trial_resources
from raygrow.search.watch import PlacementGroupWatch, worker_groups


def config(tmp_path: Path, **kw) -> SearchConfig:
    base = dict(
        target=ModelConfig.from_shape("4x64"),
        tokens=96 * 8 * 64,
        train=SMOKE_TRAIN.replace(threads=2),
        out=str(tmp_path),
        tracking_uri=f"sqlite:///{tmp_path}/mlflow.db",
        small=ModelConfig.from_shape("2x64"),
    )
    return SearchConfig(**(base | kw))


def test_trials_reserve_what_they_use(tmp_path, monkeypatch) -> None:
    from raygrow import _omp

    monkeypatch.setattr(_omp, "USER_VALUE", None)
    one = config(tmp_path)
    assert trial_resources(one, {"CPU": 2.0}) == {"CPU": 2.0}  # trains in the trial itself
    gpu = config(tmp_path, use_gpu=True, train=SMOKE_TRAIN.replace(threads=1))
    assert trial_resources(gpu, {"CPU": 2.0}) == {"CPU": 1.0, "GPU": 1.0}
    nested = config(tmp_path, workers=2, train=SMOKE_TRAIN.replace(threads=1))
    assert trial_resources(nested, {"CPU": 2.0, DRIVER_RESOURCE: 16.0}) == {DRIVER_RESOURCE: 1}
    with pytest.raises(ConfigError, match=f"no '{DRIVER_RESOURCE}' resource.*--workers 1"):
        trial_resources(nested, {"CPU": 2.0})  # no CPU sliver for a driver any more
    # teams that fill the cores wait passively; single-thread trials have no team
    cores = os.cpu_count() or 1
    filled = config(tmp_path, train=SMOKE_TRAIN.replace(threads=cores))
    assert trial_env(filled).get("OMP_WAIT_POLICY") == ("PASSIVE" if cores > 1 else None)
    assert trial_env(config(tmp_path, train=SMOKE_TRAIN.replace(threads=1))) == {}


def test_watch_names_a_trial_whose_worker_group_outlives_it() -> None:
    table = {
        "aa11": {"state": "CREATED", "bundles": {0: {"CPU": 1.0}, 1: {"CPU": 1.0}}},
        "bb22": {"state": "CREATED", "bundles": {0: {DRIVER_RESOURCE: 1.0}}},  # Tune's own
        "cc33": {"state": "REMOVED", "bundles": {0: {"CPU": 1.0}}},
    }
    assert worker_groups(table, DRIVER_RESOURCE) == {"aa11": 2.0}
    watch = PlacementGroupWatch(DRIVER_RESOURCE, grace_s=30)
    watch._owner["aa11"] = "trial_7"
    watch._ended["trial_7"] = 100.0
    assert watch.leaks({"aa11": 2.0}, now=110.0) == []  # the cleaner may still be at work
    (line,) = watch.leaks({"aa11": 2.0}, now=131.0)
    assert "trial trial_7" in line and "2 CPUs" in line and "\n" not in line
    assert watch.leaks({"aa11": 2.0}, now=200.0) == []  # said once


# ------------------------------------------------------------------ the CLI path, end to end
SPACE = '''
KINDS = ["good", "collapse", "collapse", "good", "collapse", "collapse"]


def scripted(trial):
    """Trial n gets KINDS[n % 6]: the collapsed ones (LR ~0 after growth) lose every rung."""
    kind = KINDS[trial.number % len(KINDS)]
    lr = {"lr_scale": 1e-6} if kind == "collapse" else {}
    return {"stages": [{
        "operator": "stack", "factor": 2, "at": 0.2,
        "lr_policy": "rescale" if lr else "continue", "lr_params": lr,
    }]}
'''


@pytest.mark.ray
@pytest.mark.parametrize(
    "workers",
    [1, pytest.param(2, marks=pytest.mark.slow, id="nested-train")],  # nested: ~16 s per trial
)
def test_cli_search_with_asha_stops_and_another_ray_never_hangs(tmp_path, workers) -> None:
    """Regression: after ASHA stops, a search whose Ray was started by the CLI hung when
    another Ray instance ran on the machine (Train's cleaner could not find the State API, the
    stopped trials' worker groups kept the CPUs, the next trial waited forever)."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS", "MLFLOW_TRACKING_URI")
    }
    other = subprocess.Popen(  # another local Ray instance, as a user's notebook would have
        [
            sys.executable,
            "-c",
            "import ray, time; ray.init(num_cpus=1, include_dashboard=False); "
            "print('up', flush=True); time.sleep(900)",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
        start_new_session=True,
    )
    try:
        assert other.stdout is not None and other.stdout.readline().strip() == "up"
        space = tmp_path / "scripted.py"
        space.write_text(SPACE)
        out = tmp_path / "exp"
        start = time.monotonic()
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "raygrow.search",
                "--smoke-test",
                "--space",
                f"{space}:scripted",
                "--tokens",
                str(96 * 8 * 64),
                "--num-samples",
                "6",
                "--workers",
                str(workers),
                "--out",
                str(out),
            ],  # fmt: skip
            capture_output=True,
            text=True,
            env=env,
            cwd=tmp_path,
            timeout=900,
        )
        seconds = time.monotonic() - start
    finally:
        os.killpg(other.pid, 9)
        other.wait(timeout=30)
    log = proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.returncode == 0, log
    assert "still holds" not in proc.stderr, log  # no worker group outlived its trial
    table = pd.read_parquet(out / "results.parquet")
    stopped = table[table["status"].str.startswith("stopped by ASHA")]
    assert len(stopped) >= 3, table[["schedule", "status"]].to_string()
    assert (table[table["arm"] != "grown"]["status"] == "completed").all()
    assert len(table) == 4 + 6, f"{seconds:.0f} s"
