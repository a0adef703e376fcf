"""MLflow records of growth-schedule searches: one parent run per search, one child per trial.

    schema.py      metric and tag names, arms, statuses, key and text rules (no MLflow import)
    store.py       which store a command uses (flag, $MLFLOW_TRACKING_URI, default) and its checks
    provenance.py  run-context tags, git commit, package versions, the corpus as a dataset input
    writer.py      `SearchTracker`: the parent and child runs, their params, metrics, artifacts
    render.py      the files it attaches: a trial's loss-vs-FLOPs PNG, the ranked table
    reader.py      trial runs, curves and recorded checkpoints read back (analysis, export)
    artifacts.py   a trial's checkpoint (+ tokenizer) uploaded from where it trained, downloaded
                   by export from anywhere (`TrialArtifacts`, `checkpoint_of_run`)

Layout in the store (one MLflow experiment per search space/target):

    parent run   name "<experiment> <start time>" (e.g. `default-4x64 2026-12-03 17:40`)
                 tags raygrow.role=search, raygrow.search=<search id>
                 params: space, budget, target, seeds, ... (flattened)
                 tags: MLflow's own run context (`mlflow.source.*`, `mlflow.user`, git commit,
                 branch and repo URL from `resolve_tags`), package versions, raygrow.git_dirty;
                 input: the corpus manifest as a dataset (context "training");
                 at the end the ranked table under tables/
      child run  name: its schedule (`stack x4 @32%`, `scratch 4x64 @75% budget`)
                 tags raygrow.role=trial, raygrow.trial_id=<Tune trial id>, raygrow.arm=<arm>,
                 mlflow.parentRunId=<parent>, raygrow.status=<status text>, run context tags
                 params: the flattened schedule; metrics with step = tokens seen;
                 input: the same corpus dataset;
                 tag raygrow.checkpoint_artifact=runs:/<run_id>/checkpoint/ckpt-<step>.pt;
                 artifacts: checkpoint/ckpt-<step>.pt (+ tokenizer.json for BPE; uploaded by
                 the trial where it trained), growth/event-*.json (from the trial's reports),
                 schedule.json, train_config.json, plots/loss_vs_flops.png

Run names are for people only: resume finds runs by the tags `raygrow.search` and
`raygrow.trial_id`, never by name.

Arms (tag `raygrow.arm`): `grown` (a growth schedule), `scratch` (the target model from scratch
with its own, annealed LR schedule at its budget; several budgets make the baseline frontier),
`small` (the source model only; the validity check needs it).

Resume: `start_search` reuses the newest parent run with the same `raygrow.search` tag, and
`trial_run` reuses the child with the same `raygrow.trial_id` under that parent, so restoring a
search never duplicates runs. Only this package and `raygrow.analysis` import mlflow; neither
imports ray, and this package never imports `raygrow.analysis` (analysis reads what it writes).
Importing it is cheap: MLflow, matplotlib and pandas are imported on use.
"""

from __future__ import annotations

from raygrow.tracking.artifacts import TrialArtifacts, checkpoint_of_run
from raygrow.tracking.provenance import corpus_dataset_input
from raygrow.tracking.store import (
    check_reachable,
    default_tracking_uri,
    resolve_tracking_uri,
    sqlite_path,
    tracking_uri_origin,
)
from raygrow.tracking.writer import SearchTracker

__all__ = [
    "SearchTracker",
    "TrialArtifacts",
    "check_reachable",
    "checkpoint_of_run",
    "corpus_dataset_input",
    "default_tracking_uri",
    "resolve_tracking_uri",
    "sqlite_path",
    "tracking_uri_origin",
]
