"""scikit-learn's 8×8 handwritten digits: always on disk, the quick demo's default."""

from __future__ import annotations

import torch

from .dataset import ImageDataset


def load_digits() -> ImageDataset:
    """The 1,797 UCI digits bundled with scikit-learn (no download).

    Returns:
        ImageDataset with images (1797, 1, 8, 8) float32 in [0, 1] (raw 0..16 divided by 16),
        labels (1797,) in 0..9, class names ``"0"``..``"9"``.
    """
    from sklearn.datasets import load_digits as _sk_load_digits

    bunch = _sk_load_digits()
    images = torch.as_tensor(bunch.images, dtype=torch.float32).div_(16.0).unsqueeze(1)
    labels = torch.as_tensor(bunch.target, dtype=torch.int64)
    return ImageDataset(images, labels, tuple(str(d) for d in range(10)))
