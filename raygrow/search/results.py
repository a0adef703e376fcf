"""From finished trials to the ranked table: status, speedup at matched loss, validity.

Pure functions over `TrialInfo` records (no Ray needed to test them); `collect_trials` reads
them from Tune's results. Status texts follow tracking's contract:

    completed                       trained its whole token budget
    stopped by ASHA at FLOPs 1.2e12 ASHA ended it at a rung (only sampled schedules)
    failed: <reason>                an error (diverged, crashed after retries, bad sample)
    unfinished                      the search was interrupted; `--resume DIR` continues it

A stopped trial's `stop_reason` column says why (`raygrow.search.asha.describe`): the rung in
FLOPs, the trial's value, the cutoff and the number of trials recorded at that rung before it.

Speedup (`raygrow.speedup`) compares a completed run's (FLOPs, final val_loss) against the
annealed scratch runs (full budget and the shorter budgets, each with its own LR schedule).
Beyond the measured scratch range it is a bound, never an extrapolation: `>1.14x` means scratch
never reached that loss within its largest budget. Partial (stopped) runs get no speedup: their
loss is not an annealed final loss.

Ranking: completed runs that reach the target's full-budget scratch loss come first, cheapest
first (the largest speedup bound); then the other completed runs by loss - a cheap run that
never gets there (the small model alone) is no win, however large its matched-loss ratio; then
stopped, unfinished and failed runs.

Validity: the target from scratch must end below the small model alone at the full budget,
otherwise "growth beats scratch" may only mean "the small model was better all along"
(pilot_growth_d128.md).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from raygrow.speedup import speedup_at_matched_loss

KIND_ORDER = {"completed": 0, "stopped": 1, "unfinished": 2, "failed": 3}
TABLE_COLUMNS = (
    "rank",
    "arm",
    "schedule",
    "status",
    "val_loss",
    "val_bpb",
    "flops",
    "tokens",
    "speedup",
    "speedup_vs_scratch",
    "speedup_bound",
    "reaches_target",
    "n_params",
    "trial_id",
    "stop_reason",
)
MARKDOWN_COLUMNS = (
    "rank",
    "arm",
    "schedule",
    "val_loss",
    "flops",
    "speedup",
    "reaches_target",
    "status",
    "stop_reason",
)
SMALL_MARGIN = 0.01
"""A validity margin below this many nats is reported as not robust (single seed)."""


@dataclass
class TrialInfo:
    """What the table needs to know about one trial, whatever produced it."""

    trial_id: str
    arm: str
    schedule: str
    tune_status: str
    """TERMINATED | ERROR | RUNNING | PENDING | PAUSED."""
    planned_tokens: int
    last_result: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    """Failure reason (already one line) for ERROR trials."""
    stop_reason: str | None = None
    """Why ASHA stopped the trial (rung, cutoff, value, trials at the rung), if it did."""


def trial_status(info: TrialInfo) -> str:
    tokens = info.last_result.get("tokens")
    flops = info.last_result.get("flops")
    if info.tune_status == "ERROR":
        return f"failed: {info.error or 'unknown error'}"
    if tokens is not None and tokens >= info.planned_tokens:
        return "completed"
    if info.tune_status == "TERMINATED":
        return f"stopped by ASHA at FLOPs {float(flops or 0.0):.3g}"
    return "unfinished"


def status_kind(status: str) -> str:
    return status.split(" ", 1)[0].rstrip(":")


def one_line_error(text: str | None, limit: int = 200) -> str:
    """The most telling line of a Tune error (the last `SomeError: message` line)."""
    if not text:
        return "unknown error"
    lines = [line.strip() for line in str(text).splitlines() if line.strip()]
    pattern = re.compile(r"^(?:ray\.\S+\.)?([A-Za-z_][\w.]*(?:Error|Exception|Diverged)): (.+)$")
    best = None
    for line in lines:
        match = pattern.match(line)
        if match:
            best = f"{match.group(1).rsplit('.', 1)[-1]}: {match.group(2)}"
    if best is None:
        best = lines[-1] if lines else "unknown error"
    best = best.replace("TrialDiverged: ", "")
    return best if len(best) <= limit else best[: limit - 1] + "…"


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def scratch_points(rows: Iterable[dict[str, Any]]) -> list[tuple[float, float]]:
    """(FLOPs, final val_loss) of the completed, annealed scratch runs."""
    return [
        (float(r["flops"]), float(r["val_loss"]))
        for r in rows
        if r["arm"] == "scratch"
        and r["status"] == "completed"
        and _finite(r["val_loss"])
        and _finite(r["flops"])
    ]


def build_rows(infos: Sequence[TrialInfo]) -> list[dict[str, Any]]:
    """One row per trial with status and speedup, ranked (rank 1 = best)."""
    rows = []
    for info in infos:
        res = info.last_result
        status = trial_status(info)
        rows.append(
            {
                "trial_id": info.trial_id,
                "arm": info.arm,
                "schedule": info.schedule,
                "status": status,
                "val_loss": _num(res.get("val_loss")),
                "val_bpb": _num(res.get("val_bpb")),
                "flops": _num(res.get("flops")),
                "tokens": _num(res.get("tokens")),
                "n_params": _num(res.get("n_params")),
                "speedup": None,
                "speedup_vs_scratch": None,
                "speedup_bound": None,
                "stop_reason": info.stop_reason if status_kind(status) == "stopped" else None,
            }
        )
    points = scratch_points(rows)
    target_loss = _target_loss(rows)
    for row in rows:
        done = row["status"] == "completed" and _finite(row["val_loss"])
        row["reaches_target"] = (
            None if not done or target_loss is None else bool(row["val_loss"] <= target_loss)
        )
        if points and done:
            sp = speedup_at_matched_loss(points, row["flops"], row["val_loss"])
            row["speedup"] = str(sp)
            row["speedup_vs_scratch"] = sp.value
            row["speedup_bound"] = sp.bound
    rows.sort(key=_rank_key)
    for i, row in enumerate(rows, 1):
        row["rank"] = i
    return rows


def _num(value: Any) -> float | None:
    return float(value) if _finite(value) else None


def _target_loss(rows: Sequence[dict[str, Any]]) -> float | None:
    """Final loss of the target from scratch at the full budget (what growth must reach)."""
    for r in rows:
        if r["arm"] == "scratch" and "@100%" in r["schedule"] and r["status"] == "completed":
            return r["val_loss"]
    return None


def _rank_key(row: dict[str, Any]) -> tuple:
    """Best first: runs that reach the target's scratch loss, cheapest first (largest speedup
    bound); then the other completed runs by loss (a cheap run that never gets there, such as
    the small model, is not a win however large its matched-loss ratio); then stopped runs
    (furthest first), unfinished and failed ones."""
    kind = KIND_ORDER.get(status_kind(row["status"]), 9)
    loss = row["val_loss"] if row["val_loss"] is not None else math.inf
    flops = row["flops"] if row["flops"] is not None else math.inf
    if kind == 0:
        return (kind, 0, flops, loss) if row["reaches_target"] else (kind, 1, loss, flops)
    if kind == 1:
        return (kind, 0, -flops, loss)
    return (kind, 0, loss, 0.0)


def validity(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Does the target from scratch (full budget) beat the small model alone?"""
    full = [
        r
        for r in rows
        if r["arm"] == "scratch" and "@100%" in r["schedule"] and r["status"] == "completed"
    ]
    small = [r for r in rows if r["arm"] == "small" and r["status"] == "completed"]
    if not full or not small or full[0]["val_loss"] is None or small[0]["val_loss"] is None:
        return {"checked": False, "text": "validity: not checked (a baseline arm did not complete)"}
    margin = small[0]["val_loss"] - full[0]["val_loss"]
    valid = margin > 0
    text = (
        f"validity: target from scratch {full[0]['val_loss']:.4f} vs small alone "
        f"{small[0]['val_loss']:.4f} nats/token: margin {margin:+.4f} -> "
    )
    if not valid:
        text += "NOT VALID: the small model is as good as the target at this budget, so beating "
        text += "scratch says little about growth; raise the budget or the size gap"
    elif margin < SMALL_MARGIN:
        text += "valid but not robust (margin below ~seed noise of one seed; use more seeds)"
    else:
        text += "valid"
    return {
        "checked": True,
        "valid": valid,
        "margin": margin,
        "target_loss": full[0]["val_loss"],
        "small_loss": small[0]["val_loss"],
        "text": text,
    }


def to_markdown(rows: Sequence[dict[str, Any]], columns: Sequence[str] = MARKDOWN_COLUMNS) -> str:
    def cell(value: Any, col: str) -> str:
        if value is None:
            return "—"
        if isinstance(value, bool):
            return "yes" if value else "no"
        if col == "flops" and isinstance(value, float):
            return f"{value:.3g}"
        if isinstance(value, float):
            return f"{value:.4f}"
        return str(value).replace("|", "\\|")

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        lines.append("| " + " | ".join(cell(row.get(c), c) for c in columns) + " |")
    return "\n".join(lines)


def write_tables(rows: Sequence[dict[str, Any]], summary: dict[str, Any], out_dir: Path) -> Any:
    """`results.parquet` + `results.md` (+ summary) in the experiment folder; the DataFrame."""
    import pandas as pd

    df = pd.DataFrame([{c: r.get(c) for c in TABLE_COLUMNS} for r in rows], columns=TABLE_COLUMNS)
    out_dir.mkdir(parents=True, exist_ok=True)
    df.to_parquet(out_dir / "results.parquet", index=False)
    text = [f"# Growth-schedule search: {summary.get('experiment', '')}", ""]
    for key in ("space", "target", "budget", "validity", "best"):
        if summary.get(key):
            text.append(f"- {key}: {summary[key]}")
    text += ["", to_markdown(rows), ""]
    (out_dir / "results.md").write_text("\n".join(text))
    return df


# --------------------------------------------------------------------------- from Tune
def collect_trials(
    grid: Any, plan_of: Any, stop_reasons: dict[str, str] | None = None
) -> list[TrialInfo]:
    """TrialInfos from a ResultGrid. `plan_of(config, trial_id)` -> TrialPlan (for the arm,
    the description and the planned tokens of a trial); `stop_reasons`: trial_id -> why ASHA
    stopped it."""
    analysis = grid._experiment_analysis  # the Trial objects carry the status (ray 2.60)
    infos = []
    for trial in analysis.trials:
        config = dict(trial.config)
        try:
            plan = plan_of(config, trial.trial_id)
            arm, desc, tokens = plan.arm, plan.description, plan.train.tokens
        except Exception as exc:  # noqa: BLE001 - a sample that cannot be planned
            arm, desc, tokens = "grown", str(config.get("schedule", "?")), 0
            if trial.status != "ERROR":
                raise RuntimeError(f"trial {trial.trial_id}: {exc}") from exc
        error = None
        if trial.status == "ERROR":
            error = one_line_error(_error_text(trial))
        infos.append(
            TrialInfo(
                trial_id=trial.trial_id,
                arm=arm,
                schedule=desc,
                tune_status=trial.status,
                planned_tokens=tokens,
                last_result=dict(trial.last_result or {}),
                error=error,
                stop_reason=(stop_reasons or {}).get(trial.trial_id),
            )
        )
    return infos


def _error_text(trial: Any) -> str | None:
    path = getattr(trial, "error_file", None)
    if path and Path(path).is_file():
        return Path(path).read_text()
    err = getattr(trial, "error_msg", None)
    return str(err) if err else None
