"""ASHA's persisted rung records and stop reasons, and the persisted Optuna study, without a
Ray cluster: the Tune hooks are called directly with stand-in trials, as TuneController would.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
from fixtures.search_runs import recording_asha

pytest.importorskip("ray")

from ray import cloudpickle  # noqa: E402
from ray.tune.schedulers import TrialScheduler  # noqa: E402

from raygrow.search.asha import RecordingASHA, describe, stop_reasons, stop_texts  # noqa: E402

STOP, CONTINUE = TrialScheduler.STOP, TrialScheduler.CONTINUE


def asha(state_file: Path | None) -> RecordingASHA:
    return recording_asha(state_file)


def trial(tid: str) -> SimpleNamespace:
    return SimpleNamespace(trial_id=tid)


def report(sched: RecordingASHA, tid: str, flops: float, loss: float) -> str:
    return sched.on_trial_result(None, trial(tid), {"flops": flops, "val_loss": loss})


def first_half(sched: RecordingASHA) -> list[str]:
    """A good trial `a` finishes; `b` is worse at the first rung and is stopped."""
    for tid in ("a", "b", "c"):
        sched.on_trial_add(None, trial(tid))
    out = [report(sched, "a", f, loss) for f, loss in ((25, 1.0), (50, 0.8), (100, 0.7))]
    sched.on_trial_complete(None, trial("a"), {"flops": 100, "val_loss": 0.7})
    out.append(report(sched, "b", 12, 2.5))
    out.append(report(sched, "b", 26, 2.0))
    sched.on_trial_complete(None, trial("b"), {"flops": 26, "val_loss": 2.0})
    return out


def second_half(sched: RecordingASHA) -> list[str]:
    """`c` (added before the kill) reaches the first rung worse than `a`, then `d` is added."""
    out = [report(sched, "c", 10, 3.0), report(sched, "c", 30, 1.6)]
    sched.on_trial_add(None, trial("d"))
    out += [report(sched, "d", 25, 0.9), report(sched, "d", 50, 0.75)]
    return out


def test_asha_state_survives_a_restart(tmp_path) -> None:
    path = tmp_path / "asha_state.json"
    pristine = cloudpickle.dumps(asha(path))  # what tuner.pkl holds: the scheduler at start

    uninterrupted = asha(tmp_path / "other.json")
    reference = first_half(uninterrupted) + second_half(uninterrupted)
    assert reference == [CONTINUE] * 4 + [STOP] + [CONTINUE, STOP, CONTINUE, CONTINUE]

    killed = asha(path)
    assert first_half(killed) == reference[:5]
    saved = json.loads(path.read_text())
    assert saved["stops"]["b"]["rung_flops"] == 25
    assert [sorted(r) for _, r in saved["brackets"][0]] == [["a"], ["a"], ["a", "b"]]

    restored = cloudpickle.loads(pristine)  # Tuner.restore: unpickled, reads the file
    for tid in ("b", "c"):  # Tune re-adds the restored trials
        restored.on_trial_add(None, trial(tid))
    assert second_half(restored) == reference[5:]
    assert restored.stop_reasons.keys() == uninterrupted.stop_reasons.keys() == {"b", "c"}
    assert restored.stop_reasons == uninterrupted.stop_reasons
    # a trial stopped before the kill that Tune resumes anyway is stopped again
    assert report(restored, "b", 30, 0.1) == STOP

    forgetful = cloudpickle.loads(cloudpickle.dumps(asha(None)))  # Ray's behaviour: no state
    forgetful.on_trial_add(None, trial("c"))
    assert report(forgetful, "c", 30, 1.6) == CONTINUE  # the bug of issue 13, item 6

    fresh = cloudpickle.loads(pristine)
    fresh.start_fresh()  # a new search in the folder forgets the old records
    assert not path.exists() and fresh.stop_reasons == {}


def test_stop_reason_values(tmp_path) -> None:
    path = tmp_path / "asha_state.json"
    sched = asha(path)
    first_half(sched)
    reason = stop_reasons(path)["b"]
    assert reason["rung_flops"] == 25 and reason["n_at_rung"] == 1
    assert reason["value"] == pytest.approx(2.0) and reason["cutoff"] == pytest.approx(1.0)
    assert reason["metric"] == "val_loss" and reason["flops"] == 26
    text = stop_texts(path)["b"]
    assert text == describe(reason)
    assert text == "rung 25 FLOPs: val_loss 2.0000 worse than cutoff 1.0000 of 1 trials"
    assert stop_texts(tmp_path / "missing.json") == {}


# --------------------------------------------------------------------------- the study
def space(trial):  # a define-by-run space (module level: the searcher is pickled)
    trial.suggest_categorical("g", [2, 3, 4, 6])
    trial.suggest_float("at", 0.1, 0.5)


def searcher(tmp_path: Path, stop_file: Path):
    import optuna

    from raygrow.search.study import GrowthOptunaSearch, make_storage

    return GrowthOptunaSearch(
        space=space,
        metric="val_loss",
        mode="min",
        sampler=optuna.samplers.RandomSampler(seed=0),
        storage=make_storage(tmp_path),
        study_name="exp",
        stop_file=str(stop_file),
    )


def test_study_states_and_resume(tmp_path) -> None:
    from optuna.trial import TrialState

    from raygrow.search.study import STOP_REASON_ATTR, TRIAL_ID_ATTR, load_study

    state = tmp_path / "asha_state.json"
    sched = asha(state)
    s = searcher(tmp_path, state)
    pristine = cloudpickle.dumps(s)
    configs = {tid: s.suggest(tid) for tid in ("good", "stopped", "nan", "crashed")}
    early = tmp_path / "early.pkl"
    s.save(str(early))  # a searcher checkpoint from before the trials were told
    for tid in configs:
        sched.on_trial_add(None, trial(tid))
    for tid, loss in (("good", 1.0), ("stopped", 2.0), ("nan", 1.5), ("crashed", 1.2)):
        result = {"flops": 25, "val_loss": loss, "training_iteration": 1}
        if report(sched, tid, 25, loss) == CONTINUE:
            s.on_trial_result(tid, result)
    s.on_trial_complete("good", {"flops": 100, "val_loss": 0.7, "training_iteration": 4})
    s.on_trial_complete("stopped", {"flops": 25, "val_loss": 2.0, "training_iteration": 1})
    s.on_trial_complete("nan", {"flops": 40, "val_loss": float("nan")})
    s.on_trial_complete("crashed", error=True)

    study = load_study(tmp_path, "exp")
    by_tid = {t.user_attrs[TRIAL_ID_ATTR]: t for t in study.trials}
    assert {tid: t.state for tid, t in by_tid.items()} == {
        "good": TrialState.COMPLETE,
        "stopped": TrialState.PRUNED,
        "nan": TrialState.FAIL,
        "crashed": TrialState.FAIL,
    }
    assert by_tid["good"].value == 0.7 and by_tid["good"].intermediate_values == {25: 1.0}
    pruned = by_tid["stopped"]  # its last value, reported at its last FLOPs step
    assert pruned.value == 2.0 and pruned.intermediate_values == {25: 2.0}
    assert pruned.user_attrs[STOP_REASON_ATTR].startswith("rung 25 FLOPs: val_loss 2.0000")
    assert {tid: t.params for tid, t in by_tid.items()} == configs

    # resume: Tune saved the searcher, then asked one more trial and died before saving again
    checkpoint = tmp_path / "searcher.pkl"
    s.save(str(checkpoint))
    asked_before_kill = s.suggest("lost")
    restored = cloudpickle.loads(pristine)  # tuner.pkl's searcher ...
    restored.restore(str(checkpoint))  # ... + the searcher checkpoint (Tune's restore_from_dir)
    assert restored.suggest("next") == asked_before_kill  # the orphan, not a new trial
    assert len(load_study(tmp_path, "exp").trials) == 5
    restored.on_trial_result("next", {"flops": 25, "val_loss": 1.1})
    restored.on_trial_complete("next", {"flops": 100, "val_loss": 0.9})
    restored.on_trial_complete("good", {"flops": 100, "val_loss": 0.7})  # again: ignored
    restored.suggest("new")
    trials = load_study(tmp_path, "exp").trials
    assert len(trials) == 6
    assert [t.user_attrs[TRIAL_ID_ATTR] for t in trials] == [*configs, "next", "new"]
    assert [t.state for t in trials][4:] == [TrialState.COMPLETE, TrialState.RUNNING]

    # killed after telling, before Tune's checkpoint: Tune runs the told trials again
    stale = cloudpickle.loads(pristine)
    stale.restore(str(early))
    stale.on_trial_result("good", {"flops": 50, "val_loss": 0.8})
    stale.on_trial_complete("good", {"flops": 100, "val_loss": 0.6})
    stale.on_trial_complete("stopped", {"flops": 25, "val_loss": 2.0})
    again = {t.user_attrs[TRIAL_ID_ATTR]: t for t in load_study(tmp_path, "exp").trials}
    assert again["good"].value == 0.7 and again["good"].intermediate_values == {25: 1.0}
    assert again["stopped"].state == TrialState.PRUNED

    restored.start_fresh()  # a new Tune run in this folder: an empty study of the same name
    assert load_study(tmp_path, "exp").trials == []


# --------------------------------------------------------------------------- where reasons show
def test_stop_reason_in_results_table_and_mlflow_tag(tmp_path) -> None:
    import pandas as pd
    from fixtures.search_runs import small_cfg

    from raygrow.search.asha import state_path
    from raygrow.search.callbacks import TrackingCallback, get_tracker
    from raygrow.search.results import TrialInfo, build_rows, to_markdown, write_tables
    from raygrow.search.trainable import baseline_arms

    cfg = small_cfg(tmp_path, experiment="reasons")
    sched = asha(state_path(tmp_path))
    first_half(sched)  # trial "b" stopped at rung 25
    text = stop_texts(state_path(tmp_path))["b"]

    infos = [
        TrialInfo("a", "grown", "stack x2 @25%", "TERMINATED", 100, {"tokens": 100}),
        TrialInfo("b", "grown", "zero x2 @25%", "TERMINATED", 100, {"tokens": 26}, None, text),
    ]
    rows = {r["trial_id"]: r for r in build_rows(infos)}
    assert rows["b"]["status"].startswith("stopped") and rows["b"]["stop_reason"] == text
    assert rows["a"]["stop_reason"] is None
    assert text.replace("|", "\\|") in to_markdown(list(rows.values()))
    write_tables(list(rows.values()), {}, tmp_path)
    table = pd.read_parquet(tmp_path / "results.parquet").set_index("trial_id")
    assert table.loc["b", "stop_reason"] == text and pd.isna(table.loc["a", "stop_reason"])

    config = {"schedule": next(iter(baseline_arms(cfg)))}  # any plannable trial will do
    tracker = get_tracker(cfg.tracking_uri, cfg.experiment)
    tracker.start_search({}, {"raygrow.search": "s"})
    callback = TrackingCallback(cfg.to_dict())
    for tid in ("a", "b"):
        tokens = cfg.tokens if tid == "a" else cfg.tokens // 4
        stand_in = SimpleNamespace(
            trial_id=tid, config=config, last_result={"tokens": tokens, "flops": 1.0}
        )
        callback.on_trial_start(0, [], stand_in)
        callback.on_trial_complete(0, [], stand_in)
    assert not callback._warned
    tags = {
        r.data.tags["raygrow.trial_id"]: r.data.tags
        for r in tracker.client.search_runs([tracker.experiment_id])
        if "raygrow.trial_id" in r.data.tags
    }
    assert tags["b"]["raygrow.stop_reason"] == text
    assert "raygrow.stop_reason" not in tags["a"]
