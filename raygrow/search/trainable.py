"""The Tune function trainable: one trial = one arm, trained where Tune placed the trial.

`trial_driver(config, search=...)` runs inside the Tune trial actor and turns the trial config
into a `TrainConfig` + `GrowthSchedule` (`plan_trial`, pure, shared with the results code).

- **One worker (the default)**: raygrow's loop runs in the trial process itself
  (`train_in_trial`), as Ray's Tune guide recommends for single-process trials. Every
  evaluation is a `tune.report` (metrics + the loop's checkpoint, when one was written); a
  restored trial resumes from `tune.get_checkpoint()`. ASHA's stop is graceful: the blocked
  `tune.report` ends the training thread, and with `reuse_actors=True` the same process (torch
  imported, token data and measurement caches warm) takes the next trial. No Train controller,
  worker group or placement-group cleaner is started.
- **Several workers**: a nested `TorchTrainer` (`train_with_ray_train`, Train run
  `train-<trial_id>` under `<experiment>/train/` or `<--storage>/train`), whose rank-0 reports
  reach Tune through `TuneReportCallback`. ASHA stops such a trial by killing this actor.

Either way nothing may follow training that matters: all bookkeeping lives in the driver's
callbacks and result collection, fed only by what the trial reports (metrics, growth events,
the `runs:/` URI of each checkpoint the trial uploaded to its MLflow run with
`raygrow.tracking.TrialArtifacts`). The loop writes `<experiment>/trials/<trial_id>/` on the
node that trains; nothing reads it from elsewhere.

Divergence: the loop raises `TrainingDiverged` on a NaN/inf loss; this function re-raises it as
`TrialDiverged(reason)` so Tune records the trial as ERROR with the reason, and leaves a
`DIVERGED` marker so that a Tune retry (FailureConfig, meant for crashes) fails at once instead
of re-training into the same NaN."""

from __future__ import annotations

import contextlib
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from raygrow.config import ModelConfig
from raygrow.search import lineage
from raygrow.search.config import SearchConfig
from raygrow.train.config import TrainConfig
from raygrow.train.prefixes import PrefixStore
from raygrow.train.worker import RayReportHooks, link_or_copy, open_reported_checkpoint

DIVERGED_MARKER = "DIVERGED"
BASELINE_KEY = "schedule"
SEED_KEY = "seed"
CHECKPOINT_ARTIFACT_KEY = "checkpoint_artifact"
"""Report key: `runs:/<run_id>/checkpoint/<file>` of the checkpoint uploaded before the report."""


class TrialDiverged(RuntimeError):
    """The trial's loss became NaN/inf; not retried."""


@dataclass(frozen=True)
class TrialPlan:
    arm: str
    """grown | scratch | small (the tracking arms)."""
    description: str
    train: TrainConfig
    schedule: Any
    """GrowthSchedule or None."""
    budget_frac: float
    """Fraction of the search's token budget this arm trains: 1.0 for grown and small arms,
    the baseline's fraction for scratch arms."""
    seed: int
    """Training seed (initialisation and data order)."""


# --------------------------------------------------------------------------- baseline arms
def baseline_arms(cfg: SearchConfig) -> dict[str, dict[str, Any]]:
    """The fixed arms of every search, by description (the Tune config value).

    Scratch at the full budget and at each `baseline_fracs` budget (each with its own complete,
    annealed LR schedule), and the small model alone at the full budget. Same seed, hence the
    same initialisation rule and data order as the sampled schedules.
    """
    target = cfg.target
    arms: dict[str, dict[str, Any]] = {}
    for frac in (1.0, *sorted(cfg.baseline_fracs, reverse=True)):
        arms[f"scratch {target.shape} @{frac:.0%} budget"] = {
            "arm": "scratch",
            "model": target.to_dict(),
            "frac": frac,
        }
    small = cfg.small
    if small is not None:
        arms[f"small {small.shape} only @100% budget"] = {
            "arm": "small",
            "model": small.to_dict(),
            "frac": 1.0,
        }
    return arms


def arm_tokens(cfg: SearchConfig, frac: float) -> int:
    """Token budget of a fraction of the full budget, in whole steps."""
    return lineage.arm_steps(cfg, frac) * cfg.tokens_per_step


def trial_dir(cfg: SearchConfig, trial_id: str) -> Path:
    return cfg.experiment_dir / "trials" / trial_id


def plan_trial(cfg: SearchConfig, config: dict[str, Any], trial_id: str) -> TrialPlan:
    """TrainConfig + schedule of one trial, from its Tune config (pure; no Ray). A `seed` in
    the config (a seed replicate, `--seeds`) overrides the search's training seed."""
    from raygrow.search.samples import sample_to_schedule

    out_dir = str(trial_dir(cfg, trial_id))
    seed = config.get(SEED_KEY)
    if config.get("arm") == "grown" or "growth" in config:
        schedule = sample_to_schedule(config["growth"], cfg.target, cfg.tokens, cfg.seq_len)
        model = schedule.start if schedule is not None else cfg.target
        train = cfg.base_train(model=model).replace(out_dir=out_dir)
        train = train if seed is None else train.replace(seed=int(seed))
        description = str(config.get("schedule", ""))
        return TrialPlan("grown", description, train, schedule, 1.0, train.seed)
    description = str(config[BASELINE_KEY])
    arm = baseline_arms(cfg).get(description)
    if arm is None:
        raise ValueError(f"unknown baseline arm {description!r}")
    model = ModelConfig.from_dict(arm["model"])
    train = cfg.base_train(model=model, tokens=arm_tokens(cfg, arm["frac"]))
    train = train.replace(out_dir=out_dir)
    train = train if seed is None else train.replace(seed=int(seed))
    return TrialPlan(arm["arm"], description, train, None, float(arm["frac"]), train.seed)


# --------------------------------------------------------------------------- divergence
def divergence_reason(exc: BaseException) -> str | None:
    """The loop's TrainingDiverged message if that is why training failed, else None."""
    from raygrow.train.loop import TrainingDiverged

    seen: list[BaseException] = [exc]
    failures = getattr(exc, "worker_failures", None) or {}
    seen += list(failures.values())
    for error in list(seen):
        for attr in ("cause", "__cause__", "controller_failure"):
            nested = getattr(error, attr, None)
            if isinstance(nested, BaseException):
                seen.append(nested)
    for error in seen:
        if isinstance(error, TrainingDiverged):
            return str(error)
    for error in seen:
        text = str(error)
        if "TrainingDiverged" in text:
            tail = text.split("TrainingDiverged:", 1)[-1].strip().splitlines()
            return tail[0] if tail else "loss became NaN/inf"
    return None


def marker_path(cfg: SearchConfig, trial_id: str) -> Path:
    return trial_dir(cfg, trial_id) / DIVERGED_MARKER


# --------------------------------------------------------------------------- the trainable
def trial_driver(config: dict[str, Any], search: dict[str, Any] | None = None) -> None:
    """Tune function trainable: train this trial's arm (see module doc)."""
    from ray import tune

    assert search is not None, "pass the SearchConfig dict with tune.with_parameters"
    cfg = SearchConfig.from_dict(search)
    trial_id = tune.get_context().get_trial_id()
    plan = plan_trial(cfg, config, trial_id)
    marker = marker_path(cfg, trial_id)
    if marker.exists():
        raise TrialDiverged(f"diverged: {marker.read_text().strip()} (not retried)")
    Path(plan.train.out_dir).mkdir(parents=True, exist_ok=True)
    artifacts = trial_artifacts(cfg, trial_id)
    try:
        if cfg.workers == 1:
            train_in_trial(
                plan,
                use_gpu=cfg.use_gpu,
                prefixes=lineage.prefix_store_of(cfg),
                artifacts=artifacts,
            )
        else:
            train_with_ray_train(plan, cfg, trial_id, artifacts=artifacts)
    except Exception as exc:
        reason = divergence_reason(exc)
        if reason is None:
            raise
        marker.write_text(reason + "\n")
        raise TrialDiverged(f"diverged: {reason}") from None


def trial_artifacts(cfg: SearchConfig, trial_id: str) -> Any:
    """The uploader of this trial's checkpoints to its MLflow run (`TrialArtifacts`, run found
    by the tags the driver gives it: `raygrow.search` = the experiment folder, `raygrow.trial_id`),
    or None without a tracking store."""
    if not cfg.tracking_uri:
        return None
    from raygrow.tracking import TrialArtifacts

    return TrialArtifacts(cfg.tracking_uri, cfg.experiment, str(cfg.experiment_dir), trial_id)


_TOKENS: dict[tuple[str, str | None], Any] = {}
"""Token data per (source, tokenizer), kept by a reused trial process for its next trials."""


def train_in_trial(
    plan: TrialPlan, *, use_gpu: bool, prefixes: PrefixStore | None, artifacts: Any = None
) -> None:
    """One worker: raygrow's loop in this trial process, reporting through `tune.report`.

    A restored trial continues from `tune.get_checkpoint()` (the loop's checkpoint file that
    an earlier report attached). ASHA's stop arrives as the blocked `tune.report` raising
    SystemExit in this thread; the process then takes the next trial (reuse_actors).
    `prefixes`: the search's prefix store (`raygrow.train.prefixes`): a trial resumes the
    latest stored un-grown state its schedule shares and leaves its own. `artifacts`: a
    `TrialArtifacts` that uploads every checkpoint the loop writes (and a BPE run's tokenizer).
    """
    import torch
    from ray import tune

    from raygrow.data import load_tokens
    from raygrow.train.loop import Trainer

    # as many torch threads as CPUs the trial reserved (tuner.trial_resources), never the
    # node's every core: on a cluster several trials share a node
    config = plan.train.replace(
        device="cuda" if use_gpu else "cpu", threads=plan.train.threads or 1
    )
    key = (config.data, config.tokenizer)
    if key not in _TOKENS:
        _TOKENS.clear()  # one corpus at a time: a search uses one
        _TOKENS[key] = load_tokens(config.data, config.tokenizer)
    data = _TOKENS[key]
    if artifacts is not None and data.manifest.tokenizer_file:  # BPE: export needs it
        artifacts.tokenizer_file = Path(data.path) / data.manifest.tokenizer_file
    torch.set_num_threads(config.threads)
    checkpoint = tune.get_checkpoint()
    with contextlib.ExitStack() as stack:
        resume, resumed_from_step = None, None
        if checkpoint is not None:
            resume, resumed_from_step = open_reported_checkpoint(checkpoint, stack)
        trainer = Trainer(
            config,
            plan.schedule,
            resume=resume,
            hooks=TuneReportHooks(resumed_from_step, artifacts),
            data=data,
            verbose=False,
            prefixes=prefixes,
        )
    trainer.run()


class TuneReportHooks(RayReportHooks):
    """`LoopHooks` that hand every evaluation to Tune (`tune.report`), with the loop's
    checkpoint attached when one was written (Tune copies it into the trial's storage).

    What the driver learns comes from the report, never from this node's files: the growth
    events since the last report (`growth_reports`) and, when `artifacts` uploaded the
    checkpoint to the trial's MLflow run first, its `runs:/` URI (`checkpoint_artifact`). The
    upload happens before `tune.report`, so a checkpoint ASHA stops the trial at is uploaded;
    a trial stopped between checkpoints keeps its previous one."""

    def __init__(self, resumed_from_step: int | None, artifacts: Any = None) -> None:
        self.resumed_from_step = resumed_from_step  # no Ray Train context here
        self.first_eval_time: float | None = None
        self.pending_growth: list[dict[str, Any]] = []
        self.artifacts = artifacts

    def on_eval(self, metrics: dict[str, Any], checkpoint: Path | None) -> None:
        from ray import tune

        report = self.report_dict(metrics)
        if checkpoint is None:
            tune.report(report)
            return
        if self.artifacts is not None:
            uri = self.artifacts.upload_checkpoint(checkpoint)
            if uri:
                report[CHECKPOINT_ARTIFACT_KEY] = uri
        report["checkpoint_path"] = str(checkpoint.parent)
        with tempfile.TemporaryDirectory(prefix="raygrow-ckpt-") as staging:
            link_or_copy(checkpoint, Path(staging) / checkpoint.name)
            tune.report(report, checkpoint=tune.Checkpoint.from_directory(staging))


def train_with_ray_train(
    plan: TrialPlan, cfg: SearchConfig, trial_id: str, artifacts: Any = None
) -> None:
    """Several workers: a nested TorchTrainer (Train run `train-<trial_id>`), whose rank 0
    reports reach Tune through `TuneReportCallback`. When it completes, its final checkpoint
    (in the Train run's storage, which every node of a multi-node run must share) is uploaded
    to the trial's MLflow run from this trial process (`artifacts`)."""
    from ray.tune.integration.ray_train import TuneReportCallback

    from raygrow.train.driver import build_trainer

    trainer = build_trainer(
        plan.train,
        plan.schedule,
        num_workers=cfg.workers,
        use_gpu=cfg.use_gpu,
        storage_path=cfg.train_storage,
        name=f"train-{trial_id}",
        max_failures=0,  # retries happen at the Tune level (FailureConfig), divergence never
        callbacks=[TuneReportCallback()],
        verbose=False,
    )
    result = trainer.fit()
    if artifacts is not None and getattr(result, "checkpoint", None) is not None:
        try:
            with contextlib.ExitStack() as stack:
                final, _ = open_reported_checkpoint(result.checkpoint, stack)
                artifacts.upload_checkpoint(final)
        except OSError as exc:  # the Train run's storage not readable here: warned, not fatal
            print(
                f"raygrow.search: warning: trial {trial_id}: final checkpoint not uploaded "
                f"to MLflow ({exc})",
                file=sys.stderr,
            )
