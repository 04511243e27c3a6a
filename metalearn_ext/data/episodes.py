"""N-way K-shot episode sampling, batched into stacked tensors."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .batch import batch_to
from .class_index import ClassIndex
from .dataset import ImageDataset


@dataclass(frozen=True)
class EpisodeBatch:
    """A batch of E few-shot episodes with N ways, K shots and Q queries per class.

    Support and query are class-major: entries j·K .. j·K+K−1 of the support (j·Q .. j·Q+Q−1
    of the query) belong to episode class j, labelled j.

    Attributes:
        support_images: (E, N·K, C, H, W) float32.
        support_labels: (E, N·K) int64 in 0..N−1.
        query_images: (E, N·Q, C, H, W) float32.
        query_labels: (E, N·Q) int64 in 0..N−1.
        classes: (E, N) int64 dataset class of each episode label.
    """

    support_images: Tensor
    support_labels: Tensor
    query_images: Tensor
    query_labels: Tensor
    classes: Tensor

    def to(self, device: torch.device | str, non_blocking: bool = False) -> EpisodeBatch:
        """The same batch with every tensor on ``device``."""
        return batch_to(self, device, non_blocking)


class EpisodeSampler:
    """Samples N-way K-shot episodes from one data set (use :func:`split_classes` or the
    Omniglot ``"train"``/``"test"`` splits to keep meta-train/val/test classes disjoint).

    Each episode picks N distinct classes uniformly at random, then K + Q distinct examples of
    each; episode labels 0..N−1 follow the random class order. Sampling is vectorized over the
    whole batch and seeded by a CPU ``torch.Generator``; the batch is gathered on the data set's
    device (keep the images on the GPU to skip host-to-device copies).

    Args:
        dataset: the data set to draw from.
        n_way: N, classes per episode.
        k_shot: K, support examples per class (≥ 1).
        n_query: Q, query examples per class (≥ 0).
        seed: seeds a private generator; ignored when ``generator`` is given.
        generator: an explicit CPU generator.

    Raises:
        ValueError: an empty data set, ``n_way`` > the number of classes, or ``k_shot + n_query``
            > the examples of the smallest class.
    """

    def __init__(
        self,
        dataset: ImageDataset,
        n_way: int,
        k_shot: int,
        n_query: int,
        *,
        seed: int = 0,
        generator: torch.Generator | None = None,
    ) -> None:
        if len(dataset) == 0 or dataset.num_classes == 0:
            raise ValueError("dataset is empty: cannot sample episodes from an empty split")
        if n_way < 1:
            raise ValueError(f"n_way must be ≥ 1, got {n_way}")
        if k_shot < 1:
            raise ValueError(f"k_shot must be ≥ 1, got {k_shot}")
        if n_query < 0:
            raise ValueError(f"n_query must be ≥ 0, got {n_query}")
        if n_way > dataset.num_classes:
            raise ValueError(f"n_way={n_way} is more than the dataset's {dataset.num_classes} classes")
        self.index = ClassIndex(dataset.labels, dataset.num_classes)
        smallest = int(self.index.counts.min())
        if k_shot + n_query > smallest:
            c = int(self.index.counts.argmin())
            raise ValueError(
                f"k_shot + n_query = {k_shot + n_query} is more than the {smallest} examples of class "
                f"{dataset.class_names[c]!r}"
            )
        self.dataset = dataset
        self.images = dataset.images.contiguous()
        self.n_way, self.k_shot, self.n_query = n_way, k_shot, n_query
        self.generator = generator if generator is not None else torch.Generator().manual_seed(seed)
        device = self.images.device  # a data set kept on the GPU is indexed there
        self._support_labels = torch.arange(n_way, device=device).repeat_interleave(k_shot)
        self._query_labels = torch.arange(n_way, device=device).repeat_interleave(n_query)

    def sample(self, num_episodes: int = 1) -> EpisodeBatch:
        """Draw ``num_episodes`` episodes as one :class:`EpisodeBatch`."""
        if num_episodes < 1:
            raise ValueError(f"num_episodes must be ≥ 1, got {num_episodes}")
        e, n, k, q = num_episodes, self.n_way, self.k_shot, self.n_query
        classes = self.index.choose_classes(e, n, self.generator)
        idx = self.index.choose_examples(classes, k + q, self.generator).to(self.images.device)  # (E, N, K+Q)
        shape = self.images.shape[1:]
        support = self.images.index_select(0, idx[:, :, :k].reshape(-1)).view(e, n * k, *shape)
        query = self.images.index_select(0, idx[:, :, k:].reshape(-1)).view(e, n * q, *shape)
        return EpisodeBatch(
            support_images=support,
            support_labels=self._support_labels.expand(e, -1).clone(),
            query_images=query,
            query_labels=self._query_labels.expand(e, -1).clone(),
            classes=classes.to(self.images.device),
        )
