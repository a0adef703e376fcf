"""`python -m raygrow.export --run-id` reads the checkpoint from the run's MLflow artifacts.

Uploads go through `TrialArtifacts` (what a search's trial process does where it trained); the
export downloads from the store alone, also through a real `mlflow server` that proxies the
artifacts (`--artifacts-destination`). Bad input (an unknown run, a run without a checkpoint
artifact, an unreachable server, a store that is not there, an artifact store this machine
cannot read): one line naming the fix, exit 2, no export folder.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from fixtures.mlflow_server import local_server
from fixtures.mlflow_store import sqlite_store
from fixtures.ports import free_port

from raygrow.export import main
from raygrow.model import ModelConfig, Transformer
from raygrow.tracking import SearchTracker, TrialArtifacts
from raygrow.train.state import TrainState, save_checkpoint

CONFIG = ModelConfig(n_layers=2, d_model=32, n_heads=2, vocab_size=256, max_seq_len=32)


def checkpoint(folder: Path, step: int) -> Path:
    torch.manual_seed(step)
    state = {k: v.clone() for k, v in Transformer(CONFIG).state_dict().items()}
    st = TrainState(model_config=CONFIG, model_state=state, step=step, tokens=step * 64)
    return save_checkpoint(st, folder / f"ckpt-{step:09d}.pt")


def trial_with_checkpoints(uri: str, tmp_path: Path, *steps: int) -> str:
    """A search's trial run whose 'trial process' uploaded checkpoints at `steps`."""
    tracker = SearchTracker(uri, "exp")
    tracker.start_search({}, {"raygrow.search": "/searches/a"})
    run_id = tracker.trial_run("t1", {}, "grown")
    uploader = TrialArtifacts(uri, "exp", "/searches/a", "t1", wait_s=0)
    for step in steps:
        ckpt = checkpoint(tmp_path / "trial" / "checkpoints", step)
        assert uploader.upload_checkpoint(ckpt) == f"runs:/{run_id}/checkpoint/{ckpt.name}"
    tracker.finish_trial("t1", "completed", {}, {})
    return run_id


def test_trial_uploads_its_newest_checkpoint_and_export_needs_only_the_store(
    tmp_path: Path, capsys
) -> None:
    uri = sqlite_store(tmp_path / "store")
    run_id = trial_with_checkpoints(uri, tmp_path, 20, 40)
    from mlflow.tracking import MlflowClient

    files = [f.path for f in MlflowClient(uri).list_artifacts(run_id, "checkpoint")]
    assert files == ["checkpoint/ckpt-000000040.pt"]  # the older one was replaced
    shutil.rmtree(tmp_path / "trial")  # the node that trained is gone
    out = tmp_path / "out"
    assert main(["--run-id", run_id, "--tracking-uri", uri, "--out", str(out)]) == 0
    info = json.loads((out / "raygrow_export.json").read_text())
    assert info["step"] == 40 and info["checkpoint"] == f"runs:/{run_id}/{files[0]}"
    assert "max |logits diff| = 0.00e+00" in capsys.readouterr().out
    # a run nobody uploaded for: the uploader warns once and training would go on
    lost = TrialArtifacts(uri, "exp", "/searches/a", "no-such-trial", wait_s=0)
    assert lost.upload_checkpoint(checkpoint(tmp_path, 60)) is None
    assert "no run tagged raygrow.trial_id=no-such-trial" in capsys.readouterr().err


def bad(argv: list[str], capsys) -> str:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("raygrow.export: error:") and "\n" not in err, err
    return err


def test_bad_run_inputs_are_one_line_exit_2_and_leave_no_folder(tmp_path: Path, capsys) -> None:
    uri = sqlite_store(tmp_path / "store")
    tracker = SearchTracker(uri, "exp")
    tracker.start_search({}, {})
    bare = tracker.trial_run("t0", {}, "grown")
    # stopped before its first checkpoint: only what the driver logs (the plan)
    tracker.finish_trial("t0", "stopped by ASHA at FLOPs 1", {}, {"train_config.json": {}})
    out = tmp_path / "out"
    cases = {
        "not found": ["--run-id", "0" * 32, "--tracking-uri", uri],
        "no checkpoint artifact": ["--run-id", bare, "--tracking-uri", uri],
        "did not answer": ["--run-id", bare, "--tracking-uri", f"http://127.0.0.1:{free_port()}"],
        "no MLflow store": ["--run-id", bare, "--tracking-uri", f"sqlite:///{tmp_path}/none.db"],
    }
    for expected, argv in cases.items():
        err = bad([*argv, "--out", str(out)], capsys)
        assert expected in err, err
        assert not out.exists()
    assert not (tmp_path / "none.db").exists()

    # artifacts on a machine this one cannot see (a file: store made elsewhere)
    run_id = trial_with_checkpoints(uri, tmp_path, 40)
    shutil.move(tmp_path / "store" / "mlartifacts", tmp_path / "elsewhere")
    err = bad(["--run-id", run_id, "--tracking-uri", uri, "--out", str(out)], capsys)
    assert "which this machine cannot read" in err and "--artifacts-destination" in err
    assert not out.exists()


@pytest.mark.slow
def test_export_through_an_mlflow_server_that_proxies_artifacts(tmp_path: Path) -> None:
    backend = sqlite_store(tmp_path / "server")
    with local_server(backend, artifacts_dir=tmp_path / "artifacts") as url:
        run_id = trial_with_checkpoints(url, tmp_path, 20, 40)
        shutil.rmtree(tmp_path / "trial")
        out = tmp_path / "out"
        assert main(["--run-id", run_id, "--tracking-uri", url, "--out", str(out)]) == 0
        assert json.loads((out / "raygrow_export.json").read_text())["step"] == 40
        stored = sorted(p.name for p in (tmp_path / "artifacts").rglob("ckpt-*.pt"))
        assert stored == ["ckpt-000000040.pt"]
