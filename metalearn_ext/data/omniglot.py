"""Omniglot (Lake et al., 2015) from the official archives or their extracted trees.

Sources are ``images_background*.zip`` / ``images_evaluation*.zip`` (the full archives and
the ``_small1`` / ``_small2`` subsets) or directories of the same names, laid out as
``<Alphabet>/<characterNN>/<id>_<drawer>.png`` (105×105, 1-bit). They are looked for in each
of :func:`metalearn_ext.data.paths.search_dirs` and its ``omniglot/`` subdirectory; the first
directory holding any requested source wins. A zip and a directory of the same name: the zip
is read.

Decoding: strokes become 1.0 and background 0.0 (the PNGs store strokes black); images are
resized by box (area) filtering to ``image_size`` (no ringing) and quantized to uint8 for the
cache. Each source is cached on its own as ``omniglot-<source>-<size bytes>-<sha256[:16]>-<image_size>px.pt``
(for a directory the hash covers every PNG's relative path, size and mtime), written atomically;
a corrupt source raises ``ValueError`` and writes no cache. Characters present in several
sources (the small subsets share Greek and Latin) are merged by their drawing file names.
:func:`load_omniglot_image` decodes one PNG file by the same code.

Splits:
  * ``"background"`` / ``"evaluation"``: the characters of the background / evaluation sources.
  * ``"all"``: both together.
  * ``"train"`` / ``"test"``: the seeded character split of ``"all"``: characters are sorted by
    ``"<Alphabet>/<characterNN>"``, shuffled by ``torch.randperm`` under
    ``torch.Generator().manual_seed(seed)``, and the first ``round(n · 1200 / 1623)`` are
    ``"train"``, the rest ``"test"`` — exactly 1200/423 on the full 1623 characters, and the
    same proportion on whatever subset is present (179/63 for the two small archives);
    ``test_characters`` sets the size of ``"test"`` instead (e.g. 50: 192/50 on the small archives).
With ``rotations=True`` every character of the chosen split also appears rotated by 90, 180 and
270 degrees as three new classes named ``"<Alphabet>/<characterNN>/rot090"`` etc.; rotations
never cross a split, since they are added after splitting. ``mirrors=True`` likewise adds every class
(rotations included) mirrored left to right, named ``".../mirror"``.
"""

from __future__ import annotations

import hashlib
import io
import os
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np
import torch
from PIL import Image

from .dataset import ImageDataset
from .paths import check_root, resolve_cache_dir, save_tensors_atomically, search_dirs

SPLITS = ("background", "evaluation", "all", "train", "test")
TRAIN_FRACTION = 1200 / 1623
_CACHE_VERSION = 1
_DOWNLOAD_HINT = "metalearn data download omniglot --root DIR"


@dataclass(frozen=True)
class OmniglotSource:
    """One archive (``.zip``) or extracted directory of Omniglot PNGs."""

    path: Path

    @property
    def name(self) -> str:
        """The archive or directory name without ``.zip``, e.g. ``images_background_small1``."""
        return self.path.name[:-4] if self.path.suffix == ".zip" else self.path.name


def find_omniglot_sources(split: str, root: str | os.PathLike | None = None) -> list[OmniglotSource]:
    """The Omniglot sources that hold ``split``, sorted by name.

    Raises:
        FileNotFoundError: ``root`` is given but not a directory; or nothing found, naming every
            path tried and the download command.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    check_root(root)
    kinds = {"background": ("background",), "evaluation": ("evaluation",)}.get(
        split, ("background", "evaluation"))
    tried: list[str] = []
    for base in search_dirs(root):
        for d in (base, base / "omniglot"):
            pattern = " or ".join(f"images_{k}*[.zip]" for k in kinds)
            tried.append(f"{d}/{pattern}")
            if not d.is_dir():
                continue
            found: dict[str, OmniglotSource] = {}
            for entry in sorted(d.iterdir()):
                src = OmniglotSource(entry)
                if not any(src.name.startswith(f"images_{k}") for k in kinds):
                    continue
                if entry.suffix == ".zip" and entry.is_file():
                    found[src.name] = src
                elif entry.is_dir():
                    found.setdefault(src.name, src)
            if found:
                return [found[n] for n in sorted(found)]
    raise FileNotFoundError(
        f"no Omniglot {split!r} data found; tried:\n  " + "\n  ".join(tried)
        + f"\nDownload it with: {_DOWNLOAD_HINT}"
    )


def _zip_pngs(path: Path) -> list[tuple[str, bytes]]:
    try:
        with zipfile.ZipFile(path) as zf:
            names = sorted(n for n in zf.namelist() if n.lower().endswith(".png"))
            return [(n, zf.read(n)) for n in names]
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError) as e:
        raise ValueError(f"corrupt Omniglot archive {path}: {e}") from e


def _dir_pngs(path: Path) -> list[tuple[str, bytes]]:
    return [(str(p.relative_to(path)), p.read_bytes()) for p in sorted(path.rglob("*.png"))]


def _member_key(name: str, source: Path) -> str:
    parts = PurePosixPath(name.replace(os.sep, "/")).parts
    if len(parts) < 3:
        raise ValueError(
            f"unexpected Omniglot member {name!r} in {source}; expected <Alphabet>/<characterNN>/<file>.png"
        )
    return "/".join(parts[-3:])


def _source_fingerprint(src: OmniglotSource) -> tuple[int, str]:
    """(size in bytes, sha256 hex) of a zip; for a directory, of its PNG listing."""
    digest = hashlib.sha256()
    if src.path.is_file():
        with open(src.path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        return src.path.stat().st_size, digest.hexdigest()
    size = 0
    for p in sorted(src.path.rglob("*.png")):
        st = p.stat()
        size += st.st_size
        digest.update(f"{p.relative_to(src.path)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return size, digest.hexdigest()


def _decode_png(data: bytes, image_size: int, where: str) -> np.ndarray:
    """The PNG ``data`` as (S, S) uint8 with strokes 255 (the cached form); ``ValueError`` naming ``where``."""
    if not data:
        raise ValueError(f"empty Omniglot PNG {where} (0 bytes)")
    try:
        with Image.open(io.BytesIO(data)) as im:
            im = im.convert("L")
            if im.size != (image_size, image_size):
                im = im.resize((image_size, image_size), Image.Resampling.BOX)
            arr = np.asarray(im, dtype=np.uint8)
    except Exception as e:  # Pillow raises many types on bad data
        raise ValueError(f"corrupt Omniglot PNG {where}: {e}") from e
    return 255 - arr


def _to_unit_float(images: torch.Tensor) -> torch.Tensor:
    """Cached uint8 images -> float32 in [0, 1]; the last step of every Omniglot image's decoding."""
    return images.float().div_(255.0)


def _check_image_size(image_size: int) -> None:
    if not isinstance(image_size, int) or isinstance(image_size, bool) or image_size < 1:
        raise ValueError(f"image_size must be a positive int, got {image_size!r}")


def load_omniglot_image(path: str | os.PathLike, image_size: int = 28) -> torch.Tensor:
    """One Omniglot PNG (e.g. a user's own drawing) preprocessed exactly as :func:`load_omniglot`
    preprocesses the archives (the same code): strokes 1.0 on a 0.0 background (the PNGs store
    strokes black), box-resized to ``image_size``, quantized to 1/255 steps.

    Returns:
        (1, S, S) float32 in [0, 1].

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: the file is empty or not a readable image (the message names it).
    """
    _check_image_size(image_size)
    path = Path(path)
    arr = _decode_png(path.read_bytes(), image_size, str(path))
    return _to_unit_float(torch.from_numpy(arr)).unsqueeze(0)


def _decode_source(src: OmniglotSource, image_size: int) -> tuple[torch.Tensor, list[str]]:
    members = _zip_pngs(src.path) if src.path.is_file() else _dir_pngs(src.path)
    if not members:
        raise ValueError(f"no PNG files in Omniglot source {src.path}")
    keys = [_member_key(n, src.path) for n, _ in members]
    images = np.empty((len(members), 1, image_size, image_size), dtype=np.uint8)
    for i, (n, data) in enumerate(members):
        images[i, 0] = _decode_png(data, image_size, f"{src.path}:{n}")
    return torch.from_numpy(images), keys


def _load_source(src: OmniglotSource, image_size: int, cache_dir: Path) -> tuple[torch.Tensor, list[str]]:
    """Decoded (n, 1, S, S) uint8 images and their ``Alphabet/characterNN/file.png`` keys."""
    size, sha = _source_fingerprint(src)
    cache = cache_dir / f"omniglot-{src.name}-{size}-{sha[:16]}-{image_size}px.pt"
    if cache.is_file():
        try:
            blob = torch.load(cache, weights_only=True)
            if blob.get("version") == _CACHE_VERSION and blob.get("sha256") == sha:
                return blob["images"], list(blob["members"])
        except Exception as e:  # noqa: BLE001 - torch.load fails in many ways; the cache is rebuilt
            warnings.warn(f"ignoring unreadable Omniglot cache {cache}: {e}", stacklevel=3)
    images, keys = _decode_source(src, image_size)
    save_tensors_atomically(
        {"version": _CACHE_VERSION, "sha256": sha, "images": images, "members": keys}, cache
    )
    return images, keys


def _as_new_classes(ds: ImageDataset, suffixes: tuple[str, ...], transform) -> ImageDataset:
    """Each class k becomes classes n·k + m (m < n = len(suffixes)): its images under ``transform(images, m)``,
    named ``"<name><suffixes[m]>"`` (suffix "" for m = 0, the images as they are)."""
    n = len(suffixes)
    images = torch.cat([transform(ds.images, m) for m in range(n)])
    labels = torch.cat([ds.labels * n + m for m in range(n)])
    names = tuple(f"{c}{s}" for c in ds.class_names for s in suffixes)
    return ImageDataset(images, labels, names)


def _with_rotations(ds: ImageDataset) -> ImageDataset:
    """Each class k becomes classes 4k (0°), 4k+1 (90°), 4k+2 (180°), 4k+3 (270°)."""
    return _as_new_classes(ds, ("", "/rot090", "/rot180", "/rot270"), lambda x, m: torch.rot90(x, m, dims=(2, 3)))


def _with_mirrors(ds: ImageDataset) -> ImageDataset:
    """Each class k becomes classes 2k (as drawn) and 2k+1 (mirrored left to right, ``"<name>/mirror"``)."""
    return _as_new_classes(ds, ("", "/mirror"), lambda x, m: torch.flip(x, dims=(3,)) if m else x)


def omniglot_character_split(class_names: list[str], seed: int, n_test: int | None = None
                             ) -> tuple[list[int], list[int]]:
    """Indices into ``class_names`` of the seeded 1200/423-style (train, test) character split.

    ``class_names`` must be sorted; the first ``round(n · 1200/1623)`` of a seeded permutation
    are train — or, with ``n_test`` given, all but the last ``n_test`` of the same permutation.
    Raises ``ValueError`` if either side would be empty.
    """
    n = len(class_names)
    if n_test is not None and not 1 <= n_test < n:
        raise ValueError(f"n_test={n_test} held-out characters of {n}: need 1 ≤ n_test < {n}")
    n_train = round(n * TRAIN_FRACTION) if n_test is None else n - n_test
    if n_train < 1 or n_train >= n:
        raise ValueError(
            f"the 1200/423 character split of {n} characters leaves an empty split; need more characters"
        )
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    return sorted(order[:n_train]), sorted(order[n_train:])


def load_omniglot(
    split: str = "background",
    *,
    root: str | os.PathLike | None = None,
    image_size: int = 28,
    rotations: bool = False,
    mirrors: bool = False,
    seed: int = 0,
    test_characters: int | None = None,
    cache_dir: str | os.PathLike | None = None,
) -> ImageDataset:
    """Load an Omniglot split as tensors (see the module docstring for sources and splits).

    Args:
        split: ``"background"``, ``"evaluation"``, ``"all"``, ``"train"`` or ``"test"``.
        root: directory searched first for the archives (then ``$METALEARN_DATA``,
            ``~/.cache/metalearn``; each also as ``<dir>/omniglot``).
        image_size: side S of the square output images (28 default; 20 for MANN; any ≥ 1).
        rotations: add 90/180/270° rotations of every character as new classes.
        mirrors: add every character (and each rotation) mirrored left to right as a new class.
        seed: seed of the ``"train"``/``"test"`` character split.
        test_characters: how many characters ``"test"`` holds (default: the 1200/1623
            proportion); ``"train"`` holds the rest. Ignored by the other splits.
        cache_dir: where decoded sources are cached (default ``<data dir>/cache``).

    Returns:
        ImageDataset with images (num, 1, S, S) float32 in [0, 1] (strokes = 1), labels (num,),
        class names ``"<Alphabet>/<characterNN>"`` (plus ``"/rotDDD"`` for rotated copies and ``"/mirror"`` for
        mirrored ones), classes sorted by name (rotations and mirrors next to their character).
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    _check_image_size(image_size)
    sources = find_omniglot_sources(split, root)
    cache = resolve_cache_dir(cache_dir)
    decoded = [_load_source(src, image_size, cache) for src in sources]

    # Merge: a drawing present in several sources (shared alphabets) is kept once.
    first: dict[str, tuple[int, int]] = {}
    for s, (_, keys) in enumerate(decoded):
        for row, key in enumerate(keys):
            first.setdefault(key, (s, row))
    keys = sorted(first)
    offsets = np.cumsum([0] + [imgs.shape[0] for imgs, _ in decoded])
    rows = torch.tensor([offsets[first[k][0]] + first[k][1] for k in keys], dtype=torch.int64)
    images = torch.cat([imgs for imgs, _ in decoded]).index_select(0, rows)
    char_of = [k.rsplit("/", 1)[0] for k in keys]
    class_names = sorted(set(char_of))
    class_index = {c: i for i, c in enumerate(class_names)}
    labels = torch.tensor([class_index[c] for c in char_of], dtype=torch.int64)
    ds = ImageDataset(_to_unit_float(images), labels, tuple(class_names))

    if split in ("train", "test"):
        train, test = omniglot_character_split(class_names, seed, test_characters)
        ds = ds.subset_classes(train if split == "train" else test)
    ds = _with_rotations(ds) if rotations else ds
    return _with_mirrors(ds) if mirrors else ds
