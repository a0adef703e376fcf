"""The results core: from trial records to speedups, validity and the G_stack formula.

Torch-free and Ray-free, so the search's ranked table, `raygrow.guidelines` (analysis) and the
benchmarks share one implementation of each rule:

- `status`: the status vocabulary (`completed`, `stopped by ASHA at FLOPs X`, `failed: why`, ...)
- `records`: `TrialRecord` (arm kind and budget fraction as fields)
- `speedup`: speedup at matched loss against annealed scratch runs, with bounds
- `compare`: the scratch frontier per group (paired / pooled seeds), per-record speedups at
  matched `val` (selection) or held-out `test` loss, the target's loss and the validity rule
- `gstack`: G_stack's growth-timing formula
- `stats`: means with 95% t-intervals over seed replicates
"""

from raygrow.results.compare import (
    Comparison,
    Validity,
    compare,
    completed_scratch,
    scratch_points,
    target_loss,
    validity,
)
from raygrow.results.gstack import GSTACK, gstack_growth_tokens
from raygrow.results.records import ARMS, ArmKind, Split, TrialRecord, finite
from raygrow.results.speedup import (
    Speedup,
    flops_to_reach,
    interpolate_curve,
    scratch_frontier,
    speedup_at_matched_loss,
)
from raygrow.results.stats import Interval, mean_interval
from raygrow.results.status import (
    KIND_ORDER,
    STATUS_KINDS,
    StatusKind,
    status_kind,
    trial_status,
)

__all__ = [
    "ARMS",
    "GSTACK",
    "Interval",
    "KIND_ORDER",
    "STATUS_KINDS",
    "ArmKind",
    "Comparison",
    "Speedup",
    "Split",
    "StatusKind",
    "TrialRecord",
    "Validity",
    "compare",
    "completed_scratch",
    "finite",
    "flops_to_reach",
    "gstack_growth_tokens",
    "interpolate_curve",
    "mean_interval",
    "scratch_frontier",
    "scratch_points",
    "speedup_at_matched_loss",
    "status_kind",
    "target_loss",
    "trial_status",
    "validity",
]
