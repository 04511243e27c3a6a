"""Online classification streams for VSML / BLUR: T parallel streams of L labelled inputs."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .class_index import ClassIndex
from .dataset import ImageDataset


@dataclass(frozen=True)
class StreamBatch:
    """T parallel online-learning streams of length L.

    Attributes:
        inputs: (T, L, D) float32 flattened (and optionally projected) inputs.
        labels: (T, L) int64 in 0..n−1 (n = the stream's number of classes).
        classes: (T, n) int64; stream t's label j is dataset class ``classes[t, j]``.
        projection: (T, D_in, D) float32 per-stream projection, or None when not projecting.
    """

    inputs: Tensor
    labels: Tensor
    classes: Tensor
    projection: Tensor | None

    def to(self, device: torch.device | str, non_blocking: bool = False) -> StreamBatch:
        """The same batch with every tensor on ``device``."""
        def move(t: Tensor | None) -> Tensor | None:
            return None if t is None else t.to(device, non_blocking=non_blocking)

        return StreamBatch(move(self.inputs), move(self.labels), move(self.classes), move(self.projection))


class StreamSampler:
    """Samples online classification streams from a data set.

    Each stream picks ``num_classes`` distinct classes at random; their random order is the
    stream's label permutation (label j ↔ ``classes[t, j]``), so the same dataset class gets
    different labels in different streams. Each of the L steps draws a label uniformly and an
    example of that class uniformly (with replacement). Inputs are the images flattened to
    D_in = C·H·W — after resizing to ``image_size`` (done once, here), so one learner can meet
    data sets of different resolutions — and, if ``projection_dim`` is set, multiplied by a
    random matrix W_t ~ N(0, 1/D_in) of shape (D_in, projection_dim) drawn per stream and fixed
    along it.

    Args:
        dataset: the data set to draw from.
        num_classes: classes per stream (default: all of the dataset's classes).
        image_size: resize images to image_size × image_size first (default: keep).
        projection_dim: D of the per-stream random projection (default: no projection).
        seed: seeds a private generator; ignored when ``generator`` is given.
        generator: an explicit CPU generator.
    """

    def __init__(
        self,
        dataset: ImageDataset,
        *,
        num_classes: int | None = None,
        image_size: int | None = None,
        projection_dim: int | None = None,
        seed: int = 0,
        generator: torch.Generator | None = None,
    ) -> None:
        if len(dataset) == 0 or dataset.num_classes == 0:
            raise ValueError("dataset is empty: cannot sample streams from an empty split")
        num_classes = dataset.num_classes if num_classes is None else num_classes
        if not 1 <= num_classes <= dataset.num_classes:
            raise ValueError(
                f"num_classes must be in 1..{dataset.num_classes} (the dataset's classes), got {num_classes}"
            )
        if projection_dim is not None and projection_dim < 1:
            raise ValueError(f"projection_dim must be ≥ 1, got {projection_dim}")
        if image_size is not None:
            if image_size < 1:
                raise ValueError(f"image_size must be ≥ 1, got {image_size}")
            dataset = dataset.resized(image_size)
        self.index = ClassIndex(dataset.labels, dataset.num_classes)
        if int(self.index.counts.min()) == 0:
            empty = dataset.class_names[int(self.index.counts.argmin())]
            raise ValueError(f"class {empty!r} has no examples")
        self.flat = dataset.images.reshape(len(dataset), -1).contiguous()
        self.num_classes = num_classes
        self.projection_dim = projection_dim
        self.generator = generator if generator is not None else torch.Generator().manual_seed(seed)

    @property
    def input_dim(self) -> int:
        """D of the sampled inputs."""
        return self.projection_dim or self.flat.shape[1]

    def sample(self, num_streams: int, length: int) -> StreamBatch:
        """Draw ``num_streams`` streams of ``length`` steps: inputs (T, L, D), labels (T, L)."""
        if num_streams < 1:
            raise ValueError(f"num_streams must be ≥ 1, got {num_streams}")
        if length < 1:
            raise ValueError(f"length must be ≥ 1, got {length}")
        g = self.generator
        classes = self.index.choose_classes(num_streams, self.num_classes, g)  # (T, n)
        labels = torch.randint(self.num_classes, (num_streams, length), generator=g)
        idx = self.index.draw_examples(classes.gather(1, labels), g).to(self.flat.device)  # (T, L)
        inputs = self.flat.index_select(0, idx.reshape(-1)).view(num_streams, length, -1)
        projection = None
        if self.projection_dim is not None:
            d_in = self.flat.shape[1]
            projection = torch.randn(num_streams, d_in, self.projection_dim, generator=g) / d_in**0.5
            projection = projection.to(self.flat.device)
            inputs = torch.bmm(inputs, projection)
        device = self.flat.device
        return StreamBatch(inputs, labels.to(device), classes.to(device), projection)
