"""Where data sets and caches live on disk.

Search order for data files: an explicit ``root`` (the loaders refuse one that is not an existing
directory, see :func:`check_root`), then ``$METALEARN_DATA``, then ``~/.cache/metalearn``.
Caches go to an explicit ``cache_dir`` or ``<data dir>/cache``.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch

ENV_VAR = "METALEARN_DATA"


def default_data_dir() -> Path:
    """The data directory used when none is given: ``$METALEARN_DATA`` or ``~/.cache/metalearn``."""
    env = os.environ.get(ENV_VAR)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "metalearn"


def search_dirs(root: str | os.PathLike | None) -> list[Path]:
    """Directories searched for data files, in order: ``root`` (if given), ``$METALEARN_DATA``
    (if set), ``~/.cache/metalearn``; duplicates removed."""
    dirs: list[Path] = []
    if root is not None:
        dirs.append(Path(root).expanduser())
    env = os.environ.get(ENV_VAR)
    if env:
        dirs.append(Path(env).expanduser())
    dirs.append(Path.home() / ".cache" / "metalearn")
    unique: list[Path] = []
    for d in dirs:
        if d not in unique:
            unique.append(d)
    return unique


def check_root(root: str | os.PathLike | None) -> None:
    """``FileNotFoundError`` naming ``root`` unless it is None or an existing directory: a mistyped
    root must not be skipped silently in favour of whatever the other search directories hold."""
    if root is not None and not Path(root).expanduser().is_dir():
        what = "is a file, not a directory" if Path(root).expanduser().exists() else "does not exist"
        raise FileNotFoundError(f"data root {str(root)!r} {what}")


def resolve_cache_dir(cache_dir: str | os.PathLike | None) -> Path:
    """``cache_dir`` if given, else ``<default_data_dir()>/cache``."""
    return Path(cache_dir).expanduser() if cache_dir is not None else default_data_dir() / "cache"


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Create ``path`` atomically: ``write`` fills a temporary file in the same directory,
    which is then renamed over ``path`` (``os.replace``), so readers never see a partial file
    and a failure leaves nothing behind."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_tensors_atomically(obj: dict, path: Path) -> None:
    """``torch.save(obj)`` to ``path`` through :func:`atomic_write`."""

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())

    atomic_write(path, write)
