"""A trial's checkpoint in the MLflow artifact store: uploaded where the trial trained, read back
by `python -m raygrow.export --run-id` from any machine that reaches the tracking server.

Artifacts of a trial run (next to what `SearchTracker` logs from the driver):

    checkpoint/ckpt-<step>.pt   the newest checkpoint the training loop wrote (an older one is
                                deleted after the newer one is uploaded)
    checkpoint/tokenizer.json   the BPE tokenizer the run trained on (byte runs need none)

The trial process (`raygrow.search.trainable`) uploads with `TrialArtifacts`, which finds the
run the driver created for it by the tags `raygrow.search` + `raygrow.trial_id` (the same keys
the driver uses on resume), and reports the `runs:/<run_id>/checkpoint/<file>` URI to Tune; the
driver tags the run with it (`raygrow.checkpoint_artifact`). Where the files go is the
experiment's artifact location: with a SQLite store, `<store folder>/mlartifacts/<experiment>/`;
with `mlflow server --artifacts-destination`, proxied through the server (`mlflow-artifacts:/`).

An upload failure never stops training: it is printed once (per kind) and training goes on.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

from raygrow.errors import ConfigError
from raygrow.tracking.reader import open_client, recorded_checkpoint
from raygrow.tracking.schema import (
    CHECKPOINT_ARTIFACT_DIR,
    TAG_ROLE,
    TAG_SEARCH,
    TAG_TRIAL,
)
from raygrow.tracking.store import sqlite_path

TOKENIZER_ARTIFACT = "tokenizer.json"
_LEGACY_DIRS = ("checkpoints",)  # runs whose search logged a checkpoints folder


def artifact_uri(run_id: str, path: str) -> str:
    """`runs:/<run_id>/<path>`: resolvable by every MLflow client of the store."""
    return f"runs:/{run_id}/{path}"


class TrialArtifacts:
    """Uploads one trial's checkpoints (and tokenizer) to its MLflow run, from the trial process.

    `tokenizer_file`: uploaded once, with the first checkpoint. `wait_s`: how long to wait for
    the driver to create the run (it does so when Tune starts the trial)."""

    def __init__(
        self,
        tracking_uri: str,
        experiment: str,
        search_id: str,
        trial_id: str,
        tokenizer_file: str | Path | None = None,
        wait_s: float = 60.0,
    ) -> None:
        self.tracking_uri = tracking_uri
        self.experiment = experiment
        self.search_id = search_id
        self.trial_id = trial_id
        self.tokenizer_file = Path(tokenizer_file) if tokenizer_file else None
        self.wait_s = wait_s
        self._client: Any = None
        self._run_id: str | None = None
        self._tokenizer_sent = False
        self._warned: set[str] = set()

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = open_client(self.tracking_uri)
        return self._client

    def run_id(self) -> str | None:
        """The trial's run (None: not found within `wait_s`)."""
        if self._run_id is None:
            deadline = time.monotonic() + self.wait_s
            while True:
                self._run_id = find_trial_run(
                    self.client, self.experiment, self.search_id, self.trial_id
                )
                if self._run_id is not None or time.monotonic() > deadline:
                    break
                time.sleep(1.0)
        return self._run_id

    def upload_checkpoint(self, checkpoint: Path) -> str | None:
        """Upload `checkpoint` as `checkpoint/<its name>` (and the tokenizer, once), delete the
        older checkpoint artifacts; returns its `runs:/` URI, or None when it failed (warned)."""
        try:
            return self._upload(Path(checkpoint))
        except Exception as exc:  # noqa: BLE001 - never stop training for tracking
            self._warn("checkpoint upload", exc)
            return None

    def _upload(self, checkpoint: Path) -> str | None:
        run_id = self.run_id()
        if run_id is None:
            missing = f"no run tagged {TAG_TRIAL}={self.trial_id} after {self.wait_s:g}s"
            self._warn("finding the trial's run", LookupError(missing))
            return None
        client = self.client
        client.log_artifact(run_id, str(checkpoint), artifact_path=CHECKPOINT_ARTIFACT_DIR)
        if self.tokenizer_file is not None and not self._tokenizer_sent:
            if self.tokenizer_file.is_file():
                client.log_artifact(
                    run_id, str(self.tokenizer_file), artifact_path=CHECKPOINT_ARTIFACT_DIR
                )
            self._tokenizer_sent = True
        try:
            self._delete_older(run_id, checkpoint.name)
        except Exception as exc:  # noqa: BLE001 - an old file left behind is harmless
            self._warn("deleting an older checkpoint artifact", exc)
        return artifact_uri(run_id, f"{CHECKPOINT_ARTIFACT_DIR}/{checkpoint.name}")

    def _delete_older(self, run_id: str, keep: str) -> None:
        from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

        old = [
            f.path
            for f in self.client.list_artifacts(run_id, CHECKPOINT_ARTIFACT_DIR)
            if _is_checkpoint(f.path) and Path(f.path).name != keep
        ]
        if old:
            store = self.client.get_run(run_id).info.artifact_uri
            repo = get_artifact_repository(store, tracking_uri=self.tracking_uri)
            for path in old:
                repo.delete_artifacts(path)

    def _warn(self, what: str, exc: BaseException) -> None:
        if what not in self._warned:
            self._warned.add(what)
            print(
                f"raygrow.search: warning: trial {self.trial_id}: MLflow {what} failed "
                f"({type(exc).__name__}: {exc}); training goes on",
                file=sys.stderr,
                flush=True,
            )


def find_trial_run(client: Any, experiment: str, search_id: str, trial_id: str) -> str | None:
    """Run id of the trial `trial_id` of the search `search_id` (oldest if several), or None."""
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return None
    found = client.search_runs(
        [exp.experiment_id],
        filter_string=f"tags.`{TAG_ROLE}` = 'trial' and tags.`{TAG_TRIAL}` = '{_quote(trial_id)}'"
        f" and tags.`{TAG_SEARCH}` = '{_quote(search_id)}'",
        max_results=10,
        order_by=["attributes.start_time ASC"],
    )
    return found[0].info.run_id if found else None


# ------------------------------------------------------------------------------- reading back
def checkpoint_of_run(tracking_uri: str, run_id: str, download_to: str | Path) -> Path:
    """A local folder holding the run's newest checkpoint (and its tokenizer.json, if stored),
    downloaded from the run's artifacts into `download_to` (used by `python -m raygrow.export`).

    Looked up in this order: artifacts `checkpoint/` (this layout), artifacts `checkpoints/`
    (older searches), then a checkpoint path the run records (tag `raygrow.checkpoint_path`) if
    that exists on this machine. Every failure is one ConfigError line naming the fix.
    """
    from mlflow.exceptions import MlflowException

    db = sqlite_path(tracking_uri)
    if db is not None and not db.is_file():
        raise ConfigError(
            f"no MLflow store at {db}; pass the search's store (--tracking-uri "
            "sqlite:////abs/<search --out>/mlflow.db or http://host:port)"
        )
    client = open_client(tracking_uri)
    try:
        run = client.get_run(run_id)
    except MlflowException as exc:
        raise ConfigError(
            f"run {run_id!r} not found in {tracking_uri} ({exc.error_code}); check --run-id and "
            "--tracking-uri"
        ) from None
    except Exception as exc:  # noqa: BLE001 - e.g. the server went away after the check
        raise ConfigError(
            f"cannot read run {run_id!r} from {tracking_uri} ({type(exc).__name__}); check that "
            "the tracking server runs and --tracking-uri points at it"
        ) from None
    store = run.info.artifact_uri
    _check_local_store(run_id, store)
    for folder in (CHECKPOINT_ARTIFACT_DIR, *_LEGACY_DIRS):
        try:
            files = [f.path for f in client.list_artifacts(run_id, folder) if not f.is_dir]
        except Exception as exc:  # noqa: BLE001 - any client/store error: one line
            raise _unreadable(run_id, store, exc) from None
        checkpoints = sorted(p for p in files if _is_checkpoint(p))
        if not checkpoints:
            continue
        wanted = [checkpoints[-1]] + [p for p in files if Path(p).name == TOKENIZER_ARTIFACT]
        target = Path(download_to) / "run-artifacts" / folder
        target.mkdir(parents=True, exist_ok=True)
        for path in wanted:  # a file lands in dst_path under its own name
            try:
                client.download_artifacts(run_id, path, dst_path=str(target))
            except Exception as exc:  # noqa: BLE001
                raise _unreadable(run_id, store, exc) from None
        return target
    recorded = recorded_checkpoint(run.data.tags, run.data.params)
    if recorded and not recorded.startswith("runs:/") and Path(recorded).exists():
        return Path(recorded)  # a run recorded before checkpoints became artifacts
    raise ConfigError(
        f"run {run_id} has no checkpoint artifact ({CHECKPOINT_ARTIFACT_DIR}/ckpt-*.pt): the "
        "trial stopped or failed before its first checkpoint, or was recorded by an older "
        "raygrow; export a completed trial's run, or pass --checkpoint PATH"
    )


def _is_checkpoint(path: str) -> bool:
    name = Path(path).name
    return name.startswith("ckpt-") and name.endswith(".pt")


def _check_local_store(run_id: str, store: str) -> None:
    """A `file:` artifact store of a run made on another machine is not here: say so (MLflow
    would list it as empty). The experiment's folder is checked, since a run that logged no
    artifacts has no folder of its own."""
    from urllib.parse import unquote, urlparse

    parsed = urlparse(store)
    if parsed.scheme not in ("", "file"):  # s3:, mlflow-artifacts:, ...: the client reads them
        return
    local = Path(unquote(parsed.path))
    experiment_folder = local.parent.parent  # <location>/<run_id>/artifacts
    if not experiment_folder.is_dir():
        raise ConfigError(
            f"the artifacts of run {run_id} are in {store}, which this machine cannot read; run "
            "the export where that folder is, or serve the artifacts through the tracking server "
            "(`mlflow server --artifacts-destination ...`), or pass --checkpoint PATH"
        )


def _unreadable(run_id: str, store: str, exc: BaseException) -> ConfigError:
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
    return ConfigError(
        f"cannot read the artifacts of run {run_id} in {store} ({type(exc).__name__}: {first}); "
        "give this machine access to that artifact store (credentials, path) or serve it "
        "through the tracking server (`mlflow server --artifacts-destination ...`)"
    )


def _quote(text: str) -> str:
    return str(text).replace("\\", "\\\\").replace("'", "\\'")
