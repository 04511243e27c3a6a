"""Meta-training and held-out tasks: seeded online-learning streams over a data set.

Every stream is drawn from its own seed, derived from (run seed, step, index, purpose), so the
same stream comes out whichever process draws it, and nothing but the step needs to be saved
to resume exactly.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from metalearn_ext.data import ImageDataset, StreamSampler, load_digits, load_mnist, split_classes
from metalearn_ext.train.config import ConfigError, DataConfig

__all__ = ["TaskSource", "derive_seed", "load_dataset", "make_task_sources"]

# purposes, so streams, initial states, ES noise and the meta-test's draws never share a seed
STREAM, STATE, NOISE, EVAL = 1, 2, 3, 4
TEST, TUNE, PROJECT, BASELINE_INIT, RNN_INIT = 5, 6, 7, 8, 9


def derive_seed(*parts: int) -> int:
    """A 63-bit seed that depends on every part (numpy's SeedSequence hashing)."""
    return int(np.random.SeedSequence([int(p) % 2**64 for p in parts]).generate_state(2, np.uint64)[0] >> np.uint64(1))


def generator(*parts: int) -> torch.Generator:
    return torch.Generator().manual_seed(derive_seed(*parts))


def load_dataset(cfg: DataConfig) -> ImageDataset:
    if cfg.dataset == "digits":
        return load_digits()
    return load_mnist("train", name=cfg.dataset, root=cfg.root)


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


class TaskSource:
    """Streams of one split: ``streams(seeds, length)`` -> inputs (T, L, D), labels (T, L)."""

    def __init__(self, dataset: ImageDataset, cfg: DataConfig) -> None:
        self.sampler = StreamSampler(dataset, num_classes=cfg.num_classes, image_size=cfg.image_size,
                                     projection_dim=cfg.projection_dim)
        self.num_classes = cfg.num_classes

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


def make_task_sources(cfg: DataConfig) -> tuple[TaskSource, TaskSource]:
    """(meta-training tasks, held-out tasks) per ``cfg.split``; sizes checked against the data set."""
    ds = load_dataset(cfg)
    if cfg.split == "classes":
        if cfg.test_classes >= ds.num_classes:
            raise ConfigError(f"config key 'data.test_classes': the dataset has {ds.num_classes} classes, "
                              f"got {cfg.test_classes}")
        n_train = ds.num_classes - cfg.test_classes
        if cfg.num_classes > min(n_train, cfg.test_classes):
            raise ConfigError(f"config key 'data.num_classes': must be <= {min(n_train, cfg.test_classes)} "
                              f"(classes in the smaller split), got {cfg.num_classes}")
        train, test = split_classes(ds, [n_train, cfg.test_classes], seed=cfg.split_seed)
    else:
        if cfg.num_classes > ds.num_classes:
            raise ConfigError(f"config key 'data.num_classes': the dataset {cfg.dataset!r} has "
                              f"{ds.num_classes} classes, got {cfg.num_classes}")
        train, test = _split_examples(ds, cfg.test_fraction, cfg.split_seed)
    return TaskSource(train, cfg), TaskSource(test, cfg)
