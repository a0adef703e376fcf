"""Search growth schedules with Ray Tune + Optuna + ASHA (`python -m raygrow.search`).

Modules:

    config      SearchConfig: the resolved search (saved as <out>/search.json for --resume)
    spaces      load spaces (SPACES name or file.py:function), dry-run validation before
                any compute, the grid of --sampler grid
    samples     a space's growth sample: normalised, described, turned into a GrowthSchedule
    trainable   the Tune function trainable (builds and fits one TorchTrainer per trial),
                baseline arms, divergence handling
    tuner       the wiring (OptunaSearch, ASHA on FLOPs, baselines) and run_search
    callbacks   MLflow tracking of every trial (a Tune Callback on the driver)
    results     statuses, speedup at matched loss, validity check, ranked tables

Only this package and raygrow.train.driver import Ray; Ray is imported lazily so that bad
input fails (exit 2) before Ray starts.
"""

from __future__ import annotations

from raygrow.search.config import SearchConfig

__all__ = ["SearchConfig"]
