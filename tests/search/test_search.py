"""raygrow.search without Ray: wiring, baseline arms, trial plans, results, CLI validation."""

from __future__ import annotations

import math
import os
import pickle
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fixtures.search_runs import small_cfg

from raygrow.errors import ConfigError
from raygrow.model import ModelConfig
from raygrow.search.config import SMOKE_TRAIN, SearchConfig
from raygrow.search.results import (
    TrialInfo,
    build_rows,
    one_line_error,
    to_markdown,
    validity,
)
from raygrow.search.trainable import arm_tokens, baseline_arms, divergence_reason, plan_trial

REPO = Path(__file__).resolve().parents[2]


# --------------------------------------------------------------------------- wiring
def test_search_wiring(tmp_path) -> None:
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.optuna import OptunaSearch

    from raygrow.search.tuner import search_wiring

    cfg = small_cfg(tmp_path, seed=7, grace_frac=0.25, reduction_factor=3)
    w = search_wiring(cfg)
    assert isinstance(w.searcher, OptunaSearch)
    assert (w.searcher.metric, w.searcher.mode) == ("val_loss", "min")  # on the searcher itself
    sampler = w.searcher._sampler
    assert type(sampler).__name__ == "TPESampler" and sampler._multivariate
    assert callable(w.searcher._space) and w.searcher._space.spec == "default"
    assert isinstance(w.scheduler, ASHAScheduler)
    asha = w.scheduler
    assert asha._time_attr == "flops"  # the compute clock, not training_iteration
    assert (asha._metric, asha._mode) == ("val_loss", "min")
    assert asha._max_t == pytest.approx(cfg.budget_flops)
    milestones = sorted(m for m, _ in asha._brackets[0]._rungs)
    assert milestones[0] == pytest.approx(0.25 * cfg.budget_flops)  # the grace period
    assert milestones[-1] < cfg.budget_flops
    assert asha._reduction_factor == 3
    assert w.tune_config.num_samples == 3 and w.tune_config.max_concurrent_trials == 1
    assert w.tune_config.search_alg is w.searcher and w.tune_config.scheduler is asha
    assert w.run_config.storage_path == str(tmp_path / "ray") and w.run_config.name == "search"
    assert w.run_config.failure_config.max_failures == cfg.max_failures
    pickle.dumps(w.run_config.callbacks)  # Tune pickles callbacks for Tuner.restore


def test_grid_sampler_and_fifo_wiring(tmp_path) -> None:
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    from raygrow.search.tuner import search_wiring

    cfg = small_cfg(
        tmp_path,
        space="timing_factor",
        target=ModelConfig.from_shape("12x32"),
        small=ModelConfig.from_shape("6x32"),
        sampler="grid",
        scheduler="fifo",
        num_samples=12,
    )
    w = search_wiring(cfg)
    sampler = w.searcher._sampler
    assert type(sampler).__name__ == "GridSampler"
    assert sampler._search_space == {"g": [2, 3, 4, 6], "grow_at": [0.15, 0.3, 0.5]}
    assert isinstance(w.scheduler, FIFOScheduler) and not isinstance(w.scheduler, ASHAScheduler)
    assert SearchConfig.load(cfg.save().parent).sampler == "grid"  # kept for --resume
    with pytest.raises(ConfigError, match="--sampler"):
        small_cfg(tmp_path, sampler="bayes")
    with pytest.raises(ConfigError, match="--scheduler"):
        small_cfg(tmp_path, scheduler="pbt")


def test_storage_paths(tmp_path) -> None:
    from raygrow.search.tuner import search_wiring

    local = small_cfg(tmp_path)
    assert local.tune_storage == f"{tmp_path}/ray" and local.train_storage == f"{tmp_path}/train"
    s3 = small_cfg(tmp_path, storage="s3://bucket/raygrow/x")
    assert search_wiring(s3).run_config.storage_path == "s3://bucket/raygrow/x/ray"
    assert s3.train_storage == "s3://bucket/raygrow/x/train"


def test_baseline_wiring_and_arms(tmp_path) -> None:
    from ray.tune.schedulers import FIFOScheduler

    from raygrow.search.tuner import baseline_wiring

    cfg = small_cfg(tmp_path, baseline_fracs=(0.5, 0.75))
    w = baseline_wiring(cfg)
    assert isinstance(w.scheduler, FIFOScheduler) and w.searcher is None  # never stopped
    arms = baseline_arms(cfg)
    assert list(w.param_space["schedule"]["grid_search"]) == list(arms)
    kinds = [(a["arm"], a["frac"], ModelConfig.from_dict(a["model"]).shape) for a in arms.values()]
    assert kinds == [
        ("scratch", 1.0, "4x64"),
        ("scratch", 0.75, "4x64"),
        ("scratch", 0.5, "4x64"),
        ("small", 1.0, "2x64"),
    ]
    plans = {d: plan_trial(cfg, {"schedule": d}, "t") for d in arms}
    tokens = sorted(p.train.tokens for p in plans.values() if p.arm == "scratch")
    assert tokens == [arm_tokens(cfg, 0.5), arm_tokens(cfg, 0.75), cfg.tokens]
    for p in plans.values():  # each budget has its own complete LR schedule and the same seed
        assert p.train.total_steps * p.train.tokens_per_step == p.train.tokens
        assert p.train.seed == cfg.seed and p.schedule is None


def test_plan_of_a_sampled_trial(tmp_path) -> None:
    import optuna

    from raygrow.search.spaces import SpaceRef

    cfg = small_cfg(tmp_path)
    added = SpaceRef("gstack")(
        optuna.trial.FixedTrial(
            {
                "g": 2,
                "grow_at": 0.25,
                "operator": "stack",
                "stack.layer_map": "interleave",
                "opt_policy": "carry",
            }
        )
    )
    plan = plan_trial(cfg, added, "abc")
    assert plan.arm == "grown" and plan.description == "stack x2 @25% [layer_map=interleave]"
    assert plan.train.model.shape == "2x64" and plan.schedule.final_config().shape == "4x64"
    assert plan.schedule.stages[0].params["layer_map"] == "interleave"
    assert plan.train.tokens == cfg.tokens  # same tokens as scratch, fewer FLOPs
    assert plan.train.out_dir == str(tmp_path / "trials" / "abc")
    assert (plan.budget_frac, plan.seed) == (1.0, cfg.seed)


def test_tracking_callback_names_runs_by_schedule_and_logs_the_corpus(
    tmp_path, monkeypatch
) -> None:
    """Child runs are named by their schedule; parent and children get the corpus input."""
    import types

    import optuna
    from fixtures.mlflow_store import sqlite_store

    from raygrow.search.callbacks import TrackingCallback, get_tracker
    from raygrow.search.spaces import SpaceRef
    from raygrow.search.tuner import corpus_input

    docs = tmp_path / "docs"
    docs.mkdir()
    for i in range(20):
        (docs / f"d{i:02d}.txt").write_text(f"document {i} " + "some words here\n" * 200)
    monkeypatch.setenv("RAYGROW_CACHE_DIR", str(tmp_path / "cache"))
    cfg = small_cfg(
        tmp_path,
        tracking_uri=sqlite_store(tmp_path / "store"),
        experiment="names",
        train=SMOKE_TRAIN.replace(data=str(docs)),
    )
    tracker = get_tracker(cfg.tracking_uri, cfg.experiment)
    parent = tracker.start_search({}, {"raygrow.search": "s"}, dataset=corpus_input(cfg))
    grown = SpaceRef("gstack")(
        optuna.trial.FixedTrial(
            {
                "g": 2,
                "grow_at": 0.25,
                "operator": "stack",
                "stack.layer_map": "stack",
                "opt_policy": "carry",
            }
        )
    )
    callback = TrackingCallback(cfg.to_dict())
    for trial_id, config in (
        ("t_00000", {"schedule": "scratch 4x64 @50% budget"}),
        ("t_00001", grown),
    ):
        trial = types.SimpleNamespace(trial_id=trial_id, config=config)
        callback.on_trial_start(0, [], trial)
    runs = tracker.client.search_runs(
        [tracker.experiment_id], f"tags.`mlflow.parentRunId` = '{parent}'"
    )
    names = {r.data.tags["raygrow.trial_id"]: r.info.run_name for r in runs}
    assert names == {
        "t_00000": "scratch 4x64 @50% budget",
        "t_00001": "stack x2 @25% [layer_map=stack]",
    }
    for run_id in [parent, *(r.info.run_id for r in runs)]:
        (inp,) = tracker.client.get_run(run_id).inputs.dataset_inputs
        assert inp.dataset.name == "docs (byte)"
        assert str(tmp_path / "cache") in inp.dataset.source
    assert not callback._warned  # no tracking call failed


def test_search_config_round_trip(tmp_path) -> None:
    cfg = small_cfg(tmp_path)
    cfg.save()
    assert SearchConfig.load(tmp_path) == cfg
    with pytest.raises(ConfigError, match="not a raygrow search folder"):
        SearchConfig.load(tmp_path / "nope")
    with pytest.raises(ConfigError, match="baseline fractions"):
        small_cfg(tmp_path, baseline_fracs=(0.5,))


def test_validate_lists_every_problem_for_python_callers(tmp_path) -> None:
    """The CLI's checks live in SearchConfig.validate: one ConfigError, one line per problem."""
    with pytest.raises(ConfigError) as exc:
        small_cfg(
            tmp_path,
            tokens=100,
            workers=3,
            sampler="bayes",
            small=ModelConfig.from_shape("8x64"),
            train=SMOKE_TRAIN.replace(lr=-1.0),
        )
    lines = str(exc.value).splitlines()
    expected = ["--sampler", "at least 16 steps", "lr=-1", "not divisible by --workers 3"]
    expected.append("not smaller than the target")
    assert len(lines) == len(expected), lines
    for line, needle in zip(lines, expected, strict=True):
        assert needle in line, lines
    with pytest.raises(ConfigError, match="pass a ModelConfig"):
        small_cfg(tmp_path, target=ModelConfig.from_shape("4x64").to_dict())


def test_train_settings_cover_train_config() -> None:
    """Every TrainConfig field but the per-arm ones is a search setting (TrainConfig defaults)."""
    import dataclasses

    from raygrow.search.config import PER_ARM, TrainSettings
    from raygrow.train.config import TrainConfig

    settings = {f.name for f in dataclasses.fields(TrainSettings)}
    assert settings == {f.name for f in dataclasses.fields(TrainConfig)} - set(PER_ARM)
    assert TrainSettings().value("seq_len") == TrainConfig().seq_len


def test_derived_cadence_and_explicit_settings(tmp_path) -> None:
    """Unset cadence/seed follow the budget and the search seed; set ones win, even at 0."""
    derived = small_cfg(tmp_path, seed=5).base_train()
    assert (derived.warmup_steps, derived.eval_every_tokens) == (8, 10 * 512)
    assert (derived.checkpoint_every_tokens, derived.seed) == (40 * 512, 5)
    explicit = small_cfg(
        tmp_path, seed=5, train=SMOKE_TRAIN.replace(checkpoint_every_tokens=0, seed=0)
    ).base_train()
    assert (explicit.checkpoint_every_tokens, explicit.seed) == (0, 0)


def test_old_search_json_loads_for_resume(tmp_path) -> None:
    """A search.json of an earlier version (dict-valued target/train/small, today's keys)."""
    import json

    old = {
        "address": None,
        "baseline_fracs": [0.5, 0.75],
        "experiment": "smoke-default-4x64",
        "grace_frac": 0.3,
        "max_concurrent": 1,
        "max_failures": 1,
        "num_samples": 2,
        "out": str(tmp_path),
        "reduction_factor": 2,
        "sampler": "tpe",
        "scheduler": "asha",
        "seed": 0,
        "small": {"n_layers": 2, "d_model": 64, "n_heads": 1, "max_seq_len": 256},
        "smoke_test": True,
        "space": "default",
        "storage": None,
        "target": {"n_layers": 4, "d_model": 64, "n_heads": 1, "n_kv_heads": None, "d_ff": None},
        "tokens": 81920,
        "tracking_uri": f"sqlite:///{tmp_path}/mlflow.db",
        "train": {
            "eval_windows": 16,
            "log_every_steps": 0,
            "lr": 0.003,
            "lr_schedule": "cosine",
            "min_lr_frac": 0.1,
            "seq_len": 64,
            "batch_size": 8,
            "threads": 2,
            "amp": False,
        },
        "use_gpu": False,
        "workers": 1,
    }
    (tmp_path / "search.json").write_text(json.dumps(old))
    cfg = SearchConfig.load(tmp_path)
    assert cfg.target == ModelConfig.from_shape("4x64") and cfg.small.shape == "2x64"
    assert cfg.train.threads == 2 and cfg.train.precision == "fp32"  # `amp` as it was read
    plans = {d: plan_trial(cfg, {"schedule": d}, "t") for d in baseline_arms(cfg)}
    full = plans["scratch 4x64 @100% budget"].train
    # the values the earlier version derived: 160 steps of 8 x 64 tokens
    assert (full.tokens, full.warmup_steps, full.eval_every_tokens) == (81920, 8, 5120)
    assert (full.checkpoint_every_tokens, full.seed, full.lr) == (20480, 0, 0.003)
    assert SearchConfig.from_dict(cfg.to_dict()) == cfg


def test_trial_plans_carry_budget_fraction_and_seed(tmp_path) -> None:
    cfg = small_cfg(tmp_path, seed=3)
    fracs = {
        p.description: (p.budget_frac, p.seed)
        for p in (plan_trial(cfg, {"schedule": d}, "t") for d in baseline_arms(cfg))
    }
    assert fracs == {
        "scratch 4x64 @100% budget": (1.0, 3),
        "scratch 4x64 @75% budget": (0.75, 3),
        "scratch 4x64 @50% budget": (0.5, 3),
        "small 2x64 only @100% budget": (1.0, 3),
    }


# --------------------------------------------------------------------------- results
def info(tid, arm, desc, status, tokens, planned, loss, flops, error=None) -> TrialInfo:
    """Budget fraction: planned tokens / 100 (the full budget of these examples)."""
    return TrialInfo(
        budget_frac=planned / 100,
        seed=0,
        trial_id=tid,
        arm=arm,
        schedule=desc,
        tune_status=status,
        planned_tokens=planned,
        last_result={"tokens": tokens, "val_loss": loss, "flops": flops},
        error=error,
    )


def test_rows_status_speedup_and_rank() -> None:
    infos = [
        info("s100", "scratch", "scratch 4x64 @100% budget", "TERMINATED", 100, 100, 2.0, 100.0),
        info("s75", "scratch", "scratch 4x64 @75% budget", "TERMINATED", 75, 75, 2.2, 75.0),
        info("s50", "scratch", "scratch 4x64 @50% budget", "TERMINATED", 50, 50, 2.4, 50.0),
        info("small", "small", "small 2x64 only @100% budget", "TERMINATED", 100, 100, 2.3, 55.0),
        info("g1", "grown", "stack x2 @25%", "TERMINATED", 100, 100, 1.9, 80.0),  # beats all
        info("g2", "grown", "zero x2 @40%", "TERMINATED", 100, 100, 2.2, 60.0),  # exact
        info("g3", "grown", "random x2 @10%", "TERMINATED", 30, 100, 2.9, 25.0),  # ASHA
        info("g4", "grown", "stack x2 @30%", "ERROR", 20, 100, 3.0, 10.0, "diverged: nan"),
    ]
    rows = {r["trial_id"]: r for r in build_rows(infos)}
    assert rows["g1"]["status"] == "completed" and rows["g1"]["speedup"] == ">1.25x"
    assert rows["g1"]["speedup_bound"] == "lower"  # scratch never got there: a bound only
    assert rows["g2"]["speedup"] == "1.25x" and rows["g2"]["speedup_bound"] == "exact"
    assert rows["g3"]["status"] == "stopped by ASHA at FLOPs 25" and rows["g3"]["speedup"] is None
    assert rows["g4"]["status"] == "failed: diverged: nan" and rows["g4"]["speedup"] is None
    assert rows["s100"]["speedup"] == "1.00x"
    assert rows["g1"]["reaches_target"] and not rows["g2"]["reaches_target"]
    assert rows["small"]["speedup"] == "1.11x" and not rows["small"]["reaches_target"]
    # reaching the target's scratch loss first (cheapest first), then by loss; the small
    # model's large matched-loss ratio does not make it a winner
    order = [r["trial_id"] for r in build_rows(infos)]
    assert order == ["g1", "s100", "g2", "s75", "small", "s50", "g3", "g4"]
    check = validity(list(rows.values()))
    assert check["valid"] and math.isclose(check["margin"], 0.3)
    md = to_markdown(build_rows(infos))
    assert md.count("\n") == len(infos) + 1 and ">1.25x" in md


def test_rows_carry_test_loss_and_the_test_speedup(tmp_path) -> None:
    """Selection stays on val; test_loss and speedup_test (vs scratch's test finals) are
    reported beside it, and the summary says which split each number is on."""
    import pandas as pd

    from raygrow.search.results import SPLITS_NOTE, TABLE_COLUMNS, best_text, write_tables

    infos = [
        info("s100", "scratch", "scratch 4x64 @100% budget", "TERMINATED", 100, 100, 2.0, 100.0),
        info("s50", "scratch", "scratch 4x64 @50% budget", "TERMINATED", 50, 50, 2.4, 50.0),
        info("g2", "grown", "zero x2 @40%", "TERMINATED", 100, 100, 2.2, 60.0),
        info("g3", "grown", "random x2 @10%", "TERMINATED", 30, 100, 2.9, 25.0),  # ASHA
    ]
    tests = {"s100": 2.1, "s50": 2.5, "g2": 2.1}  # g2: scratch's full-budget test loss
    for i in infos:
        if i.trial_id in tests:
            i.last_result.update(test_loss=tests[i.trial_id], test_bpb=tests[i.trial_id] / 0.69)
    rows = build_rows(infos)
    by_id = {r["trial_id"]: r for r in rows}
    assert by_id["g2"]["test_loss"] == 2.1 and by_id["g3"]["test_loss"] is None
    assert by_id["g2"]["speedup_test"] == "1.67x" and by_id["g2"]["speedup"] != "1.67x"
    assert by_id["g2"]["speedup_test_vs_scratch"] == pytest.approx(100 / 60)
    assert by_id["g3"]["speedup_test"] is None
    assert [r["trial_id"] for r in rows] == ["s100", "g2", "s50", "g3"]  # ranked on val
    assert "held-out test_loss 2.1000, speedup_test 1.67x" in best_text(rows)
    df = write_tables(rows, {"experiment": "e", "splits": SPLITS_NOTE}, tmp_path)
    assert list(df.columns) == list(TABLE_COLUMNS) and "test_loss" in df.columns
    assert pd.read_parquet(tmp_path / "results.parquet")["test_loss"].notna().sum() == 3
    md = (tmp_path / "results.md").read_text()
    assert f"- splits: {SPLITS_NOTE}" in md and "| val_loss | test_loss |" in md
    assert "validation split" in SPLITS_NOTE and "held-out test split" in SPLITS_NOTE


def test_validity_flags_a_small_model_that_wins() -> None:
    infos = [
        info("s", "scratch", "scratch 4x64 @100% budget", "TERMINATED", 100, 100, 2.0, 100.0),
        info("m", "small", "small 2x64 only @100% budget", "TERMINATED", 100, 100, 1.99, 55.0),
    ]
    check = validity(build_rows(infos))
    assert check["checked"] and not check["valid"] and "NOT VALID" in check["text"]


def test_error_lines() -> None:
    text = (
        "Failure # 1 (occurred at 2026-11-23)\n"
        "ray.exceptions.RayTaskError(TrialDiverged): ray::ImplicitFunc.train()\n"
        "  File x\n"
        "raygrow.search.trainable.TrialDiverged: diverged: train loss is nan at step 50\n"
    )
    assert one_line_error(text) == "diverged: train loss is nan at step 50"
    assert one_line_error("boom\nValueError: bad thing") == "ValueError: bad thing"

    from raygrow.train.loop import TrainingDiverged

    class FakeWorkerGroupError(Exception):
        worker_failures = {0: TrainingDiverged("train loss is nan at step 3")}

    assert divergence_reason(FakeWorkerGroupError("x")) == "train loss is nan at step 3"
    assert divergence_reason(RuntimeError("other")) is None


# --------------------------------------------------------------------------- CLI (no Ray)
def test_bad_input_exits_2_before_ray(tmp_path, monkeypatch, capsys) -> None:
    """Invalid space / config: exit 2, one stderr line, and ray.init never called."""
    import ray

    from raygrow.search.__main__ import main

    def no_ray(*a, **k):
        raise AssertionError("Ray must not start for bad input")

    monkeypatch.setattr(ray, "init", no_ray)
    bad = tmp_path / "bad.py"
    bad.write_text(
        "def fn(trial):\n    return {'stages': [{'operator': 'frobnicate', 'at': 0.2}]}\n"
    )
    cases = [
        ["--space", "nope"],
        ["--space", f"{bad}:fn", "--smoke-test"],
        ["--space", "gstack", "--target", "2x64", "--smoke-test"],  # g=4 impossible
        ["--target", "4xabc"],
        ["--smoke-test", "--tokens", "100"],
        ["--smoke-test", "--workers", "64"],
        ["--smoke-test", "--tracking-uri", "file:///tmp/mlruns"],
        ["--smoke-test", "--storage", "ftp://host/x"],
        ["--smoke-test", "--sampler", "bayes"],
        ["--smoke-test", "--precision", "fp16"],
        ["--smoke-test", "--sampler", "grid"],  # the default space has a continuous range
        [
            "--space",
            "timing_factor",
            "--target",
            "12x32",
            "--smoke-test",
            "--sampler",
            "grid",
            "--num-samples",
            "5",
        ],  # fmt: skip
    ]
    for argv in cases:
        with pytest.raises(SystemExit) as exc:
            main([*argv, "--out", str(tmp_path / "exp")])
        assert exc.value.code == 2, argv
        lines = capsys.readouterr().err.strip().splitlines()
        # one line per problem: --workers 64 does not divide batch 8 (and may not fit here)
        too_many = "64" in argv and (os.cpu_count() or 1) < 64
        assert len(lines) == (2 if too_many else 1), (argv, lines)
        assert all(line.startswith("raygrow.search: error:") for line in lines), (argv, lines)
    assert not (tmp_path / "exp").exists()


def test_tracking_uri_flag_env_default(tmp_path, monkeypatch) -> None:
    """--tracking-uri, else $MLFLOW_TRACKING_URI, else the experiment folder's sqlite store."""
    from raygrow.search.__main__ import build_parser, config_from_args

    def cfg_of(*argv: str) -> SearchConfig:
        return config_from_args(build_parser().parse_args(["--smoke-test", *argv]))[0]

    out = tmp_path / "exp"
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert cfg_of("--out", str(out)).tracking_uri == f"sqlite:///{out}/mlflow.db"
    env_uri = f"sqlite:///{tmp_path}/env/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", env_uri)
    assert cfg_of("--out", str(out)).tracking_uri == env_uri
    flag_uri = f"sqlite:///{tmp_path}/flag/mlflow.db"
    assert cfg_of("--out", str(out), "--tracking-uri", flag_uri).tracking_uri == flag_uri
    assert "MLFLOW_TRACKING_URI" in " ".join(build_parser().format_help().split())


def test_unusable_tracking_uri_exits_2_in_every_cli(tmp_path, monkeypatch, capsys) -> None:
    """foo://bar, given or from the environment: one stderr line, exit 2, Ray never started."""
    import ray

    from raygrow.export import main as export_main
    from raygrow.guidelines import main as guidelines_main
    from raygrow.search.__main__ import main as search_main

    def no_ray(*a, **k):
        raise AssertionError("Ray must not start for bad input")

    monkeypatch.setattr(ray, "init", no_ray)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    out = str(tmp_path / "out")
    clis = [
        ("raygrow.search", search_main, ["--smoke-test", "--out", out]),
        ("raygrow.guidelines", guidelines_main, ["--experiment", "x", "--out", out]),
        ("raygrow.export", export_main, ["--run-id", "abc", "--out", out]),
    ]
    for from_env in (False, True):
        for prog, main, argv in clis:
            if from_env:
                monkeypatch.setenv("MLFLOW_TRACKING_URI", "foo://bar")
            else:
                argv = [*argv, "--tracking-uri", "foo://bar"]
            with pytest.raises(SystemExit) as exc:
                main(argv)
            assert exc.value.code == 2, (prog, from_env)
            err = capsys.readouterr().err.strip()
            assert err.startswith(f"{prog}: error:") and "\n" not in err, (prog, err)
            assert "'foo'" in err and ("$MLFLOW_TRACKING_URI" in err) == from_env, err
    assert not Path(out).exists()


def test_unusable_tracking_uri_from_env_subprocess(tmp_path) -> None:
    env = {**os.environ, "MLFLOW_TRACKING_URI": "foo://bar"}
    proc = subprocess.run(
        [sys.executable, "-m", "raygrow.search", "--smoke-test"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "foo://bar" in lines[0], proc.stderr
    assert "Ray" not in proc.stdout + proc.stderr
    assert not (tmp_path / "raygrow_runs").exists()


def test_bad_input_subprocess_exit_code(tmp_path) -> None:
    start = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "raygrow.search", "--space", "gstack", "--target", "3x64"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "not divisible by" in lines[0], proc.stderr
    assert "Ray" not in proc.stdout + proc.stderr  # never got as far as starting Ray
    assert not (tmp_path / "raygrow_runs").exists()
    assert time.monotonic() - start < 60


def test_run_search_needs_an_absolute_folder_before_any_compute(tmp_path) -> None:
    from raygrow.search.tuner import run_search

    with pytest.raises(ConfigError, match="absolute folder"):
        run_search(small_cfg(tmp_path, out="relative/folder"))
