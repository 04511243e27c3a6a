"""The real small Omniglot archives, decoded once per session into a shared data directory, and an
environment that never sees the user's data."""
from __future__ import annotations

from pathlib import Path

import pytest

OMNIGLOT_DIR = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "omniglot"


@pytest.fixture(scope="session")
def session_data_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("metalearn-data")


@pytest.fixture(autouse=True)
def isolated_data_dirs(session_data_dir, tmp_path, monkeypatch):
    """$METALEARN_DATA one directory for the whole session (so decoded Omniglot is cached once in
    its cache/), HOME a fresh one; the user's own data are never read."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("METALEARN_DATA", str(session_data_dir))
    monkeypatch.setenv("HOME", str(home))



@pytest.fixture(scope="session")
def omniglot_root() -> str:
    if not (OMNIGLOT_DIR / "images_background_small1.zip").is_file():
        pytest.skip(f"Omniglot small archives not found at {OMNIGLOT_DIR}")
    return str(OMNIGLOT_DIR)
