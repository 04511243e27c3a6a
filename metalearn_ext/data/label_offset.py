"""Label-offset episodes for MANN (Santoro et al., 2016): step s sees (x_s, onehot(y_{s−1}))."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from .batch import batch_to
from .class_index import ClassIndex
from .dataset import ImageDataset


@dataclass(frozen=True)
class LabelOffsetBatch:
    """B episodes of L = N·M steps (N classes, M examples each, shuffled).

    Attributes:
        inputs: (B, L, D + N) float32: [x_s ; onehot(y_{s−1})], zeros for the label at s = 0.
        labels: (B, L) int64 y_s in 0..N−1 (the prediction targets).
        instance: (B, L) int64, how many earlier steps of the episode had the same label
            (0 for a class's 1st appearance) — for accuracy by instance.
        classes: (B, N) int64 dataset class of each episode label.
    """

    inputs: Tensor
    labels: Tensor
    instance: Tensor
    classes: Tensor

    def to(self, device: torch.device | str, non_blocking: bool = False) -> LabelOffsetBatch:
        """The same batch with every tensor on ``device``."""
        return batch_to(self, device, non_blocking)


class LabelOffsetSampler:
    """Samples MANN episodes: N random classes (labels shuffled per episode: label j ↔ a random
    class), M distinct examples of each, in a random order; x_s is the flattened image
    (D = C·H·W; load Omniglot with ``image_size=20, rotations=True`` for the paper's setup).

    Args:
        dataset: the data set to draw from.
        n_way: N classes per episode.
        examples_per_class: M examples of each class (the paper: 10).
        seed / generator: as for :class:`EpisodeSampler`.

    Raises:
        ValueError: empty data set, N > classes, or M > the examples of the smallest class.
    """

    def __init__(
        self,
        dataset: ImageDataset,
        n_way: int = 5,
        examples_per_class: int = 10,
        *,
        seed: int = 0,
        generator: torch.Generator | None = None,
    ) -> None:
        if len(dataset) == 0 or dataset.num_classes == 0:
            raise ValueError("dataset is empty: cannot sample episodes from an empty split")
        if not 1 <= n_way <= dataset.num_classes:
            raise ValueError(f"n_way must be in 1..{dataset.num_classes} (the dataset's classes), got {n_way}")
        self.index = ClassIndex(dataset.labels, dataset.num_classes)
        smallest = int(self.index.counts.min())
        if not 1 <= examples_per_class <= smallest:
            raise ValueError(
                f"examples_per_class must be in 1..{smallest} (the smallest class's examples), "
                f"got {examples_per_class}"
            )
        self.flat = dataset.images.reshape(len(dataset), -1).contiguous()
        self.n_way, self.examples_per_class = n_way, examples_per_class
        self.generator = generator if generator is not None else torch.Generator().manual_seed(seed)

    def sample(self, batch_size: int) -> LabelOffsetBatch:
        """Draw ``batch_size`` episodes of N·M steps each."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be ≥ 1, got {batch_size}")
        b, n, m, g = batch_size, self.n_way, self.examples_per_class, self.generator
        classes = self.index.choose_classes(b, n, g)
        idx = self.index.choose_examples(classes, m, g).reshape(b, n * m)
        labels = torch.arange(n).repeat_interleave(m).expand(b, -1)
        order = torch.rand(b, n * m, generator=g).argsort(dim=1)
        idx, labels = idx.gather(1, order), labels.gather(1, order)
        labels, classes = labels.to(self.flat.device), classes.to(self.flat.device)
        x = self.flat.index_select(0, idx.reshape(-1).to(self.flat.device)).view(b, n * m, -1)
        onehot = F.one_hot(labels, n).to(x.dtype)
        previous = torch.cat([torch.zeros_like(onehot[:, :1]), onehot[:, :-1]], dim=1)
        instance = (onehot.cumsum(1) * onehot).sum(-1).long() - 1
        return LabelOffsetBatch(torch.cat([x, previous], dim=-1), labels, instance, classes)
