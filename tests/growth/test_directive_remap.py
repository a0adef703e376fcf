"""Layer plans and the remapping of earlier events' ramps / freezes through later growth (issue 17).

The rule (raygrow.growth.directives): an earlier ramp or freeze of layer j continues in every new
layer of kind orig or copy whose source is j; identity, random and learned (mixed) layers get
none. The growth report measures function preservation with the active ramps.
"""

from __future__ import annotations

import json

import pytest
import torch

from raygrow.growth import OPERATORS, GrowthReport, GrowthState, evaluate, get_operator, grow
from raygrow.growth.check import toy_batch_fn, toy_config
from raygrow.growth.directives import (
    active_directives,
    event_layer_plan,
    remap_directives,
    remap_scales,
)

BATCHES = toy_batch_fn(64, batch=8, seq_len=32)
PROBE = BATCHES(5_000)
FAST = {"learned": {"phase_steps": 2}}


def run(state: GrowthState, op: str, **params):
    return grow(
        state,
        op,
        generator=torch.Generator().manual_seed(0),
        probe_batch=PROBE,
        train_batch_fn=lambda i: BATCHES(20_000 + i),
        **{**FAST.get(op, {}), **params},
    )


def with_scales(state: GrowthState, scales: dict[int, float]) -> GrowthState:
    return GrowthState(state.config, state.params, state.optim, state.step, scales)


# --------------------------------------------------------------------------- the rule
def test_remap_follows_weights_orig_and_copies_only() -> None:
    plan = [(0, "orig"), (0, "zero_copy"), (1, "orig"), (1, "copy"), (0, "random"), (1, "mixed")]
    directives = {
        "branch_ramps": [{"layers": [1], "steps": 10}],
        "freeze": {
            "fqns": [
                "tok_embeddings.weight",
                "layers.1.attn.wq.weight",
                "layers.0.mlp_norm.weight",
            ],
            "steps": 5,
        },
        "extra_flops": 3.0,
    }
    out = remap_directives(directives, plan)
    assert out["branch_ramps"] == [{"layers": [2, 3], "steps": 10}]
    assert out["freeze"] == {
        "fqns": [
            "tok_embeddings.weight",
            "layers.2.attn.wq.weight",
            "layers.3.attn.wq.weight",
            "layers.0.mlp_norm.weight",
        ],
        "steps": 5,
    }
    assert out["extra_flops"] == 3.0 and directives["branch_ramps"][0]["layers"] == [1]
    assert remap_scales({0: 0.5, 1: 0.25}, plan) == {0: 0.5, 2: 0.25, 3: 0.25}


@pytest.mark.parametrize("op", list(OPERATORS))
def test_every_report_records_its_layer_plan(op: str, trained) -> None:
    new, report = run(trained, op)
    assert len(report.layer_map) == len(report.layer_kinds) == new.config.n_layers
    assert all(0 <= j < trained.config.n_layers for j in report.layer_map)
    data = json.loads(json.dumps(report.to_dict()))  # as checkpoints store it
    assert GrowthReport.from_dict(data) == report
    kinds = set(report.layer_kinds)
    if op == "learned":
        assert kinds == {"mixed"}
    elif "depth" not in report.axes:
        assert report.layer_map == list(range(trained.config.n_layers)) and kinds == {"orig"}
    # the first occurrence of every source layer is the original block (except learned/stack)
    if op not in ("learned", "stack"):
        firsts = [j for i, j in enumerate(report.layer_map) if j not in report.layer_map[:i]]
        origs = [
            j for j, k in zip(report.layer_map, report.layer_kinds, strict=True) if k == "orig"
        ]
        assert firsts == origs == list(range(trained.config.n_layers))
    # events from before plans were recorded get theirs reconstructed identically
    legacy = {k: v for k, v in data.items() if k not in ("layer_map", "layer_kinds")}
    assert event_layer_plan(legacy) == event_layer_plan(data)


def test_interleaved_plans() -> None:
    cfg = toy_config("2x64")
    p = get_operator("staged_depth").resolve(cfg, {"factor": 2})
    plan = get_operator("staged_depth").layer_plan(cfg, cfg.replace(n_layers=4), p)
    assert plan == [(0, "orig"), (0, "zero_copy"), (1, "orig"), (1, "zero_copy")]
    p = get_operator("random").resolve(cfg, {"factor": 2, "layer_map": "interleave"})
    plan = get_operator("random").layer_plan(cfg, cfg.replace(n_layers=4), p)
    assert plan == [(0, "orig"), (0, "random"), (1, "orig"), (1, "random")]
    p = get_operator("stack").resolve(cfg, {"factor": 2})
    plan = get_operator("stack").layer_plan(cfg, cfg.replace(n_layers=4), p)
    assert plan == [(0, "orig"), (1, "orig"), (0, "copy"), (1, "copy")]


# --------------------------------------------------------------------------- chained history
def test_active_directives_remap_through_later_growth(trained) -> None:
    """random (ramp on the new layers 2, 3) then staged_depth 4 -> 8: the ramp continues on the
    original blocks 4 and 6; the old code kept ramping layers 2 and 3 (old 1 and an identity)."""
    s1, r1 = run(trained, "random", factor=2, ramp_steps=20)
    e1 = {**r1.to_dict(), "step": 10}
    scales, frozen = active_directives([e1], 16)
    assert scales == {2: 0.3, 3: 0.3} and frozen == []
    s2, r2 = run(with_scales(s1, scales), "staged_depth", factor=2)
    e2 = {**r2.to_dict(), "step": 16}
    scales, _ = active_directives([e1, e2], 16)
    assert scales == {4: 0.3, 6: 0.3}
    assert active_directives([e1, e2], 20)[0] == {4: 0.5, 6: 0.5}
    assert active_directives([e1, e2], 30)[0] == {}  # the ramp is over
    assert s2.branch_scales == scales  # grow hands back the grown model's scales
    # the report is truthful: before ran at the active scales, after at the remapped ones
    assert r2.branch_scales == {"2": 0.3, "3": 0.3}
    before, logits = evaluate(s1.config, s1.params, PROBE, branch_scales={2: 0.3, 3: 0.3})
    _, full = evaluate(s1.config, s1.params, PROBE)
    assert r2.loss_before == pytest.approx(before, abs=1e-6)
    assert (logits - full).abs().max() > 1e-3  # the scales matter (even for fresh blocks)
    assert r2.fp_claimed and r2.max_logit_diff < 1e-4
    after, _ = evaluate(s2.config, s2.params, PROBE, branch_scales=scales)
    assert after == pytest.approx(before, abs=1e-5)
    # the old behaviour: the event's indices unremapped -> another function (the loss jumps)
    stale, _ = evaluate(s2.config, s2.params, PROBE, branch_scales={2: 0.3, 3: 0.3})
    assert abs(stale - before) > 1e-3


def test_freeze_follows_the_weights(trained) -> None:
    s1, r1 = run(trained, "incremental", factor=2, phase_steps=20)
    e1 = {**r1.to_dict(), "step": 10}
    s2, r2 = run(s1, "staged_depth", factor=2)
    e2 = {**r2.to_dict(), "step": 16}
    _, frozen = active_directives([e1, e2], 16)
    layers = sorted({int(f.split(".")[1]) for f in frozen})
    assert layers == [0, 2]  # old layers 0 and 1 sit at 0 and 2; the identity blocks train
    assert len(frozen) == 2 * 9
    assert active_directives([e1, e2], 30)[1] == []


@pytest.mark.parametrize("op", list(OPERATORS))
def test_fp_claims_hold_with_active_ramps(op: str, trained) -> None:
    """Every operator that claims FP keeps the function of a model with a ramp in progress."""
    state = with_scales(trained, {1: 0.3})
    new, report = run(state, op)
    assert report.branch_scales == {"1": 0.3}
    before, _ = evaluate(state.config, state.params, PROBE, branch_scales={1: 0.3})
    assert report.loss_before == pytest.approx(before, abs=1e-6)
    after, _ = evaluate(new.config, new.params, PROBE, branch_scales=new.branch_scales)
    assert report.loss_after == pytest.approx(after, abs=1e-6)
    if report.fp_claimed:
        assert report.max_logit_diff < 1e-4, report.to_dict()
