"""Growth-aware stopping (issue 15): ASHA judges no report within `growth_lag_tokens` tokens
after a growth; a rung reached inside the lag is judged at the first report after it. The Tune
hooks are called directly with stand-in trials, as TuneController would (no Ray cluster).
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
from fixtures.search_runs import recording_asha

pytest.importorskip("ray")

from ray import cloudpickle  # noqa: E402
from ray.tune.schedulers import ASHAScheduler, TrialScheduler  # noqa: E402

from raygrow.search.asha import RecordingASHA, describe, stop_reasons, stop_texts  # noqa: E402

STOP, CONTINUE = TrialScheduler.STOP, TrialScheduler.CONTINUE
LAG = 1000  # tokens


def asha(state_file: Path | None, lag: int = LAG, stop_last_trials: bool = False) -> RecordingASHA:
    return recording_asha(state_file, lag, stop_last_trials)


def trial(tid: str) -> SimpleNamespace:
    return SimpleNamespace(trial_id=tid)


def report(
    sched: RecordingASHA, tid: str, flops: float, loss: float, tokens: int, grown: int | None
) -> str:
    result = {"flops": flops, "val_loss": loss, "tokens": tokens, "last_growth_tokens": grown}
    return sched.on_trial_result(None, trial(tid), result)


def good_trial(sched: RecordingASHA) -> None:
    """`a` sets the cutoffs: 1.0 at rung 25, 0.8 at rung 50, never grown."""
    sched.on_trial_add(None, trial("a"))
    for f, loss, tok in ((25, 1.0, 2500), (50, 0.8, 5000)):
        assert report(sched, "a", f, loss, tok, None) == CONTINUE
    sched.on_trial_complete(
        None,
        trial("a"),
        {"flops": 100, "val_loss": 0.7, "tokens": 10000, "last_growth_tokens": None},
    )


def rung(sched: RecordingASHA, milestone: float) -> dict[str, float]:
    return next(r for m, r in sched._brackets[0]._rungs if m == milestone)


def grows_before_rung(sched: RecordingASHA, tid: str = "b") -> list[str]:
    """`b` grows at 2000 tokens and reaches rung 25 at 2400 tokens (inside the lag) with a loss
    far worse than the cutoff, then reports again inside the lag."""
    sched.on_trial_add(None, trial(tid))
    return [
        report(sched, tid, 10, 2.0, 1000, None),
        report(sched, tid, 19, 2.2, 2000, 2000),  # the jump right after growth
        report(sched, tid, 25, 1.9, 2400, 2000),  # rung 25 inside the lag: not judged
        report(sched, tid, 28, 1.6, 2800, 2000),  # still inside the lag
    ]


@pytest.mark.parametrize("after_lag_loss", [1.5, 0.9])
def test_rung_inside_the_lag_is_judged_at_the_first_report_after_it(
    tmp_path, after_lag_loss
) -> None:
    path = tmp_path / "asha_state.json"
    sched = asha(path)
    good_trial(sched)
    assert grows_before_rung(sched) == [CONTINUE] * 4
    assert "b" not in rung(sched, 25) and "b" not in sched.stop_reasons
    saved = json.loads(path.read_text())
    assert [d["milestone"] for d in saved["lag_deferred"]["b"]] == [25]
    assert saved["lag_deferred"]["b"][0]["flops"] == 25

    action = report(sched, "b", 31, after_lag_loss, 3000, 2000)  # first report after the lag
    assert rung(sched, 25)["b"] == pytest.approx(-after_lag_loss)  # the post-lag value
    assert sched.lag_deferred == {}
    if after_lag_loss > 1.0:  # still worse than the cutoff: stopped at the deferred rung
        assert action == STOP
        reason = stop_reasons(path)["b"]
        assert reason["rung_flops"] == 25 and reason["flops"] == 31
        assert reason["value"] == pytest.approx(1.5) and reason["cutoff"] == pytest.approx(1.0)
        assert reason["lag_deferred"] is True and reason["growth_lag_tokens"] == LAG
        assert reason["deferred_at_flops"] == 25 and reason["last_growth_tokens"] == 2000
        assert (
            describe(reason)
            == stop_texts(path)["b"]
            == (
                "rung 25 FLOPs: val_loss 1.5000 worse than cutoff 1.0000 of 1 trials; "
                "judged after growth lag (1000 tokens)"
            )
        )
        assert report(sched, "b", 35, 0.1, 3500, 2000) == STOP  # stays stopped
    else:  # recovered: goes on, and is judged normally at the next rung
        assert action == CONTINUE and "b" not in sched.stop_reasons
        assert report(sched, "b", 50, 0.95, 5000, 2000) == STOP
        reason = sched.stop_reasons["b"]
        assert reason["rung_flops"] == 50 and reason["lag_deferred"] is False
        assert "growth lag" not in describe(reason)
    assert json.loads(path.read_text())["lag_deferred"] == {}


def test_a_deferred_rung_is_not_skipped_when_the_report_after_the_lag_passes_a_higher_one(
    tmp_path,
) -> None:
    """Ray's bracket records only the highest rung a report has passed (and, without
    stop_last_trials, never a lower one after that): the deferred rung must still be judged."""
    sched = asha(tmp_path / "s.json", lag=30000)
    good_trial(sched)
    sched.on_trial_add(None, trial("b"))
    assert report(sched, "b", 26, 3.0, 2600, 2000) == CONTINUE  # rung 25 inside the lag
    assert report(sched, "b", 52, 0.5, 52000, 2000) == CONTINUE  # past rungs 25 and 50
    assert rung(sched, 25)["b"] == pytest.approx(-0.5)  # judged, with the post-lag value
    assert rung(sched, 50)["b"] == pytest.approx(-0.5)
    sched.on_trial_add(None, trial("c"))
    assert report(sched, "c", 26, 3.0, 2600, 2000) == CONTINUE
    assert report(sched, "c", 52, 2.0, 52000, 2000) == STOP
    reason = sched.stop_reasons["c"]
    assert reason["rung_flops"] == 25 and reason["lag_deferred"] is True  # the lower rung first
    assert "c" not in rung(sched, 50)


@pytest.mark.parametrize("stop_last_trials", [False, True])
def test_a_trial_outside_any_lag_is_stopped_at_the_rung_as_before(
    tmp_path, stop_last_trials
) -> None:
    sched = asha(tmp_path / "s.json", stop_last_trials=stop_last_trials)
    good_trial(sched)
    sched.on_trial_add(None, trial("b"))
    assert report(sched, "b", 10, 2.0, 1000, None) == CONTINUE  # never grown
    assert report(sched, "b", 25, 1.9, 2500, None) == STOP
    sched.on_trial_add(None, trial("c"))
    assert report(sched, "c", 10, 2.0, 1000, 0) == CONTINUE  # grew long before the rung
    assert report(sched, "c", 25, 1.9, 2500, 1000) == STOP  # 1500 tokens after: lag over
    for tid, n, cutoff in (("b", 1, 1.0), ("c", 2, 1.45)):
        reason = sched.stop_reasons[tid]
        assert reason["rung_flops"] == 25 and reason["lag_deferred"] is False
        assert describe(reason) == (
            f"rung 25 FLOPs: val_loss 1.9000 worse than cutoff {cutoff:.4f} of {n} trials"
        )
    assert sched.lag_deferred == {}

    # the same reports to Ray's own ASHA: the same decisions (growth fields are ignored there)
    ray_asha = ASHAScheduler(
        time_attr="flops",
        metric="val_loss",
        mode="min",
        max_t=100,
        grace_period=25,
        reduction_factor=2,
        stop_last_trials=stop_last_trials,
    )
    ours = asha(None, stop_last_trials=stop_last_trials)
    decisions = []
    for s in (ray_asha, ours):
        out = []
        for tid, loss, grown in (("a", 1.0, None), ("b", 1.2, 0), ("c", 0.9, None), ("d", 1.1, 0)):
            s.on_trial_add(None, trial(tid))
            for f in (10, 26, 40, 51, 100):  # growth at 0 tokens: the lag is long over
                result = {"flops": f, "val_loss": loss - f / 1000, "tokens": 100 * f}
                out.append(
                    s.on_trial_result(None, trial(tid), result | {"last_growth_tokens": grown})
                )
                if out[-1] == STOP:  # Tune stops the trial: no more reports
                    break
        decisions.append(out)
    assert decisions[0] == decisions[1] and STOP in decisions[0]


def test_zero_lag_disables_growth_aware_stopping(tmp_path) -> None:
    sched = asha(tmp_path / "s.json", lag=0)
    good_trial(sched)
    assert grows_before_rung(sched) == [CONTINUE, CONTINUE, STOP, STOP]  # inside the "lag"
    reason = sched.stop_reasons["b"]
    assert reason["rung_flops"] == 25 and reason["lag_deferred"] is False
    assert reason["growth_lag_tokens"] == 0 and "growth lag" not in describe(reason)
    assert sched.lag_deferred == {}


def test_the_deferral_survives_a_restart(tmp_path) -> None:
    path = tmp_path / "asha_state.json"
    pristine = cloudpickle.dumps(asha(path))  # what tuner.pkl holds: the scheduler at start
    killed = asha(path)
    good_trial(killed)
    assert grows_before_rung(killed) == [CONTINUE] * 4  # killed inside b's lag
    at_kill = path.read_text()

    restored = cloudpickle.loads(pristine)  # Tuner.restore: unpickled, reads the file
    restored.on_trial_add(None, trial("b"))
    assert report(restored, "b", 31, 1.5, 3000, 2000) == STOP  # judged after the lag
    assert restored.stop_reasons["b"]["lag_deferred"] is True
    assert restored.stop_reasons["b"]["rung_flops"] == 25

    # had the deferral not been persisted, Ray's bracket would judge rung 25 at that report
    # too (it is still unrecorded), but as a plain stop: the reason would not say so
    killed_state = json.loads(at_kill)
    assert [d["milestone"] for d in killed_state.pop("lag_deferred")["b"]] == [25]
    forgetful_path = tmp_path / "forgetful.json"
    forgetful_path.write_text(json.dumps(killed_state))
    forgetful = asha(forgetful_path)
    forgetful.on_trial_add(None, trial("b"))
    assert report(forgetful, "b", 31, 1.5, 3000, 2000) == STOP
    assert forgetful.stop_reasons["b"]["lag_deferred"] is False


def test_state_files_and_pickles_from_before_growth_aware_stopping_still_load(tmp_path) -> None:
    path = tmp_path / "asha_state.json"
    sched = asha(path)
    good_trial(sched)
    sched.on_trial_add(None, trial("b"))
    report(sched, "b", 25, 1.9, 2500, None)
    old = json.loads(path.read_text())
    del old["lag_deferred"], old["growth_lag_tokens"]
    for reason in old["stops"].values():
        del reason["lag_deferred"], reason["growth_lag_tokens"]
    path.write_text(json.dumps(old))
    assert (
        stop_texts(path)["b"]
        == "rung 25 FLOPs: val_loss 1.9000 worse than cutoff 1.0000 of 1 trials"
    )

    state = asha(path).__dict__.copy()  # a scheduler pickled before the new attributes
    del state["growth_lag_tokens"], state["lag_deferred"]
    revived = RecordingASHA.__new__(RecordingASHA)
    revived.__setstate__(state)
    revived._ensure_loaded()
    assert revived.growth_lag_tokens == 0 and revived.lag_deferred == {}
    assert set(revived.stop_reasons) == {"b"}


def test_a_trial_ending_inside_its_lag_records_its_final_value_at_the_deferred_rungs(
    tmp_path,
) -> None:
    """Ray's final-result handling records the highest rung passed; the deferred rungs below
    it get the final value too (a record, not a judgement: no stop reason)."""
    sched = asha(tmp_path / "s.json", lag=30000)
    good_trial(sched)
    grows_before_rung(sched)
    assert report(sched, "b", 55, 1.4, 5500, 2000) == CONTINUE  # rung 50, inside the lag
    assert [d["milestone"] for d in sched.lag_deferred["b"]] == [25, 50]
    final = {"flops": 60, "val_loss": 1.3, "tokens": 6000, "last_growth_tokens": 2000}
    sched.on_trial_complete(None, trial("b"), final)
    assert rung(sched, 25)["b"] == rung(sched, 50)["b"] == pytest.approx(-1.3)
    assert sched.lag_deferred == {} and "b" not in sched.stop_reasons
    assert json.loads((tmp_path / "s.json").read_text())["lag_deferred"] == {}
