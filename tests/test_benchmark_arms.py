"""The growth benchmarks' arm catalogue, without training: every grown arm ends in exactly its
target's ModelConfig (issue 17: HyperCloning from 8x32 ended in 2 heads × 32 while the 8x64
target has one 64-dim head), and speedups compare an arm only with its own target's scratch."""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from harness import growth as g  # noqa: E402
from harness import growth_report as gr  # noqa: E402

PROTOCOLS = {"full": g.Protocol.full(), "quick": g.Protocol.quick()}


def _grown_arms(p: g.Protocol) -> list[g.Arm]:
    lr = 6e-3
    return [
        *g.growth_arms(p, lr, 0),
        *g.late_arms(p, lr, 0),
        g.incremental_arm(p, lr, 0),
    ]


@pytest.mark.parametrize("name", PROTOCOLS)
def test_every_grown_arm_ends_in_its_target_config(name: str) -> None:
    p = PROTOCOLS[name]
    for arm in _grown_arms(p):
        final = g.final_config(arm, p)
        assert final == g.model_config(g.target_of(arm, p), p), arm.name
        g.check_target(arm, p)  # the harness's own check agrees
        if arm.operator != "hypercloning":  # depth arms: the protocol's target itself
            assert final == g.model_config(p.target, p), arm.name


def test_hypercloning_arm_has_its_own_target_and_scratch_runs() -> None:
    p = g.Protocol.full()
    (hc,) = [a for a in g.growth_arms(p, 6e-3, 0) if a.operator == "hypercloning"]
    final = g.final_config(hc, p)
    assert (final.n_layers, final.d_model, final.n_heads, final.head_dim) == (8, 64, 2, 32)
    assert g.target_of(hc, p) == "8x64:h2" != p.target
    assert g.config_label(final) == g.shape_label("8x64:h2") == "8x64 (2 heads × 32)"
    runs = g.width_scratch(p, 6e-3, 0)
    assert [a.frac for a in runs] == list(p.scratch_fracs)
    for a in runs:  # the scratch runs it is compared with build exactly its final model
        assert a.kind == "scratch" and g.target_of(a, p) == "8x64:h2"
        assert g.model_config(a.model, p) == final
        g.check_target(a, p)


def test_check_target_names_the_arm_and_the_fields() -> None:
    p = g.Protocol.full()
    (hc,) = [a for a in g.growth_arms(p, 6e-3, 0) if a.operator == "hypercloning"]
    wrong = replace(hc, target=None)  # the old arm: labelled as reaching the 8x64 target
    with pytest.raises(g.TargetMismatch, match=r"HyperCloning \(width\).*n_heads 2 != 1"):
        g.check_target(wrong, p)
    with pytest.raises(g.TargetMismatch, match="HyperCloning"):  # also a trained model's config
        g.check_target(hc, p, final=g.model_config(p.target, p))


def test_target_label_does_not_change_the_cache_key() -> None:
    """Cached runs stay valid: `target` is a label, the run itself is unchanged."""
    p = g.Protocol.full()
    for arm in _grown_arms(p):
        assert replace(arm, target=None).key(p) == arm.key(p)


def _run(arm: str, kind: str, target: str, frac: float, flops: float, loss: float) -> dict:
    return {"arm": arm, "kind": kind, "target": target, "frac": frac, "seed": 0,
            "flops": flops, "loss": loss}  # fmt: skip


def test_speedups_use_only_the_runs_own_target() -> None:
    runs = [
        _run(f"scratch@{f:g}", "scratch", "8x64", f, f * 10.0, 2.0 - f / 2) for f in (0.5, 1, 1.5)
    ]
    runs += [
        _run(f"scratch h2@{f:g}", "scratch", "8x64:h2", f, f * 10.0, 2.1 - f / 2)
        for f in (0.5, 1, 1.5)
    ]
    grown = _run("HyperCloning (width)", "grown", "8x64:h2", 1.0, 8.0, 1.6)
    (own,) = gr.speedups([grown], [*runs, grown])
    (other,) = gr.speedups([{**grown, "target": "8x64"}], [*runs, grown])
    assert own.value == pytest.approx(10.0 / 8.0)  # h2 scratch reaches 1.6 at 10 FLOPs
    assert other.value < own.value  # the 8x64 runs would reach it earlier
