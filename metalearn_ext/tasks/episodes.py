"""N-way K-shot episodes (ProtoNet, MAML, MetaNet): task "episodes".

Classes are split once, by ``split_seed``, into meta-training classes and held-out classes that
meta-training never sees: Omniglot by character (:func:`metalearn_ext.data.omniglot_character_split`,
so the rotations of a held-out character are held out too), the 8×8 digits by digit. With
``rotations`` every training character also appears rotated by 90°, 180° and 270° as three new
classes (MAML, Vinyals et al.); held-out characters are rotated only with ``test_rotations``
(ProtoNet's protocol, Snell et al., tests on rotations too).

Also :func:`load_omniglot_split`, which the label-offset task shares.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

import torch
from torch import Tensor

from metalearn_ext.config import ConfigError, check_positive
from metalearn_ext.data import EpisodeBatch, EpisodeSampler, ImageDataset, load_digits, load_omniglot, split_classes
from metalearn_ext.tasks.base import TaskConfig, TaskFamily, draw_items, register_task, split_purpose

__all__ = ["EpisodeTask", "EpisodesTaskConfig", "load_omniglot_split"]

_DIGIT_CLASSES = 10


def load_omniglot_split(cfg: Any, split: str) -> ImageDataset:
    """Omniglot's meta-training (``split="train"``) or held-out characters for a config with
    ``root``, ``image_size``, ``rotations``, ``test_rotations``, ``mirrors``, ``split_seed``,
    ``test_classes``."""
    rotate = cfg.rotations if split == "train" else cfg.test_rotations
    mirror = split == "train" and cfg.mirrors
    return load_omniglot(split, root=cfg.root, image_size=cfg.image_size, rotations=rotate, mirrors=mirror,
                         seed=cfg.split_seed, test_characters=cfg.test_classes)


@dataclass
class EpisodesTaskConfig(TaskConfig):
    """N-way K-shot episodes (the ``task:`` section, name ``episodes``). ``n_way``, ``k_shot``,
    ``n_query`` shape the training episodes; evaluation asks for its own shapes."""

    name: str = "episodes"
    dataset: Literal["omniglot", "digits"] = "omniglot"
    root: str | None = None  # directory searched first for the Omniglot archives or trees
    image_size: int = 28  # images are resized to image_size × image_size (digits too)
    n_way: int = 5
    k_shot: int = 1
    n_query: int = 15  # queries per class
    rotations: bool = True  # training characters rotated by 90/180/270° as new classes (Omniglot)
    test_rotations: bool = False  # the same for the held-out characters
    mirrors: bool = False  # training characters (and their rotations) mirrored left to right as new classes
    split_seed: int = 0
    test_classes: int | None = None  # held-out characters / digits (None: Omniglot 1200/1623 proportion, 5 digits)
    shift: int = 0  # training images translated by up to ± shift pixels each axis (zeros shifted in); 0: off
    rotate: float = 0.0  # training images rotated by a uniform angle in ± rotate degrees (bilinear); 0: off
    scale: float = 0.0  # training images scaled by a uniform factor in [1 − scale, 1 + scale]; 0: off

    def check(self, section: str) -> None:
        check_positive(self, section, "image_size", "n_way", "k_shot", "n_query", "test_classes")
        check_shift(self, section)
        check_affine(self, section)
        if self.dataset == "digits":
            for key in ("rotations", "test_rotations", "mirrors"):
                if getattr(self, key):
                    raise ConfigError(f"config key '{section}.{key}': rotated or mirrored digits are other digits (6 and 9); "
                                      f"set it false for dataset digits")
            if self.root is not None:
                raise ConfigError(f"config key '{section}.root': the 8x8 digits ship with scikit-learn and are "
                                  f"not read from a directory (got {self.root!r})")
            if self.test_classes is not None and self.test_classes >= _DIGIT_CLASSES:
                raise ConfigError(f"config key '{section}.test_classes': the digits have {_DIGIT_CLASSES} classes; "
                                  f"at least one must stay for training, got {self.test_classes}")


def check_shift(cfg: Any, section: str) -> None:
    """``cfg.shift`` in [0, cfg.image_size), else a ConfigError naming ``section.shift`` (its type is
    checked when the section is read)."""
    if not 0 <= cfg.shift < cfg.image_size:
        raise ConfigError(f"config key '{section}.shift': expected an integer in [0, image_size = "
                          f"{cfg.image_size}), got {cfg.shift!r}")


def check_affine(cfg: Any, section: str) -> None:
    """``cfg.rotate`` in [0, 180] degrees and ``cfg.scale`` in [0, 1), else a ConfigError naming the key."""
    if not 0.0 <= float(cfg.rotate) <= 180.0:
        raise ConfigError(f"config key '{section}.rotate': expected degrees in [0, 180], got {cfg.rotate!r}")
    if not 0.0 <= float(cfg.scale) < 1.0:
        raise ConfigError(f"config key '{section}.scale': expected a fraction in [0, 1), got {cfg.scale!r}")


def random_affine(images: Tensor, rotate: float, scale: float, generator: torch.Generator) -> Tensor:
    """Each image rotated about its centre by its own angle, uniform in ± ``rotate`` degrees, and
    scaled by its own factor, uniform in [1 − ``scale``, 1 + ``scale``]; bilinear, zeros (the
    background) outside: images (..., C, H, W) → the same shape. Draws come from ``generator``."""
    if rotate <= 0 and scale <= 0:
        return images
    flat = images.reshape(-1, *images.shape[-3:])
    m = flat.shape[0]
    angle = (torch.rand(m, generator=generator, dtype=torch.float64) * 2 - 1) * (rotate * torch.pi / 180)
    factor = 1 + (torch.rand(m, generator=generator, dtype=torch.float64) * 2 - 1) * scale
    cos, sin = torch.cos(angle) / factor, torch.sin(angle) / factor  # output → input coordinates
    theta = torch.zeros(m, 2, 3, dtype=torch.float64)
    theta[:, 0, 0], theta[:, 0, 1], theta[:, 1, 0], theta[:, 1, 1] = cos, -sin, sin, cos
    grid = torch.nn.functional.affine_grid(theta.to(flat.dtype), list(flat.shape), align_corners=False)
    out = torch.nn.functional.grid_sample(flat, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return out.reshape(images.shape)


def random_shift(images: Tensor, shift: int, generator: torch.Generator) -> Tensor:
    """Each image translated by its own integer offset in [−shift, shift] on each axis, zeros shifted
    in (the background): images (..., C, H, W) → the same shape. Offsets come from ``generator``."""
    if shift <= 0:
        return images
    flat = images.reshape(-1, *images.shape[-3:])
    m, c, h, w = flat.shape
    offsets = torch.randint(-shift, shift + 1, (m, 2), generator=generator)
    padded = torch.nn.functional.pad(flat, (shift, shift, shift, shift))
    rows = (shift - offsets[:, :1]) + torch.arange(h)  # (m, h): the padded rows image i reads
    cols = (shift - offsets[:, 1:]) + torch.arange(w)  # (m, w)
    out = padded[torch.arange(m)[:, None, None, None], torch.arange(c)[None, :, None, None],
                 rows[:, None, :, None], cols[:, None, None, :]]  # one gather for the whole batch
    return out.reshape(images.shape)


class EpisodeTask(TaskFamily):
    """N-way K-shot episodes of the meta-training or held-out classes; data are loaded on first use
    (``shapes()`` needs none), then kept."""

    family = "episodes"

    def __init__(self, cfg: EpisodesTaskConfig) -> None:
        self.cfg = cfg
        self._data: dict[str, ImageDataset] = {}
        self._samplers: dict[tuple[str, int, int, int], EpisodeSampler] = {}

    def dataset(self, split: str = "train") -> ImageDataset:
        """The classes of ``split``: images (num, 1, S, S) float32 in [0, 1], strokes 1."""
        split_purpose(split)  # validates split
        if split not in self._data:
            cfg = self.cfg
            if cfg.dataset == "omniglot":
                self._data[split] = load_omniglot_split(cfg, split)
            else:
                digits = load_digits().resized(cfg.image_size)
                n_test = cfg.test_classes if cfg.test_classes is not None else _DIGIT_CLASSES // 2
                train, test = split_classes(digits, [_DIGIT_CLASSES - n_test, n_test], seed=cfg.split_seed)
                self._data.update(train=train, test=test)
        return self._data[split]

    def _sampler(self, split: str, n: int, k: int, q: int) -> EpisodeSampler:
        key = (split, n, k, q)
        if key not in self._samplers:
            try:
                self._samplers[key] = EpisodeSampler(self.dataset(split), n, k, q)
            except ValueError as e:  # the sampler names the number; say which split it was
                raise ValueError(f"{e} (the {split!r} split of {self.cfg.dataset})") from None
        return self._samplers[key]

    def sample(self, indices: Sequence[int], *, seed: int, step: int, split: str = "train",
               n_way: int | None = None, k_shot: int | None = None, n_query: int | None = None) -> EpisodeBatch:
        """Episodes ``indices`` of meta-step ``step`` (E = len(indices)), shaped by the config unless
        ``n_way`` / ``k_shot`` / ``n_query`` say otherwise.

        Returns:
            EpisodeBatch: support_images (E, N·K, 1, S, S), support_labels (E, N·K), query_images
            (E, N·Q, 1, S, S), query_labels (E, N·Q), classes (E, N); class-major, labels 0..N−1.

        Raises:
            ValueError: N more than the split's classes, K + Q more than its examples per class.
        """
        cfg = self.cfg
        pick = lambda given, default: default if given is None else given
        sampler = self._sampler(split, pick(n_way, cfg.n_way), pick(k_shot, cfg.k_shot), pick(n_query, cfg.n_query))

        train = split == "train"
        shift = cfg.shift if train else 0
        rotate, scale = (float(cfg.rotate), float(cfg.scale)) if train else (0.0, 0.0)

        def one(g: torch.Generator) -> EpisodeBatch:
            sampler.generator = g
            b = sampler.sample(1)
            if rotate > 0 or scale > 0:  # drawn after the episode, before the shifts, from the same generator
                b = replace(b, support_images=random_affine(b.support_images, rotate, scale, g),
                            query_images=random_affine(b.query_images, rotate, scale, g))
            if shift:  # drawn after the episode, from the same generator: reproducible per episode
                b = replace(b, support_images=random_shift(b.support_images, shift, g),
                            query_images=random_shift(b.query_images, shift, g))
            return b

        return draw_items(indices, seed=seed, step=step, split=split, draw=one)

    def shapes(self) -> dict[str, Any]:
        s = self.cfg.image_size
        return {"image_shape": [1, s, s], "n_way": self.cfg.n_way, "k_shot": self.cfg.k_shot,
                "n_query": self.cfg.n_query}


register_task("episodes", "episodes", EpisodesTaskConfig, EpisodeTask,
              "N-way K-shot episodes on Omniglot (held-out characters) or the 8x8 digits (ProtoNet, MAML, MetaNet)")
