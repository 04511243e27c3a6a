"""Image completion (task "image"): pixels as points, x = (row, column) scaled to [−1, 1],
y = the intensity in [0, 1] (Garnelo et al. 2018a, §4.2), on 28×28 Omniglot or the 8×8 digits.

Per image, the pixels are shuffled; the context is the first n_c of them, n_c drawn uniformly
between ``min_context_fraction`` and ``max_context_fraction`` of the P pixels (at least one), and
the targets are the first ``max_target`` (default: all P) of the shuffled pixels, so they include
the context. Training images come from the meta-training classes, test images from held-out
classes (Omniglot characters, digits): the class split of task "episodes", whose data sets this
task reuses.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor

from metalearn_ext.config import ConfigError, check_positive
from metalearn_ext.tasks.base import TaskConfig, TaskFamily, draw_items, register_task
from metalearn_ext.tasks.context_target import ContextTargetBatch
from metalearn_ext.tasks.episodes import EpisodesTaskConfig, EpisodeTask

__all__ = ["ImageCompletionBatch", "ImageCompletionTask", "ImageCompletionTaskConfig", "pixel_coordinates"]

_DEFAULT_SIZE = {"omniglot": 28, "digits": 8}


@dataclass(frozen=True)
class ImageCompletionBatch(ContextTargetBatch):
    """:class:`ContextTargetBatch` with x (E, ·, 2), y (E, ·, 1), plus ``images`` (E, 1, S, S),
    the whole images the points were taken from (for pictures)."""

    images: Tensor


@dataclass
class ImageCompletionTaskConfig(TaskConfig):
    """Image completion (the ``task:`` section, name ``image``)."""

    name: str = "image"
    dataset: Literal["omniglot", "digits"] = "omniglot"
    root: str | None = None  # directory searched first for the Omniglot archives
    image_size: int | None = None  # None: 28 for Omniglot, 8 for the digits
    min_context_fraction: float = 0.01
    max_context_fraction: float = 0.5
    max_target: int | None = None  # targets per image (None: every pixel)
    split_seed: int = 0
    test_classes: int | None = None  # held-out characters / digits (None: the episodes task's default)

    @property
    def size(self) -> int:
        return self.image_size if self.image_size is not None else _DEFAULT_SIZE[self.dataset]

    def context_range(self) -> tuple[int, int]:
        """(fewest, most) context points."""
        p = self.size**2
        return max(1, round(self.min_context_fraction * p)), max(1, round(self.max_context_fraction * p))

    def check(self, section: str) -> None:
        check_positive(self, section, "image_size", "max_target", "test_classes")
        if not 0 <= self.min_context_fraction <= self.max_context_fraction <= 1:
            raise ConfigError(f"config keys '{section}.min_context_fraction' / '{section}.max_context_fraction': need "
                              f"0 <= min <= max <= 1, got {self.min_context_fraction} / {self.max_context_fraction}")
        if self.max_target is not None and not self.context_range()[1] <= self.max_target <= self.size**2:
            raise ConfigError(f"config key '{section}.max_target': must lie in {self.context_range()[1]}.."
                              f"{self.size**2} (the most context points .. all pixels), got {self.max_target}")
        if self.dataset == "digits" and self.root is not None:
            raise ConfigError(f"config key '{section}.root': the 8x8 digits ship with scikit-learn, got {self.root!r}")


def pixel_coordinates(size: int) -> Tensor:
    """(size², 2) float32: (row, column) of every pixel in row-major order, scaled to [−1, 1]."""
    r = torch.linspace(-1.0, 1.0, size) if size > 1 else torch.zeros(1)
    return torch.stack(torch.meshgrid(r, r, indexing="ij"), -1).reshape(-1, 2)


class ImageCompletionTask(TaskFamily):
    """Images of the training or held-out classes as point sets; ``sample`` -> :class:`ImageCompletionBatch`."""

    family = "regression"

    def __init__(self, cfg: ImageCompletionTaskConfig) -> None:
        self.cfg = cfg
        self.images = EpisodeTask(EpisodesTaskConfig(dataset=cfg.dataset, root=cfg.root, image_size=cfg.size,
                                                     rotations=False, test_rotations=False, split_seed=cfg.split_seed,
                                                     test_classes=cfg.test_classes))
        self.coords = pixel_coordinates(cfg.size)

    def sample(self, indices: Sequence[int], *, seed: int, step: int, split: str = "train") -> ImageCompletionBatch:
        """Images ``indices`` of meta-step ``step``: context_x (E, Nc, 2) with Nc the most context
        points, target_x (E, Nt, 2) with Nt = max_target or S², y (E, ·, 1), masks, counts, images."""
        cfg = self.cfg
        data = self.images.dataset(split).images
        p = cfg.size**2
        lo, hi = cfg.context_range()
        n_t = cfg.max_target or p

        def one(g: torch.Generator) -> ImageCompletionBatch:
            image = data[int(torch.randint(data.shape[0], (1,), generator=g))]
            order = torch.randperm(p, generator=g)[:n_t]
            n_c = int(torch.randint(lo, hi + 1, (1,), generator=g))
            x, y = self.coords[order], image.reshape(p, 1)[order]
            mask = torch.arange(hi) < n_c
            keep = mask[:, None].to(x.dtype)
            return ImageCompletionBatch(x[None, :hi] * keep, y[None, :hi] * keep, mask[None], x[None], y[None],
                                        torch.ones(1, n_t, dtype=torch.bool), torch.tensor([n_c]), torch.tensor([n_t]),
                                        image[None])

        return draw_items(indices, seed=seed, step=step, split=split, draw=one)

    def shapes(self) -> dict[str, Any]:
        c = self.cfg
        return {"x_dim": 2, "y_dim": 1, "image_size": c.size, "max_context": c.context_range()[1],
                "max_target": c.max_target or c.size**2}


register_task("image", "regression", ImageCompletionTaskConfig, ImageCompletionTask,
              "image completion: pixels as points (x = coordinates, y = intensity), Omniglot 28x28 or digits 8x8, "
              "held-out classes (CNP, NP, ANP)")
