"""raygrow: search growth schedules for transformer language-model pre-training."""

__version__ = "0.1.0"
