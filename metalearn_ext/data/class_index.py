"""Vectorized random choice of classes and of examples within classes (the samplers' core)."""

from __future__ import annotations

import torch
from torch import Tensor


class ClassIndex:
    """Per-class example table of a label vector, for batched sampling without Python loops.

    Attributes:
        table: (num_classes, max_count) int64; row c lists the dataset indices of class c,
            padded with 0 past ``counts[c]``.
        counts: (num_classes,) int64 examples per class.
    """

    def __init__(self, labels: Tensor, num_classes: int) -> None:
        labels = labels.to(torch.int64).cpu()
        self.num_classes = num_classes
        self.counts = torch.bincount(labels, minlength=num_classes)
        order = torch.argsort(labels, stable=True)
        starts = torch.cumsum(self.counts, 0) - self.counts
        max_count = int(self.counts.max()) if num_classes else 0
        slot = torch.arange(max_count)
        valid = slot[None, :] < self.counts[:, None]
        self.table = torch.zeros(num_classes, max_count, dtype=torch.int64)
        self.table[valid] = order[(starts[:, None] + slot[None, :])[valid]]
        # Padding slots get key -1 so topk over uniform keys in [0, 1) never picks them.
        self._pad_key = torch.where(valid, 0.0, -2.0)

    def choose_classes(self, batch: int, n: int, generator: torch.Generator | None) -> Tensor:
        """(batch, n) distinct classes per row, in random order."""
        keys = torch.rand(batch, self.num_classes, generator=generator)
        return keys.topk(n, dim=1).indices

    def choose_examples(self, classes: Tensor, m: int, generator: torch.Generator | None) -> Tensor:
        """(*classes.shape, m) distinct dataset indices per class, in random order; every class in
        ``classes`` must have at least ``m`` examples."""
        keys = torch.rand(*classes.shape, self.table.shape[1], generator=generator)
        keys += self._pad_key[classes]
        slots = keys.topk(m, dim=-1).indices
        return self.table[classes.unsqueeze(-1), slots]

    def draw_examples(self, classes: Tensor, generator: torch.Generator | None) -> Tensor:
        """One dataset index per entry of ``classes``, uniform within its class (with
        replacement across entries); same shape as ``classes``."""
        u = torch.rand(classes.shape, generator=generator)
        count = self.counts[classes]
        slot = torch.minimum((u * count).long(), count - 1)  # float rounding can reach count
        return self.table[classes, slot]
