"""A search's MLflow runs carry what a cluster needs, and export works from the store alone.

A tiny real search (local Ray, SQLite store, one sampled schedule that grows): every completed
trial's run holds its checkpoint as an artifact (uploaded by the trial process) and the tag
`raygrow.checkpoint_artifact`; the grown trial's growth events reach MLflow from its reports.
Then the trial folders and Ray's storage are deleted, as if they were on other machines, and
`python -m raygrow.export --run-id` exports the grown trial from the store's artifacts: the
Hugging Face model gives the logits of raygrow's model loaded from the downloaded checkpoint.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from fixtures.search_runs import small_cfg

# the default tier checks the same through test_search_ray's smoke search (artifacts present,
# export by run id with the trial folders gone); this one also compares the logits
pytestmark = [pytest.mark.ray, pytest.mark.slow]

SPACE = """
def grow_once(trial):
    return {"stages": [{"operator": "stack", "factor": 2, "at": 0.3}]}
"""


def test_search_runs_carry_checkpoints_and_export_needs_nothing_else(ray_cluster, tmp_path) -> None:
    transformers = pytest.importorskip("transformers")
    from mlflow.tracking import MlflowClient

    from raygrow.export import branch_scales, main
    from raygrow.model import build_model
    from raygrow.search.spaces import resolve_space
    from raygrow.search.tuner import run_search
    from raygrow.train.state import load_checkpoint

    space_file = tmp_path / "space.py"
    space_file.write_text(SPACE)
    out = tmp_path / "search"
    cfg = small_cfg(
        out,
        space=resolve_space(f"{space_file}:grow_once"),
        num_samples=1,
        scheduler="fifo",
        experiment="artifacts",
    )
    cfg.save()
    assert run_search(cfg).complete

    client = MlflowClient(cfg.tracking_uri)
    exp = client.get_experiment_by_name("artifacts")
    runs = client.search_runs([exp.experiment_id], "tags.`raygrow.role` = 'trial'")
    assert len(runs) == 5  # scratch at 3 budgets, small, one grown schedule
    for run in runs:
        tags = run.data.tags
        assert tags["raygrow.status"] == "completed"
        assert "raygrow.checkpoint_path" not in tags  # no node-local path any more
        uri = tags["raygrow.checkpoint_artifact"]
        files = [f.path for f in client.list_artifacts(run.info.run_id, "checkpoint")]
        assert uri == f"runs:/{run.info.run_id}/{files[0]}" and len(files) == 1, files
    (grown,) = [r for r in runs if r.data.tags["raygrow.arm"] == "grown"]
    run_id = grown.info.run_id
    assert grown.data.tags["raygrow.operators"] == "stack"
    assert "growth_loss_before" in grown.data.metrics
    assert [f.path for f in client.list_artifacts(run_id, "growth")] == ["growth/event-00.json"]

    # the trials' folders and Ray's storage are gone (other machines): the store has it all
    for folder in ("trials", "ray", "baselines", "search", "prefixes"):
        shutil.rmtree(out / folder, ignore_errors=True)
    left = [p for p in out.rglob("ckpt-*.pt") if "mlartifacts" not in p.parts]
    assert not left, left
    folder = tmp_path / "export"
    assert main(["--run-id", run_id, "--tracking-uri", cfg.tracking_uri, "--out", str(folder)]) == 0

    ckpt = Path(client.download_artifacts(run_id, "checkpoint", str(tmp_path / "dl")))
    state = load_checkpoint(ckpt)
    assert len(state.growth_history) == 1
    ours = build_model(state.model_config, state.model_state).eval()
    for i, s in branch_scales(state).items():
        ours.layers[i].branch_scale = s
    tok = transformers.AutoTokenizer.from_pretrained(folder)
    ids = torch.tensor([tok("The quick brown fox jumps over the lazy dog.")["input_ids"]])
    hf = transformers.LlamaForCausalLM.from_pretrained(folder).eval()
    with torch.no_grad():
        torch.testing.assert_close(hf(ids).logits, ours(ids), atol=1e-5, rtol=1e-5)
