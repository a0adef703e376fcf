"""The one status vocabulary of a trial, shared by the search's table, MLflow and analysis.

A status is a short text whose first word is its *kind*:

    completed                        trained its whole token budget
    stopped by ASHA at FLOPs 1.2e12  ASHA ended it at a rung (only sampled schedules)
    failed: <reason>                 an error (diverged, crashed after retries, bad sample)
    running                          training now (the MLflow tag while a trial is live)
    unfinished                       the search ended before the trial did; `--resume` continues

Only completed runs have an annealed final loss, so only they get a speedup and enter fits.
"""

from __future__ import annotations

from typing import Literal

StatusKind = Literal["completed", "stopped", "failed", "running", "unfinished"]
STATUS_KINDS: tuple[StatusKind, ...] = ("completed", "stopped", "failed", "running", "unfinished")
KIND_ORDER: dict[str, int] = {
    "completed": 0,
    "stopped": 1,
    "running": 2,
    "unfinished": 2,
    "failed": 3,
}
"""Ranking order of the kinds in a results table (best first)."""


def status_kind(status: str) -> StatusKind:
    """`stopped by ASHA at FLOPs 1.2e12` -> `stopped`; raises ValueError on an unknown text."""
    text = status.strip().lower()
    for kind in STATUS_KINDS:
        if text == kind or text.startswith(kind + " ") or text.startswith(kind + ":"):
            return kind
    raise ValueError(
        f"trial status {status!r} must start with one of {', '.join(STATUS_KINDS)} "
        "(e.g. 'stopped by ASHA at FLOPs 1.2e12', 'failed: NaN loss')"
    )


def stopped_status(flops: float) -> str:
    return f"stopped by ASHA at FLOPs {float(flops):.3g}"


def failed_status(reason: str | None) -> str:
    return f"failed: {reason or 'unknown error'}"


def trial_status(
    *,
    tokens: float | None,
    planned_tokens: int,
    flops: float | None,
    ended: bool,
    error: str | None = None,
    errored: bool = False,
) -> str:
    """Status text of a trial from what it reported: `ended` is True once its scheduler is
    done with it (Tune's TERMINATED), `errored` when it raised."""
    if errored:
        return failed_status(error)
    if tokens is not None and tokens >= planned_tokens:
        return "completed"
    if ended:
        return stopped_status(flops or 0.0)
    return "unfinished"
