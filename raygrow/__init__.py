"""raygrow: search growth schedules for transformer language-model pre-training."""

import os

# OpenMP threads that spin while waiting make a 2-thread training step ~20x slower whenever
# another process shares the cores (Ray workers, a second trial, a test runner); passive
# waiting costs next to nothing on an idle machine. Must be set before torch loads libgomp.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"
