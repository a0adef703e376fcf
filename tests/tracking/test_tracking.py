"""SearchTracker against real stores: SQLite, and an `mlflow server` read back over REST."""

from __future__ import annotations

import json
import re
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from fixtures.mlflow_server import local_server
from fixtures.mlflow_store import sqlite_store
from fixtures.ports import free_port

from raygrow.errors import ConfigError
from raygrow.results import status_kind
from raygrow.tracking import (
    SearchTracker,
    corpus_dataset_input,
    default_tracking_uri,
    resolve_tracking_uri,
    tracking_uri_origin,
)
from raygrow.tracking.schema import flatten

REPO = Path(__file__).resolve().parents[2]
GROWN_PARAMS = {
    "grow_at": 0.25,
    "operator": "stack",
    "growth": {"stages": [{"operator": "stack", "factor": 2, "at": 0.25, "params": {}}]},
    "schedule": "stack x2 @25%",
}


def curve(trial: str, tr: SearchTracker, n: int = 4, tokens_per_eval: int = 1000) -> None:
    for i in range(1, n + 1):
        tokens = i * tokens_per_eval
        tr.log_metrics(
            trial,
            {
                "val_loss": 3.0 - 0.2 * i,
                "val_bpb": (3.0 - 0.2 * i) / 0.693,
                "train_loss": 3.1 - 0.2 * i,
                "tokens": tokens,
                "flops": tokens * 1e6,
                "tokens_per_s": 5000.0,
                "lr": 1e-3,
                "n_params": 1000 if i <= 1 else 2000,
                "mfu": 0.2,
                # Tune autofill / non-numeric noise must not become metrics
                "time_this_iter_s": 0.5,
                "training_iteration": i,
                "done": False,
                "checkpoint_path": "/x",
            },
            step=tokens,
        )


EVENT = {
    "operator": "stack",
    "loss_before": 2.81,
    "loss_after": 3.02,
    "n_params_before": 1000,
    "n_params_after": 2000,
    "config_before": {"n_layers": 1, "d_model": 32},
    "config_after": {"n_layers": 2, "d_model": 32},
    "max_logit_diff": 0.4,
    "tokens": 1500,
    "flops": 1.5e9,
    "step": 12,
    "stage": 0,
}


def log_search(uri: str, experiment: str = "exp") -> tuple[SearchTracker, str]:
    tr = SearchTracker(uri, experiment)
    parent = tr.start_search(
        {"space": "depth.gstack", "budget": {"tokens": 4000}, "seeds": [0, 1]},
        {"raygrow.search": "search-1", "owner": "test"},
    )
    tr.trial_run("t-grown", GROWN_PARAMS, "grown")
    tr.trial_run("t-scratch", {"schedule": "scratch 2x32 @100% budget"}, "scratch")
    tr.trial_run("t-small", {"schedule": "small 1x32"}, "small")
    for trial in ("t-grown", "t-scratch", "t-small"):
        curve(trial, tr)
    tr.log_growth_events("t-grown", [EVENT])
    tr.finish_trial(
        "t-grown",
        "completed",
        {"speedup_vs_scratch": 1.25, "raygrow.schedule": "stack x2 @25%"},
        {"schedule.json": {"stages": [{"operator": "stack"}]}},
    )
    tr.finish_trial("t-scratch", "stopped by ASHA at FLOPs 4e+09", {}, {})
    tr.finish_trial("t-small", "failed: NaN loss at step 7", {}, {})
    return tr, parent


@pytest.fixture()
def store(tmp_path: Path) -> str:
    return sqlite_store(tmp_path / "store")


def test_sqlite_parent_children_metrics_status_artifacts(store: str, tmp_path: Path) -> None:
    tr, parent = log_search(store)
    c = tr.client
    children = c.search_runs([tr.experiment_id], f"tags.`mlflow.parentRunId` = '{parent}'")
    assert len(children) == 3
    by_trial = {r.data.tags["raygrow.trial_id"]: r for r in children}
    grown, scratch, small = by_trial["t-grown"], by_trial["t-scratch"], by_trial["t-small"]

    # params: the flattened schedule
    assert grown.data.params["growth.stages.0.operator"] == "stack"
    assert grown.data.params["growth.stages.0.factor"] == "2"
    assert grown.data.params["grow_at"] == "0.25"
    assert grown.data.tags["raygrow.arm"] == "grown"
    assert scratch.data.tags["raygrow.arm"] == "scratch"

    # metric history: step = tokens; only contract metrics and extras
    hist = c.get_metric_history(grown.info.run_id, "val_loss")
    assert [m.step for m in hist] == [1000, 2000, 3000, 4000]
    assert [round(m.value, 6) for m in hist] == [2.8, 2.6, 2.4, 2.2]
    assert "mfu" in grown.data.metrics and "val_bpb" in grown.data.metrics
    for junk in ("time_this_iter_s", "training_iteration", "done", "checkpoint_path"):
        assert junk not in grown.data.metrics
    assert grown.data.metrics["speedup_vs_scratch"] == 1.25

    # growth events: metrics at the event's token step + a JSON artifact
    (before,) = c.get_metric_history(grown.info.run_id, "growth_loss_before")
    assert (before.step, before.value) == (1500, 2.81)
    assert grown.data.metrics["growth_n_params_after"] == 2000
    assert grown.data.tags["raygrow.operators"] == "stack"
    event = json.loads(
        Path(
            c.download_artifacts(grown.info.run_id, "growth/event-00.json", str(tmp_path))
        ).read_text()
    )
    assert event["loss_after"] == 3.02

    # status tags and MLflow run status
    assert grown.data.tags["raygrow.status"] == "completed"
    assert scratch.data.tags["raygrow.status"] == "stopped by ASHA at FLOPs 4e+09"
    assert small.data.tags["raygrow.status"] == "failed: NaN loss at step 7"
    assert [r.info.status for r in (grown, scratch, small)] == ["FINISHED", "KILLED", "FAILED"]
    assert scratch.data.tags["raygrow.status_kind"] == "stopped"

    # artifacts: schedule JSON and the loss-vs-FLOPs plot
    files = {a.path for a in c.list_artifacts(grown.info.run_id)}
    assert {"schedule.json", "plots", "growth"} <= files
    png = Path(c.download_artifacts(grown.info.run_id, "plots/loss_vs_flops.png", str(tmp_path)))
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # parent: params, versions, git; the ranked table at the end
    p = c.get_run(parent)
    assert p.data.params["budget.tokens"] == "4000"
    assert p.data.tags["raygrow.search"] == "search-1" and p.data.tags["owner"] == "test"
    assert p.data.tags["raygrow.version.mlflow"].startswith("3.")
    assert p.info.status == "RUNNING"
    tr.finish_search(
        [{"rank": 1, "trial": "t-grown", "speedup_vs_scratch": 1.25}],
        {"best_speedup": 1.25, "best_trial": "t-grown"},
    )
    p = c.get_run(parent)
    assert p.info.status == "FINISHED"
    assert p.data.tags["summary.best_trial"] == "t-grown"
    assert p.data.metrics["best_speedup"] == 1.25
    tables = {a.path for a in c.list_artifacts(parent, "tables")}
    assert {f"tables/ranked.{ext}" for ext in ("csv", "parquet", "md", "json")} <= tables
    # the artifacts sit next to the database, not in the (Tune-changed) working directory
    assert Path(store.removeprefix("sqlite:///")).parent.joinpath("mlartifacts").is_dir()


def test_resume_reuses_parent_and_children(store: str) -> None:
    tr, parent = log_search(store)
    grown_id = tr.trial_run("t-grown", GROWN_PARAMS, "grown")  # same process: cached
    # a new driver process (Tuner.restore): new tracker, same search id
    tr2 = SearchTracker(store, "exp")
    assert tr2.start_search({"space": "depth.gstack"}, {"raygrow.search": "search-1"}) == parent
    assert tr2.trial_run("t-grown", GROWN_PARAMS, "grown") == grown_id
    assert tr2.trial_run("t-grown", {**GROWN_PARAMS, "grow_at": 0.3}, "grown") == grown_id
    runs = tr2.client.search_runs([tr2.experiment_id], "tags.`raygrow.trial_id` = 't-grown'")
    assert len(runs) == 1
    # a changed value cannot overwrite an MLflow param: it is kept as a tag
    assert runs[0].data.params["grow_at"] == "0.25"
    assert runs[0].data.tags["raygrow.param_changed.grow_at"] == "0.3"
    # a restarted trial that logs again shows as running until it finishes again
    tr2.log_metrics("t-small", {"val_loss": 2.0, "flops": 5e9, "tokens": 5000}, step=5000)
    assert tr2.client.get_run(tr2._runs["t-small"]).info.status == "RUNNING"
    tr2.finish_trial("t-small", "completed", {}, {})
    assert tr2.client.get_run(tr2._runs["t-small"]).info.status == "FINISHED"
    parents = tr2.client.search_runs([tr2.experiment_id], "tags.`raygrow.role` = 'search'")
    assert len(parents) == 1
    # another search id in the same experiment gets its own parent
    assert tr2.start_search({}, {"raygrow.search": "search-2"}) != parent


def test_lost_trials_are_closed_not_left_running(store: str) -> None:
    """A driver killed before Tune saved its state leaves a child no trial will finish."""
    tr, _ = log_search(store)
    tr.trial_run("t-lost", GROWN_PARAMS, "grown")
    tr.log_metrics("t-lost", {"val_loss": 3.0, "flops": 1e9, "tokens": 1000}, step=1000)
    tr.trial_run("t-live", GROWN_PARAMS, "grown")
    assert tr.close_lost_trials({"t-live", "t-grown", "t-small"}) == ["t-lost"]
    lost = tr.client.get_run(tr._runs["t-lost"])
    assert lost.info.status == "FAILED"
    assert lost.data.tags["raygrow.status"].startswith("failed: lost")
    assert tr.client.get_run(tr._runs["t-live"]).info.status == "RUNNING"  # known: untouched
    assert tr.close_lost_trials({"t-live"}) == []  # said once


def test_contract_errors(store: str) -> None:
    tr = SearchTracker(store, "exp")
    with pytest.raises(RuntimeError, match="start_search"):
        tr.trial_run("t", {}, "grown")
    tr.start_search({}, {})
    with pytest.raises(ValueError, match="unknown arm"):
        tr.trial_run("t", {}, "bogus")
    with pytest.raises(KeyError, match="trial_run"):
        tr.log_metrics("never-started", {"val_loss": 1.0}, step=1)
    tr.trial_run("t", {}, "baseline")  # alias of scratch
    with pytest.raises(ValueError, match="must start with"):
        tr.finish_trial("t", "done", {}, {})
    assert status_kind("Stopped by ASHA at FLOPs 1e9") == "stopped"


def test_flatten_and_default_uri(tmp_path: Path) -> None:
    flat = flatten({"a": {"b": 1, "c": [1, 2]}, "stages": [{"op": "x"}, {"op": "y"}], "n": None})
    assert flat == {"a.b": 1, "a.c": [1, 2], "stages.0.op": "x", "stages.1.op": "y", "n": None}
    uri = default_tracking_uri(tmp_path / "out")
    assert uri.startswith("sqlite:////") and uri.endswith("/out/mlflow.db")


def test_unreachable_stores_fail_fast_with_one_line(tmp_path: Path) -> None:
    t0 = time.monotonic()
    with pytest.raises(ConfigError, match="did not answer") as exc:
        SearchTracker.check_reachable(f"http://127.0.0.1:{free_port()}", timeout_s=2.0)
    assert time.monotonic() - t0 < 3.0
    assert "\n" not in str(exc.value)
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    with pytest.raises(ConfigError, match="is a file, not a folder"):
        SearchTracker.check_reachable(f"sqlite:///{blocker}/sub/mlflow.db")
    with pytest.raises(ConfigError, match="relative"):
        SearchTracker.check_reachable("sqlite:///relative/mlflow.db")
    with pytest.raises(ConfigError, match="file store"):
        SearchTracker.check_reachable(f"file://{tmp_path}/mlruns")
    with pytest.raises(ConfigError, match="not a SQLite database"):
        SearchTracker.check_reachable(f"sqlite:///{blocker}")
    # a folder that does not exist yet is fine when its parent is writable (the search makes it)
    SearchTracker.check_reachable(default_tracking_uri(tmp_path / "new" / "deeper"))
    assert not (tmp_path / "new").exists()


def _manifest() -> Any:
    from raygrow.data import Manifest, SplitInfo

    return Manifest(
        source="default",
        source_kind="default",
        tokenizer="byte",
        vocab_size=256,
        dtype="uint8",
        splits={
            "train": SplitInfo(9000, 9, 9000, "a" * 64, ("train-0.parquet",)),
            "val": SplitInfo(1000, 1, 1000, "b" * 64, ("val-0.parquet",)),
        },
        split={"method": "fixed"},
        content_sha256="0123456789abcdef" * 4,
    )


def test_readable_run_names_context_tags_and_dataset_inputs(store: str, tmp_path: Path) -> None:
    tr = SearchTracker(store, "default-4x64")
    dataset = corpus_dataset_input(_manifest(), tmp_path / "corpus")
    parent = tr.start_search({"space": "default"}, {"raygrow.search": "/x/y"}, dataset=dataset)
    grown = tr.trial_run("t_0001", GROWN_PARAMS, "grown", run_name="stack x4 @32%")
    scratch = tr.trial_run("t_0002", {}, "scratch", run_name="scratch 4x64 @75% budget")
    plain = tr.trial_run("t_0003", {}, "small")  # no description: the trial id
    c = tr.client

    # names a person can read, visible through search_runs
    p = c.get_run(parent)
    assert re.fullmatch(r"default-4x64 \d{4}-\d\d-\d\d \d\d:\d\d", p.info.run_name)
    by_name = {
        r.info.run_name: r.info.run_id
        for r in c.search_runs([tr.experiment_id], f"tags.`mlflow.parentRunId` = '{parent}'")
    }
    assert by_name == {"stack x4 @32%": grown, "scratch 4x64 @75% budget": scratch, "t_0003": plain}
    (found,) = c.search_runs([tr.experiment_id], "attributes.run_name = 'stack x4 @32%'")
    assert found.data.tags["raygrow.trial_id"] == "t_0001"

    # the tags resume relies on are unchanged; names are not used to find runs again
    tr2 = SearchTracker(store, "default-4x64")
    assert tr2.start_search({}, {"raygrow.search": "/x/y"}, dataset=dataset) == parent
    assert tr2.trial_run("t_0001", GROWN_PARAMS, "grown", run_name="renamed") == grown
    assert c.get_run(parent).info.run_name == p.info.run_name  # a resumed parent keeps it
    assert c.get_run(grown).info.run_name == "stack x4 @32%"
    assert p.data.tags["raygrow.search"] == "/x/y" and p.data.tags["raygrow.role"] == "search"

    # MLflow's own run context; raygrow keeps only what MLflow lacks
    repo_head = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True
    ).stdout.strip()
    for run_id in (parent, grown):
        tags = c.get_run(run_id).data.tags
        assert tags["mlflow.source.type"] == "LOCAL"
        assert tags["mlflow.source.name"] and tags["mlflow.user"]
        if repo_head:
            assert tags["mlflow.source.git.commit"] == repo_head
            assert tags["raygrow.git_dirty"] in ("true", "false")
    assert p.data.tags["raygrow.version.mlflow"].startswith("3.")

    # the corpus manifest is every run's dataset input, context "training"
    for run_id in (parent, grown, scratch, plain):
        (inp,) = c.get_run(run_id).inputs.dataset_inputs
        assert inp.dataset.name == "default (byte)"
        assert inp.dataset.digest == "0123456789abcdef"
        assert inp.dataset.source_type == "local"
        assert json.loads(inp.dataset.source)["uri"] == str((tmp_path / "corpus").resolve())
        profile = json.loads(inp.dataset.profile)
        assert profile["content_sha256"] == "0123456789abcdef" * 4
        assert (profile["train_tokens"], profile["val_tokens"]) == (9000, 1000)
        assert {(t.key, t.value) for t in inp.tags} == {("mlflow.data.context", "training")}
    # logging it again on resume does not duplicate it
    assert len(c.get_run(parent).inputs.dataset_inputs) == 1


def test_tracking_uri_precedence_flag_env_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert resolve_tracking_uri(None, "sqlite:////d/mlflow.db") == "sqlite:////d/mlflow.db"
    assert tracking_uri_origin(None) is None
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://env:5000")
    assert resolve_tracking_uri(None, "sqlite:////d/mlflow.db") == "http://env:5000"
    assert tracking_uri_origin(None) == "set by $MLFLOW_TRACKING_URI"
    assert resolve_tracking_uri("http://flag:1", "sqlite:////d/mlflow.db") == "http://flag:1"
    assert tracking_uri_origin("http://flag:1") is None
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "")  # empty = unset
    assert resolve_tracking_uri(None, None) is None


def test_a_uri_mlflow_cannot_use_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no store for the scheme 'foo'") as exc:
        SearchTracker.check_reachable("foo://bar")
    assert "\n" not in str(exc.value) and "sqlite" in str(exc.value)
    with pytest.raises(ConfigError, match=r"\(set by \$MLFLOW_TRACKING_URI\)$"):
        SearchTracker.check_reachable("foo://bar", origin="set by $MLFLOW_TRACKING_URI")


def _rest(url: str, path: str, body: dict | None = None) -> dict:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(
        url + path, data=data, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read())


def test_against_a_real_mlflow_server_read_back_over_rest(tmp_path: Path) -> None:
    backend = sqlite_store(tmp_path / "server")
    with local_server(backend, artifacts_dir=tmp_path / "server" / "artifacts") as url:
        SearchTracker.check_reachable(url)
        tr, parent = log_search(url, "exp-http")
        exp = _rest(url, "/api/2.0/mlflow/experiments/get-by-name?experiment_name=exp-http")
        exp_id = exp["experiment"]["experiment_id"]
        found = _rest(
            url,
            "/api/2.0/mlflow/runs/search",
            {"experiment_ids": [exp_id], "filter": f"tags.`mlflow.parentRunId` = '{parent}'"},
        )["runs"]
        assert len(found) == 3
        runs = {
            {t["key"]: t["value"] for t in r["data"]["tags"]}["raygrow.trial_id"]: r for r in found
        }
        grown = runs["t-grown"]
        params = {p["key"]: p["value"] for p in grown["data"]["params"]}
        assert params["growth.stages.0.operator"] == "stack"
        assert grown["info"]["status"] == "FINISHED"
        assert runs["t-scratch"]["info"]["status"] == "KILLED"
        assert runs["t-small"]["info"]["status"] == "FAILED"
        run_id = grown["info"]["run_id"]
        hist = _rest(url, f"/api/2.0/mlflow/metrics/get-history?run_id={run_id}&metric_key=flops")
        assert [int(m["step"]) for m in hist["metrics"]] == [1000, 2000, 3000, 4000]
        arts = _rest(url, f"/api/2.0/mlflow/artifacts/list?run_id={run_id}&path=plots")
        assert [f["path"] for f in arts["files"]] == ["plots/loss_vs_flops.png"]
        # artifacts went through the server (proxied), into its destination folder
        assert list((tmp_path / "server" / "artifacts").rglob("loss_vs_flops.png"))
        # idempotence holds over HTTP too
        assert len({tr.trial_run("t-grown", GROWN_PARAMS, "grown") for _ in range(2)}) == 1
    with pytest.raises(ConfigError, match="did not answer"):  # stopped: the port is closed
        SearchTracker.check_reachable(url, timeout_s=2.0)
