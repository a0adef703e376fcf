"""MLflow runs of one or more searches -> pyarrow tables.

`trials`: one row per trial (child run with tag raygrow.role=trial): identity, arm, status,
schedule facts (seed, operator, growth timing d, growth factor g, budget D, target size N,
C = 6·N·D), final metrics (`test_loss` / `test_bpb`: the held-out split, logged once at a
completed run's end; NaN when absent, e.g. a stopped trial or a search from before the split),
every param as a `params.<name>` column, and the validation curve as list columns
(`curve_tokens`, `curve_flops`, `curve_val_loss`).
`curves`: the same curves as a long table (experiment, run_id, trial_id, tokens, flops, val_loss).

How the schedule facts are read (first hit wins), so the search can flatten its schedule freely:
- growth timing d (tokens before the first growth): the first `growth_*` metric step logged by
  `SearchTracker.log_growth_events`; else params `grow_at_tokens`, `growth_tokens`,
  `stages.0.at_tokens`; else a fraction param (`grow_at_frac`, `grow_at`, `growth.stages.0.at`,
  `stages.0.at_frac`, `stages.0.at`) times D.
- factor g: params `factor`, `growth_factor`, `g`, `growth.stages.0.factor`, `stages.0.factor`;
  else final/initial `n_layers` (depth) or `d_model` (width) from the metric history.
- budget D (tokens): params `budget_tokens`, `tokens`, `train.tokens`; else the final `tokens`
  metric of a completed trial. N is the final `n_params` metric (the grown model's size).
- operator: param `operator`; else every `[growth.]stages.<i>.operator` joined by `+`; else tag
  `raygrow.operators` (from the logged growth events); else `none`.
- seed: params `seed`, `train.seed`.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from typing import Any

import pyarrow as pa

from raygrow.results import status_kind
from raygrow.tracking import reader
from raygrow.tracking.schema import (
    TAG_ARM,
    TAG_OPERATORS,
    TAG_PARENT,
    TAG_SEARCH,
    TAG_STATUS,
    TAG_STATUS_KIND,
    TAG_TRIAL,
)

P_TIMING = ("grow_at_tokens", "growth_tokens", "stages.0.at_tokens")
P_TIMING_FRAC = ("grow_at_frac", "grow_at", "growth.stages.0.at", "stages.0.at_frac", "stages.0.at")
P_FACTOR = ("factor", "growth_factor", "g", "growth.stages.0.factor", "stages.0.factor")
P_BUDGET = ("budget_tokens", "tokens", "train.tokens", "config.tokens")
P_OPERATOR = ("operator", "growth_operator")
_STAGE_OP = re.compile(r"(?:growth\.|schedule\.)?stages\.(\d+)\.operator")
P_SEED = ("seed", "train.seed", "config.seed")
FINAL_METRICS = (
    "val_loss",
    "val_bpb",
    "test_loss",
    "test_bpb",
    "train_loss",
    "tokens",
    "flops",
    "tokens_per_s",
    "n_params",
    "mfu",
    "speedup_vs_scratch",
)


def _num(text: Any) -> float:
    try:
        value = float(text)
    except (TypeError, ValueError):
        return math.nan
    return value


def _first(params: dict[str, str], keys: Sequence[str]) -> str | None:
    for key in keys:
        value = params.get(key)
        if value not in (None, "", "None", "null"):
            return value
    return None


def trial_row(client: Any, run: Any, experiment: str) -> tuple[dict[str, Any], dict[str, list]]:
    """One trial's row and its curve (see the module docstring for every derived field)."""
    info, data = run.info, run.data
    params, tags, metrics = data.params, data.tags, data.metrics
    curve = reader.run_curve(client, info.run_id)
    status = tags.get(TAG_STATUS, "")
    kind = tags.get(TAG_STATUS_KIND) or _kind(status, info.status)
    row: dict[str, Any] = {
        "experiment": experiment,
        "search": tags.get(TAG_SEARCH, ""),
        "parent_run_id": tags.get(TAG_PARENT, ""),
        "run_id": info.run_id,
        "trial_id": tags.get(TAG_TRIAL, info.run_name or info.run_id),
        "arm": tags.get(TAG_ARM, "grown"),
        "status": status or "running",
        "status_kind": kind,
        "mlflow_status": info.status,
    }
    seed = _num(_first(params, P_SEED))
    row["seed"] = int(seed) if math.isfinite(seed) else None
    for key in FINAL_METRICS:
        row[key] = float(metrics.get(key, math.nan))
    row["speedup_logged"] = row.pop("speedup_vs_scratch")

    # budget D and target size N, C = 6 N D (G_stack's definition)
    budget = _num(_first(params, P_BUDGET))
    if not math.isfinite(budget) and kind == "completed":
        budget = row["tokens"]
    row["budget_tokens"] = budget
    row["c_6nd"] = 6.0 * row["n_params"] * budget

    # growth facts
    growth = reader.metric_history(client, info.run_id, "growth_loss_before")
    row["n_growth_events"] = len(growth)
    timing = float(growth[0][0]) if growth else _num(_first(params, P_TIMING))
    if not math.isfinite(timing):
        timing = _num(_first(params, P_TIMING_FRAC)) * budget
    row["growth_tokens"] = timing if row["arm"] == "grown" else math.nan
    row["growth_frac"] = row["growth_tokens"] / budget if budget else math.nan
    row["factor"] = _factor(client, info.run_id, params) if row["arm"] == "grown" else math.nan
    operator = _operator(params) or tags.get(TAG_OPERATORS, "").replace(",", "+") or "none"
    row["operator"] = operator if row["arm"] == "grown" else "none"
    row["checkpoint_path"] = reader.recorded_checkpoint(tags, params)
    row["params_json"] = json.dumps(params, sort_keys=True)
    for key, value in params.items():
        row[f"params.{key}"] = value
    row["curve_tokens"] = curve["tokens"]
    row["curve_flops"] = curve["flops"]
    row["curve_val_loss"] = curve["val_loss"]
    return row, curve


def _operator(params: dict[str, str]) -> str | None:
    """`operator` param, else the schedule's stage operators joined by `+` (multi-stage)."""
    stages = sorted(
        (int(m.group(1)), v) for k, v in params.items() if (m := _STAGE_OP.fullmatch(k))
    )
    return _first(params, P_OPERATOR) or "+".join(v for _, v in stages) or None


def _kind(status: str, mlflow_status: str) -> str:
    try:
        return status_kind(status)
    except ValueError:
        return {"FINISHED": "completed", "KILLED": "stopped", "FAILED": "failed"}.get(
            mlflow_status, "running"
        )


def _factor(client: Any, run_id: str, params: dict[str, str]) -> float:
    given = _num(_first(params, P_FACTOR))
    if math.isfinite(given):
        return given
    for key in ("n_layers", "d_model"):
        hist = reader.metric_history(client, run_id, key)
        if hist and hist[0][1] and hist[-1][1] != hist[0][1]:
            return hist[-1][1] / hist[0][1]
    return math.nan


def collect_runs(tracking_uri: str, experiments: Sequence[str]) -> tuple[pa.Table, pa.Table]:
    """(trials, curves) for every trial run of the named experiments."""
    client = reader.open_client(tracking_uri)
    rows: list[dict[str, Any]] = []
    long: dict[str, list] = {
        k: [] for k in ("experiment", "run_id", "trial_id", "arm", "tokens", "flops", "val_loss")
    }
    for name in experiments:
        for run in reader.trial_runs(client, name):
            row, curve = trial_row(client, run, name)
            rows.append(row)
            n = len(curve["flops"])
            long["experiment"] += [name] * n
            long["run_id"] += [row["run_id"]] * n
            long["trial_id"] += [row["trial_id"]] * n
            long["arm"] += [row["arm"]] * n
            long["tokens"] += curve["tokens"]
            long["flops"] += curve["flops"]
            long["val_loss"] += curve["val_loss"]
    return _rows_to_table(rows), pa.table(long)


def _rows_to_table(rows: list[dict[str, Any]]) -> pa.Table:
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    data = {c: [r.get(c) for r in rows] for c in columns}
    if not rows:
        return pa.table({"run_id": pa.array([], pa.string())})
    fields = []
    for col in columns:
        if col.startswith("curve_"):
            fields.append(pa.field(col, pa.list_(pa.float64())))
        elif col.startswith("params.") or col in ("checkpoint_path",):
            fields.append(pa.field(col, pa.string()))
        elif col in ("seed", "n_growth_events"):
            fields.append(pa.field(col, pa.int64()))
        else:
            sample = next((v for v in data[col] if v is not None), "")
            fields.append(pa.field(col, pa.float64() if isinstance(sample, float) else pa.string()))
    return pa.table(data, schema=pa.schema(fields))
