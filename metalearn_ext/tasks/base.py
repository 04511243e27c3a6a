"""Task families: what one meta-batch is, drawn reproducibly from seeds.

A task family is built from its config section (``task:`` in a run config, a dataclass with a
``name``) and answers ``sample(indices, seed=, step=, split=)``: item ``i`` of the meta-batch is
drawn from ``derive_seed(seed, step, i, purpose)`` alone, so two processes that split a
meta-batch by index draw exactly the items one process would. ``shapes()`` tells a method what
it needs to build its model (input size, classes …); it is saved with every checkpoint, so a
trained model is rebuilt without loading any data.

Families: ``streams`` (online classification streams: VSML, BLUR), ``episodes`` (N-way K-shot:
ProtoNet, MAML, MetaNet), ``label_offset`` (MANN), ``regression`` (sinusoid, GP: MAML, CNP).
"""
from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

import torch
from torch import Tensor

from metalearn_ext.tasks.seeds import STREAM, TEST, generator

__all__ = ["TASKS", "TaskConfig", "TaskFamily", "build_task", "draw_items", "register_task", "split_purpose",
           "task_config_class"]

SPLITS = ("train", "test")
B = TypeVar("B")


def split_purpose(split: str) -> int:
    """The seed purpose of a split's draws: training items and test items never share a seed, even
    where both splits draw from the same distribution (regression tasks)."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    return STREAM if split == "train" else TEST


def draw_items(indices: Sequence[int], *, seed: int, step: int, split: str, draw: Callable[[torch.Generator], B]
               ) -> B:
    """``draw(g)`` -> a batch dataclass of ONE item, called once per index with the generator
    ``generator(seed, step, index, split_purpose(split))``; the items' tensors concatenated along
    dim 0 (other fields are taken from the first item). So items ``[0, 1, 2, 3]`` equal items
    ``[0, 1]`` followed by ``[2, 3]``: processes that split a meta-batch draw what one would."""
    indices = [int(i) for i in indices]
    if not indices:
        raise ValueError("indices is empty: a meta-batch needs at least one item")
    purpose = split_purpose(split)
    parts = [draw(generator(seed, step, i, purpose)) for i in indices]
    first = parts[0]
    tensors = {f.name: torch.cat([getattr(p, f.name) for p in parts])
               for f in dataclasses.fields(first) if isinstance(getattr(first, f.name), Tensor)}
    return dataclasses.replace(first, **tensors)


@dataclass
class TaskConfig:
    """Base of every task's config section; ``name`` picks the task (``--task NAME``)."""

    name: str = ""


class TaskFamily(ABC):
    """A source of meta-batches; see the module docstring."""

    family: ClassVar[str]  # "streams" | "episodes" | "label_offset" | "regression"

    @abstractmethod
    def sample(self, indices: Sequence[int], *, seed: int, step: int, split: str = "train") -> Any:
        """The meta-batch of items ``indices`` of meta-step ``step``: tensors stacked over items."""

    @abstractmethod
    def shapes(self) -> dict[str, Any]:
        """JSON-safe sizes a method builds its model from (e.g. ``{"input_dim": 64, "num_classes": 10}``)."""


@dataclass(frozen=True)
class TaskEntry:
    name: str
    family: str
    config: type  # a TaskConfig subclass
    build: Callable[[Any], TaskFamily]
    description: str


TASKS: dict[str, TaskEntry] = {}


def register_task(name: str, family: str, config: type, build: Callable[[Any], TaskFamily], description: str
                  ) -> None:
    """Make task ``name`` (config section class ``config``, built by ``build(cfg)``) known."""
    if name in TASKS and TASKS[name].build is not build:
        raise ValueError(f"task {name!r} is already registered")
    TASKS[name] = TaskEntry(name, family, config, build, description)


def _entry(name: str) -> TaskEntry:
    from metalearn_ext.config import ConfigError

    if name not in TASKS:
        raise ConfigError(f"unknown task {name!r} (known: {', '.join(sorted(TASKS)) or 'none'})")
    return TASKS[name]


def task_config_class(name: str) -> type:
    return _entry(name).config


def build_task(cfg: TaskConfig) -> TaskFamily:
    """The task family described by the config section ``cfg`` (``cfg.name`` picks it)."""
    return _entry(cfg.name).build(cfg)
