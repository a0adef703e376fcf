"""Benchmark 2 — growth vs training from scratch, the papers' comparison at CPU scale.

    python benchmarks/growth_vs_scratch.py --quick   # ~2 min: tiny protocol, 2 seeds
    python benchmarks/growth_vs_scratch.py           # the committed protocol, 4 seeds

Arms (all seeds): the target from scratch at several budgets, each fully annealed (its own
cosine), the small model alone, and the papers' growth operators reaching the target: G_stack
(Du et al. 2024, depth stacking), G_zero (identity-initialised new blocks), Staged Training's
depth operator (Shen et al. 2022) and HyperCloning (width, function-preserving). HyperCloning
keeps head_dim (RoPE) and multiplies the heads, so from 8x32 (one 32-dim head) it ends in 8x64
with 2 heads × 32, not the target's one 64-dim head: that arm is compared with its own model
from scratch at the same budgets (`scratch 8x64 (2 heads × 32)@f`); the harness refuses any
grown arm whose final config differs from its target's in any field. Speedup at
matched loss = FLOPs annealed scratch (same seed) needs to reach the grown run's final loss ÷ the
grown run's FLOPs; a lower bound (">") where no scratch budget gets there (never extrapolated).
The validity margin (benchmark 1) is reported first. Writes growth_vs_scratch.md + PNGs.
"""

from __future__ import annotations

from harness import growth as g
from harness import growth_report as gr
from harness.common import header, mean_std, pyplot, save_figure, write_report


def main() -> None:
    p, out, started = g.cli(__doc__ or "")
    v = g.validity(p)
    lr = v["lr_target"]
    arms = [g.scratch(p, f, lr, s) for f in p.scratch_fracs for s in p.seeds]
    arms += [g.scratch(p, 1.0, v["lr_small"], s, model=p.small) for s in p.seeds]
    arms += [g.scratch(p, 1.0, lr, s, model=p.narrow) for s in p.seeds]
    width_scratch = [a for s in p.seeds for a in g.width_scratch(p, lr, s)]
    arms += width_scratch
    arms += [a for s in p.seeds for a in g.growth_arms(p, lr, s) + g.late_arms(p, lr, s)]
    runs = g.run_arms(p, arms)  # raises if a grown arm does not end in its target's config
    order = [f"scratch@{f:g}" for f in p.scratch_fracs]
    order += list(dict.fromkeys(a.name for a in width_scratch))
    order += [f"{p.small} only", f"{p.narrow} only"]
    grown = [a.name for a in g.growth_arms(p, lr, 0) + g.late_arms(p, lr, 0)]
    order += grown

    factor = g._layers(p.target) // g._layers(p.small)
    lines = gr.validity_lines(v, p)
    lines += [
        "## Results",
        "",
        f"Growth arms start at {p.small} (depth, factor {factor})"
        f" or {p.narrow} (width x2; HyperCloning keeps head_dim, so it grows into "
        f"{g.shape_label(g.width_target(p))} and is compared with that model from scratch, "
        f"same LR) and grow at {p.grow_at:.0%} of the token budget (the "
        f"`@{p.late_at:.0%}` arms later); optimizer "
        "state carried through each operator's transform, the global LR schedule continues. "
        "Speedups per seed against the annealed scratch runs of the same seed "
        f"(budgets {', '.join(f'{f:g}' for f in p.scratch_fracs)} × the target's budget).",
        "",
        *gr.arm_table(runs, runs, order),
        "",
    ]
    groups = gr.by_arm(runs)
    best_name, best_sp = None, None
    for name in grown:
        sp = gr.speedups(groups[name], runs)
        m = mean_std([s.value for s in sp])[0]
        if best_sp is None or m > best_sp:
            best_name, best_sp = name, m
    full_by_target = {
        r["target"]: mean_std([x["loss"] for x in groups[r["arm"]]])[0]
        for r in runs
        if r["kind"] == "scratch" and r["frac"] == 1.0
    }
    best_text = gr.speedup_text(gr.speedups(groups[str(best_name)], runs))
    lines += [
        "## Summary",
        "",
        f"- Best arm: **{best_name}**, speedup {best_text} at matched loss (target ≥ 1.3x: "
        f"{'reached' if (best_sp or 0) >= 1.3 else 'NOT reached'}).",
    ]
    for name in grown:
        gl = [r["loss"] for r in groups[name]]
        target = groups[name][0]["target"]
        full = full_by_target[target]
        lines.append(
            f"- {name}: final loss {mean_std(gl)[0]:.4f} vs full-budget scratch "
            f"{g.shape_label(target)} {full:.4f} ({mean_std(gl)[0] - full:+.4f}); growth jump "
            + ", ".join(
                f"{e['loss_before']:.3f}→{e['loss_after']:.3f}"
                for r in sorted(groups[name], key=lambda r: r["seed"])
                for e in r["growth"][:1]
            )
        )
    png = out / "growth_vs_scratch.png"
    gr.plot_curves(
        {k: groups[k] for k in order if k in groups}, png, "growth vs scratch (mean ± std)"
    )
    bars = out / "growth_vs_scratch_speedup.png"
    _speedup_plot({k: gr.speedups(groups[k], runs) for k in grown}, bars)
    lines += ["", f"![curves]({png.name})", "", f"![speedups]({bars.name})", ""]
    head = header(
        "Benchmark 2: growth vs scratch (G_stack, G_zero, staged, HyperCloning)",
        started=started,
        quick=p.target != g.Protocol.full().target,
        config_lines=p.describe(),
    )
    write_report(out, "growth_vs_scratch", head + lines)


def _speedup_plot(speedups: dict, path) -> None:  # noqa: ANN001
    plt = pyplot()

    fig, ax = plt.subplots(figsize=(7, 4))
    names = list(speedups)
    for i, name in enumerate(names):
        vals = speedups[name]
        m, s = mean_std([v.value for v in vals])
        ax.bar(i, m, yerr=s, capsize=4, alpha=0.6)
        for v in vals:
            ax.plot(i, v.value, "^" if v.bound == "lower" else "o", color="k", ms=5)
    ax.axhline(1.0, color="gray", lw=1)
    ax.axhline(1.3, color="red", lw=1, ls="--", label="target 1.3x")
    ax.set_xticks(range(len(names)), names, rotation=15, fontsize=8)
    ax.set_ylabel("speedup at matched loss (▲ = lower bound)")
    ax.legend()
    save_figure(fig, path)


if __name__ == "__main__":
    main()
