"""Lazy re-exports: a subpackage names its torch-backed members without importing torch until one is used.

``import stalign`` stays cheap (scanpy does not import torch either); the first access to, e.g.,
``stalign.models.STAlign`` imports the module that defines it, once.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def lazy_exports(namespace: dict[str, Any], exports: dict[str, str]) -> tuple[Callable, Callable]:
    """``(__getattr__, __dir__)`` for a package whose ``exports`` (name → relative module) load on first access.

    Parameters
    ----------
    namespace
        The package's ``globals()``; a loaded name is cached there, so later accesses are plain lookups.
    exports
        Public name → module that defines it, relative to the package (e.g. ``{"STAlign": "._model"}``).

    Returns
    -------
    The module-level ``__getattr__`` and ``__dir__`` (PEP 562); ``__dir__`` lists the package's ``__all__``.
    """
    package = namespace["__name__"]

    def __getattr__(name: str) -> Any:
        if name in exports:
            value = getattr(importlib.import_module(exports[name], package), name)
            namespace[name] = value
            return value
        msg = f"module {package!r} has no attribute {name!r}"
        raise AttributeError(msg)

    def __dir__() -> list[str]:  # the public API only (``__all__``), as ``from package import *`` sees it
        return sorted(namespace.get("__all__", exports))

    return __getattr__, __dir__
