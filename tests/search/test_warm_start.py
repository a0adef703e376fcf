"""`--warm-start guidelines.csv` (raygrow.search.warm_start): the table checks, the range check
and --force, inverse-distance prediction, the mapping onto a space's parameters, the enqueued
trials of a real Optuna study, and the CLI's exit 2 (no Ray cluster, nothing trained)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import optuna
import pandas as pd
import pytest
from fixtures.search_runs import small_cfg

from raygrow.errors import ConfigError
from raygrow.model import ModelConfig
from raygrow.search import warm_start as ws
from raygrow.search.config import SMOKE, SearchConfig
from raygrow.search.spaces import SpaceRef, validate_space
from raygrow.search.study import WARM_START_ATTR, enqueue_warm_start, load_study

SMOKE_TOKENS = SMOKE["tokens"]
ROWS = [  # factor, operator, growth_frac, mean, ci_low, ci_high, bound
    (2, "stack", 0.30, 1.20, 1.10, 1.30, "exact"),
    (4, "stack", 0.20, 1.40, 1.20, 1.60, "lower"),
    (4, "zero", 0.40, 1.30, math.nan, math.nan, "exact"),
    (3, "stack", 0.25, 1.50, 1.40, 1.60, "exact"),
]


def n_of(shape: str) -> float:
    return float(ModelConfig.from_shape(shape).n_params(non_embedding=True))


def table_rows(groups=(("4x64", 0.3), ("8x64", 0.3)), rows=ROWS, frac_scale=None) -> list:
    """One row per (group, factor, operator); 8x64 grows later than 4x64 by `frac_scale`."""
    out = []
    for shape, tpp in groups:
        n = n_of(shape)
        scale = (frac_scale or {}).get(shape, 1.0)
        for factor, op, frac, mean, low, high, bound in rows:
            out.append(
                {
                    "group": f"{shape}@{tpp:g}",
                    "target": shape,
                    "n_params": n,
                    "budget_tokens": tpp * n,
                    "tokens_per_param": tpp,
                    "factor": factor,
                    "operator": op,
                    "criterion": "speedup",
                    "best_growth_frac": frac * scale,
                    "at_edge": False,
                    "speedup_mean": mean,
                    "speedup_ci_low": low,
                    "speedup_ci_high": high,
                    "speedup_bound": bound,
                    "n_seeds": 2,
                }
            )
    return out


def write_csv(path: Path, rows: list | None = None, drop=()) -> Path:
    frame = pd.DataFrame(rows if rows is not None else table_rows())
    frame.drop(columns=list(drop)).to_csv(path, index=False)
    return path


def smoke_tpp(shape: str = "4x64") -> float:
    return SMOKE_TOKENS / n_of(shape)


# --------------------------------------------------------------------------- the table
def test_read_guidelines_checks_file_and_columns(tmp_path) -> None:
    with pytest.raises(ConfigError, match="no such file.*python -m raygrow.guidelines"):
        ws.read_guidelines(tmp_path / "missing.csv")
    bad = write_csv(tmp_path / "bad.csv", drop=("best_growth_frac", "speedup_bound"))
    with pytest.raises(ConfigError) as exc:
        ws.read_guidelines(bad)
    text = str(exc.value)
    assert "lacks columns best_growth_frac, speedup_bound;" in text and "\n" not in text
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(ConfigError, match="not a readable CSV"):
        ws.read_guidelines(tmp_path / "empty.csv")
    rows = table_rows()
    rows[0]["factor"] = 1.5
    with pytest.raises(ConfigError, match="factor 1.5 .* not an integer >= 2"):
        ws.read_guidelines(write_csv(tmp_path / "factor.csv", rows))
    rows = table_rows()
    rows[1]["n_params"] = "abc"
    with pytest.raises(ConfigError, match="n_params of group '4x64@0.3'"):
        ws.read_guidelines(write_csv(tmp_path / "n.csv", rows))
    rows = table_rows()
    for row in rows[:4]:
        row["criterion"] = "loss"  # another criterion: not read
    rows[4]["best_growth_frac"] = math.nan  # no growth time: nothing to schedule
    table = ws.read_guidelines(write_csv(tmp_path / "ok.csv", rows))
    assert len(table) == 3 and set(table["group"]) == {"8x64@0.3"}
    assert table["factor"].dtype.kind == "i" and table["at_edge"].dtype == bool


# --------------------------------------------------------------------------- range and --force
def test_range_check_and_force(tmp_path) -> None:
    groups = (("4x64", 0.2), ("8x64", 0.5))
    table = ws.read_guidelines(write_csv(tmp_path / "g.csv", table_rows(groups)))
    inside = ModelConfig.from_shape("4x64")
    assert ws.check_range(table, inside, SMOKE_TOKENS, force=False) is None
    edge = int(0.5 * n_of("8x64") * 1.005)  # within the 1 % tolerance
    assert ws.check_range(table, ModelConfig.from_shape("8x64"), edge, force=False) is None
    big = ModelConfig.from_shape("16x128")
    with pytest.raises(ConfigError) as exc:
        ws.check_range(table, big, SMOKE_TOKENS, force=False)
    text = str(exc.value)
    assert text.startswith("target 16x128 (N=4.199e+06") and "\n" not in text
    assert "outside the guideline's range N in [2.627e+05, 5.254e+05]" in text
    assert "tokens/param in [0.2, 0.5]" in text and text.endswith("pass --force to extrapolate")
    warning = ws.check_range(table, big, SMOKE_TOKENS, force=True)
    assert warning is not None and "extrapolating" in warning
    with pytest.raises(ConfigError, match=r"outside .*range tokens/param in \[0.2, 0.5\]"):
        ws.check_range(table, inside, 10 * SMOKE_TOKENS, force=False)  # N fits, D/N does not


# --------------------------------------------------------------------------- prediction
def test_idw_exact_hit_returns_the_groups_row(tmp_path) -> None:
    groups = (("4x64", smoke_tpp()), ("8x64", 1.0))
    table = ws.read_guidelines(write_csv(tmp_path / "g.csv", table_rows(groups)))
    preds = ws.predict(table, n_of("4x64"), smoke_tpp())
    assert all(p.exact and p.groups == (f"4x64@{smoke_tpp():g}",) for p in preds)
    by_key = {(p.factor, p.operator): p for p in preds}
    for factor, op, frac, mean, low, high, bound in ROWS:
        p = by_key[factor, op]
        assert (p.growth_frac, p.speedup_mean, p.bound) == (frac, mean, bound)
        assert (p.speedup_ci_low, p.speedup_ci_high) == (low, high) or math.isnan(low)
    # ranked by the CI's low end, else the mean: 3 (1.4), 4 zero (mean 1.3), 4 (1.2), 2 (1.1)
    assert [(p.factor, p.operator) for p in preds] == [
        (3, "stack"),
        (4, "zero"),
        (4, "stack"),
        (2, "stack"),
    ]
    assert preds[2].describe().startswith("speedup >1.40x [1.20, 1.60] (lower bound) from")


def test_idw_between_groups(tmp_path) -> None:
    tpp = 0.3
    rows = table_rows(frac_scale={"8x64": 2.0})  # 8x64 grows at twice 4x64's time
    rows[4]["speedup_bound"] = "lower"  # 8x64's g=2 speedup is a lower bound
    rows[4]["at_edge"] = True
    rows[5]["speedup_ci_low"] = math.nan  # 8x64's g=4 stack has no CI: 4x64's alone counts
    table = ws.read_guidelines(write_csv(tmp_path / "g.csv", rows))
    n = math.exp(0.25 * math.log(n_of("4x64")) + 0.75 * math.log(n_of("8x64")))  # nearer 8x64
    d4, d8 = math.log(n / n_of("4x64")), math.log(n_of("8x64") / n)  # same D/N: ln N apart
    w4, w8 = 1 / d4**2, 1 / d8**2
    by_key = {(p.factor, p.operator): p for p in ws.predict(table, n, tpp)}
    g2 = by_key[2, "stack"]
    assert not g2.exact and g2.groups == ("8x64@0.3", "4x64@0.3")  # largest weight first
    assert g2.growth_frac == pytest.approx((w4 * 0.3 + w8 * 0.6) / (w4 + w8))
    assert 0.3 < g2.growth_frac < 0.6 and g2.growth_frac > 0.45  # nearer 8x64's time
    assert g2.speedup_mean == pytest.approx(1.2)
    assert g2.bound == "lower" and g2.at_edge  # bounds and edges stay flagged
    assert "(lower bound) (at the sweep's edge)" in g2.describe()
    g4 = by_key[4, "stack"]
    assert g4.speedup_ci_low == pytest.approx(1.2) and g4.bound == "lower"
    assert by_key[4, "zero"].bound == "exact" and math.isnan(by_key[4, "zero"].speedup_ci_low)


def test_groups_that_are_not_valid_are_left_out(tmp_path) -> None:
    """A group where the target does not beat the small model (valid false) would pull the
    prediction toward "any growth wins"; it is left out and named. All invalid: kept, flagged."""
    rows = table_rows(frac_scale={"8x64": 2.0})
    for row in rows:
        row["valid"] = row["target"] == "4x64"
    table = ws.read_guidelines(write_csv(tmp_path / "g.csv", rows))
    assert set(table["group"]) == {"4x64@0.3"} and table.attrs["invalid_groups"] == ["8x64@0.3"]
    n = math.exp(0.5 * math.log(n_of("4x64")) + 0.5 * math.log(n_of("8x64")))
    assert all(p.groups == ("4x64@0.3",) for p in ws.predict(table, n, 0.3))
    for row in rows:
        row["valid"] = False
    everything = ws.read_guidelines(write_csv(tmp_path / "none.csv", rows))
    assert len(everything) == len(rows) and everything.attrs["no_valid_group"]
    for row in rows:
        row["valid"] = math.nan  # unknown (e.g. one seed per arm): kept
    unknown = ws.read_guidelines(write_csv(tmp_path / "nan.csv", rows))
    assert len(unknown) == len(rows) and unknown.attrs["invalid_groups"] == []


# --------------------------------------------------------------------------- space parameters
def pred(factor: int, operator: str, frac: float) -> ws.Prediction:
    return ws.Prediction(factor, operator, frac, 1.3, 1.2, 1.4, "exact", False, ("g",), True)


def test_param_mapping_snaps_clips_and_skips() -> None:
    target = ModelConfig.from_shape("8x64")
    check = validate_space(SpaceRef("gstack"), target, SMOKE_TOKENS, 64)
    dists, ops = check.distributions, check.operators
    assert {"g", "grow_at", "operator", "opt_policy"} <= set(dists)
    assert ws.to_params(pred(4, "zero", 0.2), dists, target, ops) == (
        {"g": 4, "grow_at": 0.2, "operator": "zero"},
        [],
    )
    params, notes = ws.to_params(pred(8, "stack", 0.9), dists, target, ops)
    assert params == {"g": 4, "grow_at": 0.5, "operator": "stack"}  # nearest choice, clipped
    assert notes == ["g 8 -> 4", "grow_at 0.9 -> 0.5"]
    assert ws.to_params(pred(2, "stack", 0.01), dists, target, ops)[0]["grow_at"] == 0.05
    with pytest.raises(ws.Skip, match="not divisible by g=3"):
        ws.to_params(pred(3, "stack", 0.2), dists, target, ops)
    with pytest.raises(ws.Skip, match="operator='incremental' is not among"):
        ws.to_params(pred(2, "incremental", 0.2), dists, target, ops)

    target = ModelConfig.from_shape("12x64")  # timing_factor: categorical g, grow_at; stack only
    check = validate_space(SpaceRef("timing_factor"), target, SMOKE_TOKENS, 64)
    dists, ops = check.distributions, check.operators
    params, notes = ws.to_params(pred(6, "stack", 0.42), dists, target, ops)
    assert params == {"g": 6, "grow_at": 0.5} and notes == ["grow_at 0.42 -> 0.5"]
    assert ws.to_params(pred(4, "stack", 0.2), dists, target, ops)[0]["grow_at"] == 0.15
    with pytest.raises(ws.Skip, match="space grows with stack only"):
        ws.to_params(pred(4, "zero", 0.2), dists, target, ops)


def test_plan_needs_g_and_grow_at_and_skips_with_notes(tmp_path) -> None:
    csv = write_csv(tmp_path / "g.csv", table_rows((("4x64", smoke_tpp()), ("8x64", 1.0))))
    base = dict(tokens=SMOKE_TOKENS, warm_start=str(csv), num_samples=3)
    with pytest.raises(ConfigError, match="space 'default' suggests no 'g'.*e.g. gstack"):
        ws.plan(small_cfg(tmp_path, **base), log=lambda line: None)
    notes: list[str] = []
    chosen = ws.plan(small_cfg(tmp_path, space="gstack", **base), log=notes.append)
    assert [w.params for w in chosen] == [  # g=3 (best) does not divide 4 layers
        {"g": 4, "grow_at": 0.4, "operator": "zero"},
        {"g": 4, "grow_at": 0.2, "operator": "stack"},
        {"g": 2, "grow_at": 0.3, "operator": "stack"},
    ]
    assert len(notes) == 1 and "skipped g=3 stack at 0.25" in notes[0]
    two = ws.plan(small_cfg(tmp_path, space="gstack", **{**base, "num_samples": 2}))
    assert len(two) == 2  # k = min(3, --num-samples)
    only_g3 = [r for r in table_rows() if r["factor"] == 3]
    csv3 = write_csv(tmp_path / "g3.csv", only_g3)
    cfg = small_cfg(tmp_path, space="gstack", **{**base, "warm_start": str(csv3), "force": True})
    with pytest.raises(ConfigError, match="no predicted schedule fits space 'gstack'"):
        ws.plan(cfg, log=lambda line: None)


# --------------------------------------------------------------------------- the study
def test_enqueued_schedules_are_the_first_asked_trials() -> None:
    entries = [
        {"params": {"g": 4, "grow_at": 0.2, "operator": "stack"}, "predicted": "a"},
        {"params": {"g": 2, "grow_at": 0.3, "operator": "zero"}, "predicted": "b"},
    ]
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    assert enqueue_warm_start(study, entries) == 2
    assert enqueue_warm_start(study, entries) == 0  # a study that has them: never again
    space = SpaceRef("gstack")
    asked = []
    for _ in range(3):
        trial = study.ask()
        space(trial)
        asked.append(trial)
        study.tell(trial, 1.0)
    for trial, entry in zip(asked, entries, strict=False):
        assert {k: trial.params[k] for k in entry["params"]} == entry["params"]
        assert "opt_policy" in trial.params  # left to the sampler
        attr = study.trials[trial.number].user_attrs[WARM_START_ATTR]
        assert attr["rank"] == trial.number and attr["predicted"] == entry["predicted"]
    assert WARM_START_ATTR not in study.trials[2].user_attrs


def test_warm_start_survives_start_fresh_and_replicates_across_seeds(tmp_path) -> None:
    pytest.importorskip("ray")
    from raygrow.search.tuner import make_searcher

    csv = write_csv(tmp_path / "g.csv", table_rows((("4x64", smoke_tpp()), ("8x64", 1.0))))
    cfg = small_cfg(tmp_path, space="gstack", tokens=SMOKE_TOKENS, warm_start=str(csv))
    cfg = cfg.replace(seeds=(0, 1))
    chosen = ws.plan(cfg, log=lambda line: None)
    assert ws.enqueue(cfg, chosen) == 3
    searcher = make_searcher(cfg)
    searcher.start_fresh()  # a new Tune run: the study is recreated, warm starts kept first
    configs = [searcher.suggest(tid) for tid in ("a", "b", "c")]
    for config, seed, want in zip(configs, (0, 1, 0), (0, 0, 1), strict=True):
        assert config["seed"] == seed
        assert {k: config[k] for k in chosen[want].params} == chosen[want].params
    assert ws.enqueue(cfg, chosen) == 0  # --resume: nothing enqueued twice
    trials = load_study(tmp_path, cfg.experiment).trials
    assert len(trials) == 3 and [t.state.name for t in trials] == ["RUNNING", "RUNNING", "WAITING"]


# --------------------------------------------------------------------------- config and CLI
def test_config_fields_validated_and_old_search_json_loads(tmp_path) -> None:
    cfg = small_cfg(tmp_path)
    old = cfg.to_dict()
    del old["warm_start"], old["force"]
    assert SearchConfig.from_dict(json.loads(json.dumps(old))) == cfg
    cases = [
        (dict(force=True), "--force only lets --warm-start extrapolate"),
        (dict(warm_start="g.csv", sampler="grid"), "--warm-start with --sampler grid"),
        (dict(warm_start="g.csv", num_samples=0), "--warm-start needs --num-samples >= 1"),
        (dict(warm_start=" "), "must be the path of a guidelines CSV"),
    ]
    for changes, message in cases:
        with pytest.raises(ConfigError, match=message):
            small_cfg(tmp_path, **changes)


def test_cli_enqueues_prints_tags_and_resume_does_not_enqueue(tmp_path, monkeypatch, capsys):
    import ray

    import raygrow.search.__main__ as cli
    import raygrow.search.tuner as tuner
    from raygrow.search.callbacks import get_tracker

    def no_ray(*a, **k):
        raise AssertionError("Ray must not start here")

    seen = []

    def fake_run_search(cfg, retry_errored=False):
        tracker = get_tracker(cfg.tracking_uri, cfg.experiment)
        run_id = tracker.start_search({"warm_start": cfg.warm_start}, {"raygrow.search": "s"})
        seen.append(tracker.client.get_run(run_id).data.tags.get("raygrow.warm_start"))
        tracker.tag_search({"raygrow.later": "x"})  # once the parent exists: logged at once
        assert tracker.client.get_run(run_id).data.tags["raygrow.later"] == "x"
        return SimpleNamespace(complete=True)

    monkeypatch.setattr(ray, "init", no_ray)
    monkeypatch.setattr(tuner, "run_search", fake_run_search)
    monkeypatch.setattr(cli, "_print_precision", lambda cfg: None)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    csv = write_csv(tmp_path / "g.csv", table_rows((("4x64", smoke_tpp()), ("8x64", 1.0))))
    out = tmp_path / "exp"
    argv = ["--smoke-test", "--space", "gstack", "--warm-start", str(csv), "--out", str(out)]
    assert cli.main(argv) == 0
    lines = [ln for ln in capsys.readouterr().out.splitlines() if "warm start" in ln]
    assert lines[0].startswith("raygrow.search: warm start: skipped g=3 stack")
    assert lines[1].startswith(
        "raygrow.search: warm start: 1/2 g=4, grow_at=0.4, operator=zero; predicted speedup "
        "1.30x from 4x64@"
    )
    assert lines[2].startswith("raygrow.search: warm start: 2/2 g=4, grow_at=0.2, operator=stack")
    assert len(lines) == 3
    assert seen[0].startswith(f"{csv}: g=4, grow_at=0.4, operator=zero;")
    saved = SearchConfig.load(out)
    assert saved.warm_start == str(csv) and saved.force is False
    experiment = saved.experiment
    assert [t.state.name for t in load_study(out, experiment).trials] == ["WAITING"] * 2

    assert cli.main(["--resume", str(out)]) == 0
    assert "warm start" not in capsys.readouterr().out
    assert len(load_study(out, experiment).trials) == 2
    with pytest.raises(SystemExit) as exc:
        cli.main(["--resume", str(out), "--warm-start", str(csv)])
    assert exc.value.code == 2
    assert "drop --warm-start" in capsys.readouterr().err


def test_cli_bad_warm_start_exits_2_with_one_line(tmp_path) -> None:
    missing = write_csv(tmp_path / "bad.csv", drop=("operator",))
    far = write_csv(tmp_path / "far.csv")
    cases = [
        (["--warm-start", str(missing)], "lacks columns operator;"),
        (["--target", "16x128", "--warm-start", str(far)], "pass --force to extrapolate"),
    ]
    for args, message in cases:
        proc = subprocess.run(
            [sys.executable, "-m", "raygrow.search", "--smoke-test", "--space", "gstack", *args],
            capture_output=True,
            text=True,
            cwd=tmp_path,
            timeout=120,
        )
        assert proc.returncode == 2, proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("raygrow.search: error:"), proc.stderr
        assert message in lines[0], lines[0]
        assert "Ray" not in proc.stdout + proc.stderr
        assert not (tmp_path / "raygrow_runs").exists()
