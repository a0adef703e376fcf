"""Speed (issues 9 and 13): Ray Train vs a bare loop, precision and OpenMP wait policy, the
default search's fixed share and schedules per search before vs after, CPU MFU.

    python benchmarks/speed.py --quick    # < 4 min idle: every part, tiny sizes, 32-step searches
    python benchmarks/speed.py            # the committed numbers (~3 default searches + 15 min)

a. **Throughput of one training process** (4x128 model, seq 128, batch 16, AdamW, 2 threads):
   1. Ray Train path vs a bare torch loop (target >= 0.90), both in the precision `auto`
      resolves to here: `harness.bare_loop.bare_loop_steps` against a 1-worker Ray Train run
      (`harness.ray_run.run_ray`: optimised env, reused cluster, 2 CPUs; evaluations every 1/8 and
      checkpoints every 1/4 of the run), alternating rounds. Ray tokens/s run from the first to
      the last report (per-step loop work, reports and checkpoints count; start-up is part b).
   2. fp32 vs bf16 autocast, the same bare loop and batch, alternating rounds (bf16 runs are
      kept short: emulated bf16 on an AVX2-only CPU runs ~10x slower); bf16/fp32 per round.
   3. OpenMP wait policy: the fp32 bare loop in fresh processes with `OMP_WAIT_POLICY` unset
      (libgomp's default), `ACTIVE` and `PASSIVE` (read once at process start), rotating order;
      against the rule of `raygrow._omp` (PASSIVE only when threads x processes > cores).
b. **The default search** (`harness/speed_search.py`): per-trial fixed share (target <= 10 %) of
   `python -m raygrow.search` (one-worker trials train in the Tune trial process), and sampled
   schedules evaluated within its wall time T, after vs before (commit 337a747, a git
   worktree; default = bf16, and fp32) time-boxed to T (target >= 3x).
c. **MFU** (target >= 0.5 at d=256): raygrow's `Trainer.step_once` tokens/s x
   `flops_per_token` / the matmul peak of the resolved precision (`measure_peak_flops`,
   uncached, same 2 threads), peak and model measured alternately in every round; one profiled
   step shows where the time goes.

Writes `<out>/speed.md` and `<out>/speed.png`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from harness.common import header, med_range, out_dir, pyplot, save_figure, write_report
from harness.speed_search import search_part
from harness.speed_search_report import search_lines

THREADS = 2
OMP_ARMS = ("unset", "ACTIVE", "PASSIVE")


def load() -> float:
    return os.getloadavg()[0]


# --------------------------------------------------------------------------- a. throughput
def bare_inputs(tmp: Path) -> tuple[Any, Any, Any, Any]:
    """(TrainConfig, model config, x, y) of part a's bare loop: harness.ray_run's
    throughput_config's model and one batch of its data; torch set to THREADS threads."""
    import torch
    from harness.ray_run import throughput_config

    from raygrow.data import BatchSampler, load_tokens

    torch.set_num_threads(THREADS)
    cfg = throughput_config(tmp / "probe", 64)  # its model, data and batch shape
    data = load_tokens(cfg.data, cfg.tokenizer)
    x, y = BatchSampler(data.train, cfg.seq_len, cfg.seed).global_batch(0, cfg.batch_size)
    return cfg, cfg.model.replace(vocab_size=data.vocab_size), x, y


def ray_run_split(out: Path) -> dict[str, float]:
    """Time split of a finished run's evaluation windows (after the first report)."""
    recs = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    later = recs[1:]
    return {
        "train_s": sum(r["train_s"] for r in later),
        "eval_s": sum(r["eval_s"] for r in later),
        "tokens": recs[-1]["tokens"] - recs[0]["tokens"],
    }


def ray_vs_bare(steps: int, rounds: int, tmp: Path, precision: str) -> dict[str, Any]:
    from harness.bare_loop import bare_loop_steps, bare_tokens_per_s
    from harness.ray_run import NUM_CPUS, run_ray

    from raygrow.train.driver import ray_session

    cfg, model, x, y = bare_inputs(tmp)
    bare_loop_steps(model, x, y, 3, precision)  # warm-up (allocator, oneDNN kernels)
    rows: list[dict[str, float]] = []
    with ray_session(num_cpus=NUM_CPUS, log_to_driver=False, logging_level="WARNING"):
        for i in range(rounds):
            row: dict[str, float] = {}
            for arm in ("bare", "ray") if i % 2 == 0 else ("ray", "bare"):
                if arm == "bare":
                    row["bare"] = bare_tokens_per_s(model, x, y, steps, precision)
                    row["load_bare"] = load()
                    continue
                run_dir = tmp / f"ray{i}"
                res = run_ray(run_dir, steps)
                split = ray_run_split(run_dir)
                elapsed = split["tokens"] / res["tokens_per_s"]
                row.update(
                    ray_e2e=res["tokens_per_s"],
                    ray_no_eval=split["tokens"] / (elapsed - split["eval_s"]),
                    ray_steps=split["tokens"] / split["train_s"],
                    eval_share=split["eval_s"] / elapsed,
                    other_share=(elapsed - split["eval_s"] - split["train_s"]) / elapsed,
                    load_ray=load(),
                )
                shutil.rmtree(run_dir, ignore_errors=True)
            print("a1.", {k: round(v, 3) for k, v in row.items()}, flush=True)
            rows.append(row)
    ratios = {
        key: [r[key] / r["bare"] for r in rows] for key in ("ray_no_eval", "ray_e2e", "ray_steps")
    }
    return {
        "rows": rows,
        "ratios": ratios,
        "steps": steps,
        "rounds": rounds,
        "cfg": cfg,
        "precision": precision,
        "omp": os.environ.get("OMP_WAIT_POLICY") or "libgomp default",
    }


def ray_vs_bare_lines(a: dict[str, Any]) -> list[str]:
    cfg, rows, ratios = a["cfg"], a["rows"], a["ratios"]
    lines = [
        "## a1. Ray Train 1-worker path vs a bare torch loop",
        "",
        f"{cfg.model.shape} model, seq {cfg.seq_len}, batch {cfg.batch_size}, precision "
        f"{a['precision']} (`auto` on this machine, both arms), AdamW, clip 1.0, {THREADS} "
        f"threads; {a['steps']} steps per run, {a['rounds']} rounds, order alternating. Bare "
        "loop: `harness.bare_loop.bare_loop_steps` (plain torch, no evaluation). Ray: "
        "`harness.ray_run.run_ray`, a fresh 1-worker `TorchTrainer.fit()` per round on a reused "
        "cluster (2 CPUs per worker), evaluating every 1/8 and checkpointing every 1/4 of the "
        "run; its tokens/s run from the first to the last report. OpenMP wait policy of the "
        f"bare loop (this process): {a['omp']}; of the Ray worker: raygrow's rule.",
        "",
        "| round | bare tok/s | Ray tok/s excl. eval | Ray tok/s incl. eval | Ray step-only tok/s "
        "| eval share | reports+ckpts+loop share | load (bare / Ray) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for i, r in enumerate(rows):
        lines.append(
            f"| {i + 1} | {r['bare']:,.0f} | {r['ray_no_eval']:,.0f} | {r['ray_e2e']:,.0f} | "
            f"{r['ray_steps']:,.0f} | {r['eval_share']:.1%} | {r['other_share']:.1%} | "
            f"{r['load_bare']:.1f} / {r['load_ray']:.1f} |"
        )
    ok = statistics.median(ratios["ray_no_eval"]) >= 0.90
    lines += [
        "",
        "Ratios Ray / bare, per round, median [min, max]:",
        "",
        f"- **Ray Train path, evaluation compute excluded: {med_range(ratios['ray_no_eval'])}** "
        f"- target >= 0.90 {'met' if ok else 'MISSED'} (the bare loop does not evaluate; "
        "reports, checkpoints and the loop's per-step work are charged)",
        f"- everything charged, evaluations included: {med_range(ratios['ray_e2e'])}",
        f"- training steps only (the loop's own step timer): {med_range(ratios['ray_steps'])}",
        "",
    ]
    return lines


def precision_rounds(steps: dict[str, int], rounds: int, tmp: Path) -> dict[str, Any]:
    """fp32 vs bf16-autocast tokens/s of the bare loop, alternating rounds; `steps` per
    precision (bf16 runs short where it is emulated)."""
    from harness.bare_loop import bare_loop_steps, bare_tokens_per_s

    _, model, x, y = bare_inputs(tmp)
    for precision in steps:
        bare_loop_steps(model, x, y, 1, precision)  # warm-up: each precision's kernels
    rows = []
    for i in range(rounds):
        row: dict[str, float] = {}
        for precision in ("fp32", "bf16") if i % 2 == 0 else ("bf16", "fp32"):
            row[precision] = bare_tokens_per_s(model, x, y, steps[precision], precision)
        row["ratio"], row["load"] = row["bf16"] / row["fp32"], load()
        print("a2.", {k: round(v, 3) for k, v in row.items()}, flush=True)
        rows.append(row)
    return {"rows": rows, "steps": steps}


def precision_lines(p: dict[str, Any], resolved: str) -> list[str]:
    rows, steps = p["rows"], p["steps"]
    ratios = [r["ratio"] for r in rows]
    faster = statistics.median(ratios) > 1
    agrees = (resolved == "bf16") == faster
    lines = [
        "## a2. fp32 vs bf16 autocast on this CPU",
        "",
        f"The bare loop of a1 (same model, batch and {THREADS} threads), a fresh model per run, "
        f"{steps['fp32']} fp32 steps and {steps['bf16']} bf16 steps per run, order alternating.",
        "",
        "| round | fp32 tok/s | bf16 tok/s | bf16 / fp32 | load |",
        "|---|---|---|---|---|",
    ]
    lines += [
        f"| {i + 1} | {r['fp32']:,.0f} | {r['bf16']:,.0f} | {r['ratio']:.3f} | {r['load']:.1f} |"
        for i, r in enumerate(rows)
    ]
    lines += [
        "",
        f"- **bf16 / fp32 tokens/s: {med_range(ratios)}**: bf16 autocast is "
        f"{'faster' if faster else 'slower'} here; `auto` resolved to {resolved} - "
        + ("consistent" if agrees else "INCONSISTENT with this measurement"),
        "",
    ]
    return lines


def omp_child(steps: int) -> None:
    """One measurement in this fresh process (its OMP_WAIT_POLICY as started): fp32 bare loop
    tokens/s, printed as JSON."""
    # torch first: libgomp reads OMP_WAIT_POLICY as torch loads it, before `import raygrow`
    # sets raygrow's process default
    import torch  # noqa: F401
    from harness.bare_loop import bare_loop_steps, bare_tokens_per_s

    with tempfile.TemporaryDirectory(prefix="raygrow-omp-") as tmp:
        _, model, x, y = bare_inputs(Path(tmp))
        bare_loop_steps(model, x, y, 3, "fp32")  # warm-up
        tps = bare_tokens_per_s(model, x, y, steps, "fp32")
    print("RESULT " + json.dumps({"tokens_per_s": tps}), flush=True)


def omp_run(policy: str, steps: int) -> float:
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if policy != "unset":
        env["OMP_WAIT_POLICY"] = policy
    proc = subprocess.run(
        [sys.executable, __file__, "--omp-child", str(steps)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    line = next(x for x in proc.stdout.splitlines() if x.startswith("RESULT "))
    return json.loads(line.removeprefix("RESULT "))["tokens_per_s"]


def omp_rounds(steps: int, rounds: int) -> dict[str, Any]:
    """OMP_WAIT_POLICY unset / ACTIVE / PASSIVE, each a fresh process, order rotating."""
    from raygrow._omp import wait_policy

    rows = []
    for i in range(rounds):
        row: dict[str, float] = {}
        for policy in OMP_ARMS[i % 3 :] + OMP_ARMS[: i % 3]:
            row[policy] = omp_run(policy, steps)
        row["load"] = load()
        print("a3.", {k: round(v) for k, v in row.items()}, flush=True)
        rows.append(row)
    cores = os.cpu_count() or 1
    rule = wait_policy(THREADS, 1, cores) or "unset"
    text = " ".join((wait_policy.__doc__ or "").split())
    return {"rows": rows, "steps": steps, "cores": cores, "rule": rule, "rule_text": text}


def omp_lines(o: dict[str, Any]) -> list[str]:
    rows, rule, cores = o["rows"], o["rule"], o["cores"]
    vs_unset = {p: [r[p] / r["unset"] for r in rows] for p in OMP_ARMS[1:]}
    med = {p: statistics.median(r[p] for r in rows) for p in OMP_ARMS}
    best = max(med, key=med.__getitem__)
    rule_share = statistics.median(r[rule] / max(r[p] for p in OMP_ARMS) for r in rows)
    supported = rule_share >= 0.95
    lines = [
        "## a3. OpenMP wait policy",
        "",
        f"The fp32 bare loop of a1, {o['steps']} steps after 3 warm-up steps, {THREADS} threads, "
        "each run a fresh process started with `OMP_WAIT_POLICY` unset (libgomp's default: "
        "spin briefly, then sleep), `ACTIVE` or `PASSIVE`; order rotating per round. One "
        f"training process on {cores} cores: not oversubscribed.",
        "",
        "| round | unset tok/s | ACTIVE tok/s | PASSIVE tok/s | ACTIVE / unset | PASSIVE / unset "
        "| load |",
        "|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {i + 1} | {r['unset']:,.0f} | {r['ACTIVE']:,.0f} | {r['PASSIVE']:,.0f} | "
        f"{r['ACTIVE'] / r['unset']:.3f} | {r['PASSIVE'] / r['unset']:.3f} | {r['load']:.1f} |"
        for i, r in enumerate(rows)
    ]
    lines += [
        "",
        f"- ACTIVE / unset: {med_range(vs_unset['ACTIVE'])}; **PASSIVE / unset: "
        f"{med_range(vs_unset['PASSIVE'])}**; fastest by median: {best}",
        f"- the project's rule (`raygrow._omp.wait_policy`: {o['rule_text']}) chooses "
        f"**{rule}** for {THREADS} threads x 1 process on "
        f"{cores} cores; it reaches {rule_share:.1%} of the round's fastest policy (median) - "
        + (
            "the measurement supports it (within 5 %)"
            if supported
            else "the measurement does NOT support it (more than 5 % slower)"
        ),
        "- one training process at a time here: what other load does to each policy shows "
        "only in the load column (the rule's case for PASSIVE is a machine whose cores are "
        "filled)",
        "",
    ]
    return lines


# --------------------------------------------------------------------------- c. MFU
def fresh_peak(precision: str) -> float:
    """The matmul peak of the resolved `precision` (MFU's roofline), measured again: the load
    changes from round to round. Never a bf16 peak on a machine that trains in fp32."""
    from raygrow.train import precision as prec

    prec._PEAK_CACHE.clear()
    return prec.measure_peak_flops(prec.compute_dtype(precision), "cpu")


def mfu(shapes: list[str], steps: int, rounds: int, tmp: Path) -> dict[str, Any]:
    import torch
    from harness.bare_loop import make_trainer, raygrow_steps

    torch.set_num_threads(THREADS)
    trainers = {s: make_trainer(s, tmp / "mfu", steps * rounds + 2) for s in shapes}
    for tr in trainers.values():
        raygrow_steps(tr, 1)  # warm-up
    precision = next(iter(trainers.values())).config.precision  # what `auto` resolved to
    step_tokens = 16 * 256
    runs: dict[str, list[dict[str, float]]] = {s: [] for s in shapes}
    for i in range(rounds):
        for s in shapes if i % 2 == 0 else shapes[::-1]:
            peak = fresh_peak(precision)
            tps = steps * step_tokens / raygrow_steps(trainers[s], steps)
            fpt = trainers[s].flops_per_token
            runs[s].append({"peak": peak, "tps": tps, "mfu": tps * fpt / peak, "load": load()})
        print("c.", {s: round(r[-1]["mfu"], 3) for s, r in runs.items()}, flush=True)
    return {
        "runs": runs,
        "fpt": {s: tr.flops_per_token for s, tr in trainers.items()},
        "steps": steps,
        "rounds": rounds,
        "precision": precision,
        "profiles": {s: profile_step(tr) for s, tr in trainers.items()},
    }


OP_KINDS = {
    "GEMM (mm, addmm, bmm)": ("aten::mm", "aten::addmm", "aten::bmm"),
    "attention (SDPA fwd+bwd)": ("scaled_dot_product",),
    "casts and copies": ("aten::copy_", "aten::_to_copy", "aten::to"),
    "elementwise (mul, add, silu, div, pow, ...)": (
        "aten::mul",
        "aten::add",
        "aten::silu",
        "aten::div",
        "aten::pow",
        "aten::rsqrt",
        "aten::sub",
        "aten::neg",
        "aten::cat",
        "aten::mean",
        "aten::sum",
    ),
}


def profile_step(trainer: Any) -> dict[str, Any]:
    """One profiled `step_once`: top ops by self CPU time, and the GEMMs' achieved FLOP/s."""
    from torch.profiler import ProfilerActivity, profile

    trainer.step_once()
    with profile(activities=[ProfilerActivity.CPU], with_flops=True) as prof:
        t0 = time.perf_counter()
        trainer.step_once()
        wall = time.perf_counter() - t0
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events) or 1.0
    top = sorted(events, key=lambda e: e.self_cpu_time_total, reverse=True)[:10]
    gemm = [e for e in events if e.key in ("aten::mm", "aten::addmm", "aten::bmm")]
    gemm_us = sum(e.self_cpu_time_total for e in gemm)
    gemm_flops = sum(e.flops for e in gemm)
    opt = [e for e in events if e.key.startswith("Optimizer.step")]
    kinds = {
        kind: sum(e.self_cpu_time_total for e in events if any(m in e.key for m in marks)) / total
        for kind, marks in OP_KINDS.items()
    }
    kinds["other"] = 1.0 - sum(kinds.values())
    return {
        "kinds": kinds,
        "wall": wall,
        "top": [(e.key, e.self_cpu_time_total / total, e.count) for e in top],
        "gemm_share": gemm_us / total,
        "gemm_flops_s": gemm_flops / (gemm_us / 1e6) if gemm_us else 0.0,
        "opt_share": (max(e.cpu_time_total for e in opt) / total) if opt else 0.0,
    }


def mfu_lines(c: dict[str, Any]) -> list[str]:
    runs, fpt, prec = c["runs"], c["fpt"], c["precision"]
    peaks = [r["peak"] for rs in runs.values() for r in rs]
    lines = [
        "## c. Model FLOP/s utilisation of raygrow's training step",
        "",
        f"`Trainer.step_once`, batch 16 x seq 256, precision {prec} (`auto`), AdamW, {THREADS} "
        f"threads; {c['steps']} steps per measurement, {c['rounds']} rounds; before every "
        f"measurement the {prec} 1024^3 matmul peak (the resolved precision's, as the loop's "
        "own MFU uses) is measured again (`measure_peak_flops`, best of 5), and MFU = tokens/s "
        "x flops_per_token / that peak.",
        "",
        f"{prec} matmul peak, {THREADS} threads: "
        f"**{med_range([p / 1e9 for p in peaks], '{:.0f}')}** GFLOP/s",
        "",
        "| model | FLOPs/token | tok/s | model GFLOP/s | MFU median [min, max] | load |",
        "|---|---|---|---|---|---|",
    ]
    for s, rs in runs.items():
        tps = statistics.median(r["tps"] for r in rs)
        lines.append(
            f"| {s} | {fpt[s] / 1e6:.1f} M | {tps:,.0f} | {tps * fpt[s] / 1e9:.0f} | "
            f"{med_range([r['mfu'] for r in rs])} | "
            f"{statistics.median(r['load'] for r in rs):.1f} |"
        )
    d256 = [r["mfu"] for s, rs in runs.items() if s.endswith("x256") for r in rs]
    if d256:
        ok = statistics.median(d256) >= 0.5
        lines += [
            "",
            f"- **d=256: MFU median {med_range(d256)}** - target >= 0.5 "
            + ("met" if ok else "MISSED"),
        ]
    profs = c["profiles"]
    lines += [
        "",
        "Where a step's time goes (one `step_once` under `torch.profiler`, share of self CPU "
        "time; the optimizer row is the whole `Optimizer.step` range, its ops are also counted "
        "in the rows above it):",
        "",
        "| | " + " | ".join(profs) + " |",
        "|---|" + "---|" * len(profs),
    ]
    for kind in [*OP_KINDS, "other"]:
        cells = " | ".join(f"{p['kinds'][kind]:.0%}" for p in profs.values())
        lines.append(f"| {kind} | {cells} |")
    lines += [
        "| optimizer step (AdamW) | "
        + " | ".join(f"{p['opt_share']:.0%}" for p in profs.values())
        + " |",
        "| GEMM GFLOP/s achieved (profiler FLOP count / GEMM time) | "
        + " | ".join(f"{p['gemm_flops_s'] / 1e9:.0f}" for p in profs.values())
        + " |",
        "| step wall s (profiler on) | "
        + " | ".join(f"{p['wall']:.2f}" for p in profs.values())
        + " |",
    ]
    low = [s for s, rs in runs.items() if statistics.median(r["mfu"] for r in rs) < 0.5]
    if low:
        peak = statistics.median(peaks)
        worst = profs[low[0]]
        lines += [
            "",
            f"Below 0.5 ({', '.join(low)}): the model is too small for the CPU's GEMMs. At "
            f"{low[0]} the GEMMs are {worst['kinds']['GEMM (mm, addmm, bmm)']:.0%} of the step "
            f"and reach {worst['gemm_flops_s'] / 1e9:.0f} GFLOP/s "
            f"({worst['gemm_flops_s'] / peak:.0%} of the peak) on their small matrices; "
            "CPU flash attention (its FLOPs are counted but it runs well below GEMM speed), "
            "elementwise ops (RMSNorm, RoPE, SwiGLU and their backward) and casts take "
            "most of the rest. Elementwise work per token grows as d, GEMM work as d^2, so "
            "their share shrinks as the model widens. The optimizer is a few percent at every "
            "size.",
        ]
    big = list(profs)[-1]
    lines += ["", f"Top ops of {big}:", "", "| op | self CPU share | calls |", "|---|---|---|"]
    lines += [f"| `{k}` | {share:.1%} | {n} |" for k, share, n in profs[big]["top"]]
    return [*lines, ""]


# --------------------------------------------------------------------------- plot, main
def plot(path: Path, parts: dict[str, Any]) -> None:
    plt = pyplot()
    fig, axes = plt.subplots(2, 3, figsize=(17, 9))
    ax = axes[0][0]
    if a := parts.get("a1"):
        for key, label in (
            ("bare", "bare loop"),
            ("ray_no_eval", "Ray, excl. eval"),
            ("ray_e2e", "Ray, incl. eval"),
        ):
            ax.plot(range(1, len(a["rows"]) + 1), [r[key] for r in a["rows"]], "o-", label=label)
        ax.set(xlabel="round", ylabel="tokens/s", title=f"a1. Ray Train vs bare ({a['precision']})")
        ax.legend()
    for ax, key, arms, title in (
        (axes[0][1], "a2", ("fp32", "bf16"), "a2. fp32 vs bf16 autocast"),
        (axes[0][2], "a3", OMP_ARMS, "a3. OMP_WAIT_POLICY (fp32)"),
    ):
        if part := parts.get(key):
            for arm in arms:
                rows = part["rows"]
                ax.plot(range(1, len(rows) + 1), [r[arm] for r in rows], "o-", label=arm)
            ax.set(xlabel="round", ylabel="tokens/s", title=title)
            ax.legend()
    if b := parts.get("b"):
        ax = axes[1][0]
        rows = b["rows"]
        train = [r["train"] for r in rows]
        ev = [r["eval"] for r in rows]
        ax.bar(range(len(rows)), train, label="train steps")
        ax.bar(range(len(rows)), ev, bottom=train, label="eval")
        ax.bar(
            range(len(rows)),
            [r["fixed"] for r in rows],
            bottom=[t + e for t, e in zip(train, ev, strict=True)],
            label="fixed",
        )
        ax.set_xticks(range(len(rows)), [f"{r['run'][0]}{i}" for i, r in enumerate(rows)])
        ax.set(ylabel="seconds", title="b. search trials: wall split (b=baseline, s=sampled)")
        ax.legend()
        ax = axes[1][1]
        counts = b["counts"]
        ax.bar(
            [c["label"].replace(", ", ",\n") for c in counts.values()],
            [c["evaluated"] for c in counts.values()],
        )
        ax.set(
            ylabel="sampled schedules evaluated",
            title=f"b. schedules within T = {b['time_box'] / 60:.1f} min",
        )
    if c := parts.get("c"):
        ax = axes[1][2]
        shapes = list(c["runs"])
        med = [statistics.median(r["mfu"] for r in c["runs"][s]) for s in shapes]
        lo = [m - min(r["mfu"] for r in c["runs"][s]) for m, s in zip(med, shapes, strict=True)]
        hi = [max(r["mfu"] for r in c["runs"][s]) - m for m, s in zip(med, shapes, strict=True)]
        ax.bar(shapes, med, yerr=[lo, hi], capsize=4)
        ax.axhline(0.5, color="k", ls="--", lw=1, label="target 0.5 (d=256)")
        ax.set(
            ylabel=f"MFU (vs measured {c['precision']} matmul peak)",
            title="c. CPU MFU, median [min,max]",
        )
        ax.legend()
    save_figure(fig, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes, smoke searches (<4 min)")
    parser.add_argument("--out", help="result folder (default results/ or results/quick/)")
    parser.add_argument("--parts", default="abc", help="which parts to run (default abc)")
    parser.add_argument("--omp-child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.omp_child:
        omp_child(args.omp_child)
        return
    from raygrow.train.precision import resolve_precision

    # SIGTERM (e.g. `timeout`) unwinds like Ctrl-C: a running search's session is ended
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    started = time.time()
    out = out_dir(args.out, args.quick)
    q = args.quick
    a_steps, a_rounds = (8, 3) if q else (120, 4)
    prec_steps, prec_rounds = ({"fp32": 6, "bf16": 2}, 2) if q else ({"fp32": 60, "bf16": 12}, 4)
    omp_steps, omp_rounds_n = (6, 2) if q else (60, 4)
    shapes = ["4x64", "4x256"] if q else ["4x64", "4x128", "4x256", "8x256"]
    c_steps, c_rounds = (2, 2) if q else (5, 4)
    resolved = resolve_precision("auto")
    tmp = Path(tempfile.mkdtemp(prefix="raygrow-speed-"))
    loads = [load()]
    parts: dict[str, Any] = {}
    try:
        # the searches first: each starts its own Ray instance, nothing of ours may be running
        if "b" in args.parts:
            parts["b"] = search_part(q, tmp)
            loads.append(load())
        if "a" in args.parts:
            parts["a1"] = ray_vs_bare(a_steps, a_rounds, tmp, resolved)
            parts["a2"] = precision_rounds(prec_steps, prec_rounds, tmp)
            parts["a3"] = omp_rounds(omp_steps, omp_rounds_n)
            loads.append(load())
        if "c" in args.parts:
            parts["c"] = mfu(shapes, c_steps, c_rounds, tmp)
            loads.append(load())
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    config = [
        f"threads: {THREADS} (torch), Ray workers 1 x 2 CPUs",
        "1-min load average after each part: " + " -> ".join(f"{x:.1f}" for x in loads),
        "spread: median [min, max] over rounds (a, c) or trials (b)",
    ]
    lines = header(
        "Speed: Ray Train path, precision, OpenMP, search overhead and schedules, CPU MFU",
        started=started,
        quick=q,
        config_lines=config,
    )
    if "a1" in parts:
        lines += ray_vs_bare_lines(parts["a1"])
        lines += precision_lines(parts["a2"], resolved)
        lines += omp_lines(parts["a3"])
    if "b" in parts:
        lines += search_lines(parts["b"])
    if "c" in parts:
        lines += mfu_lines(parts["c"])
    write_report(out, "speed", lines)
    plot(out / "speed.png", parts)


if __name__ == "__main__":
    main()
