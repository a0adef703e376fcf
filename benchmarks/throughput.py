"""Tokens/s of raygrow's training step vs a bare ~30-line torch loop, side by side.

Both train the same model on batches of the same shape (the precision `auto` resolves to on this
machine, `raygrow.train.precision`; AdamW, grad clipping).
Blocks of steps alternate between the two so that machine noise hits both alike; the ratio is
raygrow / bare (target >= 0.95). Writes benchmarks/results/throughput.md.

    python benchmarks/throughput.py            # 4x128 and 8x256
    python benchmarks/throughput.py --quick    # fewer steps, for CI
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import statistics
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import torch
from harness.bare_loop import bare_loop_steps, bare_tokens_per_s, make_trainer, raygrow_steps

from raygrow.data import load_tokens
from raygrow.flops import flops_per_token
from raygrow.train.precision import cached_peak_flops, resolve_precision

RESULTS = Path(__file__).parent / "results"


def measure(shape: str, steps: int, rounds: int, out_dir: Path) -> dict[str, float | str]:
    trainer = make_trainer(shape, out_dir, steps * (rounds + 2))
    model, precision = trainer.model_config, trainer.config.precision
    x, y = trainer.sampler.global_batch(0, 16)
    bare_loop_steps(model, x, y, 2, precision)  # warm-up both paths (allocator, kernels)
    raygrow_steps(trainer, 2)
    bare, ours = [], []
    for _ in range(rounds):
        bare.append(bare_tokens_per_s(model, x, y, steps, precision))
        ours.append(steps * 16 * 256 / raygrow_steps(trainer, steps))
    ratios = [o / b for o, b in zip(ours, bare, strict=True)]
    tps = statistics.median(ours)
    return {
        "shape": shape,
        "bare_tok_s": statistics.median(bare),
        "raygrow_tok_s": tps,
        "ratio": statistics.median(ratios),
        "ratio_min": min(ratios),
        "mfu": tps * flops_per_token(model, 256) / cached_peak_flops(precision, trainer.device),
    }


def git_commit() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", default=str(RESULTS / "throughput.md"))
    args = parser.parse_args()
    steps, rounds = (5, 3) if args.quick else (20, 5)
    shapes = ["4x128"] if args.quick else ["4x128", "8x256"]
    load_start = os.getloadavg()
    load_tokens("default", "byte")  # prepare/cache outside the timed region
    tmp = Path("raygrow_runs/bench-throughput")
    rows = [measure(s, steps, rounds, tmp) for s in shapes]
    precision = resolve_precision("auto")
    lines = [
        "# Throughput: raygrow training step vs a bare torch loop",
        "",
        f"- date: {datetime.now(UTC):%Y-%m-%d %H:%M UTC}",
        f"- machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} "
        f"threads, torch {torch.__version__}",
        f"- commit: {git_commit()}",
        f"- load average at start / end: {load_start[0]:.1f} / {os.getloadavg()[0]:.1f} "
        "(the machine is shared: absolute tok/s are inflated by other work, the ratio is "
        "measured in alternating rounds so both paths see the same load)",
        f"- config: batch 16 x 256 tokens, precision {precision} (`auto` on this machine), AdamW, "
        f"clip 1.0; {rounds} alternating "
        f"rounds of {steps} steps per path; medians reported"
        + (" (--quick)" if args.quick else ""),
        f"- {precision} matmul peak measured here (MFU's denominator): "
        f"{cached_peak_flops(precision, torch.device('cpu')) / 1e9:.0f} GFLOP/s",
        "",
        "| model | bare tok/s | raygrow tok/s | ratio (median) | ratio (worst round) | MFU |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['shape']} | {r['bare_tok_s']:,.0f} | {r['raygrow_tok_s']:,.0f} | "
            f"{r['ratio']:.3f} | {r['ratio_min']:.3f} | {r['mfu']:.2f} |"
        )
    lines += ["", "Target: ratio >= 0.95."]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    with contextlib.suppress(OSError):
        for f in sorted(tmp.rglob("*"), reverse=True):
            f.unlink() if f.is_file() else f.rmdir()


if __name__ == "__main__":
    main()
