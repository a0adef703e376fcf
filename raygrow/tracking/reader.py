"""Reading a search back from MLflow: its trial runs, their curves and recorded checkpoints.

Used by `raygrow.analysis` and `python -m raygrow.export`. MLflow is imported inside the
functions: importing it costs seconds, and `import raygrow.tracking` must stay cheap.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from raygrow.errors import ConfigError
from raygrow.tracking.schema import TAG_CHECKPOINT, TAG_CHECKPOINT_ARTIFACT, TAG_ROLE


def open_client(tracking_uri: str) -> Any:
    """An `MlflowClient` of the store."""
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri)


def trial_runs(client: Any, experiment: str) -> Iterator[Any]:
    """Every trial run (tag raygrow.role=trial) of the named experiment, oldest first."""
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        known = sorted(e.name for e in client.search_experiments())
        raise ConfigError(
            f"experiment {experiment!r} not found in {client.tracking_uri}; "
            f"known experiments: {known}"
        )
    token = None
    while True:
        page = client.search_runs(
            [exp.experiment_id],
            filter_string=f"tags.`{TAG_ROLE}` = 'trial'",
            max_results=1000,
            page_token=token,
            order_by=["attributes.start_time ASC"],
        )
        yield from page
        token = page.token
        if not token:
            break


def metric_history(client: Any, run_id: str, key: str) -> list[tuple[int, float]]:
    """(step, value) of every logged point of metric `key`, by step."""
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))


def run_curve(client: Any, run_id: str) -> dict[str, list]:
    """(tokens, flops, val_loss) of a run joined on step, plus growth events as (tokens, flops)."""
    loss = {m.step: m.value for m in client.get_metric_history(run_id, "val_loss")}
    flops = {m.step: m.value for m in client.get_metric_history(run_id, "flops")}
    tokens = {m.step: m.value for m in client.get_metric_history(run_id, "tokens")}
    steps = sorted(s for s in loss if s in flops)
    out: dict[str, list] = {
        "tokens": [float(tokens.get(s, s)) for s in steps],
        "flops": [float(flops[s]) for s in steps],
        "val_loss": [float(loss[s]) for s in steps],
        "growth": [],
    }
    for m in client.get_metric_history(run_id, "growth_flops"):
        out["growth"].append((float(m.step), float(m.value)))
    out["growth"] = sorted(set(out["growth"]))
    return out


def recorded_checkpoint(tags: Mapping[str, str], params: Mapping[str, str]) -> str | None:
    """The checkpoint a run records: tag `raygrow.checkpoint_artifact` (a `runs:/` URI), tag
    `raygrow.checkpoint_path` (older searches: a path on the node that trained), tag or param
    `checkpoint_path` (first hit wins), or None. `raygrow.tracking.artifacts.checkpoint_of_run`
    downloads it."""
    return (
        tags.get(TAG_CHECKPOINT_ARTIFACT)
        or tags.get(TAG_CHECKPOINT)
        or tags.get("checkpoint_path")
        or params.get("checkpoint_path")
    )
