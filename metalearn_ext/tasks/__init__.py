"""Task families: online streams, N-way K-shot episodes, label-offset sequences, function regression.

Each module registers its tasks with :func:`register_task`; they wrap ``metalearn_ext.data``.
"""
from __future__ import annotations

import importlib
import pkgutil

from metalearn_ext.tasks.base import TASKS, TaskConfig, TaskFamily, build_task, register_task, task_config_class
from metalearn_ext.tasks.seeds import derive_seed, generator

__all__ = ["TASKS", "TaskConfig", "TaskFamily", "build_task", "derive_seed", "generator", "list_tasks",
           "register_task", "task_config_class"]

for _info in pkgutil.iter_modules(__path__):
    if _info.name not in ("base", "seeds"):
        importlib.import_module(f"{__name__}.{_info.name}")


def list_tasks() -> dict:
    """Task name -> its registry entry (family, config class, description)."""
    return dict(sorted(TASKS.items()))
