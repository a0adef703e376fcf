"""Submit from a laptop, as docs/cluster.md walks through it: `ray job submit` to a head's
dashboard, trial checkpoints to an `mlflow server --artifacts-destination`, export by run id.

A real local head (`ray start --head --block` with the dashboard, token auth, 2 CPUs, the
`train_driver` resource, its own temp dir and free ports: tests/fixtures/ray_head.py) and a real
`mlflow server` (SQLite backend, artifacts proxied to a folder: tests/fixtures/mlflow_server.py)
stand in for a cluster's head. `python -m raygrow.search --smoke-test --tracking-uri
http://127.0.0.1:PORT` is submitted with `ray job submit --no-wait`, followed with `ray job logs
--follow` and must end SUCCEEDED. Then, on the client side, the search's trial folders, Ray's
storage and the prefix store are deleted (on a cluster they live on other machines), a completed
grown trial is found through the MLflow server by its tags, and `python -m raygrow.export
--run-id` exports it from the server's artifact store alone; the folder loads in `transformers`
(model and tokenizer) and generates. Only the processes started here are stopped (by PID; never
`ray stop`, which would stop every Ray on the machine).
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fixtures.mlflow_server import local_server
from fixtures.ray_head import local_head, ray_free_env

pytestmark = [pytest.mark.ray, pytest.mark.slow]

JOB_TIMEOUT_S = 480  # the smoke search: ~2 min on an idle 2-core machine
SUBMISSION_ID = "raygrow-smoke-search"
# what a search keeps on the nodes (trials, Tune/Train storage, prefix store, baseline arms)
NODE_FOLDERS = ("trials", "ray", "prefixes", "baselines", "search")


def trial_runs(client, arm: str | None = None) -> list:
    """Completed trial runs of every experiment on the server (of `arm` if given)."""
    where = "tags.`raygrow.role` = 'trial' and tags.`raygrow.status` = 'completed'"
    if arm:
        where += f" and tags.`raygrow.arm` = '{arm}'"
    experiments = [e.experiment_id for e in client.search_experiments()]
    return client.search_runs(experiments, filter_string=where, max_results=1000)


@pytest.mark.timeout(JOB_TIMEOUT_S + 420)
def test_search_submitted_as_a_ray_job_exports_by_run_id_from_the_client(tmp_path) -> None:
    if not Path("/proc").is_dir():
        pytest.skip("needs Linux /proc to stop the head's processes by PID")
    from mlflow.tracking import MlflowClient

    out = tmp_path / "search"
    artifacts = tmp_path / "artifacts"
    timings: dict[str, float] = {}
    started = time.monotonic()
    with (
        local_server(
            f"sqlite:///{tmp_path}/mlflow.db",
            artifacts_dir=artifacts,
            log_file=tmp_path / "mlflow.log",
        ) as tracking_uri,
        local_head(num_cpus=2) as head,
    ):
        timings["start"] = time.monotonic() - started
        head.submit(
            SUBMISSION_ID,
            *(sys.executable, "-m", "raygrow.search", "--smoke-test"),
            *("--tracking-uri", tracking_uri, "--out", str(out)),
        )
        job_started = time.monotonic()
        state = head.wait(SUBMISSION_ID, timeout=JOB_TIMEOUT_S)
        timings["job"] = time.monotonic() - job_started
        if state != "SUCCEEDED":
            if state in ("PENDING", "RUNNING"):
                head.cli("job", "stop", SUBMISSION_ID)
            logs = head.job_logs(SUBMISSION_ID)
            pytest.fail(f"job ended {state} after {timings['job']:.0f}s\n{logs[-8000:]}")
        assert (out / "search.json").is_file()

        # client side: the nodes' folders are gone; only the tracking server remains
        for folder in NODE_FOLDERS:
            shutil.rmtree(out / folder, ignore_errors=True)
        assert not list(out.rglob("ckpt-*.pt")), "a checkpoint is left outside the artifact store"

        client = MlflowClient(tracking_uri)
        completed = trial_runs(client)
        assert completed, "no completed trial in MLflow"
        for run in completed:  # every completed trial uploaded its checkpoint through the server
            assert run.info.artifact_uri.startswith("mlflow-artifacts:"), run.info.artifact_uri
            uri = run.data.tags["raygrow.checkpoint_artifact"]
            assert uri.startswith(f"runs:/{run.info.run_id}/checkpoint/ckpt-"), uri
            assert "raygrow.checkpoint_path" not in run.data.tags  # no node-local path
        # ... and the server stored them in its --artifacts-destination
        assert list(artifacts.rglob("ckpt-*.pt"))

        grown = trial_runs(client, "grown")
        run = grown[0] if grown else completed[0]
        run_id = run.info.run_id
        growth_files = [f.path for f in client.list_artifacts(run_id, "growth")]
        if grown:  # the default space grows once; the event came from the trial's reports
            assert growth_files, "the grown trial's run has no growth events"

        folder = tmp_path / "export"
        export_started = time.monotonic()
        result = subprocess.run(
            [sys.executable, "-m", "raygrow.export", "--run-id", run_id]
            + ["--tracking-uri", tracking_uri, "--out", str(folder)],
            env=ray_free_env(),
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=300,
        )
        timings["export"] = time.monotonic() - export_started
        assert result.returncode == 0, f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    # the server and the head are stopped here (local_server / local_head exit)
    assert head.leftovers == [], f"processes left running: {head.leftovers}"

    assert {"model.safetensors", "config.json", "tokenizer.json"} <= {
        p.name for p in folder.iterdir()
    }
    config = json.loads((folder / "config.json").read_text())
    assert "dtype" in config and "torch_dtype" not in config
    info = json.loads((folder / "raygrow_export.json").read_text())
    assert len(info["growth_history"]) == len(growth_files)

    if importlib.util.find_spec("transformers") is not None:
        import torch
        import transformers

        model = transformers.AutoModelForCausalLM.from_pretrained(folder).eval()
        tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
        ids = tokenizer("To be, or not", return_tensors="pt").input_ids  # as docs/cluster.md
        with torch.no_grad():
            generated = model.generate(ids, max_new_tokens=20, do_sample=False)
        assert generated.shape[1] > ids.shape[1]
        assert tokenizer.decode(generated[0]).startswith("To be, or not")
    print(
        f"\nhead + mlflow server start {timings['start']:.0f}s, job {timings['job']:.0f}s, "
        f"export {timings['export']:.0f}s ({'grown' if grown else 'baseline'} trial {run_id}), "
        f"total {time.monotonic() - started:.0f}s"
    )
