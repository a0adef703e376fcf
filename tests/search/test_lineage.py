"""What a search reuses: baseline stages, WSD landmarks, --baselines-from checks, the FLOP
ledger, the replicate table and how Optuna sees seed replicates (no Ray cluster needed)."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
from fixtures.search_runs import small_cfg
from optuna.trial import TrialState

from raygrow.errors import ConfigError
from raygrow.search.__main__ import build_parser, config_from_args, main
from raygrow.search.lineage import (
    baselines_mismatch,
    prefix_landmarks,
    prefix_store_of,
)
from raygrow.search.results import ledger, net_speedup, schedule_table
from raygrow.search.spaces import SpaceRef
from raygrow.search.study import SEEDS_ATTR, GrowthOptunaSearch
from raygrow.search.tuner import FRONTIER, baseline_stages, baseline_wiring, search_trials


def test_wsd_frontier_runs_after_the_full_budget(tmp_path: Path) -> None:
    wsd = small_cfg(tmp_path, train=small_cfg(tmp_path).train.replace(lr_schedule="wsd"))
    stages = baseline_stages(wsd)
    assert [name for name, _ in stages] == ["baselines", FRONTIER]
    assert all("@100%" in arm for arm in stages[0][1]) and len(stages[0][1]) == 2
    assert all("@100%" not in arm for arm in stages[1][1]) and len(stages[1][1]) == 2
    # 160 steps; budgets 0.5 and 0.75 decay over their last 20%: 80 - 16, 120 - 24
    assert prefix_landmarks(wsd) == {64, 96}
    store = prefix_store_of(wsd)
    assert store is not None and store.landmarks == {64, 96}
    assert store.root == tmp_path / "prefixes"
    # cosine shares nothing across budgets, --no-share-prefixes nothing at all: one stage
    assert len(baseline_stages(small_cfg(tmp_path))) == 1 and not prefix_landmarks(
        small_cfg(tmp_path)
    )
    assert len(baseline_stages(wsd.replace(share_prefixes=False))) == 1
    assert prefix_store_of(wsd.replace(share_prefixes=False)) is None


def test_longer_scratch_budgets_extend_the_frontier(tmp_path: Path) -> None:
    """Budgets past the full one (1.5x, 2x) run in the frontier after the shorter ones, rising,
    each branching where the previous trunk ends; their decay starts are landmarks."""
    base = small_cfg(tmp_path)
    wsd = small_cfg(
        tmp_path, train=base.train.replace(lr_schedule="wsd"), baseline_fracs=(0.5, 0.75, 2.0, 1.5)
    )
    stages = dict(baseline_stages(wsd))
    assert [a.split("@")[1] for a in stages[FRONTIER]] == [
        "75% budget", "50% budget", "150% budget", "200% budget"
    ]  # fmt: skip
    # 160 steps: 1.5x = 240 steps decays from 192, 2x = 320 steps from 256, the full run 128
    assert prefix_landmarks(wsd) == {64, 96, 128, 192, 256}
    for bad in ((0.5, 1.5), (0.5, 0.75, 1.0), (0.5, 0.75, 5.0), (0.5, 0.5, 1.5)):
        with pytest.raises(ConfigError, match="baseline fractions"):
            small_cfg(tmp_path, baseline_fracs=bad)


def test_seed_replicates_multiply_trials(tmp_path: Path) -> None:
    cfg = small_cfg(tmp_path, seeds=(0, 1, 2), num_samples=4)
    assert search_trials(cfg) == 12
    space = baseline_wiring(cfg).param_space
    assert (
        space["seed"] == {"grid_search": [0, 1, 2]} and len(space["schedule"]["grid_search"]) == 4
    )
    assert "seed" not in baseline_wiring(small_cfg(tmp_path)).param_space


def test_baselines_mismatch_names_the_field(tmp_path: Path) -> None:
    cfg = small_cfg(tmp_path)
    assert baselines_mismatch(cfg, cfg.replace(seeds=(3, 4))) is None  # seeds may differ
    wsd = cfg.replace(train=cfg.train.replace(lr_schedule="wsd"))
    assert baselines_mismatch(cfg, wsd) == "lr_schedule is 'wsd' there, 'cosine' here"
    other = cfg.replace(target=cfg.target.replace(n_layers=6))
    assert baselines_mismatch(cfg, other) == "target is 6x64 there, 4x64 here"
    assert "data" in baselines_mismatch(cfg, cfg.replace(train=cfg.train.replace(data="x.txt")))


def test_baselines_from_mismatch_exits_2_before_compute(tmp_path: Path, capsys) -> None:
    earlier = tmp_path / "earlier"
    cfg, _ = config_from_args(build_parser().parse_args(["--smoke-test", "--out", str(earlier)]))
    cfg.save()  # an earlier cosine search's folder
    args = ["--smoke-test", "--out", str(tmp_path / "new"), "--lr-schedule", "wsd"]
    for bad, words in (
        (earlier, "lr_schedule is 'cosine' there, 'wsd' here"),
        (tmp_path / "nowhere", "is not a raygrow search folder"),
    ):
        with pytest.raises(SystemExit) as exc:
            main([*args, "--baselines-from", str(bad)])
        assert exc.value.code == 2
        err = capsys.readouterr().err.strip()
        assert "\n" not in err and words in err, err
    assert not (tmp_path / "new").exists()
    same = ["--smoke-test", "--out", str(tmp_path / "new"), "--baselines-from", str(earlier)]
    cfg, _ = config_from_args(build_parser().parse_args(same))  # a matching folder passes
    assert cfg.baselines_from == str(earlier)
    assert prefix_store_of(cfg).also_read == (earlier / "prefixes",)


def row(schedule: str, seed: int, speedup: float | None, **kw) -> dict:
    base = {
        "arm": "grown",
        "schedule": schedule,
        "seed": seed,
        "status": "completed" if speedup is not None else "stopped by ASHA at FLOPs 5",
        "val_loss": 3.0,
        "flops": 10.0,
        "flops_reused": 4.0,
        "speedup": f"{speedup:.2f}x" if speedup is not None else None,
        "speedup_vs_scratch": speedup,
        "speedup_bound": "exact" if speedup is not None else None,
        "scratch_flops_at_loss": None if speedup is None else speedup * 10.0,
        "reaches_target": speedup is not None and speedup > 1,
    }
    base.update(kw)
    return base


def test_ledger_net_speedup_and_replicate_table() -> None:
    rows = [
        row("a", 0, 1.5),
        row("a", 1, 1.3),
        row("a", 2, 1.4),
        row("b", 0, None, flops=5.0, flops_reused=0.0),
        row("b", 1, 0.9),
        {**row("s", 0, 1.0), "arm": "scratch", "flops": 20.0, "flops_reused": 0.0},
    ]
    cost = ledger(rows)
    assert cost["search_flops"] == 6 * 3 + 5 + 6 + 20
    assert cost["search_flops_naive"] == 10 * 4 + 5 + 20
    # the best schedule reaches the loss scratch needs 15 FLOPs for; the search cost 49
    assert net_speedup(rows, cost["search_flops"]) == {
        "net_speedup": f"{15 / 49:.3f}x",
        "net_speedup_x": 15 / 49,
    }
    assert net_speedup([row("a", 0, 0.8)], 10.0)["net_speedup"] is None  # none reaches it
    table = schedule_table(rows)
    assert [t["schedule"] for t in table] == ["a", "b"]
    a, b = table
    assert a["seeds"] == 3 and a["completed"] == 3 and a["speedup_mean"] == pytest.approx(1.4)
    assert a["speedup_low"] < 1.4 < a["speedup_high"] and not a["bounded"]
    assert a["speedup_per_seed"] == "0: 1.50x, 1: 1.30x, 2: 1.40x"
    assert b["completed"] == 1 and b["speedup_low"] is None  # one seed: no interval
    assert b["speedup_per_seed"] == "0: stopped, 1: 0.90x"


SPACE = """
def one(trial):
    at = trial.suggest_categorical("at", [0.2, 0.4, 0.6])
    return {"stages": [{"operator": "stack", "factor": 2, "at": at}]}
"""


def test_optuna_sees_one_trial_per_schedule_told_the_seed_mean(tmp_path: Path) -> None:
    space_file = tmp_path / "space.py"
    space_file.write_text(SPACE)
    searcher = GrowthOptunaSearch(
        space=SpaceRef(f"{space_file}:one"),
        metric="val_loss",
        mode="min",
        sampler=optuna.samplers.RandomSampler(seed=0),
        seeds=(0, 1),
    )
    configs = {tid: searcher.suggest(tid) for tid in ("t1", "t2", "t3", "t4")}
    assert [c["seed"] for c in configs.values()] == [0, 1, 0, 1]
    assert configs["t1"]["growth"] == configs["t2"]["growth"]  # one schedule, two seeds
    assert searcher.suggest("t2") == configs["t2"]  # asked again: the same answer
    study = searcher._ot_study
    assert len(study.trials) == 2
    for tid, value in (("t1", 3.0), ("t2", 3.4), ("t3", 2.0)):
        searcher.on_trial_result(tid, {"val_loss": value, "flops": 100})
        searcher.on_trial_complete(tid, {"val_loss": value, "flops": 200})
    first, second = study.trials
    assert first.state == TrialState.COMPLETE and first.value == pytest.approx(3.2)
    assert first.user_attrs[SEEDS_ATTR] == {"0": 3.0, "1": 3.4}
    assert first.intermediate_values == {100: 3.0, 200: 3.0}  # the first seed's only
    assert second.state == TrialState.RUNNING  # waits for its seed-1 replicate
    searcher.on_trial_complete("t4", None, error=True)
    assert study.trials[1].state == TrialState.FAIL  # any failed replicate fails the schedule
