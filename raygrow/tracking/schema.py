"""What a search's MLflow records are made of: metric and tag names, arms, statuses, key rules.

Pure Python (no MLflow import): the writer, the reader and the analysis share these names.
"""

from __future__ import annotations

import json
import numbers
from collections.abc import Mapping
from typing import Any

from raygrow.results import ARMS

# metric names shared by Ray reports, MLflow and exported tables
CONTRACT_METRICS = (
    "val_loss",
    "val_bpb",
    "train_loss",
    "tokens",
    "flops",
    "tokens_per_s",
    "lr",
    "n_params",
    "speedup_vs_scratch",
    "test_loss",  # held-out test split: the final report only (evaluated once, at the end)
    "test_bpb",
)
# numeric extras the loop and the Ray worker report (elapsed_s: wall seconds since the
# attempt's first eval); anything else (Tune's autofilled
# time_this_iter_s, training_iteration, pid, ...) is not logged
EXTRA_METRICS = (
    "mfu",
    "n_layers",
    "d_model",
    "growth_events",
    "step",
    "grad_norm",
    "elapsed_s",
    "flops_reused",  # compute taken from the prefix store (raygrow.train.prefixes)
    "speedup_test_vs_scratch",  # speedup at matched test loss (reported, never selected on)
)
# the search's own cost, logged under these names to its parent run (raygrow.search.results)
SEARCH_METRICS = ("search_flops", "search_flops_naive", "net_speedup_x")

TAG_ROLE = "raygrow.role"  # "search" | "trial"
TAG_SEARCH = "raygrow.search"
TAG_TRIAL = "raygrow.trial_id"
TAG_ARM = "raygrow.arm"
TAG_STATUS = "raygrow.status"
TAG_STATUS_KIND = "raygrow.status_kind"  # a kind of raygrow.results.status
TAG_OPERATORS = "raygrow.operators"
TAG_CHECKPOINT = "raygrow.checkpoint_path"  # a node-local path: runs of older searches only
# runs:/<run_id>/checkpoint/ckpt-<step>.pt: the trial's newest checkpoint (tracking.artifacts)
TAG_CHECKPOINT_ARTIFACT = "raygrow.checkpoint_artifact"
CHECKPOINT_ARTIFACT_DIR = "checkpoint"
TAG_PARENT = "mlflow.parentRunId"

_ARM_ALIASES = {
    "grown": "grown",
    "growth": "grown",
    "schedule": "grown",
    "scratch": "scratch",
    "baseline": "scratch",
    "target": "scratch",
    "from_scratch": "scratch",
    "small": "small",
    "small_only": "small",
    "source": "small",
}
# a finished trial's status kind -> the MLflow run status it ends with
MLFLOW_STATUS = {"completed": "FINISHED", "stopped": "KILLED", "failed": "FAILED"}

# longest param / tag value kept (MLflow rejects longer ones); longer texts end in "…"
MAX_PARAM_LEN = 6000
MAX_TAG_LEN = 8000


def canonical_arm(arm: str) -> str:
    """`grown` | `scratch` | `small` for an arm name or one of its aliases (`baseline`, ...)."""
    canon = _ARM_ALIASES.get(str(arm).lower())
    if canon is None:
        raise ValueError(f"unknown arm {arm!r}; use one of {ARMS}")
    return canon


def flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dicts (and lists of dicts, e.g. schedule stages) -> {"a.b.0.c": scalar}."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, name + "."))
        elif _is_record_list(value):
            for i, item in enumerate(value):
                out.update(flatten(item, f"{name}.{i}."))
        else:
            out[name] = value
    return out


def _is_record_list(value: Any) -> bool:
    return (
        isinstance(value, list | tuple)
        and bool(value)
        and all(isinstance(v, Mapping) for v in value)
    )


def clean_key(key: str) -> str:
    """MLflow keys allow alphanumerics, `_ - . / : space`; anything else becomes `_`."""
    clean = "".join(c if c.isalnum() or c in "_-./: " else "_" for c in str(key))
    return clean.strip("/").replace("..", "._")[:250] or "_"


def to_text(value: Any, limit: int) -> str:
    """A param or tag value as text of at most `limit` characters (lists and dicts as JSON)."""
    if isinstance(value, str):
        text = value
    elif isinstance(value, list | tuple | dict):
        text = json.dumps(value, default=str, separators=(",", ":"))
    else:
        text = str(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def is_number(value: Any) -> bool:
    """A real number that may become a metric (bools are not)."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)
