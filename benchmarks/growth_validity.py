"""Benchmark 1 — a *valid* tiny growth benchmark: tune the peak LR, then check that the target
model beats the small model at equal steps by more than twice the larger arm's seed noise
(the results core's validity rule).

    python benchmarks/growth_validity.py --quick   # ~1 min: tiny protocol, 2 seeds
    python benchmarks/growth_validity.py           # the committed protocol, 4 seeds

Without this check a growth "win" means nothing: if the small model is as good as the target
at the budget, any schedule that spends steps in the small model looks like a speedup.
Writes growth_validity.md + PNG.
"""

from __future__ import annotations

from harness import growth as g
from harness import growth_report as gr
from harness.common import fmt_ms, header, mean_std, pyplot, save_figure, write_report


def main() -> None:
    p, out, started = g.cli(__doc__ or "")
    v = g.validity(p)
    sweep_runs = v["sweep"]["runs"]
    lines = gr.validity_lines(v, p)
    lines += [
        "## Peak-LR sweep (from scratch, full budget, cosine to 10 %)",
        "",
        f"Seeds per point: {list(p.lr_seeds)}. The best LR of each model is used for every later "
        "arm (grown arms use the target's LR: they end as the target on the same schedule).",
        "",
        "| model | " + " | ".join(f"lr {lr:g}" for lr in p.lrs) + " |",
        "|---|" + "---|" * len(p.lrs),
    ]
    for model in (p.target, p.small):
        cells = []
        for lr in p.lrs:
            m, _ = mean_std(
                [r["loss"] for r in sweep_runs if r["model"] == model and r["lr"] == lr]
            )
            best = lr == v["sweep"]["best"][model]
            cells.append(f"**{m:.4f}**" if best else f"{m:.4f}")
        lines.append(f"| {model} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "## Target vs small model at the tuned LRs",
        "",
        "| arm | LR | TFLOP | val loss (mean ± std) | per seed |",
        "|---|---|---|---|---|",
    ]
    for label, runs, lr in (
        (f"{p.target} from scratch", v["target"], v["lr_target"]),
        (f"{p.small} only", v["small"], v["lr_small"]),
    ):
        runs = sorted(runs, key=lambda r: r["seed"])
        lines.append(
            f"| {label} | {lr:g} | {runs[0]['flops'] / 1e12:.2f} | "
            f"{fmt_ms([r['loss'] for r in runs])} | "
            + ", ".join(f"s{r['seed']}: {r['loss']:.4f}" for r in runs)
            + " |"
        )
    png = out / "growth_validity.png"
    _plot(v, p, png)
    lines += ["", f"![LR sweep and curves]({png.name})", ""]
    head = header(
        "Benchmark 1: a valid tiny growth benchmark (target vs small, LR tuned)",
        started=started,
        quick=p.target != g.Protocol.full().target,
        config_lines=p.describe(),
    )
    write_report(out, "growth_validity", head + lines)


def _plot(v: dict, p: g.Protocol, path) -> None:  # noqa: ANN001 - Path
    plt = pyplot()

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4.2))
    for model in (p.target, p.small):
        runs = [r for r in v["sweep"]["runs"] if r["model"] == model]
        lrs = sorted({r["lr"] for r in runs})
        means = [mean_std([r["loss"] for r in runs if r["lr"] == lr])[0] for lr in lrs]
        a1.plot(lrs, means, "o-", label=model)
    a1.set_xscale("log")
    a1.set_xlabel("peak LR")
    a1.set_ylabel("final val loss (nats/byte)")
    a1.set_title("LR sweep (from scratch, full budget)")
    a1.legend()
    a1.grid(alpha=0.3)
    for label, runs in ((f"{p.target} scratch", v["target"]), (f"{p.small} only", v["small"])):
        for r in runs:
            f, loss = zip(*r["curve"][1:], strict=True)
            a2.plot(f, loss, "-", alpha=0.6, label=f"{label} s{r['seed']}")
    a2.set_xscale("log")
    a2.set_xlabel("training FLOPs")
    a2.set_title(f"validity: margin {v['margin']:+.4f} (all seeds)")
    a2.legend(fontsize=7)
    a2.grid(alpha=0.3)
    finals = [r["loss"] for r in v["target"] + v["small"]]
    a2.set_ylim(min(finals) - 0.05, min(finals) + 0.5)
    save_figure(fig, path)


if __name__ == "__main__":
    main()
