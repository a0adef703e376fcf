"""Config-level rules of the width operators (torch-free): targets, divisibility, grown configs.

Targets: `d_model` (a multiple of head_dim; default 2x), or `n_heads` (d_model = n_heads *
head_dim), and `d_ff` (default: scaled with d_model; an explicit d_ff alone grows only the MLP
where the operator allows it). n_kv_heads scales with n_heads, so the GQA ratio is kept. Also
here: the specs of `mixture` (block-structured width) and `learned` (depth and/or width, reusing
the depth layer-map rules). The tensor side is `raygrow.growth.width`, `.mixture`, `.learned`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from raygrow.config import ModelConfig
from raygrow.errors import ConfigError
from raygrow.growth.depth_spec import FACTOR, LAYER_MAP, N_LAYERS, resolve_layer_map
from raygrow.growth.spec import OperatorSpec, Param, register_spec

D_MODEL = Param("d_model", "int", None, "target d_model, a multiple of head_dim (default 2x)")
N_HEADS = Param("n_heads", "int", None, "target query heads (sets d_model = n_heads * head_dim)")
D_FF = Param("d_ff", "int", None, "target SwiGLU width (default: scaled with d_model)")
WIDTH_PARAMS = (D_MODEL, N_HEADS, D_FF)


def resolve_width(
    op: str,
    config: ModelConfig,
    p: dict[str, Any],
    *,
    integer: bool = False,
    same_factor: bool = False,
    ff_only_ok: bool = True,
) -> tuple[int, int]:
    """Fill p['d_model'], p['n_heads'], p['d_ff'] from the given targets; return (D'/D, F'/F)
    as integers when they are (else 0). `integer`: both ratios must be integers; `same_factor`:
    and equal (block-structured operators); `ff_only_ok`: d_model may stay unchanged."""
    D, E, H, K, F = (
        config.d_model,
        config.head_dim,
        config.n_heads,
        config.kv_heads,
        config.ff_dim,
    )
    d, h, f = p.get("d_model"), p.get("n_heads"), p.get("d_ff")
    if h is not None:
        if d is not None and d != h * E:
            raise ConfigError(
                f"{op}: n_heads={h} means d_model={h * E} (head_dim {E} is fixed for RoPE), but "
                f"d_model={d}; pass only one of them"
            )
        d = h * E
    if d is None:
        d = D if (f is not None and ff_only_ok) else 2 * D
    if d < D:
        raise ConfigError(f"{op}: d_model={d} is below the current {D}; growth cannot shrink")
    if d % E:
        raise ConfigError(
            f"{op}: d_model={d} is not a multiple of head_dim={E} (RoPE keeps head_dim; width "
            f"growth adds heads); pick a multiple of {E}, e.g. {2 * D}"
        )
    h = d // E
    if (K * h) % H:
        raise ConfigError(
            f"{op}: {h} query heads cannot keep the GQA ratio {H}:{K}; pick d_model so that "
            f"n_heads is a multiple of {H // math.gcd(H, K)}"
        )
    if f is None and config.d_ff is not None:
        if (config.d_ff * d) % D:
            raise ConfigError(f"{op}: d_ff={config.d_ff} does not scale to d_model={d}; pass d_ff")
        f = config.d_ff * d // D
    f_new = 4 * d if f is None else f
    if f_new < F:
        raise ConfigError(f"{op}: d_ff={f_new} is below the current {F}; growth cannot shrink")
    if d == D and f_new == F:
        raise ConfigError(f"{op}: target equals the current width; pass a larger d_model or d_ff")
    if d == D and not ff_only_ok:
        raise ConfigError(f"{op}: d_model must grow; pass d_model > {D}")
    n = d // D if d % D == 0 else 0
    n_f = f_new // F if f_new % F == 0 else 0
    if integer and (not n or not n_f):
        raise ConfigError(
            f"{op}: needs integer growth factors, got d_model {D}->{d} and d_ff {F}->{f_new}; "
            "use multiples of the current sizes"
        )
    if same_factor and n != n_f:
        raise ConfigError(
            f"{op}: d_model and d_ff must grow by the same integer factor (block structure); got "
            f"{D}->{d} and {F}->{f_new}; drop d_ff or pass d_ff={n * F}"
        )
    p["d_model"], p["n_heads"], p["d_ff"] = d, h, f
    return n, n_f


def width_config(config: ModelConfig, p: Mapping[str, Any]) -> ModelConfig:
    h = p["n_heads"]
    kv = None if config.n_kv_heads is None else config.kv_heads * h // config.n_heads
    return config.replace(d_model=p["d_model"], n_heads=h, n_kv_heads=kv, d_ff=p["d_ff"])


class WidthSpec(OperatorSpec):
    """A width operator: `d_model` / `n_heads` / `d_ff` targets, validated by `resolve_width`."""

    axes = ("width",)
    params = WIDTH_PARAMS
    integer = False
    same_factor = False
    ff_only_ok = True

    def check(self, config: ModelConfig, p: dict[str, Any]) -> None:
        resolve_width(
            self.name,
            config,
            p,
            integer=self.integer,
            same_factor=self.same_factor,
            ff_only_ok=self.ff_only_ok,
        )

    def target(self, config: ModelConfig, p: dict[str, Any]) -> ModelConfig:
        return width_config(config, p)


class Net2NetSpec(WidthSpec):
    name = "net2net"
    summary = "Net2WiderNet unit splitting (SwiGLU units, GQA head groups, residual x k)"
    fp_note = "when noise=0"
    scale_note = "m / copy count of the written unit, v / count^2 (exact gradient ratio)"
    params = WIDTH_PARAMS + (
        Param(
            "map",
            "str",
            "random",
            "how new units pick their source: random or from_left",
            choices=("random", "from_left"),
        ),
        Param("noise", "float", 0.0, "relative std of symmetry-breaking noise (0 keeps FP)"),
    )

    def check(self, config: ModelConfig, p: dict[str, Any]) -> None:
        super().check(config, p)
        if p["d_model"] % config.d_model:
            raise ConfigError(
                f"net2net: d_model {config.d_model}->{p['d_model']} is not an integer factor; "
                "RMSNorm needs uniform replication of the residual stream, pick a multiple"
            )
        if p["noise"] < 0:
            raise ConfigError(f"net2net: noise={p['noise']} must be >= 0")

    def claims_fp(self, p: Mapping[str, Any]) -> bool:
        return p["noise"] == 0


class HyperCloningSpec(WidthSpec):
    name = "hypercloning"
    summary = "HyperCloning: tile weights, divide by input copies (FP, optional cancelling noise)"
    fp_note = "yes"
    scale_note = "m / n, v / n^2 (untied head, tied final norm: 1); exact gradient ratios"
    integer = True
    params = WIDTH_PARAMS + (
        Param(
            "noise_snr_db",
            "float",
            None,
            "cancelling symmetry-breaking noise at this SNR in dB (e.g. 10); null = none",
        ),
    )


class StagedWidthSpec(WidthSpec):
    name = "staged_width"
    summary = "Shen et al. block-diagonal width doubling (final norm / n; Adam m/n, v/n^2)"
    fp_note = "yes"
    scale_note = "m / n, v / n^2 (the paper's m/2, v/4); final norm unchanged"
    integer = True
    same_factor = True
    ff_only_ok = False


class ZeroWidthSpec(WidthSpec):
    name = "zero_width"
    summary = "append units: writers zero, readers random; norm gains/eps rescaled (exact FP)"
    fp_note = "yes"
    scale_note = "old entries carried (gradients unchanged; norm gains x sqrt(D'/D)), new fresh"

    def target(self, config: ModelConfig, p: dict[str, Any]) -> ModelConfig:
        grown = width_config(config, p)
        return grown.replace(norm_eps=config.norm_eps * config.d_model / grown.d_model)


class RandomWidthSpec(WidthSpec):
    name = "random_width"
    summary = "append randomly initialised units (G_random width, no MSG mask: not FP)"


class MixtureSpec(WidthSpec):
    name = "mixture"
    summary = "MixtureGrowth: off-diagonal blocks = new combinations of trained templates"
    fp_note = "when coefs='zero'"
    scale_note = "template-mixed moments, then staged_width's m/n, v/n^2 (approximate)"
    integer = True
    same_factor = True
    ff_only_ok = False
    params = WIDTH_PARAMS + (
        Param(
            "coefs",
            "str",
            "orthogonal",
            "off-diagonal template coefficients",
            choices=("orthogonal", "copy", "random", "zero"),
        ),
        Param("coef_scale", "float", 1.0, "norm of each new coefficient vector"),
    )

    def check(self, config: ModelConfig, p: dict[str, Any]) -> None:
        super().check(config, p)
        if p["coefs"] == "orthogonal" and config.n_layers < 2:
            raise ConfigError(
                "mixture: coefs='orthogonal' needs a bank of >= 2 layers (templates); the model "
                "has 1, use coefs='copy' or 'random'"
            )

    def claims_fp(self, p: Mapping[str, Any]) -> bool:
        return p["coefs"] == "zero"


class LearnedSpec(OperatorSpec):
    name = "learned"
    axes = ("depth", "width")
    summary = "LiGO: train a linear growth map (init = stacking) for phase_steps, materialise"
    needs_train_batches = True
    params = (
        FACTOR,
        N_LAYERS,
        LAYER_MAP,
        *WIDTH_PARAMS,
        Param("phase_steps", "int", 100, "steps of training the growth map"),
        Param("lr", "float", 7e-5, "peak LR of the map (prts: 7e-5)"),
        Param("min_lr", "float", 7e-6, "final LR of the map's cosine (prts: 7e-6)"),
        Param("warmup_steps", "int", 50, "linear warm-up steps of the map's LR"),
    )

    def check(self, config: ModelConfig, p: dict[str, Any]) -> None:
        widen = any(p[k] is not None for k in ("d_model", "n_heads", "d_ff"))
        deepen = (
            p["factor"] not in (None, 1)
            or (p["n_layers"] is not None and p["n_layers"] != config.n_layers)
            or isinstance(p["layer_map"], list)
            or not widen
        )
        if deepen:
            resolve_layer_map(self.name, config, p, keep_originals=False)
        else:
            p["factor"], p["n_layers"] = 1, config.n_layers
        if widen:
            resolve_width(self.name, config, p)
        if p["phase_steps"] < 0 or p["warmup_steps"] < 0:
            raise ConfigError("learned: phase_steps and warmup_steps must be >= 0")
        if p["lr"] <= 0 or p["min_lr"] < 0:
            raise ConfigError("learned: lr must be > 0 and min_lr >= 0")

    def target(self, config: ModelConfig, p: dict[str, Any]) -> ModelConfig:
        grown = config.replace(n_layers=p["n_layers"])
        if p["d_model"] is not None:
            grown = width_config(grown, p)
        return grown


for _spec in (
    Net2NetSpec(),
    HyperCloningSpec(),
    StagedWidthSpec(),
    ZeroWidthSpec(),
    RandomWidthSpec(),
    LearnedSpec(),
    MixtureSpec(),
):
    register_spec(_spec)
