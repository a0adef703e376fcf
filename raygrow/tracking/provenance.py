"""Where a run came from: code commit, run context, package versions, and the corpus it read.

MLflow is imported inside the functions that need it: importing it costs seconds, and
`import raygrow.tracking` must stay cheap for the CLIs that only check their store.
"""

from __future__ import annotations

import json
import subprocess
import warnings
from importlib import metadata
from pathlib import Path
from typing import Any

PACKAGES = ("raygrow", "torch", "ray", "optuna", "mlflow", "pyarrow", "numpy")


def package_versions() -> dict[str, str]:
    """Installed versions of the stack (read from metadata: nothing is imported)."""
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def git_commit(path: str | Path | None = None) -> tuple[str, bool] | None:
    """(commit, dirty) of the repository holding `path` (default: this package), or None."""
    where = str(Path(path or __file__).resolve().parent)
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True, timeout=5
        )
        if commit.returncode:
            return None
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=where,
            capture_output=True,
            text=True,
            timeout=5,
        )
        return commit.stdout.strip(), bool(dirty.stdout.strip())
    except (OSError, subprocess.SubprocessError):
        return None


def context_tags() -> dict[str, str]:
    """MLflow's standard run-context tags, as `mlflow.start_run` would set them.

    `mlflow.tracking.context.registry.resolve_tags`: `mlflow.user`, `mlflow.source.name` and
    `.type`, and, when the program's main file is in a git checkout, `mlflow.source.git.commit`,
    `.branch` and `.repoURL`. When the main file is not (a test runner, an installed console
    script), the commit of the checkout holding this package is used, as before. Added on top:
    `raygrow.git_dirty` (MLflow has no such tag).
    """
    from mlflow.tracking.context.registry import resolve_tags

    tags = {str(k): str(v) for k, v in resolve_tags().items()}
    commit = git_commit()
    if commit is not None:
        tags.setdefault("mlflow.source.git.commit", commit[0])
        if tags["mlflow.source.git.commit"] == commit[0]:
            tags["raygrow.git_dirty"] = str(commit[1]).lower()
    return tags


def corpus_dataset_input(manifest: Any, folder: str | Path, context: str = "training") -> Any:
    """An MLflow `DatasetInput` describing a prepared token corpus (`raygrow.data.Manifest`).

    A metadata-only `mlflow.data.meta_dataset.MetaDataset`: name `<source> (<tokenizer>)`,
    digest = the first 16 hex digits of the manifest's `content_sha256`, source = the prepared
    folder; the profile holds the full hash and the token/document/byte counts of each split.
    Tagged `mlflow.data.context=<context>`.
    """
    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset
    from mlflow.entities import Dataset, DatasetInput, InputTag
    from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

    source = str(manifest.source)
    short = source if manifest.source_kind == "default" else Path(source).name or source
    with warnings.catch_warnings():  # "can be interpreted in multiple ways": both are local
        warnings.simplefilter("ignore")
        where = resolve_dataset_source(str(Path(folder).resolve()))
    meta = MetaDataset(
        where, name=f"{short} ({manifest.tokenizer})", digest=manifest.content_sha256[:16]
    )
    profile = {
        "content_sha256": manifest.content_sha256,
        "source": source,
        "source_kind": manifest.source_kind,
        "tokenizer": manifest.tokenizer,
        "vocab_size": manifest.vocab_size,
        "smoke_test": manifest.smoke_test,
        **{
            f"{split}_{key}": getattr(info, key)
            for split, info in sorted(manifest.splits.items())
            for key in ("tokens", "documents", "text_bytes")
        },
    }
    dataset = Dataset(**meta.to_dict(), profile=json.dumps(profile, sort_keys=True))
    return DatasetInput(dataset, tags=[InputTag(MLFLOW_DATASET_CONTEXT, context)])
