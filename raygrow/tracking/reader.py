"""Reading a search back from MLflow: its trial runs, their curves and checkpoints.

Used by `raygrow.analysis` and `python -m raygrow.export`. MLflow is imported inside the
functions: importing it costs seconds, and `import raygrow.tracking` must stay cheap.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from raygrow.errors import ConfigError
from raygrow.tracking.schema import TAG_CHECKPOINT, TAG_ROLE


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
    """The checkpoint a run records: tag `raygrow.checkpoint_path`, tag or param
    `checkpoint_path` (first hit wins), or None."""
    return tags.get(TAG_CHECKPOINT) or tags.get("checkpoint_path") or params.get("checkpoint_path")


def checkpoint_of_run(tracking_uri: str, run_id: str, download_to: str | Path) -> Path:
    """Where a trial's final checkpoint is (used by `python -m raygrow.export`).

    Looked up in this order: `recorded_checkpoint` (a file, or a run's checkpoints folder: its
    newest ckpt-*.pt), then the run's artifacts `checkpoints/` or `checkpoint/` (downloaded
    into `download_to`).
    """
    from mlflow.exceptions import MlflowException

    client = open_client(tracking_uri)
    try:
        run = client.get_run(run_id)
    except MlflowException as exc:
        raise ConfigError(
            f"run {run_id!r} not found in {tracking_uri} ({exc.error_code}); check --run-id and "
            "--tracking-uri"
        ) from None
    recorded = recorded_checkpoint(run.data.tags, run.data.params)
    if recorded:
        path = Path(recorded)
        if not path.exists():
            raise ConfigError(
                f"run {run_id} records checkpoint {recorded!r}, which does not exist on this "
                "machine; copy it here and pass --checkpoint PATH"
            )
        return path
    for folder in ("checkpoints", "checkpoint"):
        if client.list_artifacts(run_id, folder):
            return Path(client.download_artifacts(run_id, folder, dst_path=str(download_to)))
    raise ConfigError(
        f"run {run_id} has no checkpoint recorded (tag {TAG_CHECKPOINT}, param checkpoint_path "
        "or artifacts checkpoints/); pass --checkpoint PATH"
    )
