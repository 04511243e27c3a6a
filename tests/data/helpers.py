"""Index-encoded toy data sets: every sampled image says which dataset example it is."""
from __future__ import annotations

import torch

from metalearn_ext.data import ImageDataset


def indexed_dataset(counts: list[int], shape=(1, 2, 2)) -> ImageDataset:
    """Toy data set whose image i is filled with the value i / 1000 (so the index can be read
    back from any sampled image); class c has counts[c] examples."""
    labels = torch.cat([torch.full((n,), c, dtype=torch.int64) for c, n in enumerate(counts)])
    perm = torch.randperm(labels.numel(), generator=torch.Generator().manual_seed(1))
    labels = labels[perm]  # interleave classes so index order says nothing about class
    images = (torch.arange(labels.numel(), dtype=torch.float32) / 1000).view(-1, 1, 1, 1).expand(-1, *shape)
    return ImageDataset(images.contiguous(), labels, tuple(f"class{c}" for c in range(len(counts))))


def index_of(images: torch.Tensor) -> torch.Tensor:
    """Invert indexed_dataset: (..., C, H, W) images → (...) dataset indices."""
    return (images.flatten(-3)[..., 0] * 1000).round().long()
