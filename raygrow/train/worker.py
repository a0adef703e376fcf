"""What runs inside each Ray Train worker: the ordinary training loop plus Ray reporting.

`train_fn_per_worker(spec)` is the TorchTrainer's per-worker function. It builds the same
`Trainer` as a single-process run, with `DistContext.from_torch(device)` (TorchTrainer has already
set up the gloo/nccl process group) and `RayReportHooks`, which calls `ray.train.report` at every
evaluation on every rank (a report is a barrier across ranks). Rank 0 attaches the checkpoint the
loop has just written, so Ray's checkpoints *are* the loop's files:

- local storage (the default): the loop's file is hard-linked into
  `<storage>/<run>/checkpoint_<step>/` and reported with `CheckpointUploadMode.NO_UPLOAD`, so a
  checkpoint costs Ray no copy at all;
- remote storage (S3, GCS, NFS on another device): the file is staged in a temporary folder and
  uploaded in the background (`CheckpointUploadMode.ASYNC`), off the training thread.

On a (re)start the worker resumes from `ray.train.get_checkpoint()` when Ray has one (Train hands
the latest reported checkpoint to the new worker group after a failure, and to a new `fit()` of
the same `RunConfig(storage_path, name)`); otherwise from the explicit `resume` path, if any.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import ray
import ray.train
import torch

from raygrow.train.config import TrainConfig

CHECKPOINT_DIR_PREFIX = "checkpoint_"
GROWTH_REPORTS_KEY = "growth_reports"
"""Report key of the growth events (`GrowthReport.to_dict()` + step/tokens/flops/stage) that
happened since the previous report."""


def _local_storage_dir() -> Path | None:
    """The run's experiment folder when Ray Train stores it on the local filesystem."""
    try:
        import pyarrow.fs

        storage = ray.train.get_context().get_storage()  # DeveloperAPI, pinned Ray version
        if isinstance(storage.storage_filesystem, pyarrow.fs.LocalFileSystem):
            return Path(storage.experiment_fs_path)
    except Exception:  # noqa: BLE001 - any surprise means "treat as remote"
        return None
    return None


def link_or_copy(src: Path, dst: Path) -> None:
    """Place `src` at `dst` (atomically replacing it): a hard link, or a copy across devices."""
    tmp = dst.with_name(f".{dst.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    try:
        os.link(src, tmp)
    except OSError:
        shutil.copy2(src, tmp)
    os.replace(tmp, dst)


class RayReportHooks:
    """`LoopHooks` that forward every evaluation to `ray.train.report` (all ranks)."""

    def __init__(self, resumed_from_step: int | None = None) -> None:
        self.resumed_from_step = resumed_from_step
        self.storage_dir = _local_storage_dir()
        self.first_eval_time: float | None = None
        self.pending_growth: list[dict[str, Any]] = []

    def report_dict(self, metrics: dict[str, Any]) -> dict[str, Any]:
        """The loop's evaluation record plus Tune's step axis and wall-clock fields, and the
        growth events since the previous report (`growth_reports`: the driver logs them to
        MLflow; it never reads them from the trial's files)."""
        now = time.time()
        if self.first_eval_time is None:
            self.first_eval_time = now
        report = dict(metrics)
        if self.pending_growth:
            report[GROWTH_REPORTS_KEY] = list(self.pending_growth)
            self.pending_growth.clear()
        report["timesteps_total"] = metrics["tokens"]  # MLflow/Tune step axis = tokens
        report["resumed_from_step"] = self.resumed_from_step
        report["wall_time"] = now
        report["elapsed_s"] = now - self.first_eval_time  # since this attempt's first eval
        return report

    def on_eval(self, metrics: dict[str, Any], checkpoint: Path | None) -> None:
        from ray.train import Checkpoint, CheckpointUploadMode

        report = self.report_dict(metrics)
        if checkpoint is None:
            ray.train.report(report)
            return
        name = f"{CHECKPOINT_DIR_PREFIX}{metrics['step']:09d}"
        if self.storage_dir is not None:
            folder = self.storage_dir / name
            folder.mkdir(parents=True, exist_ok=True)
            link_or_copy(checkpoint, folder / checkpoint.name)
            ray.train.report(
                report,
                checkpoint=Checkpoint.from_directory(str(folder)),
                checkpoint_upload_mode=CheckpointUploadMode.NO_UPLOAD,
            )
            return
        staging = Path(tempfile.mkdtemp(prefix="raygrow-ckpt-"))
        link_or_copy(checkpoint, staging / checkpoint.name)
        ray.train.report(
            report,
            checkpoint=Checkpoint.from_directory(str(staging)),
            checkpoint_dir_name=name,
            checkpoint_upload_mode=CheckpointUploadMode.ASYNC,
            delete_local_checkpoint_after_upload=True,
        )

    def on_growth(self, report: dict[str, Any]) -> None:
        """Keep the event for the next report (every growth is followed by an evaluation)."""
        self.pending_growth.append(dict(report))


def checkpoint_file(folder: str | Path) -> Path | None:
    """The loop checkpoint inside a reported Ray checkpoint folder."""
    files = sorted(Path(folder).glob("ckpt-*.pt"))
    return files[-1] if files else None


def open_reported_checkpoint(checkpoint: Any, stack: contextlib.ExitStack) -> tuple[Path, int]:
    """The loop file inside a reported Ray/Tune `Checkpoint` (local for the `stack`'s life)
    and its step, to resume from."""
    folder = stack.enter_context(checkpoint.as_directory())
    resume = checkpoint_file(folder)
    if resume is None:
        raise FileNotFoundError(f"checkpoint {checkpoint.path} has no ckpt-*.pt file")
    return resume, int(resume.stem.split("-")[1])


def train_fn_per_worker(spec: dict[str, Any]) -> None:
    """TorchTrainer per-worker function; `spec` is built by `raygrow.train.driver`."""
    import ray.train.torch

    from raygrow.train.dist import DistContext
    from raygrow.train.loop import Trainer

    config = TrainConfig.from_dict(spec["config"])
    schedule = None
    if spec["schedule"] is not None:
        from raygrow.schedule import GrowthSchedule

        schedule = GrowthSchedule.from_dict(spec["schedule"])
    device = ray.train.torch.get_device() if spec["use_gpu"] else torch.device("cpu")
    torch.set_num_threads(config.threads or spec["threads"])
    config = config.replace(device=str(device), threads=None)
    data = ray.get(spec["data"]) if spec["data"] is not None else None
    dist = DistContext.from_torch(device)

    ray_ckpt = ray.train.get_checkpoint()
    with contextlib.ExitStack() as stack:
        resume: str | Path | None = spec["resume"]
        resumed_from_step = None
        if ray_ckpt is not None:
            resume, resumed_from_step = open_reported_checkpoint(ray_ckpt, stack)
        trainer = Trainer(
            config,
            schedule,
            resume=resume,
            dist=dist,
            hooks=RayReportHooks(resumed_from_step),
            data=data,
            verbose=spec["verbose"],
        )
    trainer.run()
