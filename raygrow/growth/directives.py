"""Loop directives across chained growth: earlier events' ramps and freezes follow the weights.

A growth event's directives (`branch_ramps`, `freeze`) name layer indices and FQNs *of the model
that event produced*. A later depth growth renumbers the layers, so before the loop applies an
event's directives they are remapped through the *layer plan* of every later event. Each report
records its plan as `layer_map` (new layer i <- source layer layer_map[i]) and `layer_kinds`:

    orig        the first occurrence of source j: block j itself, weights unchanged
    copy        a later full copy of j (stack, staged_depth new_layers='copy')
    zero_copy   a copy of j with attn.wo / mlp.w_down zeroed: an identity block (zero,
                staged_depth new_layers='id')
    zero_random a random block with zeroed branch outputs: an identity block
    random      a freshly initialised block (random, incremental)
    mixed       a learned linear combination of source layers (learned / LiGO)

Width operators keep the layers (identity plan, all `orig`).

The rule: an earlier event's ramp or freeze of layer j continues in every new layer of kind
`orig` or `copy` whose source is j, and nowhere else. Why: while a ramp is active, block j
computes x + s·f_j(x). Its original occurrence must keep s, or a function-preserving second
growth (staged_depth, zero, random with a ramp) would change the network's function (the bug of
issue 17: the old indices then pointed at other blocks). A copy carries j's weights, so it carries
j's mask too and computes exactly what block j computed (copying operators are not FP anyway, but
each copy equals its source as it ran). Identity and random blocks are new: they get only their
own event's directives (an identity block's output is 0 at growth whatever its scale; a random
block is ramped by its own event if at all). `mixed` layers end every earlier ramp and freeze:
the learned map was trained through the grown model with all branches at full scale. Freeze FQNs
are renamed the same way (`layers.j.<key>` -> `layers.i.<key>`); global FQNs (embeddings, final
norm, head) keep their names through every growth. Where several ramps cover one layer their
scales multiply (each masks the same branch outputs).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from raygrow.growth._fqn import split_fqn

LAYER_KINDS = ("orig", "copy", "zero_copy", "zero_random", "random", "mixed")
CARRY_KINDS = ("orig", "copy")
"""Kinds of new layers that continue their source layer's ramp and freeze."""

LayerPlan = list[tuple[int, str]]


def identity_plan(n_layers: int) -> LayerPlan:
    return [(i, "orig") for i in range(n_layers)]


def check_plan(plan: Sequence[tuple[int, str]], n_old: int, n_new: int, what: str) -> LayerPlan:
    """The plan as a list; ValueError unless it has n_new entries of source layers and kinds."""
    plan = [(int(i), str(k)) for i, k in plan]
    bad = [(i, k) for i, k in plan if not 0 <= i < n_old or k not in LAYER_KINDS]
    if len(plan) != n_new or bad:
        raise ValueError(
            f"{what}: layer plan must have {n_new} entries (source 0..{n_old - 1}, kind in "
            f"{LAYER_KINDS}); got {len(plan)} entries, bad {bad[:3]}"
        )
    return plan


def event_layer_plan(event: Mapping[str, Any]) -> LayerPlan:
    """The layer plan of a growth event (a report dict). Events recorded before plans were
    (checkpoints without `layer_map`) get theirs reconstructed from operator and params."""
    if "layer_map" in event and "layer_kinds" in event:
        layer_map, kinds = event["layer_map"], event["layer_kinds"]
        return [(int(i), str(k)) for i, k in zip(layer_map, kinds, strict=True)]
    from raygrow.growth._core import get_operator
    from raygrow.model import ModelConfig

    old = ModelConfig.from_dict(dict(event["config_before"]))
    new = ModelConfig.from_dict(dict(event["config_after"]))
    return get_operator(event["operator"]).layer_plan(old, new, dict(event["params"]))


def carried_layers(layers: Sequence[int], plan: Sequence[tuple[int, str]]) -> list[int]:
    """New indices of old `layers` under `plan`: every orig/copy occurrence, in new order."""
    old = set(int(j) for j in layers)
    return [i for i, (j, kind) in enumerate(plan) if j in old and kind in CARRY_KINDS]


def remap_directives(directives: Mapping[str, Any], plan: Sequence[tuple[int, str]]) -> dict:
    """An event's directives re-expressed for the model after a later growth with `plan`."""
    out = dict(directives)
    if "branch_ramps" in directives:
        out["branch_ramps"] = [
            {**ramp, "layers": carried_layers(ramp["layers"], plan)}
            for ramp in directives["branch_ramps"]
        ]
    if "freeze" in directives:
        fqns = []
        for fqn in directives["freeze"]["fqns"]:
            j, key = split_fqn(fqn)
            fqns += [fqn] if j is None else [f"layers.{i}.{key}" for i in carried_layers([j], plan)]
        out["freeze"] = {**directives["freeze"], "fqns": fqns}
    return out


def remap_scales(scales: Mapping[int, float], plan: Sequence[tuple[int, str]]) -> dict[int, float]:
    """Per-layer branch scales carried through `plan` (the same rule as the ramps)."""
    return {
        i: float(scales[j])
        for i, (j, kind) in enumerate(plan)
        if j in scales and kind in CARRY_KINDS
    }


def ramp_scales(directives: Mapping[str, Any], steps_since: int) -> dict[int, float]:
    """Branch scales min(1, steps_since / ramp steps) of the ramped layers (MSG mask)."""
    scales: dict[int, float] = {}
    for ramp in directives.get("branch_ramps", []):
        s = min(1.0, steps_since / max(1, int(ramp["steps"])))
        for i in ramp["layers"]:
            scales[int(i)] = scales.get(int(i), 1.0) * s
    return scales


def combine_scales(*parts: Mapping[int, float]) -> dict[int, float]:
    """Product of per-layer scales (layers absent from a part have scale 1)."""
    out: dict[int, float] = {}
    for part in parts:
        for i, s in part.items():
            out[int(i)] = out.get(int(i), 1.0) * float(s)
    return out


def remapped_history(history: Sequence[Mapping[str, Any]]) -> list[tuple[int, dict]]:
    """(growth step, directives in the current model's indices) of every event with
    directives, each remapped through the layer plans of all later events."""

    def loop_directives(event: Mapping[str, Any]) -> bool:
        return bool({"branch_ramps", "freeze"} & set(event.get("directives") or {}))

    first = next((k for k, e in enumerate(history) if loop_directives(e)), len(history))
    plans = {k: event_layer_plan(history[k]) for k in range(first + 1, len(history))}
    out = []
    for k, event in enumerate(history):
        if not loop_directives(event):
            continue
        directives = dict(event["directives"])
        for later in range(k + 1, len(history)):
            directives = remap_directives(directives, plans[later])
        out.append((int(event["step"]), directives))
    return out


def active_directives(
    history: Sequence[Mapping[str, Any]], step: int
) -> tuple[dict[int, float], list[str]]:
    """(branch scale of every layer still ramping, frozen FQNs) of the current model at `step`,
    from the growth history (report dicts with `step`), remapped as the module describes."""
    scales: list[dict[int, float]] = []
    frozen: dict[str, None] = {}  # ordered set
    for event_step, directives in remapped_history(history):
        since = step - event_step
        scales.append(ramp_scales(directives, since))
        freeze = directives.get("freeze")
        if freeze and since < int(freeze["steps"]):
            frozen.update(dict.fromkeys(freeze["fqns"]))
    combined = combine_scales(*scales)
    return {i: s for i, s in combined.items() if s != 1.0}, list(frozen)
