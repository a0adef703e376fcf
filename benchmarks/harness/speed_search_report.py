"""Part b of speed.py, the report: the default search's per-trial fixed share and the sampled
schedules each arm evaluated within the time box (the runs and their analysis: speed_search.py).
"""

from __future__ import annotations

import math
import statistics
from typing import Any

from .common import med_range
from .speed_search import BEFORE_COMMIT, BEFORE_TREE


def search_lines(b: dict[str, Any]) -> list[str]:
    return [*fixed_share_lines(b), *schedules_lines(b)]


def fixed_share_lines(b: dict[str, Any]) -> list[str]:
    rows, total, driver = b["rows"], b["total"], b["driver"]
    lines = [
        "## b. Per-trial fixed share of the default search",
        "",
        f"`{b['cmd']}` (this tree, {total / 60:.1f} min). One-worker trials train inside the "
        "Tune trial process (`reuse_actors`: a finished trial's process takes the next one). "
        "Per trial: wall = Tune trial start -> next trial's start; train / eval = sums of the "
        "loop's `train_s` (steps, growth included) and `eval_s` over all of the trial's reports "
        "(Tune's `result.json`); fixed = wall - train - eval, split into start-up (trial start "
        "-> first evaluation: trial assigned to a process, config, model, data views), in-run "
        "(reports, checkpoints, the loop's per-window work) and tail (last report -> next "
        "trial starts: the trial's end, Tune's bookkeeping, the next trial's assignment).",
        "",
        "| Tune run | trial | arm | status | reports | wall s | train s | eval s | fixed s "
        "| fixed share | start-up s | in-run s | tail s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        est = " (est.)" if r.get("estimated_end") else ""
        lines.append(
            f"| {r['run']} | {r['trial_id']} | {r['label'][:40]} | {r['status']} | "
            f"{r['n_reports']} | {r['wall']:.1f}{est} | {r['train']:.1f} | {r['eval']:.1f} | "
            f"{r['fixed']:.1f} | {r['share']:.1%} | {r['startup']:.1f} | {r['in_run']:.1f} | "
            f"{r['tail']:.1f}{est} |"
        )
    shares = [r["share"] for r in rows]
    trial_wall = sum(r["wall"] for r in rows)
    trial_fixed = sum(r["fixed"] for r in rows)
    driver_total = sum(driver.values())
    all_fixed = trial_fixed + driver_total
    ok = statistics.median(shares) <= 0.10

    def part_sum(run: str) -> str:
        sel = [r for r in rows if r["run"] == run]
        if not sel:
            return "none"
        w, f = sum(r["wall"] for r in sel), sum(r["fixed"] for r in sel)
        return f"{len(sel)} trials, {w:.0f} s wall, {f:.0f} s fixed ({f / w:.1%})"

    comp = {k: sum(r[k] for r in rows) for k in ("startup", "in_run", "tail")}
    med = {k: statistics.median(r[k] for r in rows) for k in ("fixed", "startup", "tail")}
    work_med = statistics.median(r["train"] + r["eval"] for r in rows)
    lines += [
        "",
        f"- **per-trial fixed share: median {med_range(shares, '{:.1%}')}** - target <= 10 % "
        f"{'met' if ok else 'MISSED'}",
        f"- all trials: {trial_fixed:.0f} s fixed of {trial_wall:.0f} s trial wall "
        f"({trial_fixed / trial_wall:.1%}); baselines: {part_sum('baselines')}; sampled: "
        f"{part_sum('search')}",
        f"- whole search: {all_fixed:.0f} s of {total:.0f} s ({all_fixed / total:.1%}) is "
        f"fixed cost (trials' fixed {trial_fixed:.0f} s + the driver's own {driver_total:.0f} s)",
        f"- trials' fixed time by part: start-up {comp['startup']:.0f} s, in-run "
        f"{comp['in_run']:.0f} s, tail {comp['tail']:.0f} s (largest: "
        f"{max(comp, key=comp.__getitem__)})",
        f"- median trial: {med['fixed']:.1f} s fixed (start-up {med['startup']:.1f} s, tail "
        f"{med['tail']:.1f} s), {work_med:.1f} s of training + evaluation; a <= 10 % share "
        f"needs >= {9 * med['fixed']:.0f} s of work per trial at this fixed cost "
        f"({9 * med['fixed'] / work_med:.1f}x the median trial's)",
        "",
    ]
    if not ok:
        lines += [
            f"Target missed: a median trial's {med['fixed']:.1f} s of fixed cost is fixed per "
            f"trial, so its share falls only as the work per trial grows ({work_med:.1f} s "
            "here); see the largest part above for where to cut.",
            "",
        ]
    lines += ["Driver's own fixed costs (outside any trial):", "", "| phase | s |", "|---|---|"]
    lines += [f"| {k} | {v:.1f} |" for k, v in driver.items()]
    return [*lines, ""]


def schedules_lines(b: dict[str, Any]) -> list[str]:
    counts, setup, t_box = b["counts"], b["setup"], b["time_box"]
    after, before, fp32 = counts["after"], counts["before"], counts["before_fp32"]
    n = setup["samples"]
    lines = [
        "## b. Sampled schedules the default search evaluates within its time, before vs after",
        "",
        f"Arms, fixed before any run (`benchmarks/harness/speed_search.py`): (1) **after**: "
        f"`{after['cmd']}` run to completion, wall T = {t_box:.0f} s = {t_box / 60:.1f} min "
        f"(the CLI states: {setup['stated']}); (2) **before**: commit {BEFORE_COMMIT} (git "
        f"worktree `{BEFORE_TREE}`, imported via PYTHONPATH: raygrow from "
        f"`{setup['files']['before']}`), `{before['cmd']}` with its own defaults (bf16 "
        "autocast, a nested TorchTrainer per trial, OMP PASSIVE), killed at T; (3) **before, "
        f"fp32**: the same with `--target` = `{setup['fp32_target']}`, killed at T. The before "
        f"arms get `--num-samples {n}` (the after default) so that the old default's own "
        f"{setup['old_default_samples']} cannot cap their count. Counted: sampled schedules "
        "Tune marks TERMINATED (ran to the budget or stopped by ASHA) in the experiment state "
        "saved up to T (every 2 s) and their `result.json`. Both trees' per-node caches (peak "
        "FLOP/s, bf16 speed) were warm.",
        "",
        "| arm | wall s | baselines done | sampled completed | sampled ASHA-stopped | "
        "**sampled evaluated** | errored | training tok/s (median of reports) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for c in (after, before, fp32):
        lines.append(
            f"| {c['label']} | {c['wall']:.0f}{' (killed at T)' if c['killed'] else ''} | "
            f"{c['baselines_done']} / {c['baselines']} | {c['completed']} | {c['stopped']} | "
            f"**{c['evaluated']}** | {c['errored']} | {tok_s(c['tokens_per_s'])} |"
        )
    ok = after["evaluated"] >= 3 * before["evaluated"] and after["evaluated"] > 0
    lines += [
        "",
        f"- **after / before: {ratio(after, before)}** - target >= 3x {'met' if ok else 'MISSED'}",
        f"- after / before fp32 (in-process trials, OMP rule; precision equal): "
        f"{ratio(after, fp32)}",
        f"- before fp32 / before (precision alone, old trial structure): {ratio(fp32, before)}",
        f"- the old default (`--num-samples {setup['old_default_samples']}`) would stop at "
        f"{setup['old_default_samples']}: its count within T would be "
        f"{min(before['evaluated'], setup['old_default_samples'])}, so the ratio above is "
        "conservative",
        "",
        schedules_reason(b, ok),
        "",
    ]
    return lines


def tok_s(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:,.0f}"


def ratio(a: dict[str, Any], b: dict[str, Any]) -> str:
    if b["evaluated"] == 0:
        return f"{a['evaluated']} / 0 (none within T)"
    return f"{a['evaluated']} / {b['evaluated']} = {a['evaluated'] / b['evaluated']:.1f}x"


def schedules_reason(b: dict[str, Any], ok: bool) -> str:
    counts, n = b["counts"], b["setup"]["samples"]
    after, before = counts["after"], counts["before"]
    speed = after["tokens_per_s"] / before["tokens_per_s"]
    text = (
        f"{'Met' if ok else 'Missed'}: the after search evaluates {after['evaluated']} of "
        f"its {n} sampled schedules in T; in the same time the before default finished "
        f"{before['baselines_done']} of {before['baselines']} baselines and "
        f"{before['evaluated']} sampled schedules"
        + (
            "."
            if math.isnan(speed)
            else f", its trials training {speed:.1f}x slower (median reported tokens/s)."
        )
    )
    if after["evaluated"] < n:
        text += f" {n - after['evaluated']} of the after arm's samples errored or did not finish."
    if not ok and after["evaluated"] >= n:
        text += (
            f" The after count is capped by `--num-samples {n}`: raising the default lets the "
            "search spend its time on more schedules."
        )
    return text
