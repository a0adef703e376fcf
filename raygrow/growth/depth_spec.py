"""Config-level rules of the depth operators (torch-free): parameters, layer maps, grown configs.

Every depth operator is described by a *layer map*: target layer j comes from source layer
map[j]. "stack" = [0..L-1] repeated, "interleave" = [0,0,1,1,..], or an explicit list of source
indices. The tensor side (what a new block is initialised to) is `raygrow.growth.depth`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from raygrow.config import ModelConfig
from raygrow.errors import ConfigError
from raygrow.growth.spec import OperatorSpec, Param, register_spec

FACTOR = Param("factor", "int", None, "integer depth factor g >= 2: L -> g*L (default 2)")
N_LAYERS = Param("n_layers", "int", None, "target layer count L' > L (alternative to factor)")
LAYER_MAP = Param(
    "layer_map",
    "layer_map",
    "stack",
    "stack = [0..L-1]*g, interleave = [0,0,1,1,..], or a list: target layer j <- source map[j]",
    choices=("stack", "interleave"),
)


def target_layers(op: str, config: ModelConfig, p: Mapping[str, Any]) -> int:
    """Resolve factor / n_layers (either, or neither = factor 2) to the target layer count."""
    L = config.n_layers
    factor, n_layers = p.get("factor"), p.get("n_layers")
    if factor is not None and factor < 2:
        raise ConfigError(f"{op}: factor={factor} must be an integer >= 2 (L -> factor*L)")
    if n_layers is not None and n_layers <= L:
        raise ConfigError(
            f"{op}: n_layers={n_layers} must exceed the current {L} layers; pass a larger target"
        )
    if factor is not None and n_layers is not None and factor * L != n_layers:
        raise ConfigError(
            f"{op}: factor={factor} and n_layers={n_layers} disagree for a {L}-layer model; "
            "pass only one of them"
        )
    if n_layers is not None:
        return n_layers
    return (factor or 2) * L


def resolve_layer_map(
    op: str, config: ModelConfig, p: dict[str, Any], keep_originals: bool
) -> list[int]:
    """The explicit layer map; fills p['n_layers'] and p['factor'] (None if not an integer).

    `keep_originals` (zero, random, staged_depth): every source layer must appear and their
    first occurrences must be in order 0..L-1, so the original network survives intact.
    """
    L = config.n_layers
    spec = p["layer_map"]
    if isinstance(spec, list):
        if p.get("factor") is not None or p.get("n_layers") is not None:
            n = target_layers(op, config, p)
            if n != len(spec):
                raise ConfigError(
                    f"{op}: layer_map has {len(spec)} entries but the target is {n} layers; "
                    "drop factor/n_layers or make them agree"
                )
        if len(spec) <= L:
            raise ConfigError(
                f"{op}: layer_map has {len(spec)} entries; growth needs more than the current {L}"
            )
        bad = [i for i in spec if not 0 <= i < L]
        if bad:
            raise ConfigError(f"{op}: layer_map entries {bad[:3]} are not source layers 0..{L - 1}")
        layer_map = list(spec)
    else:
        n = target_layers(op, config, p)
        if spec == "stack":
            layer_map = [j % L for j in range(n)]
        else:  # interleave: each source layer repeated (about) n/L times in place
            layer_map = [j * L // n for j in range(n)]
    if keep_originals:
        firsts = [i for j, i in enumerate(layer_map) if i not in layer_map[:j]]
        if firsts != list(range(L)):
            raise ConfigError(
                f"{op}: layer_map must contain every source layer with first occurrences in "
                f"order 0..{L - 1} (the original network is kept); got {layer_map}"
            )
    n = len(layer_map)
    p["n_layers"] = n
    p["factor"] = n // L if n % L == 0 else None
    return layer_map


class MapDepthSpec(OperatorSpec):
    """A depth operator defined by a layer map (`layer_map` param, or factor / n_layers)."""

    axes = ("depth",)
    keep_originals = True

    def check(self, config: ModelConfig, p: dict[str, Any]) -> None:
        resolve_layer_map(self.name, config, p, self.keep_originals)

    def target(self, config: ModelConfig, p: dict[str, Any]) -> ModelConfig:
        return config.replace(n_layers=p["n_layers"])

    def layer_map(self, config: ModelConfig, p: Mapping[str, Any]) -> list[int]:
        """The explicit layer map of resolved params `p` (not modified)."""
        return resolve_layer_map(self.name, config, dict(p), self.keep_originals)


class StackSpec(MapDepthSpec):
    name = "stack"
    summary = "copy blocks by a layer map (G_stack, prts default 0..L-1 repeated)"
    params = (FACTOR, N_LAYERS, LAYER_MAP)
    keep_originals = False


class ZeroSpec(MapDepthSpec):
    name = "zero"
    summary = "new blocks with zeroed attn.wo/mlp.w_down: identity blocks (G_zero)"
    fp_note = "yes"
    scale_note = "old blocks carried (gradients unchanged), new blocks fresh"
    params = (
        FACTOR,
        N_LAYERS,
        LAYER_MAP,
        Param("init", "str", "copy", "new blocks' other tensors", choices=("copy", "random")),
    )


class RandomSpec(MapDepthSpec):
    name = "random"
    summary = "fresh random blocks, optionally ramped in by an MSG mask (G_random)"
    fp_note = "when ramp_steps > 0 (at t=0)"
    params = (
        FACTOR,
        N_LAYERS,
        LAYER_MAP,
        Param("ramp_steps", "int", 100, "MSG mask ramp length in steps; 0 = no ramp (not FP)"),
    )

    def check(self, config: ModelConfig, p: dict[str, Any]) -> None:
        super().check(config, p)
        if p["ramp_steps"] < 0:
            raise ConfigError(f"random: ramp_steps={p['ramp_steps']} must be >= 0")

    def claims_fp(self, p: Mapping[str, Any]) -> bool:
        return p["ramp_steps"] > 0


class StagedDepthSpec(MapDepthSpec):
    name = "staged_depth"
    summary = "Shen et al. depth growth: identity-initialised inserted/appended layers"
    fp_note = "when new_layers='id'"
    scale_note = "old blocks carried (gradients unchanged), new identity blocks fresh"
    params = (
        FACTOR,
        N_LAYERS,
        Param(
            "placement",
            "str",
            "alternate",
            "alternate (1,1',2,2',..) or append (on top)",
            choices=("alternate", "append"),
        ),
        Param(
            "new_layers",
            "str",
            "id",
            "id = copy with zeroed branch outputs (FP); copy = "
            "plain copy (released-code behaviour, not FP)",
            choices=("id", "copy"),
        ),
    )

    def check(self, config: ModelConfig, p: dict[str, Any]) -> None:
        target_layers(self.name, config, p)
        self._map(config, p)

    def _map(self, config: ModelConfig, p: dict[str, Any]) -> list[int]:
        q = dict(p, layer_map="interleave" if p["placement"] == "alternate" else "stack")
        layer_map = resolve_layer_map(self.name, config, q, keep_originals=True)
        p["n_layers"], p["factor"] = q["n_layers"], q["factor"]
        return layer_map

    def layer_map(self, config: ModelConfig, p: Mapping[str, Any]) -> list[int]:
        return self._map(config, dict(p))

    def claims_fp(self, p: Mapping[str, Any]) -> bool:
        return p["new_layers"] == "id"


class IncrementalSpec(OperatorSpec):
    name = "incremental"
    axes = ("depth",)
    summary = "random new layers on top; old params frozen for phase_steps (Li et al. 2024)"
    params = (
        FACTOR,
        N_LAYERS,
        Param("phase_steps", "int", 100, "steps the old params stay frozen (0 = no freezing)"),
        Param(
            "freeze",
            "str",
            "layers",
            "what stays frozen: old blocks, or all old tensors",
            choices=("layers", "all"),
        ),
    )

    def check(self, config: ModelConfig, p: dict[str, Any]) -> None:
        n = target_layers(self.name, config, p)
        p["n_layers"], p["factor"] = n, (n // config.n_layers if n % config.n_layers == 0 else None)
        if p["phase_steps"] < 0:
            raise ConfigError(f"incremental: phase_steps={p['phase_steps']} must be >= 0")

    def target(self, config: ModelConfig, p: dict[str, Any]) -> ModelConfig:
        return config.replace(n_layers=p["n_layers"])


for _spec in (StackSpec(), ZeroSpec(), RandomSpec(), StagedDepthSpec(), IncrementalSpec()):
    register_spec(_spec)
