"""MNIST and Fashion-MNIST from IDX files (gzipped or not).

Files are the official ``{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]``. They are looked
for, in order, in: ``root`` and ``root/<name>`` (if ``root`` is given; it must be an existing
directory), ``$METALEARN_DATA/<name>``, ``~/.cache/metalearn/<name>`` and, for Fashion-MNIST
only, ``/usr/share/datasets/fashion-mnist`` (Debian's ``dataset-fashion-mnist``). The first
directory holding both files of the split wins; a plain file is preferred to its ``.gz``.
Reading 60,000 images takes well under a second, so IDX files are not cached again.
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np
import torch

from .dataset import ImageDataset
from .paths import check_root, search_dirs

DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
CLASS_NAMES = {
    "mnist": tuple(str(d) for d in range(10)),
    "fashion-mnist": ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                      "Sneaker", "Bag", "Ankle boot"),
}
_FILE_PREFIX = {"train": "train", "test": "t10k"}
# IDX type code -> big-endian numpy dtype
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def parse_idx(data: bytes, name: str = "<bytes>") -> np.ndarray:
    """Decode the bytes of an IDX file into an array of shape (d0, d1, ...).

    The header is validated: magic ``0x00 0x00 <type> <ndim>``, a known type code, and a file
    length equal to header + product(dims) · itemsize. Raises ``ValueError`` naming ``name``.
    """
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise ValueError(f"{name}: not an IDX file (bad magic {data[:4].hex() or 'empty'})")
    type_code, ndim = data[2], data[3]
    if type_code not in _IDX_DTYPES:
        raise ValueError(f"{name}: unknown IDX type code 0x{type_code:02x}")
    if ndim == 0 or len(data) < 4 + 4 * ndim:
        raise ValueError(f"{name}: truncated IDX header ({ndim} dimensions)")
    dims = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    dtype = np.dtype(_IDX_DTYPES[type_code])
    expected = 4 + 4 * ndim + int(np.prod(dims)) * dtype.itemsize
    if len(data) != expected:
        raise ValueError(
            f"{name}: IDX header says dims {dims} ({expected} bytes) but the file has {len(data)} bytes"
        )
    return np.frombuffer(data, dtype=dtype, offset=4 + 4 * ndim).reshape(dims)


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (gzip detected by its magic bytes) into an array (d0, d1, ...)."""
    path = Path(path)
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as e:
            raise ValueError(f"{path}: corrupt gzip stream: {e}") from e
    return parse_idx(raw, str(path))


def _candidate_dirs(name: str, root: str | os.PathLike | None) -> list[Path]:
    dirs: list[Path] = []
    if root is not None:
        dirs.append(Path(root).expanduser())
    dirs += [d / name for d in search_dirs(root)]
    if name == "fashion-mnist":
        dirs.append(DEBIAN_FASHION_MNIST)
    return dirs


def _find_file(directory: Path, stem: str) -> Path | None:
    for candidate in (directory / stem, directory / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _get_hint(name: str) -> str:
    download = f"`metalearn data download {name} --root DIR`"
    if name == "fashion-mnist":
        return (f"Debian's package `dataset-fashion-mnist` (apt-get install dataset-fashion-mnist; it installs "
                f"into {DEBIAN_FASHION_MNIST}) or {download}")
    return download


def load_mnist(
    split: str = "train",
    *,
    name: str = "mnist",
    root: str | os.PathLike | None = None,
) -> ImageDataset:
    """Load MNIST or Fashion-MNIST as tensors.

    Args:
        split: ``"train"`` (60,000 images) or ``"test"`` (10,000).
        name: ``"mnist"`` or ``"fashion-mnist"``.
        root: directory searched first (see the module docstring for the search order).

    Returns:
        ImageDataset with images (num, 1, 28, 28) float32 in [0, 1], labels (num,) in 0..9.

    Raises:
        FileNotFoundError: ``root`` is given but not a directory; or the files are not found,
            naming every path tried and how to get them.
        ValueError: a corrupt header, mismatched image/label counts or labels outside 0..9.
    """
    if name not in CLASS_NAMES:
        raise ValueError(f"name must be one of {tuple(CLASS_NAMES)}, got {name!r}")
    if split not in _FILE_PREFIX:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    check_root(root)
    prefix = _FILE_PREFIX[split]
    stems = (f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte")
    dirs = _candidate_dirs(name, root)
    for d in dirs:
        found = [_find_file(d, s) for s in stems]
        if all(found):
            images_path, labels_path = found
            break
    else:
        # The first line stands alone (callers quote only it); the exact files follow.
        raise FileNotFoundError(
            f"{name} {split} files not found in {', '.join(map(str, dirs))}; get them with {_get_hint(name)}"
            "\ntried:\n  " + "\n  ".join(f"{d / s}[.gz]" for d in dirs for s in stems)
        )
    images = read_idx(images_path)
    labels = read_idx(labels_path)
    if images.ndim != 3 or images.dtype != np.uint8:
        raise ValueError(f"{images_path}: expected (num, H, W) uint8 images, got {images.shape} {images.dtype}")
    if labels.ndim != 1 or labels.shape[0] != images.shape[0]:
        raise ValueError(
            f"{labels_path}: expected {images.shape[0]} labels to match {images_path}, got shape {labels.shape}"
        )
    if labels.size and int(labels.max()) >= 10:
        raise ValueError(f"{labels_path}: labels must lie in 0..9, got max {int(labels.max())}")
    x = torch.from_numpy(images.astype(np.float32)).div_(255.0).unsqueeze(1)
    y = torch.from_numpy(labels.astype(np.int64))
    return ImageDataset(x, y, CLASS_NAMES[name])
