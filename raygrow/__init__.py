"""raygrow: search growth schedules for transformer language-model pre-training.

The public API (each name is imported on first use, so `import raygrow` loads neither torch
nor Ray):

    from raygrow import ModelConfig, TrainConfig, GrowthSchedule, OPERATORS, grow, train
    from raygrow import SearchConfig, run_search, fit_guidelines, export
"""

from raygrow import _omp

# before torch loads libgomp: see raygrow/_omp.py for the rule and the measurements
_omp.apply_process_default()

__version__ = "0.1.0"

_PUBLIC = {
    "ModelConfig": "raygrow.config:ModelConfig",
    "TrainConfig": "raygrow.train.config:TrainConfig",
    "GrowthSchedule": "raygrow.schedule:GrowthSchedule",
    "OPERATORS": "raygrow.growth:OPERATORS",
    "grow": "raygrow.growth:grow",
    "train": "raygrow.train",  # callable: raygrow.train.loop.train
    "SearchConfig": "raygrow.search.config:SearchConfig",
    "run_search": "raygrow.search.tuner:run_search",
    "fit_guidelines": "raygrow.analysis.report:fit_guidelines",
    "export": "raygrow.export",  # callable: raygrow.export.export_checkpoint
}
__all__ = [*_PUBLIC, "__version__"]


def __getattr__(name: str) -> object:
    if name not in _PUBLIC:
        raise AttributeError(f"module 'raygrow' has no attribute {name!r}")
    from raygrow._api import load

    value = load(_PUBLIC[name])
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_PUBLIC})
