"""Numeric precision of a run, chosen per machine by measurement, and a per-node result cache.

`precision` is `auto`, `fp32` or `bf16` (bf16 = `torch.autocast` around the forward pass;
parameters, gradients and AdamW state stay fp32). `auto` resolves to bf16 only where bf16 is
actually faster on the device at hand:

- CUDA: bf16 when the GPU supports it (`torch.cuda.is_bf16_supported()`), else fp32;
- CPU: a short micro-benchmark (a 256x256 matmul under autocast vs in fp32, ~0.5 s) must show
  bf16 at least `BF16_MIN_GAIN` times faster. CPUs differ: with avx512_bf16/AMX bf16 runs ~2x
  fp32; with AVX2 only, bf16 is emulated and runs 10-50x *slower* (measured 1.3 vs 81 GFLOP/s).

Measurements are cached per node in `~/.cache/raygrow/node.json` (or `$RAYGROW_CACHE_DIR`), keyed
by host, CPU model and capability, torch version and thread count, so that a trial pays for
them once per machine, not once per process; a changed CPU under the same host name gets its
own entry. The peak-FLOP/s roofline of MFU uses the same cache (`cached_peak_flops`).
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path

import torch

from raygrow.errors import ConfigError
from raygrow.train.config import PRECISIONS

BF16_MIN_GAIN = 1.1
"""bf16 must beat fp32 by this factor on the micro-benchmark for `auto` to pick it (a margin so
that timing noise on a busy machine cannot flip the choice run to run)."""

_PROCESS_CACHE: dict[str, float] = {}


def check_precision(value: str, device: torch.device | str = "cpu") -> None:
    """Reject an unknown precision, or bf16 on a CUDA device without bf16 (before compute)."""
    if value not in PRECISIONS:
        raise ConfigError(f"precision={value!r} is unknown; use one of {', '.join(PRECISIONS)}")
    dev = torch.device(device)
    if value == "bf16" and dev.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ConfigError(
            f"--precision bf16: {torch.cuda.get_device_name(dev)} has no bf16 support; "
            "use --precision auto or fp32"
        )


def resolve_precision(value: str, device: torch.device | str = "cpu") -> str:
    """`fp32` or `bf16` for this device: `auto` by support (CUDA) or measurement (CPU)."""
    check_precision(value, device)
    if value != "auto":
        return value
    dev = torch.device(device)
    if dev.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    if dev.type != "cpu":
        return "fp32"
    return "bf16" if bf16_speedup() >= BF16_MIN_GAIN else "fp32"


def autocast_dtype(precision: str) -> torch.dtype | None:
    """The autocast dtype of a resolved precision (None = no autocast)."""
    return torch.bfloat16 if precision == "bf16" else None


def compute_dtype(precision: str) -> torch.dtype:
    """The dtype of the matmuls of a resolved precision (the MFU roofline's dtype)."""
    return torch.bfloat16 if precision == "bf16" else torch.float32


# --------------------------------------------------------------------------- measurements
def bf16_speedup() -> float:
    """bf16-autocast / fp32 matmul throughput on this CPU (cached per node)."""
    return node_cached("bf16_speedup", _measure_bf16_speedup)


def _matmul_rate(n: int, autocast: bool, seconds: float) -> float:
    """Best-of-5 matmul FLOP/s within about `seconds` (at least one matmul per round)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    ctx = torch.autocast("cpu", dtype=torch.bfloat16) if autocast else contextlib.nullcontext()
    with ctx:
        a @ b  # warm-up: kernel selection, allocations
        best = float("inf")
        for _ in range(5):
            reps, start = 0, time.perf_counter()
            while True:
                a @ b
                reps += 1
                elapsed = time.perf_counter() - start
                if elapsed >= seconds / 5:
                    break
            best = min(best, elapsed / reps)
    return 2 * n**3 / best


def _measure_bf16_speedup() -> float:
    """What training does: fp32 weights and inputs, cast by autocast, vs plain fp32."""
    n, seconds = 256, 0.2
    return _matmul_rate(n, True, seconds) / _matmul_rate(n, False, seconds)


_PEAK_CACHE: dict[tuple[str, str], float] = {}


def measure_peak_flops(dtype: torch.dtype = torch.bfloat16, device: str = "cpu") -> float:
    """Measured dense-matmul FLOP/s on this device (a roofline for MFU), cached per process."""
    key = (device, str(dtype))
    if key not in _PEAK_CACHE:
        n = 1024
        a = torch.randn(n, n, device=device, dtype=dtype)
        b = torch.randn(n, n, device=device, dtype=dtype)
        for _ in range(2):
            a @ b
        best = 0.0
        for _ in range(5):  # best of 5: the machine is shared, the peak is the least-disturbed
            reps, start = 4, time.perf_counter()
            for _ in range(reps):
                a @ b
            if device != "cpu":
                torch.cuda.synchronize()
            best = max(best, 2 * n**3 * reps / (time.perf_counter() - start))
        _PEAK_CACHE[key] = best
    return _PEAK_CACHE[key]


def cached_peak_flops(precision: str, device: torch.device) -> float:
    """Measured dense-matmul FLOP/s of the resolved precision (MFU's denominator), cached per
    node; also primes `measure_peak_flops`' per-process cache."""
    dtype = compute_dtype(precision)
    value = node_cached(
        f"peak_flops|{device.type}|{dtype}", lambda: measure_peak_flops(dtype, device.type)
    )
    _PEAK_CACHE[(device.type, str(dtype))] = value
    return value


# --------------------------------------------------------------------------- node cache
def cpu_model() -> str:
    """The CPU's model name (`/proc/cpuinfo`), else the platform's processor string."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def node_key() -> str:
    """What a measurement depends on: host, CPU model and ISA level, GPU, torch, threads."""
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "-"
    parts = [
        platform.node(),
        cpu_model(),
        torch.backends.cpu.get_cpu_capability(),
        gpu,
        torch.__version__,
        f"threads={torch.get_num_threads()}",
    ]
    return "|".join(parts)


def node_cache_path() -> Path:
    from raygrow.data import default_cache_dir

    return default_cache_dir().parent / "node.json"


def node_cached(name: str, measure: Callable[[], float]) -> float:
    """`measure()` once per (node key, name): per process in memory, per node in a JSON file."""
    key = f"{node_key()}|{name}"
    if key in _PROCESS_CACHE:
        return _PROCESS_CACHE[key]
    path = node_cache_path()
    try:
        cache = json.loads(path.read_text())
    except (OSError, ValueError):
        cache = {}
    if not isinstance(cache.get(key), (int, float)):
        cache[key] = float(measure())
        with contextlib.suppress(OSError):  # a read-only home only costs a re-measurement
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            tmp.write_text(json.dumps(cache, indent=1, sort_keys=True))
            os.replace(tmp, path)
    _PROCESS_CACHE[key] = float(cache[key])
    return _PROCESS_CACHE[key]


def describe(precision: str, resolved: str, device: torch.device | str = "cpu") -> str:
    """One line for logs and report headers, e.g. `fp32 (auto: bf16/fp32 = 0.02x on this CPU)`."""
    dev = torch.device(device)
    if precision != "auto":
        return resolved
    if dev.type == "cpu":
        return (
            f"{resolved} (auto: bf16-autocast/fp32 matmul speed {bf16_speedup():.2f}x on "
            f"{cpu_model()}, {torch.backends.cpu.get_cpu_capability()})"
        )
    return f"{resolved} (auto: {dev.type})"
