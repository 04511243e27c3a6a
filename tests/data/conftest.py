"""Shared fixtures: the real small Omniglot archives (decoded once per session into a tmp
cache), index-encoded toy data sets, and an environment that never sees the user's data."""
from __future__ import annotations

from pathlib import Path

import pytest

from metalearn_ext.data import ImageDataset, load_omniglot

OMNIGLOT_DIR = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "omniglot"


@pytest.fixture(autouse=True)
def isolated_data_dirs(tmp_path, monkeypatch):
    """$METALEARN_DATA unset and HOME a fresh directory: the search path holds nothing."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.delenv("METALEARN_DATA", raising=False)
    monkeypatch.setenv("HOME", str(home))
    return home


@pytest.fixture(scope="session")
def omniglot_dir() -> Path:
    if not (OMNIGLOT_DIR / "images_background_small1.zip").is_file():
        pytest.skip(f"Omniglot small archives not found at {OMNIGLOT_DIR}")
    return OMNIGLOT_DIR


@pytest.fixture(scope="session")
def omniglot_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("omniglot-cache")


@pytest.fixture(scope="session")
def omniglot_background(omniglot_dir, omniglot_cache) -> ImageDataset:
    return load_omniglot("background", root=omniglot_dir, cache_dir=omniglot_cache)
