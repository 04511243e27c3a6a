"""The one in-memory representation every image data set in this package returns."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor


@dataclass(frozen=True, eq=False)
class ImageDataset:
    """A labelled image data set held as tensors.

    Attributes:
        images: (num, C, H, W) float32 in [0, 1].
        labels: (num,) int64 in [0, num_classes).
        class_names: one name per class; ``class_names[k]`` names label ``k``.
    """

    images: Tensor
    labels: Tensor
    class_names: tuple[str, ...]

    def __post_init__(self) -> None:
        if self.images.dim() != 4 or self.images.dtype != torch.float32:
            raise ValueError(
                f"images must be a (num, C, H, W) float32 tensor, got {tuple(self.images.shape)} "
                f"{self.images.dtype}"
            )
        if self.labels.dim() != 1 or self.labels.dtype != torch.int64:
            raise ValueError(
                f"labels must be a (num,) int64 tensor, got {tuple(self.labels.shape)} {self.labels.dtype}"
            )
        if self.labels.numel() != self.images.shape[0]:
            raise ValueError(
                f"labels has {self.labels.numel()} entries but images has {self.images.shape[0]}"
            )
        object.__setattr__(self, "class_names", tuple(self.class_names))
        if self.labels.numel() and (
            int(self.labels.min()) < 0 or int(self.labels.max()) >= len(self.class_names)
        ):
            raise ValueError(
                f"labels must lie in [0, {len(self.class_names)}) (one per class name), got "
                f"[{int(self.labels.min())}, {int(self.labels.max())}]"
            )

    def __len__(self) -> int:
        return self.images.shape[0]

    @property
    def num_classes(self) -> int:
        """Number of classes (``len(class_names)``)."""
        return len(self.class_names)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one image."""
        return tuple(self.images.shape[1:])  # type: ignore[return-value]

    def class_counts(self) -> Tensor:
        """(num_classes,) int64: examples per class."""
        return torch.bincount(self.labels, minlength=self.num_classes)

    def subset_classes(self, classes: Sequence[int] | Tensor) -> ImageDataset:
        """The examples of ``classes`` only, relabelled 0..len(classes)−1 in the given order."""
        classes = torch.as_tensor(classes, dtype=torch.int64).flatten()
        if classes.numel() and (int(classes.min()) < 0 or int(classes.max()) >= self.num_classes):
            raise ValueError(f"classes must lie in [0, {self.num_classes}), got {classes.tolist()}")
        if torch.unique(classes).numel() != classes.numel():
            raise ValueError(f"classes must be distinct, got {classes.tolist()}")
        new_label = torch.full((self.num_classes,), -1, dtype=torch.int64)
        new_label[classes] = torch.arange(classes.numel())
        mapped = new_label[self.labels]
        keep = mapped >= 0
        return ImageDataset(
            self.images[keep], mapped[keep], tuple(self.class_names[c] for c in classes.tolist())
        )

    def resized(self, size: int | tuple[int, int]) -> ImageDataset:
        """The same data set with images resized to ``size`` (bilinear, antialiased), clamped to
        [0, 1]; shape (num, C, size, size)."""
        h, w = (size, size) if isinstance(size, int) else size
        if h < 1 or w < 1:
            raise ValueError(f"size must be positive, got {size}")
        if (h, w) == tuple(self.images.shape[2:]):
            return self
        images = F.interpolate(self.images, size=(h, w), mode="bilinear", antialias=True,
                               align_corners=False).clamp_(0.0, 1.0)
        return ImageDataset(images, self.labels, self.class_names)


def split_classes(
    dataset: ImageDataset, sizes: Sequence[int], *, seed: int = 0
) -> list[ImageDataset]:
    """Split ``dataset`` into data sets with disjoint classes (e.g. meta-train/val/test).

    Classes are shuffled with ``torch.randperm`` under ``torch.Generator().manual_seed(seed)``;
    split ``i`` takes the next ``sizes[i]`` classes, relabelled 0..sizes[i]−1. ``sizes`` must be
    positive and sum to at most ``dataset.num_classes``.
    """
    if not sizes or any(int(s) < 1 for s in sizes):
        raise ValueError(f"sizes must be positive class counts (an empty split is not allowed), got {list(sizes)}")
    if sum(sizes) > dataset.num_classes:
        raise ValueError(
            f"sizes {list(sizes)} ask for {sum(sizes)} classes but the dataset has {dataset.num_classes}"
        )
    order = torch.randperm(dataset.num_classes, generator=torch.Generator().manual_seed(seed))
    out, start = [], 0
    for s in sizes:
        out.append(dataset.subset_classes(order[start : start + s]))
        start += s
    return out
