"""Benchmark 3 — the negative result: incremental layer-wise training (Li et al. 2024).

    python benchmarks/incremental.py --quick   # ~1 min
    python benchmarks/incremental.py           # the committed protocol, 4 seeds

Same harness and seeds as growth_vs_scratch.py: start from the small model and add layers on
top in several stages (2 -> 4 -> 6 -> 8 layers at the full protocol), each new group randomly
initialised while the trained layers are frozen for a short phase (raygrow's `incremental`
operator). Li et al. found this loses to training from scratch; we report whatever is
measured, next to G_stack on the same seeds. Writes incremental.md + PNG.
"""

from __future__ import annotations

from harness import growth as g
from harness import growth_report as gr
from harness.common import header, mean_std, write_report

from raygrow.results import interpolate_curve


def main() -> None:
    p, out, started = g.cli(__doc__ or "")
    v = g.validity(p)
    lr = v["lr_target"]
    arms = [g.scratch(p, f, lr, s) for f in p.scratch_fracs for s in p.seeds]
    arms += [g.incremental_arm(p, lr, s) for s in p.seeds]
    arms += [g.growth_arms(p, lr, s)[0] for s in p.seeds]  # G_stack, for reference
    runs = g.run_arms(p, arms)
    groups = gr.by_arm(runs)
    inc_name = g.incremental_arm(p, lr, 0).name
    order = [f"scratch@{f:g}" for f in p.scratch_fracs] + [inc_name, "G_stack"]
    inc = sorted(groups[inc_name], key=lambda r: r["seed"])
    # scratch (full budget, same seed) read along its own curve at the incremental run's FLOPs
    full = {r["seed"]: r for r in groups["scratch@1"]}
    at_equal = [interpolate_curve(full[r["seed"]]["curve"], r["flops"]) - r["loss"] for r in inc]
    sp = gr.speedups(inc, runs)
    stages = ", ".join(f"{t:.0%}" for t in p.incremental_at)
    m_inc = mean_std([r["loss"] for r in inc])[0]
    m_full = mean_std([r["loss"] for r in groups["scratch@1"]])[0]
    m_sp, s_sp = mean_std([s.value for s in sp])
    se = s_sp / len(sp) ** 0.5
    if m_sp + 2 * se < 1:
        verdict = "loses to"
    elif m_sp - 2 * se > 1:
        verdict = "beats"
    else:
        verdict = "is not distinguishable (mean ± 2 s.e. includes 1.0) from"
    stack = {r["seed"]: r["loss"] for r in groups["G_stack"]}
    vs_stack = [r["loss"] - stack[r["seed"]] for r in inc]
    lines = gr.validity_lines(v, p)
    lines += [
        f"**Finding: incremental layer-wise training {verdict} training from scratch** "
        f"(speedup at matched loss {gr.speedup_text(sp)}; < 1 means scratch needs less compute).",
        "",
        f"Incremental schedule: start {p.small}, new layers on top at {stages} of the budget "
        f"(ending at {p.target}); trained layers frozen for {p.incremental_freeze_steps} steps "
        "after each stage.",
        "",
        *gr.arm_table(runs, runs, order),
        "",
        f"- Final loss: incremental {m_inc:.4f} vs full-budget scratch {m_full:.4f} "
        f"({m_inc - m_full:+.4f}).",
        "- Incremental minus G_stack final loss, same seed and FLOPs (positive = incremental "
        "worse): "
        + ", ".join(f"{d:+.4f}" for d in vs_stack)
        + f" (worse in {sum(d > 0 for d in vs_stack)} of {len(vs_stack)} seeds).",
        "- Scratch (full budget, same seed) at the incremental run's FLOPs minus the incremental "
        "run's final loss (positive = incremental better at equal compute, but note scratch's "
        "point is mid-cosine, not annealed): " + ", ".join(f"{d:+.4f}" for d in at_equal),
    ]
    png = out / "incremental.png"
    gr.plot_curves({k: groups[k] for k in order}, png, "incremental layer-wise vs scratch")
    lines += ["", f"![curves]({png.name})", ""]
    head = header(
        "Benchmark 3: the negative result — incremental layer-wise training",
        started=started,
        quick=p.target != g.Protocol.full().target,
        config_lines=p.describe(),
    )
    write_report(out, "incremental", head + lines)


if __name__ == "__main__":
    main()
