"""Benchmark 6 — the guideline study: when to grow, by what factor, with which operator, across
target sizes and budgets, with 95% intervals, and a held-out prediction.

    python benchmarks/guideline_study.py --list          # the parts, their searches and state
    python benchmarks/guideline_study.py --part 1        # run one part (each <= 60 min)
    python benchmarks/guideline_study.py --predict       # before the held-out part: write the
                                                         # prediction from the fit groups only
    python benchmarks/guideline_study.py --analyse       # runs.parquet -> guidelines + report
    python benchmarks/guideline_study.py --quick --part 1  # tiny version of the pipeline (tests)

Everything runs through raygrow's own commands: every search is `python -m raygrow.search`
(grid sampler, FIFO: every cell to the end), the analysis is `python -m raygrow.guidelines
--runs-table runs.parquet`. All searches log to one MLflow store (raygrow_runs/guideline_study/
mlflow.db, not committed); each finished search's trials are collected into
benchmarks/results/guideline_study/parts/<search>.parquet (committed), so the study can stop
after any part and continue in a later session. A part skips searches whose table exists and
continues (`python -m raygrow.search --resume`) one that was interrupted mid-search.

The design, fixed here before any run (see GROUPS, SEARCHES, PARTS):
- Targets 4x32, 8x32, 8x48 (non-embedding N = 66k, 132k, 296k: a 4.5x span) at about 5 and 20
  tokens per non-embedding parameter: 4x32@5, 4x32@20, 8x32@5, 8x48@5 are the fit groups;
  8x32@20 is the held-out group (a larger budget than any fitted 8-layer group); 8x48@20 does
  not fit the 4-hour envelope (about 2.5 h alone) and is skipped.
- LR schedule WSD (decay over the last 20 %), growth in the stable phase; the scratch frontier
  is the full-budget run plus cooldown branches at 25/50/75 % and longer runs at 150/200 % that
  continue its stable phase (prefix store).
- Axes: g in {2, 4} (4-layer targets) or {2, 4, 8} (8-layer; g = 8 = 1 layer -> 8) x growth
  time in {0.1, 0.2, 0.4, 0.6} of the budget, stacking (`search_spaces.guideline`), seeds 0, 1.
  Growth time 0.7 (`late` searches) was ADDED AFTER SEEING RESULTS: both 4x32 grids had their
  best time at 0.6, the last one searched.
  In 8x32@5 also zero init (no function preservation), G_stack as Du et al. ran it, Staged
  Training's recipe and the incremental negative control (g in {2, 4} x time in {0.2, 0.4}).
- The held-out prediction uses only groups the validity rule passes: ADDED AFTER SEEING part 4
  (8x48@5 not valid with 2 seeds) and before the held-out group ran; parts 1-5 are unchanged.
- Seeds: 2 per grid cell; a confirmation search adds seed 2 to each fit group's scratch
  frontier, small-only arm and best cell (3 seeds); the held-out group runs the predicted best
  and 2 alternatives (`--warm-start`) and its frontier at seeds 0, 1, 2.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.common import ROOT, git_commit, header, write_report

STUDY = "guideline_study"
HOME = Path(os.environ.get("RAYGROW_STUDY_HOME", ROOT)).resolve()
"""Where results and runs go. Run the study from a frozen checkout (a git worktree at one
commit) with RAYGROW_STUDY_HOME pointing at the working checkout, so edits made meanwhile never
reach a running part: every search runs the frozen checkout's code (PYTHONPATH)."""
TIMEOUT_NOTE = "each part is sized to finish in <= 60 min on an idle 2-core machine"


@dataclass(frozen=True)
class Group:
    name: str
    target: str
    small: str
    tokens_per_param: int
    space: str
    role: str  # fit | heldout

    def n_params(self) -> int:
        from raygrow.config import ModelConfig

        return ModelConfig.from_shape(self.target).n_params(non_embedding=True)

    def tokens(self, step: int) -> int:
        """The budget: tokens_per_param x N, rounded to whole optimizer steps."""
        return max(16, round(self.tokens_per_param * self.n_params() / step)) * step


@dataclass(frozen=True)
class Search:
    name: str
    group: str
    kind: str  # grid | late | operators | confirm | heldout
    args: tuple[str, ...] = ()


GROUPS = {
    g.name: g
    for g in (
        Group("4x32@5", "4x32", "2x32", 5, "study_g24", "fit"),
        Group("4x32@20", "4x32", "2x32", 20, "study_g24", "fit"),
        Group("8x32@5", "8x32", "4x32", 5, "study_g248", "fit"),
        Group("8x48@5", "8x48", "4x48", 5, "study_g248", "fit"),
        Group("8x32@20", "8x32", "4x32", 20, "study_g248", "heldout"),
    )
}
QUICK_GROUPS = {
    g.name: g
    for g in (
        Group("4x16@5", "4x16", "2x16", 5, "study_g24", "fit"),
        Group("4x24@10", "4x24", "2x24", 10, "study_g24", "fit"),
        Group("4x16@10", "4x16", "2x16", 10, "study_g24", "heldout"),
    )
}
GRID_SEEDS = "0,1"
CONFIRM_SEED = "2"
HELDOUT_SEEDS = "0,1,2"
BASELINE_FRACS = "0.25,0.5,0.75,1.5,2"
"""Scratch past the budget (1.5x, 2x): a pilot of 4x32@5 without them (run before any result
was kept, then discarded) had nearly every grown cell beat the full-budget scratch run, i.e. a
lower bound only; the longer budgets measure those speedups."""
SEQ_LEN, BATCH = 128, 8
EVALS_PER_RUN = 16


def searches(quick: bool) -> dict[str, Search]:
    groups = QUICK_GROUPS if quick else GROUPS
    out: list[Search] = []
    for g in groups.values():
        slug = g.name.replace("@", "_")
        if g.role == "fit":
            out.append(Search(f"{slug}-grid", g.name, "grid"))
            out.append(Search(f"{slug}-late", g.name, "late"))  # added after seeing results
            if g.name in ("8x32@5", "4x16@5"):
                out.append(Search(f"{slug}-operators", g.name, "operators"))
            out.append(Search(f"{slug}-confirm", g.name, "confirm"))
        else:
            out.append(Search(f"{slug}-heldout", g.name, "heldout"))
    return {s.name: s for s in out}


PARTS = {
    "1": ["4x32_5-grid", "4x32_20-grid", "8x32_5-grid"],
    # parts 2-5 regrouped after part 1 (not yet run then); the `late` searches were ADDED AFTER
    # SEEING RESULTS: the 4x32 grids had their best growth time at the last one searched (0.6)
    "2": ["4x32_5-late", "4x32_20-late", "8x32_5-late", "4x32_5-confirm", "4x32_20-confirm"],
    "3": ["8x32_5-confirm", "8x32_5-operators"],
    "4": ["8x48_5-grid"],
    "5": ["8x48_5-late", "8x48_5-confirm"],
    "6": ["8x32_20-heldout"],  # after --predict (its prediction committed first)
}
QUICK_PARTS = {
    "1": ["4x16_5-grid", "4x24_10-grid", "4x16_5-operators"],
    "2": ["4x16_5-late", "4x24_10-late", "4x16_5-confirm", "4x24_10-confirm"],
    "3": ["4x16_10-heldout"],
}


# ----------------------------------------------------------------------------- paths
def results_dir(quick: bool) -> Path:
    return HOME / "benchmarks" / "results" / ("quick" if quick else "") / STUDY


def runs_dir(quick: bool) -> Path:
    return HOME / "raygrow_runs" / (STUDY + ("_quick" if quick else ""))


def code_env() -> dict[str, str]:
    """The environment of every search and analysis: this checkout's code first."""
    return {**os.environ, "PYTHONPATH": str(ROOT)}


def tracking_uri(quick: bool) -> str:
    return f"sqlite:///{runs_dir(quick) / 'mlflow.db'}"


# ----------------------------------------------------------------------------- one search
def group_file(g: Group, quick: bool) -> Path:
    """The target file: the model plus the group's training settings (committed)."""
    step = SEQ_LEN * BATCH
    tokens = g.tokens(step)
    steps = tokens // step
    settings = {
        "model": g.target,
        "seq_len": SEQ_LEN,
        "batch_size": BATCH,
        "lr_schedule": "wsd",
        # pinned since part 3: `auto` measures bf16 on each machine (parts 1-2 ran `auto`, which
        # resolved to fp32 on their AVX2 CPU); one precision across the whole study
        "precision": "fp32",
        "warmup_steps": max(5, steps // 20),
        "eval_every_tokens": max(1, steps // EVALS_PER_RUN) * step,
    }
    path = results_dir(quick) / "groups" / f"{g.name.replace('@', '_')}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(settings, indent=1) + "\n")
    return path


def command(s: Search, quick: bool) -> list[str]:
    g = (QUICK_GROUPS if quick else GROUPS)[s.group]
    step = SEQ_LEN * BATCH
    exp = runs_dir(quick) / s.name
    cmd = [sys.executable, "-m", "raygrow.search", "--target", str(group_file(g, quick))]
    cmd += ["--small", g.small, "--tokens", str(g.tokens(step)), "--lr-schedule", "wsd"]
    cmd += ["--baseline-fracs", BASELINE_FRACS, "--scheduler", "fifo"]
    cmd += ["--experiment", f"{STUDY}-{s.name}", "--out", str(exp)]
    cmd += ["--tracking-uri", tracking_uri(quick), "--max-concurrent", "1"]
    slug = g.name.replace("@", "_")
    if s.kind == "grid":
        cmd += ["--space", g.space, "--sampler", "grid", "--seeds", GRID_SEEDS]
    elif s.kind in ("operators", "late"):  # the grid's baselines and prefixes, reused
        space = "study_operators" if s.kind == "operators" else f"{g.space}_late"
        cmd += ["--space", space, "--sampler", "grid", "--seeds", GRID_SEEDS]
        grid = runs_dir(quick) / f"{slug}-grid"
        if (grid / "search.json").exists():
            cmd += ["--baselines-from", str(grid)]
        else:  # its folder is gone (a later session): the same baseline seeds are trained again
            print(f"{s.name}: {grid} is gone; its baselines are trained again", flush=True)
    elif s.kind == "confirm":  # seed 2: baselines + the group's best cell (its guideline row)
        best = best_cell_csv(g, quick)
        cmd += ["--space", f"{g.space}_any", "--seeds", CONFIRM_SEED, "--num-samples", "1"]
        cmd += ["--warm-start", str(best)]
    else:  # heldout: the prediction written by --predict, before this search ran
        pred = results_dir(quick) / "prediction" / "guidelines.csv"
        if not pred.exists():
            raise SystemExit(f"{pred} missing: run --predict (and commit it) before the held-out")
        cmd += ["--space", f"{g.space}_any", "--seeds", HELDOUT_SEEDS, "--num-samples", "3"]
        cmd += ["--warm-start", str(pred)]
    return cmd


def best_cell_csv(g: Group, quick: bool) -> Path:
    """The group's rank-1 guideline row (from its grid alone), as a one-row guideline CSV."""
    from raygrow.analysis.cells import guideline_table, timing_cells
    from raygrow.analysis.speedups import add_speedups

    runs = load_parts(quick)
    stack = runs["study_search"].str.endswith("-grid") | runs["study_search"].str.endswith("-late")
    mine = runs[(runs["group"] == g.name) & stack]
    if mine.empty:
        raise SystemExit(f"no grid results for {g.name}: run its grid part first")
    table = guideline_table(timing_cells(add_speedups(mine)))
    best = table.sort_values(["rank_in_group", "factor"]).head(1)
    path = results_dir(quick) / "confirm" / f"{g.name.replace('@', '_')}.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    best.to_csv(path, index=False)
    return path


def run_search(s: Search, quick: bool) -> None:
    parts = results_dir(quick) / "parts"
    table = parts / f"{s.name}.parquet"
    if table.exists():
        print(f"{s.name}: done already ({table.relative_to(ROOT)})")
        return
    cmd = command(s, quick)
    exp = runs_dir(quick) / s.name
    if (exp / "search.json").exists():  # a part stopped mid-search: continue it, not anew
        cmd = [sys.executable, "-m", "raygrow.search", "--resume", str(exp)]
    log = runs_dir(quick) / f"{s.name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    print(f"{s.name}: {'resuming' if '--resume' in cmd else 'running'} ({log})", flush=True)
    t0 = time.time()
    with log.open("a") as fh:
        fh.write(" ".join(cmd) + "\n")
        fh.flush()
        proc = subprocess.run(cmd, cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT, env=code_env())
    wall = time.time() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{s.name}: search failed (exit {proc.returncode}); see {log}")
    collect(s, quick, wall, cmd)


def collect(s: Search, quick: bool, wall: float, cmd: list[str]) -> None:
    """The finished search's trials (from MLflow) -> parts/<search>.parquet + .json."""
    from raygrow.analysis.collect import collect_runs
    from raygrow.train.precision import node_key

    groups = QUICK_GROUPS if quick else GROUPS
    g = groups[s.group]
    trials, _ = collect_runs(tracking_uri(quick), [f"{STUDY}-{s.name}"])
    df = trials.to_pandas()
    df = df.drop(columns=[c for c in df.columns if c.startswith("params.")])
    df.insert(0, "group", g.name)
    df.insert(1, "study_search", s.name)
    df.insert(2, "role", g.role)
    df.insert(3, "target", g.target)
    df.insert(4, "n_params_nonemb", float(g.n_params()))
    parts = results_dir(quick) / "parts"
    parts.mkdir(parents=True, exist_ok=True)
    df.to_parquet(parts / f"{s.name}.parquet", index=False)
    summary = exp_summary(runs_dir(quick) / s.name)
    meta = {"search": s.name, "group": g.name, "kind": s.kind, "wall_s": round(wall, 1)}
    meta |= {"commit": git_commit(), "load_avg_end": [round(x, 2) for x in os.getloadavg()]}
    meta |= {"cpu": node_key()}  # parts run in different sessions, on different CPUs
    meta |= {"trials": len(df), "command": " ".join(cmd[1:]), **summary}
    (parts / f"{s.name}.json").write_text(json.dumps(meta, indent=1) + "\n")
    print(
        f"{s.name}: {len(df)} trials in {wall / 60:.1f} min -> {parts / s.name}.parquet", flush=True
    )


def exp_summary(exp: Path) -> dict[str, Any]:
    """The search's own ledger (computed vs naive FLOPs) from its summary file, if written."""
    for name in ("summary.json", "search_summary.json"):
        path = exp / name
        if path.exists():
            data = json.loads(path.read_text())
            keys = ("search_flops", "search_flops_naive", "sharing_ratio", "n_failed")
            return {k: data[k] for k in keys if k in data}
    return {}


# ----------------------------------------------------------------------------- tables
def load_parts(quick: bool) -> Any:
    import pandas as pd

    files = sorted((results_dir(quick) / "parts").glob("*.parquet"))
    if not files:
        raise SystemExit("no finished searches yet: run --part 1")
    return pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)


def write_runs_table(quick: bool, roles: tuple[str, ...] = ("fit", "heldout")) -> Path:
    """runs.parquet: one row per trial with its group, schedule, seed, losses, FLOPs, speedup."""
    from raygrow.analysis.speedups import add_speedups

    runs = load_parts(quick)
    params = [json.loads(text) for text in runs["params_json"]]
    runs["schedule"] = [p.get("schedule", p.get("arm", "")) for p in params]
    runs["grow_at"] = [float(p["grow_at"]) if "grow_at" in p else float("nan") for p in params]
    runs = add_speedups(runs[runs["role"].isin(roles)])
    path = results_dir(quick) / ("runs.parquet" if len(roles) == 2 else "runs_fit.parquet")
    runs.to_parquet(path, index=False)
    return path


def guidelines_cli(table: Path, out: Path) -> None:
    cmd = [sys.executable, "-m", "raygrow.guidelines", "--runs-table", str(table)]
    cmd += ["--out", str(out), "--bootstrap", "1000"]
    subprocess.run(cmd, cwd=ROOT, check=True, env=code_env())


def predict(quick: bool) -> None:
    """Fit on the fit groups only; write the held-out group's predicted schedules."""
    table = write_runs_table(quick, roles=("fit",))
    out = results_dir(quick) / "prediction"
    guidelines_cli(table, out)
    held = [g for g in (QUICK_GROUPS if quick else GROUPS).values() if g.role == "heldout"]
    lines = ["# Held-out prediction (written before the held-out group ran)", ""]
    from raygrow.search.warm_start import read_guidelines

    left_out = read_guidelines(out / "guidelines.csv").attrs["invalid_groups"]
    lines += [f"- fitted on: {', '.join(sorted(set(load_parts(quick)['group'])))}"]
    lines += [f"- left out of the prediction, not valid: {', '.join(left_out) or 'none'}", ""]
    for g in held:
        lines += [f"## {g.name} (target {g.target}, {g.tokens(SEQ_LEN * BATCH):,} tokens)", ""]
        lines += ["Predicted schedules (`python -m raygrow.search --warm-start` ranks them):", ""]
        lines += ["```", preview_warm_start(g, out / "guidelines.csv", quick), "```", ""]
        lines += timing_law_prediction(g, table)
    write_report(out, "prediction", lines)


def timing_law_prediction(g: Group, table: Path) -> list[str]:
    """The fitted timing law's d* at the held-out group, per family that could be fitted."""
    import pandas as pd

    from raygrow.analysis.report import analyse

    res = analyse(pd.read_parquet(table), n_boot=1000)
    n, d = float(g.n_params()), float(g.tokens(SEQ_LEN * BATCH))
    lines = ["Timing law (per (g, operator) family, fitted on the fit groups):", ""]
    for (factor, op), fit in res["fits"].items():
        if not fit.ok:
            lines.append(f"- g={factor:g} {op}: no fit ({fit.note.split(';')[0]})")
            continue
        x = 10 ** float(fit.predict(n, 6 * n * d)[0])
        lo, hi = (10 ** float(v[0]) for v in fit.band(n, 6 * n * d))
        lines.append(
            f"- g={factor:g} {op}: d* = {x:,.0f} tokens = {x / d:.2f} of the budget "
            f"(95% band {lo / d:.2f}-{hi / d:.2f})"
        )
    return [*lines, ""]


def preview_warm_start(g: Group, csv: Path, quick: bool) -> str:
    """What the warm start will enqueue for the held-out group: its top 3, in its own words."""
    from raygrow.config import ModelConfig
    from raygrow.search import warm_start as ws

    n, tpp = ws.query_point(ModelConfig.from_shape(g.target), g.tokens(SEQ_LEN * BATCH))
    preds = ws.predict(ws.read_guidelines(csv), n, tpp)[:3]
    return "\n".join(
        f"g={p.factor} {p.operator} at {p.growth_frac:.2f} of the budget: {p.describe()}"
        for p in preds
    )


def predictions(quick: bool) -> Any:
    """The held-out prediction (what --predict wrote), as rows: factor, operator, time, text."""
    import pandas as pd

    from raygrow.config import ModelConfig
    from raygrow.search import warm_start as ws

    csv = results_dir(quick) / "prediction" / "guidelines.csv"
    rows = []
    held = [g for g in (QUICK_GROUPS if quick else GROUPS).values() if g.role == "heldout"]
    for g in held if csv.exists() else ():
        n, tpp = ws.query_point(ModelConfig.from_shape(g.target), g.tokens(SEQ_LEN * BATCH))
        for p in ws.predict(ws.read_guidelines(csv), n, tpp)[:3]:
            rows.append(
                {"group": g.name, "factor": float(p.factor), "operator": p.operator,
                 "growth_frac": p.growth_frac, "speedup_mean": p.speedup_mean,
                 "text": p.describe()}
            )  # fmt: skip
    return pd.DataFrame(rows)


def analyse(quick: bool, started: float) -> None:
    import pandas as pd
    from harness import guideline_report as gr

    from raygrow.analysis.tables import to_markdown

    table_path = write_runs_table(quick)
    out = results_dir(quick)
    guidelines_cli(table_path, out)
    runs = pd.read_parquet(table_path)
    table = pd.read_csv(out / "guidelines.csv")
    metas = [json.loads(p.read_text()) for p in sorted((out / "parts").glob("*.json"))]
    lines = header(
        "Guideline study (benchmark 6)",
        started=started,
        quick=quick,
        config_lines=[
            f"groups: {', '.join(QUICK_GROUPS if quick else GROUPS)}; {TIMEOUT_NOTE}",
            f"seq_len {SEQ_LEN}, batch {BATCH}, WSD, baseline fractions {BASELINE_FRACS}; "
            "groups' training settings in groups/*.json",
            "selection on the validation split; final numbers also on the held-out test split",
        ],
    )
    done = {p.stem for p in (out / "parts").glob("*.parquet")}
    plan = QUICK_PARTS if quick else PARTS
    todo = [f"part {k}" for k, names in plan.items() if not set(names) <= done]
    status = "complete" if not todo else f"IN PROGRESS: {', '.join(todo)} not yet run"
    lines += [f"**Study status: {status}.** Numbers below cover the finished searches only.", ""]
    lines += ["## Searches run (each `python -m raygrow.search`, commands in parts/*.json)", ""]
    view = pd.DataFrame(metas)
    if not view.empty:
        view["wall_min"] = (view["wall_s"] / 60).round(1)
        cols = ["search", "group", "kind", "trials", "wall_min", "commit"]
        lines += [to_markdown(view[[c for c in cols if c in view]]), ""]
        lines += [f"Total wall clock: {view['wall_s'].sum() / 3600:.2f} h.", ""]
    failed = runs[runs["status_kind"].isin(["failed", "errored"])]
    lines += [f"Trials: {len(runs)}; failed: {len(failed)} (counted, not dropped).", ""]
    lines += gr.findings(runs, table)
    pred = predictions(quick)
    if len(pred):
        lines += ["## Held-out group: predicted (before it ran) vs measured", ""]
        lines += ["The prediction was committed in prediction/prediction.md before the run.", ""]
        lines += [to_markdown(gr.heldout_comparison(runs, pred)), ""]
    lines += ["Full guideline tables, timing law and plots: [guidelines.md](guidelines.md).", ""]
    write_report(out, "report", lines)


def list_parts(quick: bool) -> None:
    parts = results_dir(quick) / "parts"
    for part, names in (QUICK_PARTS if quick else PARTS).items():
        state = ["done" if (parts / f"{n}.parquet").exists() else "todo" for n in names]
        print(f"part {part}: " + ", ".join(f"{n} ({s})" for n, s in zip(names, state, strict=True)))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    act = p.add_mutually_exclusive_group(required=True)
    act.add_argument("--list", action="store_true")
    act.add_argument("--part")
    act.add_argument("--predict", action="store_true")
    act.add_argument("--analyse", action="store_true")
    p.add_argument("--quick", action="store_true", help="tiny groups, smoke settings")
    args = p.parse_args()
    started = time.time()
    if args.list:
        list_parts(args.quick)
    elif args.part:
        plan, table = (QUICK_PARTS if args.quick else PARTS), searches(args.quick)
        if args.part not in plan:
            raise SystemExit(f"--part {args.part} unknown; use one of {', '.join(plan)}")
        for name in plan[args.part]:
            run_search(table[name], args.quick)
    elif args.predict:
        predict(args.quick)
    else:
        analyse(args.quick, started)


if __name__ == "__main__":
    main()
