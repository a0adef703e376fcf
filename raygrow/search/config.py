"""`SearchConfig`: one schedule search, typed and validated before Ray starts.

It is saved as `search.json` in the experiment folder, so `--resume DIR` needs nothing else. All
sizes derive from three inputs: the *target* model, the *budget* (tokens the target trains from
scratch; grown runs train the same tokens with fewer FLOPs) and the base training settings.

Why `train` is a `TrainSettings` (every TrainConfig field but model/tokens/out_dir, each `None`
= not set) rather than a `TrainConfig`: the search derives warmup, eval and checkpoint cadence
and the seed from its budget *unless the user set them*, and a TrainConfig cannot tell "set to
its default" from "not set" (an explicit `checkpoint_every_tokens: 0` or `seed: 0` in a
`--target` file must win). Unset fields take TrainConfig's defaults, which live only in
`raygrow.train.config`; `base_train` turns the settings into one arm's TrainConfig. The saved
form is unchanged: `train` is the dict of the settings that are set, `target`/`small` are
ModelConfig dicts, so a `search.json` of any earlier version loads for `--resume`.

Where defaults live: TrainConfig's in `raygrow.train.config`; the search's (target, budget,
training settings, sampler, ASHA, ...) as `SearchConfig`'s field defaults; the `--smoke-test`
overrides in `SMOKE` below. The CLI restates none of them.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from raygrow.config import ModelConfig
from raygrow.errors import ConfigError
from raygrow.flops import flops_per_token
from raygrow.results.records import MAX_BUDGET_FRAC
from raygrow.train.config import TrainConfig, load_config_file

CONFIG_FILE = "search.json"
SAMPLERS = ("tpe", "random", "grid")
SCHEDULERS = ("asha", "fifo")
MIN_STEPS = 16
"""Fewest optimizer steps of a full-budget arm: below this ASHA's rungs and the LR schedule
have nothing to work with."""
PER_ARM = ("model", "tokens", "out_dir")
"""TrainConfig fields the search sets for each arm (not part of `TrainSettings`)."""


@dataclass(frozen=True, kw_only=True)
class TrainSettings:
    """TrainConfig settings shared by every arm of a search; None = not set.

    Unset fields take TrainConfig's defaults, except the four the search derives from its
    budget (see each one). Field names and meanings are TrainConfig's."""

    data: str | None = None
    tokenizer: str | None = None
    seq_len: int | None = None
    batch_size: int | None = None
    micro_batch_size: int | None = None
    lr: float | None = None
    min_lr_frac: float | None = None
    warmup_steps: int | None = None
    """None: 5% of the full budget's steps (each arm: at most half of its own steps)."""
    lr_schedule: str | None = None
    wsd_decay_frac: float | None = None
    weight_decay: float | None = None
    beta1: float | None = None
    beta2: float | None = None
    grad_clip: float | None = None
    precision: str | None = None
    eval_every_tokens: int | None = None
    """None: every 1/16 of the full budget (whole steps), the same for every arm."""
    eval_windows: int | None = None
    checkpoint_every_tokens: int | None = None
    """None: every quarter of the full budget."""
    keep_checkpoints: int | None = None
    seed: int | None = None
    """None: the search's seed."""
    device: str | None = None
    threads: int | None = None
    log_every_steps: int | None = None

    def value(self, name: str) -> Any:
        """The setting, or TrainConfig's default where it is not set."""
        value = getattr(self, name)
        return _TRAIN_DEFAULTS[name] if value is None else value

    def replace(self, **changes: Any) -> TrainSettings:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainSettings:
        data = dict(data)
        if "amp" in data and "precision" not in data:  # TrainConfig files before `precision`
            data["precision"] = "bf16" if data.pop("amp") else "fp32"
        data.pop("amp", None)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ConfigError(
                f"unknown search train settings {sorted(unknown)}; known: {sorted(known)}"
            )
        return cls(**data)


_TRAIN_DEFAULTS: dict[str, Any] = {
    f.name: f.default_factory() if f.default is dataclasses.MISSING else f.default  # type: ignore[misc]
    for f in dataclasses.fields(TrainConfig)
    if f.name not in PER_ARM
}
"""TrainConfig's defaults (read from TrainConfig itself: they live only there)."""


def _step_geometry_ok(settings: TrainSettings) -> bool:
    """seq_len and batch_size are positive ints (so tokens per step can be computed)."""
    values = (settings.value("seq_len"), settings.value("batch_size"))
    return all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in values)


@dataclass(frozen=True, kw_only=True)
class SearchConfig:
    """Everything that defines a search (the experiment folder's `search.json`).

    Construction validates (`validate`), so a SearchConfig that exists is a runnable one."""

    space: str = "default"
    """Registry name in `search_spaces.SPACES` or `/abs/path/file.py:function`."""
    target: ModelConfig = ModelConfig.from_shape("4x64")
    """The target model (its max_seq_len must cover the training seq_len)."""
    tokens: int = 901_120  # 880 steps of 8 x 128 tokens
    """Token budget of every full-budget arm (the target from scratch defines the FLOP budget)."""
    train: TrainSettings = TrainSettings(
        seq_len=128, batch_size=8, lr=3e-3, eval_windows=64, log_every_steps=0
    )
    """Training settings shared by all arms (model, tokens, out_dir are set per arm)."""
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
    small: ModelConfig | None = None
    """Model of the small-only arm; None = no small-only arm (the CLI fills in the most
    common start model of the space)."""
    max_failures: int = 1
    """Tune retries of a crashed trial (diverged trials are not retried)."""
    smoke_test: bool = False
    address: str | None = None
    """Ray address (None: RAY_ADDRESS if set, else a local cluster)."""
    storage: str | None = None
    """Root of the Tune and Train storage paths: a URI (s3://, gs://) or a folder every node
    mounts at the same path; None = the experiment folder (one machine)."""
    seeds: tuple[int, ...] = ()
    """Seed replicates: every baseline and every sampled schedule trains once per seed (a seed
    sets initialisation and data order); empty = one replicate at `seed`."""
    share_prefixes: bool = True
    """Trials resume shared pre-growth prefixes from the search's prefix store (bit-identical
    to training them; see `raygrow.train.prefixes`)."""
    prefix_store_mb: int = 2048
    """Size cap of the prefix store; the least recently used entries go first."""
    growth_lag_tokens: int | None = None
    """ASHA judges no report within this many tokens after a growth event (the loss right
    after growth mispredicts the final loss); None = two evaluation intervals."""
    baselines_from: str | None = None
    """Another experiment folder whose finished baseline arms this search reuses (they must
    match this search's target, data, training settings and LR schedule)."""
    warm_start: str | None = None
    """A guidelines CSV (`python -m raygrow.guidelines`): its predicted schedules for this
    target and budget are the first Optuna trials (`raygrow.search.warm_start`); None = none."""
    force: bool = False
    """With warm_start: use the guideline outside its range of N and tokens/param."""

    def __post_init__(self) -> None:
        self.validate()

    # ------------------------------------------------------------------ validation
    def problems(self) -> list[str]:
        """Every problem of this config, each naming its fix (empty: the config is valid)."""
        kinds = [
            ("target", self.target, ModelConfig, "a ModelConfig"),
            ("small", self.small, ModelConfig | None, "a ModelConfig or None"),
            ("train", self.train, TrainSettings, "a TrainSettings"),
        ]
        wrong = [
            f"SearchConfig.{name} is a {type(value).__name__}; pass {what} "
            "(SearchConfig.from_dict reads the dict form)"
            for name, value, kind, what in kinds
            if not isinstance(value, kind)
        ]
        if wrong:  # nothing below can be checked on an untyped config
            return wrong
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
                len(set(self.seeds)) == len(self.seeds) and all(x >= 0 for x in self.seeds),
                f"--seeds {','.join(map(str, self.seeds))} must be distinct seeds >= 0",
            ),
            (self.prefix_store_mb >= 0, f"--prefix-store-mb={self.prefix_store_mb} must be >= 0"),
            (
                self.growth_lag_tokens is None or self.growth_lag_tokens >= 0,
                f"--growth-lag-tokens={self.growth_lag_tokens} must be >= 0",
            ),
            (
                sum(0 < f < 1 for f in self.baseline_fracs) >= 2
                and all(0 < f <= MAX_BUDGET_FRAC and f != 1 for f in self.baseline_fracs)
                and len(set(self.baseline_fracs)) == len(self.baseline_fracs),
                f"baseline fractions {list(self.baseline_fracs)} must be distinct, >= 2 of them "
                f"in (0, 1) (speedup needs scratch at several annealed budgets) and any others in "
                f"(1, {MAX_BUDGET_FRAC:g}] (longer scratch budgets measure speedups past the "
                "full budget instead of bounding them)",
            ),
        ]
        found = [message for ok, message in checks if not ok] + self._warm_start_problems()
        batch = self.train.value("batch_size")
        if not _step_geometry_ok(self.train):  # the train settings check below names it
            return found + self._train_problems(self.tokens)
        step = self.tokens_per_step
        check_tokens = self.tokens
        if self.tokens // step < MIN_STEPS:
            found.append(
                f"the budget of {self.tokens:,} tokens gives {self.tokens // step} steps of "
                f"{step} tokens for {self.target.shape}; a search needs at least {MIN_STEPS} "
                "steps: raise --tokens or --budget-flops"
            )
            check_tokens = MIN_STEPS * step  # still check the other train settings
        found += self._train_problems(check_tokens)
        if self.workers >= 1 and batch % self.workers:
            found.append(
                f"batch_size={batch} is not divisible by --workers {self.workers}; use a "
                "batch_size that is a multiple of the workers or fewer workers"
            )
        small = self.small
        if small is not None:
            if small == self.target or small.n_params() >= self.target.n_params():
                found.append(
                    f"small-only arm {small.shape} is not smaller than the target "
                    f"{self.target.shape}; pass --small LxD or a space that grows"
                )
            elif small.max_seq_len < self.seq_len:
                found.append(
                    f"small-only arm {small.shape}: max_seq_len={small.max_seq_len} is shorter "
                    f"than seq_len={self.seq_len}; raise its max_seq_len"
                )
        return found

    def _warm_start_problems(self) -> list[str]:
        if self.warm_start is None:
            return [] if not self.force else ["--force only lets --warm-start extrapolate; drop it"]
        checks = [
            (
                isinstance(self.warm_start, str) and bool(self.warm_start.strip()),
                f"--warm-start {self.warm_start!r} must be the path of a guidelines CSV",
            ),
            (
                self.sampler != "grid",
                "--warm-start with --sampler grid: the grid runs every point anyway; use "
                "--sampler tpe or random",
            ),
            (
                self.num_samples >= 1,
                "--warm-start needs --num-samples >= 1 (its schedules are the first samples)",
            ),
        ]
        return [message for ok, message in checks if not ok]

    def _train_problems(self, tokens: int) -> list[str]:
        try:
            self.base_train(tokens=tokens)
        except ConfigError as exc:
            return [str(exc)]
        return []

    def validate(self) -> SearchConfig:
        """Raise one ConfigError listing every problem (one per line), else return self."""
        found = self.problems()
        if found:
            raise ConfigError("\n".join(found))
        return self

    # ------------------------------------------------------------------ derived (not stored)
    @property
    def replicate_seeds(self) -> tuple[int, ...]:
        """The training seeds every arm runs at (`seeds`, else `seed` alone)."""
        return self.seeds or (self.seed,)

    @property
    def growth_lag(self) -> int:
        """`growth_lag_tokens`, its default resolved (two evaluation intervals)."""
        if self.growth_lag_tokens is not None:
            return self.growth_lag_tokens
        return 2 * int(self.base_train().eval_every_tokens)

    @property
    def prefix_store(self) -> Path:
        """Folder of the prefix store (under --storage when every node mounts it)."""
        root = self.storage if self.storage and "://" not in self.storage else self.out
        return Path(root) / "prefixes"

    @property
    def seq_len(self) -> int:
        return int(self.train.value("seq_len"))

    @property
    def batch_size(self) -> int:
        return int(self.train.value("batch_size"))

    @property
    def tokens_per_step(self) -> int:
        return self.batch_size * self.seq_len

    @property
    def budget_flops(self) -> float:
        """Training FLOPs of the target from scratch at the full budget: ASHA's max_t."""
        return flops_per_token(self.target, self.seq_len) * self.tokens

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
        """TrainConfig of one arm (default: the target at the full budget). Eval and
        checkpoint cadence follow the full budget, so every arm is evaluated at the same
        token counts; warmup is at most half of the arm's own steps."""
        s = self.train
        run_tokens = self.tokens if tokens is None else tokens
        values = {**s.to_dict(), "model": model or self.target, "tokens": run_tokens}
        if _step_geometry_ok(s):  # else TrainConfig below names the bad seq_len/batch_size
            step = self.tokens_per_step
            full_steps = max(1, self.tokens // step)
            run_steps = max(1, run_tokens // step)
            warmup = s.warmup_steps
            if warmup is None:
                warmup = max(1, round(0.05 * full_steps))
            values["warmup_steps"] = min(warmup, max(1, run_steps // 2))
            if s.eval_every_tokens is None:
                values["eval_every_tokens"] = max(1, full_steps // 16) * step
            if s.checkpoint_every_tokens is None:
                values["checkpoint_every_tokens"] = max(1, full_steps // 4) * step
        if s.seed is None:
            values["seed"] = self.seed
        try:
            return TrainConfig.from_dict(values)
        except ConfigError as exc:
            raise ConfigError(f"search train settings: {exc}") from None

    # ------------------------------------------------------------------ persistence
    def replace(self, **changes: Any) -> SearchConfig:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (the `search.json` layout of every version)."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out["target"] = self.target.to_dict()
        out["small"] = self.small.to_dict() if self.small is not None else None
        out["train"] = self.train.to_dict()
        out["baseline_fracs"] = list(self.baseline_fracs)
        out["seeds"] = list(self.seeds)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SearchConfig:
        """Read `to_dict()` output, including the `search.json` of earlier versions."""
        data = dict(data)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ConfigError(f"{CONFIG_FILE}: unknown keys {sorted(unknown)}")
        if isinstance(data.get("target"), dict):
            data["target"] = ModelConfig.from_dict(data["target"])
        if isinstance(data.get("small"), dict):
            data["small"] = ModelConfig.from_dict(data["small"])
        if isinstance(data.get("train"), dict):
            data["train"] = TrainSettings.from_dict(data["train"])
        if "baseline_fracs" in data:
            data["baseline_fracs"] = tuple(float(f) for f in data["baseline_fracs"])
        if "seeds" in data:
            data["seeds"] = tuple(int(x) for x in data["seeds"])
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


SMOKE: dict[str, Any] = {
    "tokens": 81_920,  # 160 steps of 8 x 64 tokens
    "num_samples": 2,
    "train": SearchConfig().train.replace(seq_len=64, eval_windows=16),
}
"""`--smoke-test`: SearchConfig fields that differ from the defaults (the same code path at
tiny sizes, about 2 minutes)."""
SMOKE_TRAIN: TrainSettings = SMOKE["train"]


def parse_target(value: str) -> tuple[ModelConfig, dict[str, Any]]:
    """`LxD` or a JSON/TOML file -> (target model, train settings from the file).

    A file may hold ModelConfig keys, or TrainConfig keys with a `model` entry (LxD or a dict);
    then its other keys (but tokens and out_dir) become the search's base training settings.
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
