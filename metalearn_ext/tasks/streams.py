"""Online classification streams (VSML, BLUR): task "streams".

A stream is a random class subset with randomly permuted labels, examples drawn one after another;
the learner predicts each before its label is used. Meta-training streams come from the training
split of a data set, held-out streams from unseen samples (``split: examples``) or unseen classes
(``split: classes``).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from metalearn_ext.config import ConfigError, check_positive
from metalearn_ext.data import ImageDataset, StreamSampler, load_digits, load_mnist, split_classes
from metalearn_ext.tasks.base import TaskConfig, TaskFamily, register_task
from metalearn_ext.tasks.seeds import EVAL, STREAM, derive_seed

__all__ = ["StreamSource", "StreamTask", "StreamsTaskConfig", "load_stream_dataset"]


@dataclass
class StreamsTaskConfig(TaskConfig):
    """Where the online-learning streams come from (the ``task:`` section, name ``streams``)."""

    name: str = "streams"
    dataset: Literal["digits", "mnist", "fashion-mnist"] = "digits"
    num_classes: int = 10  # classes per stream (a random subset, randomly permuted labels)
    image_size: int | None = None  # resize images first (None: keep)
    projection_dim: int | None = None  # random projection per stream (None: none)
    split: Literal["examples", "classes"] = "examples"  # held-out: unseen samples, or unseen classes
    test_fraction: float = 0.2  # split="examples": fraction of each class held out
    test_classes: int = 3  # split="classes": classes held out
    split_seed: int = 0
    episode_length: int = 100  # examples per meta-training stream
    root: str | None = None  # directory searched first for MNIST-style files (mnist / fashion-mnist only)

    def check(self, section: str) -> None:
        check_positive(self, section, "num_classes", "image_size", "projection_dim", "episode_length", "test_classes")
        if not 0.0 < self.test_fraction < 1.0:
            raise ConfigError(f"config key '{section}.test_fraction': must be in (0, 1), got {self.test_fraction}")
        if self.root is not None and self.dataset == "digits":
            raise ConfigError(f"config key '{section}.root': the 8x8 digits ship with scikit-learn and are not read "
                              f"from a directory; set it only for mnist / fashion-mnist (got {self.root!r})")


def load_stream_dataset(cfg: StreamsTaskConfig, split: str = "train") -> ImageDataset:
    """The data set of ``cfg`` (MNIST-style: its ``split`` file; FileNotFoundError names where it looked)."""
    if cfg.dataset == "digits":
        return load_digits()
    return load_mnist(split, name=cfg.dataset, root=cfg.root)


def _split_examples(ds: ImageDataset, test_fraction: float, seed: int) -> tuple[ImageDataset, ImageDataset]:
    """Per class, a random ``test_fraction`` of its examples go to the test split."""
    g = torch.Generator().manual_seed(seed)
    test_mask = torch.zeros(len(ds), dtype=torch.bool)
    for k in range(ds.num_classes):
        idx = (ds.labels == k).nonzero().flatten()
        n_test = max(1, round(test_fraction * idx.numel()))
        test_mask[idx[torch.randperm(idx.numel(), generator=g)[:n_test]]] = True
    pick = lambda m: ImageDataset(ds.images[m], ds.labels[m], ds.class_names)
    return pick(~test_mask), pick(test_mask)


class StreamSource:
    """Streams of one data set: ``streams(seeds, length)`` -> inputs (T, L, D), labels (T, L)."""

    def __init__(self, dataset: ImageDataset, num_classes: int, image_size: int | None = None,
                 projection_dim: int | None = None) -> None:
        self.sampler = StreamSampler(dataset, num_classes=num_classes, image_size=image_size,
                                     projection_dim=projection_dim)
        self.num_classes = num_classes

    @property
    def input_dim(self) -> int:
        return self.sampler.input_dim

    def streams(self, seeds: Sequence[int], length: int) -> tuple[Tensor, Tensor]:
        """One stream per seed, stacked: inputs (T, L, D) float32, labels (T, L) int64."""
        xs, ys = [], []
        for s in seeds:
            self.sampler.generator = torch.Generator().manual_seed(int(s))
            batch = self.sampler.sample(1, length)
            xs.append(batch.inputs)
            ys.append(batch.labels)
        return torch.cat(xs), torch.cat(ys)

    def input_stats(self, seed: int, examples: int = 8192, eps: float = 1e-2) -> tuple[Tensor, Tensor]:
        """Per-feature mean and std (D,) over ``examples`` stream inputs; std = sqrt(var + eps), so
        features constant in the training data (e.g. blank border pixels) are not blown up."""
        x, _ = self.streams([derive_seed(seed, 0, i, EVAL) for i in range(64)], max(1, examples // 64))
        x = x.reshape(-1, x.shape[-1]).double()
        return x.mean(0).float(), (x.var(0, unbiased=False) + eps).sqrt().float()


class StreamTask(TaskFamily):
    """Meta-training and held-out streams of one data set; ``sample`` -> (inputs (T, L, D), labels (T, L))."""

    family = "streams"

    def __init__(self, cfg: StreamsTaskConfig) -> None:
        self.cfg = cfg
        ds = load_stream_dataset(cfg)
        if cfg.split == "classes":
            if cfg.test_classes >= ds.num_classes:
                raise ConfigError(f"config key 'task.test_classes': the data set has {ds.num_classes} classes, "
                                  f"got {cfg.test_classes}")
            n_train = ds.num_classes - cfg.test_classes
            if cfg.num_classes > min(n_train, cfg.test_classes):
                raise ConfigError(f"config key 'task.num_classes': must be <= {min(n_train, cfg.test_classes)} "
                                  f"(classes in the smaller split), got {cfg.num_classes}")
            train, test = split_classes(ds, [n_train, cfg.test_classes], seed=cfg.split_seed)
        else:
            if cfg.num_classes > ds.num_classes:
                raise ConfigError(f"config key 'task.num_classes': the data set {cfg.dataset!r} has "
                                  f"{ds.num_classes} classes, got {cfg.num_classes}")
            train, test = _split_examples(ds, cfg.test_fraction, cfg.split_seed)
        self.train = self.source(train)
        self.test = self.source(test)
        self.resolution = cfg.image_size or int(ds.images.shape[-1])

    def source(self, dataset: ImageDataset, image_size: int | None = None) -> StreamSource:
        """Streams of ``dataset`` shaped like this task's (classes, resolution, projection)."""
        return StreamSource(dataset, self.cfg.num_classes, image_size or self.cfg.image_size, self.cfg.projection_dim)

    def sample(self, indices: Sequence[int], *, seed: int, step: int, split: str = "train",
               length: int | None = None) -> tuple[Tensor, Tensor]:
        """Streams ``indices`` of meta-step ``step``: inputs (T, L, D) float32, labels (T, L) int64."""
        src = self.train if split == "train" else self.test
        return src.streams([derive_seed(seed, step, i, STREAM) for i in indices], length or self.cfg.episode_length)

    def shapes(self) -> dict:
        return {"input_dim": self.train.input_dim, "num_classes": self.cfg.num_classes}


register_task("streams", "streams", StreamsTaskConfig, StreamTask,
              "online classification streams over the 8x8 digits, MNIST or Fashion-MNIST (VSML, BLUR)")
