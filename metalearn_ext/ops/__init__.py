"""Kernels with a reference beside each, one folder per op (`vsml_step`, ...).

Every sub-package is imported here, which registers its OpSpec (ops/registry.py), and its function
of the same name is exported: a new op needs no edit outside its folder.
"""
import importlib
import pkgutil

from metalearn_ext.ops import registry

for _module in pkgutil.iter_modules(__path__):
    if _module.ispkg:
        globals()[_module.name] = getattr(importlib.import_module(f"{__name__}.{_module.name}"), _module.name)
del _module

__all__ = [spec.name for spec in registry.ops()]
