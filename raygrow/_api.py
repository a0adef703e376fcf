"""Lazy public names and callable modules, so `import raygrow` stays light.

`raygrow.train` and `raygrow.export` are modules (the CLIs `python -m raygrow.train|export`)
and also public functions (`raygrow.train(config)`). An attribute of the package would be
replaced by the submodule as soon as anything imports it, so the modules themselves are made
callable: the name means the same thing whatever was imported first.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import Any


def load(spec: str) -> Any:
    """`package.module:name` -> the object; `package.module` -> the module."""
    module, _, name = spec.partition(":")
    obj = importlib.import_module(module)
    return getattr(obj, name) if name else obj


def make_callable(module_name: str, target: str) -> None:
    """Calling module `module_name` calls `target` (`package.module:function`, loaded lazily)."""
    module = sys.modules[module_name]

    class CallableModule(types.ModuleType):
        def __call__(self, *args: Any, **kwargs: Any) -> Any:
            return load(target)(*args, **kwargs)

    CallableModule.__call__.__doc__ = f"Call `{target.replace(':', '.')}`."
    module.__class__ = CallableModule
