"""Lineage: what a search reuses instead of training again (see `raygrow.train.prefixes`).

- the **prefix store** of a search (`prefix_store_of`): trials leave their un-grown states
  there and resume the latest one their schedule shares; under WSD the decay start of every
  scratch budget is a landmark, so the shorter budgets branch off the longest run's stable
  phase (one trunk, a cooldown branch per budget);
- **baselines from another search** (`--baselines-from DIR`): that folder's store is read
  too, after `check_baselines_from` made sure its baselines are this search's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from raygrow.config import ModelConfig
from raygrow.errors import ConfigError
from raygrow.search.config import CONFIG_FILE, SearchConfig
from raygrow.train.config import TRAJECTORY_FIELDS
from raygrow.train.prefixes import PrefixStore, wsd_decay_start

PREFIX_FOLDER = "prefixes"


def arm_steps(cfg: SearchConfig, frac: float) -> int:
    """Optimizer steps of an arm that trains `frac` of the budget (trainable.arm_tokens)."""
    return max(1, round(cfg.tokens * frac / cfg.tokens_per_step))


def prefix_landmarks(cfg: SearchConfig) -> frozenset[int]:
    """Steps at which un-grown states are stored besides evaluations: under WSD the decay
    start of every scratch budget (and of the full one when longer budgets exist), so that the
    other budgets' runs branch off one stable phase (one trunk, a cooldown branch per budget)."""
    train = cfg.base_train()
    if train.lr_schedule != "wsd":
        return frozenset()
    fracs = list(cfg.baseline_fracs)
    if any(f > 1 for f in fracs):  # a longer budget continues the full run's trunk from its end
        fracs.append(1.0)
    steps = (arm_steps(cfg, frac) for frac in fracs)
    return frozenset(wsd_decay_start(total, train.wsd_decay_frac) for total in steps)


def prefix_store_of(cfg: SearchConfig) -> PrefixStore | None:
    """The search's prefix store (None: `--no-share-prefixes`); `--baselines-from` adds that
    folder's store, read-only."""
    if not cfg.share_prefixes:
        return None
    also = (SearchConfig.load(cfg.baselines_from).prefix_store,) if cfg.baselines_from else ()
    return PrefixStore(
        cfg.prefix_store,
        float(cfg.prefix_store_mb),
        also_read=also,
        landmarks=prefix_landmarks(cfg),
    )


BASELINE_MATCH = ("micro_batch_size", "eval_every_tokens", "eval_windows", "threads", "device")
"""Settings besides the trajectory fields that a reused state depends on (its prefix key)."""


def baselines_mismatch(cfg: SearchConfig, other: SearchConfig) -> str | None:
    """The first setting in which `other`'s baseline arms differ from `cfg`'s (None: they
    match, so the prefix store holds states this search can reuse). Seeds may differ: the
    seeds both searches ran are reused, the others trained."""
    pairs: list[tuple[str, Any, Any]] = [
        ("target", cfg.target.to_dict(), other.target.to_dict()),
        ("small", _model_dict(cfg.small), _model_dict(other.small)),
        ("tokens", cfg.tokens, other.tokens),
        ("baseline_fracs", sorted(cfg.baseline_fracs), sorted(other.baseline_fracs)),
    ]
    mine, theirs = cfg.base_train().to_dict(), other.base_train().to_dict()
    for name in (*TRAJECTORY_FIELDS, *BASELINE_MATCH):
        if name not in ("seed", "tokens", "model"):
            pairs.append((name, mine.get(name), theirs.get(name)))
    for name, a, b in pairs:
        if a != b:
            return f"{name} is {_short(b)} there, {_short(a)} here"
    return None


def _model_dict(model: ModelConfig | None) -> dict[str, Any] | None:
    return model.to_dict() if model is not None else None


def _short(value: Any) -> str:
    if isinstance(value, dict) and "n_layers" in value:
        return ModelConfig.from_dict(value).shape
    return repr(value)


def check_baselines_from(cfg: SearchConfig) -> None:
    """`--baselines-from DIR` must be a search folder whose baselines match this search's:
    one ConfigError naming the mismatching field otherwise (before any compute)."""
    if cfg.baselines_from is None:
        return
    folder = Path(cfg.baselines_from)
    if not (folder / CONFIG_FILE).is_file():
        raise ConfigError(
            f"--baselines-from {str(folder)!r} is not a raygrow search folder (no "
            f"{CONFIG_FILE}); pass the folder an earlier search printed"
        )
    other = SearchConfig.load(folder)
    mismatch = baselines_mismatch(cfg, other)
    if mismatch is not None:
        raise ConfigError(
            f"--baselines-from {str(folder)!r} does not match this search: {mismatch}; "
            "pass a folder of a search with the same target, data and training settings, "
            "or drop --baselines-from"
        )
