"""`SearchConfig`: one schedule search, resolved from the CLI and validated before Ray starts.

It is saved as `search.json` in the experiment folder, so `--resume DIR` needs nothing else. All
sizes derive from three inputs: the *target* model, the *budget* (tokens the target trains from
scratch; grown runs train the same tokens with fewer FLOPs) and the base training settings.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from raygrow.errors import ConfigError
from raygrow.flops import flops_per_token
from raygrow.model import ModelConfig
from raygrow.train.config import TrainConfig, load_config_file

CONFIG_FILE = "search.json"
SAMPLERS = ("tpe", "random", "grid")
SCHEDULERS = ("asha", "fifo")

# Base training settings of every arm unless --target CONFIG gives others (TrainConfig keys).
DEFAULT_TRAIN: dict[str, Any] = {
    "seq_len": 128,
    "batch_size": 8,
    "lr": 3e-3,
    "min_lr_frac": 0.1,
    "lr_schedule": "cosine",
    "eval_windows": 64,
    "log_every_steps": 0,
}
SMOKE_TRAIN: dict[str, Any] = {
    "seq_len": 64,
    "batch_size": 8,
    "lr": 3e-3,
    "min_lr_frac": 0.1,
    "lr_schedule": "cosine",
    "eval_windows": 16,
    "log_every_steps": 0,
}


@dataclass(frozen=True, kw_only=True)
class SearchConfig:
    """Everything that defines a search (the experiment folder's `search.json`)."""

    space: str = "default"
    """Registry name in `search_spaces.SPACES` or `/abs/path/file.py:function`."""
    target: dict[str, Any] = field(default_factory=lambda: ModelConfig.from_shape("4x64").to_dict())
    """ModelConfig.to_dict() of the target model."""
    tokens: int = 901_120
    """Token budget of every full-budget arm (the target from scratch defines the FLOP budget)."""
    train: dict[str, Any] = field(default_factory=lambda: dict(DEFAULT_TRAIN))
    """TrainConfig fields shared by all arms (model, tokens, out_dir, threads are set per arm)."""
    num_samples: int = 24
    """Optuna-sampled schedules (the baseline arms come on top)."""
    max_concurrent: int = 1
    workers: int = 1
    """Ray Train workers per trial (each takes one CPU, or one GPU with use_gpu)."""
    use_gpu: bool = False
    experiment: str = "default-4x64"
    tracking_uri: str = ""
    out: str = ""
    """Absolute experiment folder."""
    seed: int = 0
    sampler: str = "tpe"
    """`tpe` (Optuna TPE), `random`, or `grid`: every combination of the space's categorical
    choices once (exhaustive; the space must only use suggest_categorical)."""
    scheduler: str = "asha"
    """`asha` stops poor schedules early on the FLOP clock; `fifo` runs every trial to the end."""
    grace_frac: float = 0.3
    """ASHA grace period as a fraction of the FLOP budget (max_t)."""
    reduction_factor: int = 2
    baseline_fracs: tuple[float, ...] = (0.5, 0.75)
    """Shorter annealed scratch budgets (fractions of the token budget), on top of 1.0."""
    small: dict[str, Any] | None = None
    """Model of the small-only arm; None = the most common start model of the space."""
    max_failures: int = 1
    """Tune retries of a crashed trial (diverged trials are not retried)."""
    smoke_test: bool = False
    address: str | None = None
    """Ray address (None: RAY_ADDRESS if set, else a local cluster)."""
    storage: str | None = None
    """Root of the Tune and Train storage paths: a URI (s3://, gs://) or a folder every node
    mounts at the same path; None = the experiment folder (one machine)."""

    def __post_init__(self) -> None:
        checks = [
            (self.num_samples >= 0, f"--num-samples={self.num_samples} must be >= 0"),
            (self.max_concurrent >= 1, f"--max-concurrent={self.max_concurrent} must be >= 1"),
            (self.workers >= 1, f"--workers={self.workers} must be >= 1"),
            (0 < self.grace_frac <= 1, f"--grace-frac={self.grace_frac} must be in (0, 1]"),
            (
                self.reduction_factor >= 2,
                f"--reduction-factor={self.reduction_factor} must be >= 2",
            ),
            (self.max_failures >= 0, f"--max-failures={self.max_failures} must be >= 0"),
            (
                self.sampler in SAMPLERS,
                f"--sampler {self.sampler!r} is unknown; use one of {', '.join(SAMPLERS)}",
            ),
            (
                self.scheduler in SCHEDULERS,
                f"--scheduler {self.scheduler!r} is unknown; use one of {', '.join(SCHEDULERS)}",
            ),
            (
                len(self.baseline_fracs) >= 2 and all(0 < f < 1 for f in self.baseline_fracs),
                f"baseline fractions {list(self.baseline_fracs)} must be >= 2 values in (0, 1): "
                "speedup needs scratch at several annealed budgets",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)
        self.base_train()  # validates the train settings and the budget

    # ------------------------------------------------------------------ derived (not stored)
    @property
    def target_model(self) -> ModelConfig:
        return ModelConfig.from_dict(self.target)

    @property
    def small_model(self) -> ModelConfig | None:
        return ModelConfig.from_dict(self.small) if self.small else None

    @property
    def seq_len(self) -> int:
        return int(self.train.get("seq_len", 256))

    @property
    def budget_flops(self) -> float:
        """Training FLOPs of the target from scratch at the full budget: ASHA's max_t."""
        return flops_per_token(self.target_model, self.seq_len) * self.tokens

    @property
    def experiment_dir(self) -> Path:
        return Path(self.out)

    @property
    def tune_storage(self) -> str:
        """Tune's storage_path (runs `baselines` and `search` under it)."""
        return f"{(self.storage or self.out).rstrip('/')}/ray"

    @property
    def train_storage(self) -> str:
        """Train's storage_path (one run `train-<trial_id>` per trial under it)."""
        return f"{(self.storage or self.out).rstrip('/')}/train"

    def base_train(
        self, model: ModelConfig | None = None, tokens: int | None = None
    ) -> TrainConfig:
        """TrainConfig of one arm; eval/checkpoint cadence follows the full budget."""
        values = dict(self.train)
        values["model"] = model or self.target_model
        values["tokens"] = tokens or self.tokens
        values.setdefault("seed", self.seed)
        step_tokens = int(values.get("batch_size", 16)) * self.seq_len
        full_steps = max(1, self.tokens // step_tokens)
        run_steps = max(1, values["tokens"] // step_tokens)
        values.setdefault("warmup_steps", max(1, round(0.05 * full_steps)))
        values["warmup_steps"] = min(values["warmup_steps"], max(1, run_steps // 2))
        values.setdefault("eval_every_tokens", max(1, full_steps // 16) * step_tokens)
        values.setdefault("checkpoint_every_tokens", max(1, full_steps // 4) * step_tokens)
        try:
            return TrainConfig.from_dict(values)
        except ConfigError as exc:
            raise ConfigError(f"search train settings: {exc}") from None

    # ------------------------------------------------------------------ persistence
    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["baseline_fracs"] = list(self.baseline_fracs)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SearchConfig:
        data = dict(data)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ConfigError(f"{CONFIG_FILE}: unknown keys {sorted(unknown)}")
        if "baseline_fracs" in data:
            data["baseline_fracs"] = tuple(float(f) for f in data["baseline_fracs"])
        return cls(**data)

    def save(self) -> Path:
        path = self.experiment_dir / CONFIG_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n")
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, experiment_dir: str | Path) -> SearchConfig:
        path = Path(experiment_dir) / CONFIG_FILE
        if not path.is_file():
            raise ConfigError(
                f"--resume {str(experiment_dir)!r} is not a raygrow search folder (no "
                f"{CONFIG_FILE}); pass the folder a previous `python -m raygrow.search` printed"
            )
        try:
            return cls.from_dict(json.loads(path.read_text()))
        except (json.JSONDecodeError, TypeError) as exc:
            raise ConfigError(f"{path} is damaged ({exc}); start a new search") from None


def parse_target(value: str) -> tuple[ModelConfig, dict[str, Any]]:
    """`LxD` or a JSON/TOML file -> (target model, train overrides from the file).

    A file may hold ModelConfig keys, or TrainConfig keys with a `model` entry (LxD or a dict);
    then its other keys become the search's base training settings.
    """
    if "x" in value.lower() and not Path(value).suffix:
        return ModelConfig.from_shape(value), {}
    data = load_config_file(value)
    if "model" in data:
        model = data.pop("model")
        if isinstance(model, str):
            config = ModelConfig.from_shape(model)
        else:
            config = ModelConfig.from_dict(model)
        for key in ("tokens", "out_dir"):
            data.pop(key, None)
        TrainConfig.from_dict({**data, "model": config})  # validate the keys now
        return config, data
    return ModelConfig.from_dict(data), {}
