"""The explicit downloader behind ``metalearn data download``; nothing here runs implicitly.

Files land in ``<root>/<name>/`` (root defaults to ``$METALEARN_DATA`` or ``~/.cache/metalearn``),
where the loaders look for them. Every file is streamed into a staging directory inside the
destination, its length and checksums verified, and only when all files of the data set are
good are they renamed into place (``os.replace``). On any failure the staging directory and
any directory the call created are removed: nothing is left behind.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import shutil
import tempfile
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from .paths import default_data_dir


class DownloadError(RuntimeError):
    """A download failed (unreachable, cut short, or wrong checksum); nothing was installed."""


@dataclass(frozen=True)
class RemoteFile:
    """A file to fetch: its name on disk, mirror URLs tried in order, and expected checksums
    (at least one of ``md5``/``sha256``)."""

    filename: str
    urls: tuple[str, ...]
    md5: str | None = None
    sha256: str | None = None

    def __post_init__(self) -> None:
        if not self.md5 and not self.sha256:
            raise ValueError(f"RemoteFile {self.filename!r} needs an md5 or sha256 checksum")
        if not self.urls:
            raise ValueError(f"RemoteFile {self.filename!r} needs at least one URL")


def _files(base_urls: Sequence[str], md5s: dict[str, str]) -> tuple[RemoteFile, ...]:
    return tuple(
        RemoteFile(name, tuple(f"{base.rstrip('/')}/{name}" for base in base_urls), md5=md5)
        for name, md5 in md5s.items()
    )


_MNIST_NAMES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
                "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")
MIRRORS: dict[str, tuple[str, ...]] = {
    "omniglot": ("https://raw.githubusercontent.com/brendenlake/omniglot/master/python",),
    "mnist": ("https://ossci-datasets.s3.amazonaws.com/mnist",
              "https://storage.googleapis.com/cvdf-datasets/mnist"),
    "fashion-mnist": ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com",
                      "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion"),
}
# Official MD5s (as published with torchvision's dataset definitions).
CHECKSUMS: dict[str, dict[str, str]] = {
    "omniglot": {"images_background.zip": "68d2efa1b9178cc56df9314c21c6e718",
                 "images_evaluation.zip": "6b91aef0f799c5bb55b94e3f2daec811"},
    "mnist": dict(zip(_MNIST_NAMES, ("f68b3c2dcbeaaa9fbdd348bbdeb94873", "d53e105ee54ea40749a09fcbcd1e9432",
                                     "9fb629c4189551a2d022fa330f9573f3", "ec29112dd5afa0611ce80d1b7f02629c"))),
    "fashion-mnist": dict(zip(_MNIST_NAMES, ("8d4fb7e6c68d591d4c3dfef9ec88bf0d", "25c81989df183df01b3e8a0aad5dffbe",
                                             "bef4ecab320f06d8554ea6380940ec79", "bb300cfdad3c16e7a12a480ee83cd310"))),
}
DATASETS = tuple(CHECKSUMS)
_CHUNK = 1 << 16


def _digests(path: Path, f: RemoteFile) -> dict[str, str]:
    hashes = {k: hashlib.new(k) for k in ("md5", "sha256") if getattr(f, k)}
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            for h in hashes.values():
                h.update(block)
    return {k: h.hexdigest() for k, h in hashes.items()}


def _checksum_problem(path: Path, f: RemoteFile) -> str | None:
    for kind, got in _digests(path, f).items():
        want = getattr(f, kind).lower()
        if got != want:
            return f"{kind} mismatch: expected {want}, got {got}"
    return None


def _fetch(url: str, dest: Path, timeout: float, progress: Callable[[str], None] | None) -> None:
    """Stream ``url`` into ``dest``; raise on HTTP errors or a body shorter than announced."""
    with urllib.request.urlopen(url, timeout=timeout) as response, open(dest, "wb") as out:
        expected = response.headers.get("Content-Length")
        received = 0
        while block := response.read(_CHUNK):
            out.write(block)
            received += len(block)
        if expected is not None and received != int(expected):
            raise DownloadError(f"connection closed after {received} of {expected} bytes")
    if progress:
        progress(f"fetched {url} ({received} bytes)")


def download_files(
    files: Sequence[RemoteFile],
    dest_dir: str | os.PathLike,
    *,
    timeout: float = 60.0,
    progress: Callable[[str], None] | None = None,
) -> list[Path]:
    """Fetch and verify ``files`` into ``dest_dir``, all or nothing.

    A file already in ``dest_dir`` with the right checksums is kept as is. Each file is tried
    at each of its URLs in turn.

    Returns:
        The installed paths, one per file, in order.

    Raises:
        DownloadError: a file failed at every URL (the message lists each URL and why);
            ``dest_dir`` is then as it was before the call.
    """
    dest = Path(dest_dir).expanduser()
    created = [p for p in (dest, *dest.parents) if not p.exists()]
    dest.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".download-", dir=dest))
    succeeded = False
    try:
        staged: list[tuple[Path, Path]] = []
        for f in files:
            final = dest / f.filename
            if final.is_file() and _checksum_problem(final, f) is None:
                continue
            part = staging / f.filename
            errors = []
            for url in f.urls:
                try:
                    _fetch(url, part, timeout, progress)
                    problem = _checksum_problem(part, f)
                    if problem is None:
                        break
                    errors.append(f"{url}: {problem}")
                except (OSError, http.client.HTTPException, DownloadError) as e:  # URLError is an OSError
                    errors.append(f"{url}: {e}")
                part.unlink(missing_ok=True)
            else:
                raise DownloadError(
                    f"could not download {f.filename}; nothing was installed in {dest}:\n  "
                    + "\n  ".join(errors)
                )
            staged.append((part, final))
        for part, final in staged:
            os.replace(part, final)
        succeeded = True
        return [dest / f.filename for f in files]
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        if not succeeded:
            for d in created:  # innermost first; only directories this call made, if left empty
                try:
                    d.rmdir()
                except OSError:
                    break


def download_dataset(
    name: str,
    root: str | os.PathLike | None = None,
    *,
    mirrors: Sequence[str] | None = None,
    timeout: float = 60.0,
    progress: Callable[[str], None] | None = None,
) -> list[Path]:
    """Download data set ``name`` (``"omniglot"``, ``"mnist"`` or ``"fashion-mnist"``) into
    ``<root>/<name>/`` with checksum verification (see :func:`download_files`).

    Args:
        name: which data set.
        root: data directory (default ``$METALEARN_DATA`` or ``~/.cache/metalearn``).
        mirrors: base URLs to use instead of the official ones (``<mirror>/<filename>``).
        timeout: socket timeout in seconds per request.
        progress: called with a line of text per fetched file.

    Returns:
        The installed file paths.
    """
    if name not in CHECKSUMS:
        raise ValueError(f"name must be one of {DATASETS}, got {name!r}")
    if mirrors is not None and not mirrors:
        raise ValueError("mirrors must name at least one base URL")
    files = _files(tuple(mirrors) if mirrors else MIRRORS[name], CHECKSUMS[name])
    base = Path(root).expanduser() if root is not None else default_data_dir()
    return download_files(files, base / name, timeout=timeout, progress=progress)
