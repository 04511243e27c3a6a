"""Label-offset episodes (MANN, Santoro et al. 2016): task "label-offset".

An episode shows N classes × M examples, shuffled; step s gets the image x_s and the label of
step s − 1, and must predict y_s (memory_np.md §1: 5 classes, 10 examples each, 20×20 Omniglot,
90° rotations, held-out characters). Characters are split as for task "episodes"
(:mod:`metalearn_ext.tasks.episodes`): the rotations of a held-out character are held out too.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch

from metalearn_ext.config import check_positive
from metalearn_ext.data import ImageDataset, LabelOffsetBatch, LabelOffsetSampler
from metalearn_ext.tasks.base import TaskConfig, TaskFamily, draw_items, register_task, split_purpose
from metalearn_ext.tasks.episodes import check_shift, load_omniglot_split, random_shift

__all__ = ["LabelOffsetTask", "LabelOffsetTaskConfig"]


@dataclass
class LabelOffsetTaskConfig(TaskConfig):
    """MANN's episodes on Omniglot (the ``task:`` section, name ``label-offset``)."""

    name: str = "label-offset"
    root: str | None = None  # directory searched first for the Omniglot archives or trees
    image_size: int = 20
    n_way: int = 5  # classes per episode (the paper: 5 or 15)
    examples_per_class: int = 10  # episode length L = n_way · examples_per_class
    rotations: bool = True  # training characters rotated by 90/180/270° as new classes
    test_rotations: bool = False  # the same for the held-out characters
    mirrors: bool = False  # training characters (and their rotations) mirrored left to right as new classes
    split_seed: int = 0
    test_classes: int | None = None  # held-out characters (None: the 1200/1623 proportion)
    shift: int = 0  # training images translated by up to ± shift pixels each axis (zeros shifted in); 0: off

    def check(self, section: str) -> None:
        check_positive(self, section, "image_size", "n_way", "examples_per_class", "test_classes")
        check_shift(self, section)


class LabelOffsetTask(TaskFamily):
    """Label-offset episodes; ``sample`` -> :class:`metalearn_ext.data.LabelOffsetBatch`. Data are
    loaded on first use (``shapes()`` needs none)."""

    family = "label_offset"

    def __init__(self, cfg: LabelOffsetTaskConfig) -> None:
        self.cfg = cfg
        self._data: dict[str, ImageDataset] = {}
        self._samplers: dict[tuple[str, int, int], LabelOffsetSampler] = {}

    def dataset(self, split: str = "train") -> ImageDataset:
        """The characters of ``split``: images (num, 1, S, S) float32 in [0, 1], strokes 1."""
        split_purpose(split)  # validates split
        if split not in self._data:
            self._data[split] = load_omniglot_split(self.cfg, split)
        return self._data[split]

    def _sampler(self, split: str, n: int, m: int) -> LabelOffsetSampler:
        if (split, n, m) not in self._samplers:
            ds = self.dataset(split)
            where = f"the {split!r} split of Omniglot"
            if n > ds.num_classes:
                raise ValueError(f"n_way={n} is more than the {ds.num_classes} classes of {where}")
            fewest = int(ds.class_counts().min())
            if m > fewest:
                raise ValueError(f"examples_per_class={m} is more than the {fewest} drawings per class of {where}")
            self._samplers[split, n, m] = LabelOffsetSampler(ds, n, m)
        return self._samplers[split, n, m]

    def sample(self, indices: Sequence[int], *, seed: int, step: int, split: str = "train",
               n_way: int | None = None, examples_per_class: int | None = None) -> LabelOffsetBatch:
        """Episodes ``indices`` of meta-step ``step`` (B = len(indices), L = N·M, D = S·S).

        Returns:
            LabelOffsetBatch: inputs (B, L, D + N) = [x_s ; onehot(y_{s−1})], labels (B, L),
            instance (B, L) (0 at a class's first showing), classes (B, N).

        Raises:
            ValueError: N more than the split's classes, M more than its drawings per class.
        """
        cfg = self.cfg
        sampler = self._sampler(split, cfg.n_way if n_way is None else n_way,
                                cfg.examples_per_class if examples_per_class is None else examples_per_class)

        shift, size = (cfg.shift if split == "train" else 0), cfg.image_size

        def one(g: torch.Generator) -> LabelOffsetBatch:
            sampler.generator = g
            b = sampler.sample(1)
            if shift:  # drawn after the episode, from the same generator: reproducible per episode
                d = size * size
                images = random_shift(b.inputs[..., :d].reshape(*b.inputs.shape[:2], 1, size, size), shift, g)
                b = replace(b, inputs=torch.cat([images.flatten(2), b.inputs[..., d:]], dim=-1))
            return b

        return draw_items(indices, seed=seed, step=step, split=split, draw=one)

    def shapes(self) -> dict[str, Any]:
        c = self.cfg
        d = c.image_size * c.image_size
        return {"image_shape": [1, c.image_size, c.image_size], "image_dim": d, "input_dim": d + c.n_way,
                "n_way": c.n_way, "examples_per_class": c.examples_per_class,
                "length": c.n_way * c.examples_per_class}


register_task("label-offset", "label_offset", LabelOffsetTaskConfig, LabelOffsetTask,
              "MANN's label-offset episodes: 5 Omniglot classes x 10 drawings, 20x20, held-out characters")
