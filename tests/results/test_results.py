"""The results core: status vocabulary, records, paired/pooled frontiers, the validity rule."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest

from raygrow.errors import ConfigError
from raygrow.results import (
    GSTACK,
    TrialRecord,
    compare,
    gstack_growth_tokens,
    scratch_points,
    status_kind,
    target_loss,
    trial_status,
    validity,
)


def rec(arm: str, loss: float, flops: float, frac: float = 1.0, seed: int | None = 0, **kw):
    return TrialRecord(
        arm=arm, status="completed", val_loss=loss, flops=flops, budget_frac=frac, seed=seed, **kw
    )


def scratch_seed(seed: int, offset: float = 0.0) -> list[TrialRecord]:
    """Annealed scratch at 50/75/100 % of the budget: loss 2.4 / 2.2 / 2.0 (+ offset)."""
    return [
        rec("scratch", 2.4 + offset, 50.0, 0.5, seed),
        rec("scratch", 2.2 + offset, 75.0, 0.75, seed),
        rec("scratch", 2.0 + offset, 100.0, 1.0, seed),
    ]


def test_status_vocabulary() -> None:
    assert status_kind("completed") == "completed"
    assert status_kind("Stopped by ASHA at FLOPs 1e9") == "stopped"
    assert status_kind("failed: NaN loss") == "failed"
    assert status_kind("running") == "running" and status_kind("unfinished") == "unfinished"
    for bad in ("", "completedish", "done"):
        with pytest.raises(ValueError, match="must start with"):
            status_kind(bad)
    kw = {"planned_tokens": 100, "flops": 25.0}
    assert trial_status(tokens=100, ended=True, **kw) == "completed"
    assert trial_status(tokens=30, ended=True, **kw) == "stopped by ASHA at FLOPs 25"
    assert trial_status(tokens=30, ended=False, **kw) == "unfinished"
    assert trial_status(tokens=30, ended=True, errored=True, error="x", **kw) == "failed: x"


def test_record_checks_its_fields() -> None:
    with pytest.raises(ValueError, match="arm"):
        TrialRecord(arm="baseline", status="completed")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="budget_frac"):
        TrialRecord(arm="scratch", status="completed", budget_frac=0.0)
    assert not TrialRecord(arm="grown", status="completed", val_loss=math.nan, flops=1).completed
    assert not TrialRecord(arm="grown", status="stopped by ASHA", val_loss=2.0, flops=1).completed


def test_paired_frontier_when_the_seed_covers_every_budget() -> None:
    records = [*scratch_seed(0), *scratch_seed(1, offset=0.1), *scratch_seed(2)[:2]]
    points, basis = scratch_points(records, seed=1)
    assert basis == "paired (seed 1)"
    assert [x for p in points for x in p] == pytest.approx([50.0, 2.5, 75.0, 2.3, 100.0, 2.1])
    # seed 2 lacks the full budget: pooled over every seed's runs, per budget
    points, basis = scratch_points(records, seed=2)
    assert basis == "pooled (3 seeds)"
    assert points[2] == pytest.approx((100.0, 2.05))
    assert points[0][1] == pytest.approx(2.4333333)
    assert scratch_points([rec("grown", 2.0, 1.0)]) == ([], "no completed scratch arm")


def test_compare_uses_the_budget_field_not_the_description() -> None:
    records = [
        *scratch_seed(0),
        rec("grown", 2.2, 60.0, schedule="stack x2 @40% (looks like @100%)"),
        rec("grown", 1.9, 80.0),
        TrialRecord(arm="grown", status="stopped by ASHA at FLOPs 9", val_loss=3.0, flops=9.0),
    ]
    cmp = compare(records)
    assert [str(c.speedup) for c in cmp[:3]] == ["1.00x", "1.00x", "1.00x"]  # own points
    assert str(cmp[3].speedup) == "1.25x" and cmp[3].speedup.bound == "exact"
    assert str(cmp[4].speedup) == ">1.25x" and cmp[4].speedup.bound == "lower"
    assert cmp[5].speedup is None  # stopped: no annealed final loss
    assert target_loss(records) == 2.0
    # frontiers never mix groups: the other group has no scratch run
    other = rec("grown", 2.0, 50.0, group="other")
    assert compare([*scratch_seed(0), other])[-1].speedup is None


def test_compare_on_the_held_out_test_split() -> None:
    """`split="test"` matches test finals against scratch's test finals; val stays selection."""
    scratch = [
        rec("scratch", 2.4, 50.0, 0.5, test_loss=2.5),
        rec("scratch", 2.2, 75.0, 0.75, test_loss=2.3),
        rec("scratch", 2.0, 100.0, 1.0, test_loss=2.1),
    ]
    grown = rec("grown", 2.2, 60.0, test_loss=2.1)  # 1.25x on val, scratch's 100% on test
    assert str(compare([*scratch, grown])[-1].speedup) == "1.25x"
    on_test = compare([*scratch, grown], split="test")
    assert str(on_test[-1].speedup) == "1.67x" and on_test[-1].speedup.bound == "exact"
    assert grown.loss("test") == 2.1 and grown.completed_on("test")
    # no test final: no test speedup; the frontier holds only the scratch runs that have one
    assert compare([*scratch, rec("grown", 2.2, 60.0)], split="test")[-1].speedup is None
    partial = [*scratch[:2], rec("scratch", 2.0, 100.0, 1.0), grown]
    assert compare(partial, split="test")[-1].speedup.bound == "lower"
    assert compare([*scratch_seed(0), grown], split="test")[-1].speedup is None
    assert compare([*scratch_seed(0), grown], split="test")[-1].basis == "no completed scratch arm"


def test_validity_single_seed() -> None:
    v = validity([*scratch_seed(0), rec("small", 2.3, 55.0)])
    assert v.checked and v.valid and v.note == "single seed" and v.threshold == 0.0
    assert v.margin == pytest.approx(0.3) and "single seed" in v.text
    lost = validity([*scratch_seed(0), rec("small", 1.99, 55.0)])
    assert lost.checked and not lost.valid and "NOT VALID" in lost.text


def test_validity_needs_twice_the_larger_seed_std_with_several_seeds() -> None:
    target = [rec("scratch", loss, 100.0, 1.0, s) for s, loss in enumerate((2.0, 2.02, 2.04))]
    tight = [rec("small", loss, 55.0, 1.0, s) for s, loss in enumerate((2.10, 2.11, 2.12))]
    v = validity([*target, *tight])
    assert v.n_seeds_target == 3 and v.n_seeds_small == 3
    assert v.std_target == pytest.approx(0.02) and v.seed_noise == pytest.approx(0.02)
    assert v.threshold == pytest.approx(0.04) and v.margin == pytest.approx(0.09)
    assert v.valid and v.paired == pytest.approx((0.10, 0.09, 0.08))
    # the same margin with a noisy small arm (std 0.05): within 2x seed noise
    noisy = [rec("small", loss, 55.0, 1.0, s) for s, loss in enumerate((2.06, 2.11, 2.16))]
    v = validity([*target, *noisy])
    assert not v.valid and v.note == "margin within 2x seed noise"
    assert v.threshold == pytest.approx(0.10) and "NOT VALID" in v.text


def test_validity_reports_a_missing_arm() -> None:
    v = validity(scratch_seed(0))
    assert not v.checked and v.valid is None and v.note == "no completed small arm"
    assert validity([rec("small", 2.0, 1.0)]).note == "no completed scratch arm"


def test_gstack_formula() -> None:
    assert GSTACK == {"a": 0.88, "b": 163.27, "c": -5.74}
    assert gstack_growth_tokens(7e9, 6 * 7e9 * 2e12) == pytest.approx(11.11e9, rel=2e-3)
    with pytest.raises(ConfigError, match="n_params"):
        gstack_growth_tokens(0, 1e20)


def test_the_core_imports_neither_torch_nor_ray() -> None:
    code = (
        "import sys, raygrow.results; "
        "print(sorted(m for m in ('torch', 'ray', 'mlflow', 'pandas') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
