"""User-facing errors and the exit-code convention shared by every entry point.

Exit codes (see README): 0 success; 2 bad input detected before compute (one line on stderr
naming the problem and the fix); 1 a failure during the run.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import TypeVar

EXIT_OK = 0
EXIT_RUN_FAILURE = 1
EXIT_BAD_INPUT = 2


class ConfigError(ValueError):
    """Bad user input (config value, flag, path, space, checkpoint). Message names the fix."""


class CheckpointError(ConfigError):
    """A checkpoint that is missing, truncated, corrupt or does not match the run."""


F = TypeVar("F", bound=Callable[..., int | None])


def _program_name(fn: Callable[..., object]) -> str:
    """`raygrow.train` for a main run as `python -m raygrow.train` (module name is __main__)."""
    module = fn.__module__
    if module == "__main__":
        spec = getattr(sys.modules["__main__"], "__spec__", None)
        module = spec.name if spec is not None else "raygrow"
    return module.removesuffix(".__main__")


def cli_entry(fn: F) -> F:
    """Wrap a CLI `main` so that ConfigError becomes one stderr line and exit code 2."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):  # type: ignore[no-untyped-def]
        try:
            return fn(*args, **kwargs)
        except ConfigError as exc:
            prog = _program_name(fn)
            print(f"{prog}: error: {exc}", file=sys.stderr)
            raise SystemExit(EXIT_BAD_INPUT) from None

    return wrapper  # type: ignore[return-value]
