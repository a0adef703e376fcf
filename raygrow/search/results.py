"""From finished trials to the ranked table: status, speedup at matched loss, validity.

The rules live in the results core (`raygrow.results`): the status vocabulary, the scratch
frontier, speedup at matched loss with bounds and the validity rule. This module turns Tune's
trials into `TrialInfo`s, then into rows of the search's table; `collect_trials` reads them from
Tune's results. A stopped trial's `stop_reason` column says why (`raygrow.search.asha.describe`):
the rung in FLOPs, the trial's value, the cutoff and the number of trials recorded at that rung.

Splits: every selection number (ASHA, ranking, `val_loss`, `speedup`, `reaches_target`, the
validity check, the net speedup) is on the validation split. `test_loss` / `test_bpb` are the
held-out test split, evaluated once at each completed run's end, and `speedup_test` is the
speedup at matched *test* loss against the scratch runs' test finals: reported, never selected on.

Partial (stopped) runs get no speedup: their loss is not an annealed final loss. Beyond the
measured scratch range a speedup is a bound, never an extrapolation: `>1.14x` means scratch
never reached that loss within its largest budget.

Ranking: completed runs that reach the target's full-budget scratch loss come first, cheapest
first (the largest speedup bound); then the other completed runs by loss - a cheap run that
never gets there (the small model alone) is no win, however large its matched-loss ratio; then
stopped, unfinished and failed runs.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from raygrow.results import (
    KIND_ORDER,
    ArmKind,
    TrialRecord,
    compare,
    finite,
    mean_interval,
    status_kind,
    target_loss,
    trial_status,
)
from raygrow.results import validity as _validity

TABLE_COLUMNS = (
    "rank",
    "arm",
    "schedule",
    "status",
    "val_loss",
    "val_bpb",
    "test_loss",
    "test_bpb",
    "flops",
    "flops_reused",
    "tokens",
    "speedup",
    "speedup_vs_scratch",
    "speedup_bound",
    "scratch_flops_at_loss",
    "speedup_test",
    "speedup_test_vs_scratch",
    "reaches_target",
    "n_params",
    "budget_frac",
    "seed",
    "trial_id",
    "stop_reason",
)
MARKDOWN_COLUMNS = (
    "rank",
    "arm",
    "schedule",
    "val_loss",
    "test_loss",
    "flops",
    "speedup",
    "speedup_test",
    "reaches_target",
    "status",
    "stop_reason",
)
SPLITS_NOTE = (
    "val_loss, speedup, reaches_target, ranking, validity and net speedup on the validation split "
    "(selection); test_loss and speedup_test on the held-out test split (evaluated once at each "
    "run's end, never selected on)"
)


@dataclass
class TrialInfo:
    """What the table needs to know about one trial, whatever produced it."""

    trial_id: str
    arm: ArmKind
    schedule: str
    tune_status: str
    """TERMINATED | ERROR | RUNNING | PENDING | PAUSED."""
    planned_tokens: int
    last_result: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    """Failure reason (already one line) for ERROR trials."""
    stop_reason: str | None = None
    """Why ASHA stopped the trial (rung, cutoff, value, trials at the rung), if it did."""
    budget_frac: float = 1.0
    """Token budget as a fraction of the search's (scratch baselines < 1)."""
    seed: int | None = None

    @property
    def status(self) -> str:
        res = self.last_result
        return trial_status(
            tokens=res.get("tokens"),
            planned_tokens=self.planned_tokens,
            flops=res.get("flops"),
            ended=self.tune_status == "TERMINATED",
            error=self.error,
            errored=self.tune_status == "ERROR",
        )


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


def record_of(row: dict[str, Any]) -> TrialRecord:
    """The results core's view of a table row."""
    return TrialRecord(
        arm=row["arm"],
        status=row["status"],
        flops=row["flops"],
        val_loss=row["val_loss"],
        test_loss=row["test_loss"],
        budget_frac=row["budget_frac"],
        seed=row["seed"],
        trial_id=row["trial_id"],
        schedule=row["schedule"],
    )


def build_rows(infos: Sequence[TrialInfo]) -> list[dict[str, Any]]:
    """One row per trial with status and speedup, ranked (rank 1 = best)."""
    rows = []
    for info in infos:
        res = info.last_result
        status = info.status
        rows.append(
            {
                "trial_id": info.trial_id,
                "arm": info.arm,
                "schedule": info.schedule,
                "status": status,
                "val_loss": _num(res.get("val_loss")),
                "val_bpb": _num(res.get("val_bpb")),
                "test_loss": _num(res.get("test_loss")),
                "test_bpb": _num(res.get("test_bpb")),
                "flops": _num(res.get("flops")),
                "flops_reused": _num(res.get("flops_reused")) or 0.0,
                "tokens": _num(res.get("tokens")),
                "n_params": _num(res.get("n_params")),
                "budget_frac": float(info.budget_frac),
                "seed": info.seed,
                "speedup": None,
                "speedup_vs_scratch": None,
                "speedup_bound": None,
                "scratch_flops_at_loss": None,
                "speedup_test": None,
                "speedup_test_vs_scratch": None,
                "stop_reason": info.stop_reason if status_kind(status) == "stopped" else None,
            }
        )
    records = [record_of(r) for r in rows]
    goal = target_loss(records)
    on_test = compare(records, split="test")  # where scratch's test finals exist
    for row, record, cmp, test in zip(rows, records, compare(records), on_test, strict=True):
        row["reaches_target"] = (
            None if not record.completed or goal is None else bool(row["val_loss"] <= goal)
        )
        if cmp.speedup is not None:
            row["speedup"] = str(cmp.speedup)
            row["speedup_vs_scratch"] = cmp.speedup.value
            row["speedup_bound"] = cmp.speedup.bound
            row["scratch_flops_at_loss"] = cmp.speedup.scratch_flops
        if test.speedup is not None:
            row["speedup_test"] = str(test.speedup)
            row["speedup_test_vs_scratch"] = test.speedup.value
    rows.sort(key=_rank_key)
    for i, row in enumerate(rows, 1):
        row["rank"] = i
    return rows


def _num(value: Any) -> float | None:
    return float(value) if finite(value) else None


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
    """The results core's validity verdict on the table's rows, as a dict with its `text`."""
    verdict = _validity([record_of(r) for r in rows])
    out = verdict.to_dict()
    out["text"] = f"validity: {verdict.text}"
    return out


def ledger(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """What the search cost: `search_flops` (computed, baselines included), and
    `search_flops_naive` (what it would have computed without the prefix store: every trial's
    own FLOPs, prefix included), from each trial's last report. A trial restored by `--resume`
    counts its resumed part as computed (conservative)."""
    spent = sum((r["flops"] or 0.0) - (r.get("flops_reused") or 0.0) for r in rows)
    naive = sum(r["flops"] or 0.0 for r in rows)
    return {
        "search_flops": spent,
        "search_flops_naive": naive,
        "sharing_ratio": spent / naive if naive > 0 else None,
    }


def net_speedup(rows: Sequence[dict[str, Any]], search_flops: float) -> dict[str, Any]:
    """Scratch FLOPs to reach the best schedule's loss / the search's own compute: above 1x
    the search paid for itself. A bound when the best schedule's speedup is one (`>`: scratch
    never reached its loss, so it would have needed more). Empty when no schedule reaches the
    target's scratch loss."""
    best = next((r for r in rows if r["arm"] == "grown" and r["reaches_target"]), None)
    if best is None or not best["scratch_flops_at_loss"] or search_flops <= 0:
        return {"net_speedup": None, "net_speedup_x": None}
    value = best["scratch_flops_at_loss"] / search_flops
    mark = {"lower": ">", "upper": "<"}.get(best["speedup_bound"] or "", "")
    return {"net_speedup": f"{mark}{value:.3f}x", "net_speedup_x": value}


SCHEDULE_COLUMNS = (
    "schedule",
    "seeds",
    "completed",
    "val_loss_mean",
    "speedup_mean",
    "speedup_low",
    "speedup_high",
    "speedup_per_seed",
    "bounded",
)


def schedule_table(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Grown schedules over their seed replicates: mean speedup with a 95% t-interval over the
    completed seeds and the per-seed values (`>`/`<` mark bounds; a mean over bounds is
    flagged `bounded`, never read as exact). Best mean speedup first."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        if row["arm"] == "grown":
            groups.setdefault(row["schedule"], []).append(row)
    out = []
    for schedule, members in groups.items():
        members = sorted(members, key=lambda r: (r["seed"] is None, r["seed"]))
        done = [r for r in members if r["speedup_vs_scratch"] is not None]
        item: dict[str, Any] = {
            "schedule": schedule,
            "seeds": len(members),
            "completed": len(done),
            "val_loss_mean": None,
            "speedup_mean": None,
            "speedup_low": None,
            "speedup_high": None,
            "speedup_per_seed": ", ".join(
                f"{r['seed']}: {r['speedup'] or status_kind(r['status'])}" for r in members
            ),
            "bounded": any(r["speedup_bound"] != "exact" for r in done),
        }
        if done:
            ci = mean_interval([r["speedup_vs_scratch"] for r in done])
            item.update(speedup_mean=ci.mean, speedup_low=ci.low, speedup_high=ci.high)
            item["val_loss_mean"] = mean_interval([r["val_loss"] for r in done]).mean
        out.append(item)
    out.sort(key=lambda i: -(i["speedup_mean"] or 0.0))
    return out


def best_text(rows: Sequence[dict[str, Any]]) -> str:
    """The summary's `best`: the top-ranked completed schedule (chosen on val) with its held-out
    test numbers, and the best mean speedup over seed replicates."""
    grown = [r for r in rows if r["arm"] == "grown" and r["status"] == "completed"]
    if not grown:
        return "no completed growth schedule"
    top = grown[0]
    reach = "reaches" if top["reaches_target"] else "does NOT reach"
    text = (
        f"{top['schedule']}: val_loss {top['val_loss']:.4f}, speedup {top['speedup']} "
        f"({reach} the target's scratch loss)"
    )
    if top["test_loss"] is not None:
        text += f"; held-out test_loss {top['test_loss']:.4f}"
        text += f", speedup_test {top['speedup_test']}" if top["speedup_test"] else ""
    replicated = [s for s in schedule_table(rows) if s["seeds"] > 1]
    if replicated and replicated[0]["speedup_mean"] is not None:
        best = replicated[0]
        low, high = best["speedup_low"], best["speedup_high"]
        spread = f" [{low:.2f}, {high:.2f}]" if low is not None else ""
        text += (
            f"; best mean over seeds: {best['schedule']}: {best['speedup_mean']:.2f}x{spread} "
            f"(95% t-interval, {best['completed']}/{best['seeds']} seeds completed"
            f"{', bounds included' if best['bounded'] else ''})"
        )
    return text


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
    for key in ("space", "target", "budget", "splits", "validity", "best"):
        if summary.get(key):
            text.append(f"- {key}: {summary[key]}")
    for key in ("search_flops", "search_flops_naive", "net_speedup"):
        if summary.get(key) is not None:
            value = summary[key]
            shown = f"{value:.4g}" if isinstance(value, float) else value
            text.append(f"- {key}: {shown}")
    text += ["", to_markdown(rows), ""]
    schedules = schedule_table(rows)
    if any(s["seeds"] > 1 for s in schedules):
        text += ["## Schedules over seed replicates (95% t-intervals)", ""]
        text += [to_markdown(schedules, SCHEDULE_COLUMNS), ""]
        frame = pd.DataFrame(schedules, columns=SCHEDULE_COLUMNS)
        frame.to_parquet(out_dir / "schedules.parquet", index=False)
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
            frac, seed = plan.budget_frac, plan.seed
        except Exception as exc:  # noqa: BLE001 - a sample that cannot be planned
            arm, desc, tokens = "grown", str(config.get("schedule", "?")), 0
            frac, seed = 1.0, None
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
                budget_frac=frac,
                seed=seed,
            )
        )
    return infos


def _error_text(trial: Any) -> str | None:
    path = getattr(trial, "error_file", None)
    if path and Path(path).is_file():
        return Path(path).read_text()
    err = getattr(trial, "error_msg", None)
    return str(err) if err else None
