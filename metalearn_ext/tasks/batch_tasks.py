"""Classification tasks learned in batches (BLUR): task "batch_tasks".

A task is a fixed set of classes under a label permutation of its own: ``steps`` learning batches of
``batch_size`` examples (drawn with replacement from the task's learning pool) and one query batch
of ``query`` examples the learner never learns from (drawn without replacement, disjoint from the
pool). Meta-training tasks use ``train_classes`` of the data set, held-out tasks ``test_classes``
(by default digits 0–4 and 5–9 of the 8×8 digits), so a held-out task's classes were never seen.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import Tensor

from metalearn_ext.config import ConfigError, check_positive
from metalearn_ext.data import ImageDataset
from metalearn_ext.data.batch import batch_to
from metalearn_ext.tasks.base import TaskConfig, TaskFamily, draw_items, register_task
from metalearn_ext.tasks.streams import load_stream_dataset

__all__ = ["BatchTasks", "BatchTasksConfig", "ClassTaskBatch", "ClassTaskSource"]


@dataclass
class BatchTasksConfig(TaskConfig):
    """The ``task:`` section, name ``batch_tasks``."""

    name: str = "batch_tasks"
    dataset: Literal["digits", "mnist", "fashion-mnist"] = "digits"
    train_classes: list[int] = field(default_factory=lambda: [0, 1, 2, 3, 4])  # meta-training tasks' classes
    test_classes: list[int] = field(default_factory=lambda: [5, 6, 7, 8, 9])  # held-out tasks' classes
    image_size: int | None = None  # resize images first (None: keep)
    batch_size: int = 16  # examples per learning step
    steps: int = 10  # learning batches per meta-training task (>= the longest unroll)
    query: int = 64  # held-out query examples per task
    root: str | None = None  # directory searched first for MNIST-style files (mnist / fashion-mnist only)

    def check(self, section: str) -> None:
        check_positive(self, section, "image_size", "batch_size", "steps", "query")
        for key in ("train_classes", "test_classes"):
            v = getattr(self, key)
            if len(v) < 2 or len(set(v)) != len(v) or min(v) < 0:
                raise ConfigError(f"config key '{section}.{key}': must be >= 2 distinct class indices, got {v}")
        if len(self.train_classes) != len(self.test_classes):
            raise ConfigError(f"config key '{section}.test_classes': must be as many as train_classes "
                              f"({len(self.train_classes)}: one network for both), got {len(self.test_classes)}")
        if self.root is not None and self.dataset == "digits":
            raise ConfigError(f"config key '{section}.root': the 8x8 digits ship with scikit-learn; set it only "
                              f"for mnist / fashion-mnist (got {self.root!r})")

    @property
    def num_classes(self) -> int:
        return len(self.train_classes)


@dataclass
class ClassTaskBatch:
    """T tasks: inputs (T, steps, batch, D) float32, labels (T, steps, batch) int64, query_inputs
    (T, query, D), query_labels (T, query); inputs are raw (flattened images in [0, 1])."""

    inputs: Tensor
    labels: Tensor
    query_inputs: Tensor
    query_labels: Tensor

    def to(self, device: torch.device | str, non_blocking: bool = False) -> ClassTaskBatch:
        return batch_to(self, device, non_blocking)


class ClassTaskSource:
    """Tasks over ``classes`` of ``dataset`` (resized to ``image_size`` first): ``draw(g, ...)``."""

    def __init__(self, dataset: ImageDataset, classes: Sequence[int], image_size: int | None = None) -> None:
        if max(classes) >= dataset.num_classes:
            raise ValueError(f"classes {list(classes)} do not exist in a data set of {dataset.num_classes} classes")
        ds = dataset.subset_classes(list(classes))
        if image_size is not None:
            ds = ds.resized(image_size)
        self.flat = ds.images.reshape(len(ds), -1).contiguous()
        self.labels = ds.labels
        self.num_classes = len(classes)

    @property
    def input_dim(self) -> int:
        return self.flat.shape[1]

    def draw(self, g: torch.Generator, steps: int, batch_size: int, query: int) -> ClassTaskBatch:
        """One task (T = 1): a label permutation, a query batch and ``steps`` learning batches."""
        n = self.flat.shape[0]
        if query >= n:
            raise ValueError(f"query = {query} leaves no learning examples of the {n} in these classes")
        relabel = torch.randperm(self.num_classes, generator=g)
        order = torch.randperm(n, generator=g)
        q_idx, pool = order[:query], order[query:]
        l_idx = pool[torch.randint(pool.numel(), (steps, batch_size), generator=g)]
        return ClassTaskBatch(self.flat[l_idx].unsqueeze(0), relabel[self.labels[l_idx]].unsqueeze(0),
                              self.flat[q_idx].unsqueeze(0), relabel[self.labels[q_idx]].unsqueeze(0))

    def input_stats(self, eps: float = 1e-2) -> tuple[Tensor, Tensor]:
        """Per-feature mean and std (D,) over every example; std = sqrt(var + eps), so features constant in
        the data (blank border pixels) are not blown up."""
        x = self.flat.double()
        return x.mean(0).float(), (x.var(0, unbiased=False) + eps).sqrt().float()


class BatchTasks(TaskFamily):
    """Meta-training tasks (``train_classes``) and held-out tasks (``test_classes``) of one data set."""

    family = "batch_tasks"

    def __init__(self, cfg: BatchTasksConfig) -> None:
        self.cfg = cfg
        ds = load_stream_dataset(cfg)
        for key in ("train_classes", "test_classes"):
            if max(getattr(cfg, key)) >= ds.num_classes:
                raise ConfigError(f"config key 'task.{key}': the data set {cfg.dataset!r} has {ds.num_classes} "
                                  f"classes, got {getattr(cfg, key)}")
        self.train = ClassTaskSource(ds, cfg.train_classes, cfg.image_size)
        self.test = ClassTaskSource(ds, cfg.test_classes, cfg.image_size)
        self.resolution = cfg.image_size or int(ds.images.shape[-1])

    def sample(self, indices: Sequence[int], *, seed: int, step: int, split: str = "train",
               steps: int | None = None, query: int | None = None) -> ClassTaskBatch:
        """Tasks ``indices`` of meta-step ``step`` (``steps`` / ``query`` default to the config's)."""
        src = self.train if split == "train" else self.test
        S, Q = steps or self.cfg.steps, query or self.cfg.query
        return draw_items(indices, seed=seed, step=step, split=split,
                          draw=lambda g: src.draw(g, S, self.cfg.batch_size, Q))

    def shapes(self) -> dict:
        return {"input_dim": self.train.input_dim, "num_classes": self.cfg.num_classes}


register_task("batch_tasks", "batch_tasks", BatchTasksConfig, BatchTasks,
              "classification tasks learned in batches, meta-train / held-out classes of one data set (BLUR)")
