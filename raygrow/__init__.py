"""raygrow: search growth schedules for transformer language-model pre-training."""

from raygrow import _omp

# before torch loads libgomp: see raygrow/_omp.py for the rule and the measurements
_omp.apply_process_default()

__version__ = "0.1.0"
