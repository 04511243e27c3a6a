"""The method registry: ``register_method``, ``get_method``, ``list_methods``.

Every module in this package is imported on first use of the registry, so a new method is one
new file here (decorated with :func:`register_method`) plus its ``configs/<name>/`` folder.
"""
from __future__ import annotations

import importlib
import pkgutil

from metalearn_ext.config import ConfigError
from metalearn_ext.methods.base import Batch, Method, TrainConfig

__all__ = ["Batch", "Method", "TrainConfig", "get_method", "list_methods", "register_method"]

_METHODS: dict[str, Method] = {}
_discovered = False


def register_method(cls: type[Method]) -> type[Method]:
    """Class decorator: make ``cls.name`` known to the CLI and the run loop."""
    if cls.name in _METHODS and type(_METHODS[cls.name]) is not cls:
        raise ValueError(f"method {cls.name!r} is already registered by {type(_METHODS[cls.name]).__module__}")
    _METHODS[cls.name] = cls()
    return cls


def _discover() -> None:
    global _discovered
    if _discovered:
        return
    _discovered = True
    for info in pkgutil.iter_modules(__path__):
        if info.name != "base":
            importlib.import_module(f"{__name__}.{info.name}")


def list_methods() -> dict[str, Method]:
    """Name -> method, for every registered method."""
    _discover()
    return dict(sorted(_METHODS.items()))


def get_method(name: str) -> Method:
    """The method called ``name``; ConfigError listing the known ones otherwise."""
    methods = list_methods()
    if name not in methods:
        raise ConfigError(f"unknown method {name!r} (known: {', '.join(methods)})")
    return methods[name]
