"""Part b of speed.py: the default search, before (commit `BEFORE_COMMIT`) vs after (this tree);
its report lines are in speed_search_report.py.

Arms, fixed here before any run (`search_arms`):

1. **after**: `python -m raygrow.search` of this tree, no flags (with --quick: `--smoke-test
   --tokens 16384 --num-samples 1`), run to completion; its wall time T (process start -> exit)
   is the time box of the other arms, and its trials give the per-trial fixed share.
2. **before**: the same command from a git worktree of `BEFORE_COMMIT` (its own package
   imported through `PYTHONPATH`, checked), with `--num-samples` = the after arm's, killed at T.
   Its defaults are the previous behaviour: bf16 autocast, a nested `TorchTrainer` per trial,
   `OMP_WAIT_POLICY=PASSIVE`.
3. **before, fp32**: arm 2 with `--target FILE.json` = `{"model": <old default target>, "amp":
   false}` (the old `parse_target` merges the file's TrainConfig keys into the default training
   settings), killed at T: separates the precision gain from the in-process-trial gain.

Counted per arm: sampled schedules that finished within T (Tune status TERMINATED: ran to the
budget or stopped by ASHA) in Tune's experiment state (saved every 2 s) + each trial's
`result.json`. Both trees' per-node measurement caches (peak FLOP/s, bf16 speed) are warmed
before the first arm, as on a machine that has run raygrow before.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .common import ROOT

BEFORE_COMMIT = "337a747"
"""The previous behaviour: the last commit before precision `auto` and in-process trials."""
BEFORE_TREE = Path(tempfile.gettempdir()) / "raygrow-before"
QUICK_FLAGS = ["--smoke-test", "--tokens", "16384"]
"""--quick: the smoke-test search at 32 steps per full-budget arm (the search's minimum is 16)."""
QUICK_SAMPLES = 1
SETTLE_S = 20.0
"""How long a search's leftover processes (Ray's) may take to exit before they are killed."""


# --------------------------------------------------------------------------- the two trees
@dataclass(frozen=True)
class Arm:
    key: str
    label: str
    tree: Path
    """Repository root whose `raygrow` package the search imports."""
    flags: list[str]
    time_box: bool
    """Killed at the after arm's wall time T (else run to completion)."""


def search_env(tree: Path) -> dict[str, str]:
    """The environment of a search from `tree`, as the user's shell has it (without the
    OMP_WAIT_POLICY that `import raygrow` set in this process), its package first on the path."""
    from raygrow._omp import ENV, USER_VALUE

    env = dict(os.environ)
    if USER_VALUE is None:
        env.pop(ENV, None)
    if tree != ROOT:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(tree), env.get("PYTHONPATH")]))
    return env


def python_in(tree: Path, code: str, cwd: Path) -> str:
    """stdout of `python -c code` with `tree`'s package importable (run in `cwd`)."""
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=cwd, env=search_env(tree), capture_output=True, text=True
    )
    if proc.returncode:
        raise RuntimeError(f"python -c in {tree} failed:\n{proc.stderr[-2000:]}")
    return proc.stdout.strip().splitlines()[-1]


def before_tree() -> Path:
    """A git worktree of BEFORE_COMMIT at BEFORE_TREE (created once, then reused)."""

    def git(*args: str, cwd: Path = ROOT) -> str:
        return subprocess.run(
            ["git", *args], cwd=cwd, capture_output=True, text=True, check=True
        ).stdout.strip()

    want = git("rev-parse", f"{BEFORE_COMMIT}^{{commit}}")
    if (BEFORE_TREE / ".git").exists():
        try:
            usable = git("rev-parse", "HEAD", cwd=BEFORE_TREE) == want
        except subprocess.CalledProcessError:  # left by another clone: its .git points nowhere
            usable = False
        if not usable and not (BEFORE_TREE / ".git").is_dir():
            shutil.rmtree(BEFORE_TREE)
            git("worktree", "prune")
    if not (BEFORE_TREE / ".git").exists():
        git("worktree", "add", "--detach", str(BEFORE_TREE), BEFORE_COMMIT)
    if git("rev-parse", "HEAD", cwd=BEFORE_TREE) != want:
        raise RuntimeError(f"{BEFORE_TREE} is not at {BEFORE_COMMIT}; remove it and run again")
    return BEFORE_TREE


PACKAGE_INFO = """
import json, raygrow, raygrow.search.__main__ as m
if hasattr(m, "DEFAULTS"):  # trees before typed configs: the CLI's DEFAULTS / SMOKE dicts
    defaults, smoke = m.DEFAULTS, m.SMOKE
else:  # SearchConfig's field defaults, and its --smoke-test overrides
    from raygrow.search.config import SMOKE, SearchConfig
    defaults, smoke = (
        {"target": c.target.shape, "num_samples": c.num_samples}
        for c in (SearchConfig(), SearchConfig().replace(**SMOKE))
    )
print(json.dumps({"file": raygrow.__file__, "defaults": defaults, "smoke": smoke,
                  "doc": m.__doc__}))
"""


def package_info(tree: Path, cwd: Path) -> dict[str, Any]:
    """`tree`'s search defaults, imported as its searches import them (run outside the tree,
    so only PYTHONPATH can find it); fails unless `raygrow` comes from `tree`."""
    info = json.loads(python_in(tree, PACKAGE_INFO, cwd))
    if not Path(info["file"]).resolve().is_relative_to(tree.resolve()):
        raise RuntimeError(f"raygrow imported from {info['file']}, not from {tree}")
    return info


WARM_AFTER = (
    "import torch; torch.set_num_threads({threads}); from raygrow.train.precision import "
    "cached_peak_flops, resolve_precision; cached_peak_flops(resolve_precision('auto'), "
    "torch.device('cpu')); print('ok')"
)
WARM_BEFORE = (
    "import torch; torch.set_num_threads({threads}); from raygrow.train.worker import "
    "warm_peak_flops_cache as w; [w(torch.device('cpu'), d) for d in (torch.bfloat16, "
    "torch.float32)]; print('ok')"
)


def search_arms(quick: bool, tmp: Path) -> tuple[list[Arm], dict[str, Any]]:
    """The three arms (module doc) and what defines them, before anything is timed."""
    old = before_tree()
    info = {"after": package_info(ROOT, tmp), "before": package_info(old, tmp)}
    base = info["after"]["smoke" if quick else "defaults"]
    samples = QUICK_SAMPLES if quick else int(base["num_samples"])
    after_flags = [*QUICK_FLAGS, "--num-samples", str(samples)] if quick else []
    old_base = info["before"]["smoke" if quick else "defaults"]
    fp32_target = tmp / "before-fp32-target.json"
    fp32_target.write_text(json.dumps({"model": old_base["target"], "amp": False}))
    before_flags = [*(QUICK_FLAGS if quick else []), "--num-samples", str(samples)]
    arms = [
        Arm("after", "after: this tree, default", ROOT, after_flags, False),
        Arm("before", f"before ({BEFORE_COMMIT}), default (bf16)", old, before_flags, True),
        Arm(
            "before_fp32",
            f"before ({BEFORE_COMMIT}), fp32",
            old,
            [*before_flags, "--target", str(fp32_target)],
            True,
        ),
    ]
    threads = os.cpu_count() or 1  # what a 1-trial-at-a-time search gives each trial
    python_in(ROOT, WARM_AFTER.format(threads=threads), tmp)
    python_in(old, WARM_BEFORE.format(threads=threads), tmp)
    setup = {
        "samples": samples,
        "old_default_samples": int(old_base["num_samples"]),
        "fp32_target": fp32_target.read_text(),
        "files": {k: v["file"] for k, v in info.items()},
        "stated": stated_time(info["after"]["doc"]),
    }
    return arms, setup


def stated_time(doc: str) -> str:
    """The default search's time as its CLI docstring states it, e.g. `about 15 minutes on 2
    CPU cores`."""
    found = re.search(r"about \d+ minutes on \d+ CPU cores", " ".join(doc.split()))
    return found.group(0) if found else "not stated"


# --------------------------------------------------------------------------- running a search
def session_pids(sid: int) -> list[int]:
    """Live processes of session `sid` (the search and the Ray processes it started)."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[0] != "Z" and int(fields[3]) == sid:
            pids.append(int(stat.parent.name))
    return pids


def end_session(proc: subprocess.Popen, kill: bool, name: str) -> None:
    """Kill the search (`kill`) or let it end; then wait for its session's processes to exit,
    killing what is left after SETTLE_S, so the next arm starts on a quiet machine."""
    if kill:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    deadline = time.time() + SETTLE_S
    while (left := session_pids(proc.pid)) and time.time() < deadline:
        time.sleep(0.5)
    for pid in session_pids(proc.pid):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    if left:
        print(f"b. {name}: killed {len(left)} processes left {SETTLE_S:.0f} s after", flush=True)


def run_arm(arm: Arm, folder: Path, log: Path, time_box: float | None) -> dict[str, Any]:
    """The search CLI of `arm` into `folder`; stdout time-stamped on arrival into `log`."""
    cmd = [sys.executable, "-m", "raygrow.search", *arm.flags, "--out", str(folder)]
    stamps: dict[str, float] = {}

    def pump(stream: Any, fh: Any) -> None:
        for line in stream:
            fh.write(line)
            if line.startswith("raygrow.search: experiment folder"):
                stamps.setdefault("run_search", time.time())

    with log.open("w") as fh:
        t0 = time.time()
        proc = subprocess.Popen(
            cmd,
            cwd=arm.tree,
            env=search_env(arm.tree),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,  # its own process group: a time box kills all of it
        )
        reader = threading.Thread(target=pump, args=(proc.stdout, fh), daemon=True)
        reader.start()
        try:
            rc: int | None = proc.wait(timeout=time_box)
        except subprocess.TimeoutExpired:
            rc = None
        except BaseException:  # interrupted (Ctrl-C, SIGTERM): leave no search running
            end_session(proc, True, arm.key)
            raise
        t_end = time.time()
        end_session(proc, rc is None, arm.key)
        reader.join(timeout=10)
    if rc is not None and rc != 0:
        raise RuntimeError(
            f"{arm.label}: search exited {rc}; log {log}:\n{log.read_text()[-3000:]}"
        )
    print(f"b. {arm.key}: {t_end - t0:.0f} s" + (" (killed)" if rc is None else ""), flush=True)
    return {"cmd": cmd[1:], "t0": t0, "t_end": t_end, "stamps": stamps, "killed": rc is None}


# --------------------------------------------------------------------------- Tune's records
def tune_trials(run_dir: Path, run: str) -> tuple[float, list[dict[str, Any]]]:
    """(Tune run start, its trials by start) from the newest experiment state and each trial's
    `result.json` (a trial that never started has no start and no reports)."""
    states = sorted(run_dir.glob("experiment_state-*.json"))
    if not states:
        return math.nan, []
    state = json.loads(states[-1].read_text())
    trials = []
    for trial_json, meta_json in state["trial_data"]:
        trial, meta = json.loads(trial_json), json.loads(meta_json)
        result = run_dir / trial["relative_logdir"] / "result.json"
        text = result.read_text() if result.exists() else ""
        config = trial["config"]
        trials.append(
            {
                "run": run,
                "trial_id": trial["trial_id"],
                "label": str(config.get("schedule") or config.get("growth") or ""),
                "status": trial["status"],
                "start": meta.get("start_time") or math.inf,
                "reports": [json.loads(x) for x in text.splitlines() if x.strip()],
            }
        )
    return float(state["stats"]["start_time"]), sorted(trials, key=lambda t: t["start"])


def read_runs(folder: Path) -> dict[str, tuple[float, list[dict[str, Any]]]]:
    runs = {}
    for run in ("baselines", "search"):
        if (folder / "ray" / run).exists():
            runs[run] = tune_trials(folder / "ray" / run, run)
    return runs


def budget_tokens(folder: Path) -> int:
    return int(json.loads((folder / "search.json").read_text())["tokens"])


def finished_within(folder: Path, wall: float, killed: bool) -> dict[str, Any]:
    """What a (time-boxed) search finished: baselines, sampled schedules run to the budget or
    stopped by ASHA (both TERMINATED), and the training speed its trials reported."""
    runs = read_runs(folder)
    budget = budget_tokens(folder)
    base = runs.get("baselines", (0, []))[1]
    sampled = runs.get("search", (0, []))[1]
    done = [t for t in sampled if t["status"] == "TERMINATED" and t["reports"]]
    full = [t for t in done if t["reports"][-1]["tokens"] >= 0.99 * budget]
    tps = [r["tokens_per_s"] for t in base + sampled for r in t["reports"] if r.get("tokens_per_s")]
    return {
        "wall": wall,
        "killed": killed,
        "baselines_done": sum(t["status"] == "TERMINATED" for t in base),
        "baselines": len(base),
        "completed": len(full),
        "stopped": len(done) - len(full),
        "evaluated": len(done),
        "errored": sum(t["status"] == "ERROR" for t in sampled),
        "tokens_per_s": statistics.median(tps) if tps else math.nan,
    }


# --------------------------------------------------------------------------- per-trial split
def trial_split(t: dict[str, Any], end: float) -> dict[str, Any]:
    """A trial's wall (its start -> `end`, the next trial's start) split into training steps,
    evaluations and fixed cost: start-up (trial start -> first evaluation: the trial process
    gets the trial, builds config, model and data views), in-run (reports, checkpoints, the
    loop's per-window work) and tail (last report -> next trial starts)."""
    reps = t["reports"]
    train = sum(r.get("train_s", 0.0) for r in reps)
    evals = sum(r.get("eval_s", 0.0) for r in reps)
    first_eval_start = reps[0]["wall_time"] - reps[0]["eval_s"]
    wall = end - t["start"]
    fixed = wall - train - evals
    return {
        **{k: t[k] for k in ("run", "trial_id", "label", "status")},
        "n_reports": len(reps),
        "tokens": reps[-1]["tokens"],
        "wall": wall,
        "train": train,
        "eval": evals,
        "fixed": fixed,
        "share": fixed / wall,
        "startup": first_eval_start - t["start"],
        "in_run": reps[-1]["wall_time"] - first_eval_start - train - evals,
        "tail": end - reps[-1]["wall_time"],
    }


def analyse_search(folder: Path, proc: dict[str, Any]) -> dict[str, Any]:
    """Per-trial split of a finished search (trials run one at a time, in-process)."""
    runs = read_runs(folder)
    rows: list[dict[str, Any]] = []
    last_ends: list[tuple[str, dict[str, Any]]] = []
    for run, (_, trials) in runs.items():
        for cur, nxt in zip(trials, trials[1:], strict=False):
            rows.append(trial_split(cur, nxt["start"]))
        last_ends.append((run, trials[-1]))
    # the last trial of each Tune run has no successor: its tail after the last report is
    # taken as the median tail of the others (marked "est." in the table)
    tail = statistics.median(r["tail"] for r in rows) if rows else 0.0
    run_starts = [start for start, _ in runs.values()][1:] + [proc["t_end"]]
    for (_run, t), cap in zip(last_ends, run_starts, strict=True):
        # capped by the next Tune run's start / the process exit
        row = trial_split(t, min(t["reports"][-1]["wall_time"] + tail, cap))
        row["estimated_end"] = True
        rows.append(row)
    budget = budget_tokens(folder)
    for r in rows:  # a trial ASHA stopped ends TERMINATED too: tell it by its tokens
        if r["run"] == "search" and r["tokens"] < 0.99 * budget:
            r["status"] = f"stopped at {r['tokens'] / budget:.0%}"
    order = {t["trial_id"]: t["start"] for _, ts in runs.values() for t in ts}
    rows.sort(key=lambda r: order[r["trial_id"]])
    started = proc["stamps"].get("run_search", proc["t0"])
    end_of = {
        run: t["start"] + next(r["wall"] for r in rows if r["trial_id"] == t["trial_id"])
        for run, t in last_ends
    }
    driver = {
        "process start -> `run_search` (imports, space dry-run, config)": started - proc["t0"],
        "`run_search` -> baselines Tune run starts (MLflow parent run, Ray start, Tuner)": (
            runs["baselines"][0] - started
        ),
    }
    for run, (start, trials) in runs.items():
        driver[f"{run}: Tune run start -> first trial start"] = trials[0]["start"] - start
    if "search" in runs:
        driver["baselines' last trial end (est.) -> search Tune run start"] = (
            runs["search"][0] - end_of["baselines"]
        )
    driver["last trial end (est.) -> process exit (tables, MLflow, Ray shutdown)"] = (
        proc["t_end"] - end_of[list(runs)[-1]]
    )
    return {"rows": rows, "total": proc["t_end"] - proc["t0"], "driver": driver}


# --------------------------------------------------------------------------- the whole part
def search_part(quick: bool, tmp: Path) -> dict[str, Any]:
    """Run the three arms in order (after first: its wall time boxes the others)."""
    arms, setup = search_arms(quick, tmp)
    counts: dict[str, dict[str, Any]] = {}
    split: dict[str, Any] = {}
    time_box = None
    for arm in arms:
        folder = tmp / f"search-{arm.key}"
        proc = run_arm(
            arm, folder, tmp / f"search-{arm.key}.log", time_box if arm.time_box else None
        )
        wall = proc["t_end"] - proc["t0"]
        counts[arm.key] = {
            "label": arm.label,
            "cmd": " ".join(["python", *proc["cmd"][:-2]]),
            **finished_within(folder, wall, proc["killed"]),
        }
        if arm.key == "after":
            time_box = wall
            split = analyse_search(folder, proc)
            split["cmd"] = counts["after"]["cmd"]
        print("b.", {k: v for k, v in counts[arm.key].items() if k != "cmd"}, flush=True)
    for c in counts.values():  # a killed search's state lists only the trials it created
        c["baselines"] = counts["after"]["baselines"]
    return {**split, "counts": counts, "setup": setup, "time_box": time_box}
