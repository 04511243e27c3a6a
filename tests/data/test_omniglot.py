"""Omniglot on the two real small official archives: decoding, merging, splits, rotations,
sizes, the on-disk cache, extracted trees, and bad input."""
import os
import zipfile

import pytest
import torch

import metalearn_ext.data.omniglot as omniglot_module
from metalearn_ext.data import EpisodeSampler, load_omniglot, omniglot_character_split

ALPHABETS = {"Balinese", "Early_Aramaic", "Greek", "Korean", "Latin", "Japanese_(katakana)", "Sanskrit",
             "Tagalog"}


def test_background_from_both_small_archives(omniglot_background):
    ds = omniglot_background
    # 136 + 156 characters, Greek (24) and Latin (26) shared: 242 distinct, 20 drawings each.
    assert ds.num_classes == 242
    assert ds.images.shape == (242 * 20, 1, 28, 28) and ds.images.dtype == torch.float32
    assert torch.equal(ds.class_counts(), torch.full((242,), 20))
    assert {n.split("/")[0] for n in ds.class_names} == ALPHABETS
    assert list(ds.class_names) == sorted(ds.class_names)
    assert float(ds.images.min()) >= 0 and float(ds.images.max()) <= 1
    # Strokes are bright on a dark background: the border is empty, the mean small.
    assert float(ds.images.mean()) < 0.2
    assert float(ds.images[:, :, 0, :].mean()) < 0.02
    assert float(ds.images.amax(dim=(1, 2, 3)).min()) > 0.5


def test_any_image_size(omniglot_dir, omniglot_cache, tmp_path):
    ds = load_omniglot("background", root=omniglot_dir, cache_dir=omniglot_cache, image_size=20)
    assert ds.images.shape == (4840, 1, 20, 20)
    (tmp_path / "greek").mkdir()
    _small_zip(tmp_path / "greek" / "images_background.zip", omniglot_dir)
    full = load_omniglot("background", root=tmp_path / "greek", cache_dir=tmp_path / "cache", image_size=105)
    assert full.images.shape == (24 * 20, 1, 105, 105)
    assert set(full.images.unique().tolist()) == {0.0, 1.0}  # unresized 1-bit drawings
    with pytest.raises(ValueError, match="image_size"):
        load_omniglot("background", root=omniglot_dir, cache_dir=omniglot_cache, image_size=0)


def test_train_test_split_is_seeded_disjoint_and_proportional(omniglot_dir, omniglot_cache):
    kw = dict(root=omniglot_dir, cache_dir=omniglot_cache)
    train, test = load_omniglot("train", **kw), load_omniglot("test", **kw)
    assert (train.num_classes, test.num_classes) == (179, 63)  # round(242 * 1200 / 1623) = 179
    assert not set(train.class_names) & set(test.class_names)
    assert set(train.class_names) | set(test.class_names) == set(load_omniglot("all", **kw).class_names)
    assert load_omniglot("train", **kw).class_names == train.class_names
    assert load_omniglot("train", seed=1, **kw).class_names != train.class_names


def test_character_split_is_1200_423_on_the_full_set():
    names = [f"A{i // 20:02d}/character{i % 20 + 1:02d}" for i in range(1623)]
    train, test = omniglot_character_split(names, seed=0)
    assert (len(train), len(test)) == (1200, 423) and not set(train) & set(test)
    with pytest.raises(ValueError, match="empty split"):
        omniglot_character_split(names[:1], seed=0)


def test_rotations_are_new_classes_within_the_split(omniglot_dir, omniglot_cache):
    base = load_omniglot("test", root=omniglot_dir, cache_dir=omniglot_cache)
    rot = load_omniglot("test", root=omniglot_dir, cache_dir=omniglot_cache, rotations=True)
    assert rot.num_classes == 4 * base.num_classes and len(rot) == 4 * len(base)
    assert rot.class_names[:4] == (base.class_names[0],) + tuple(f"{base.class_names[0]}/rot{d}" for d in ("090", "180", "270"))
    for k in range(4):
        sel = rot.images[rot.labels == 4 * 7 + k]
        assert torch.equal(sel, torch.rot90(base.images[base.labels == 7], k, dims=(2, 3)))
    sampler = EpisodeSampler(rot, n_way=5, k_shot=1, n_query=15, seed=0)
    batch = sampler.sample(3)
    assert batch.support_images.shape == (3, 5, 1, 28, 28) and batch.query_images.shape == (3, 75, 1, 28, 28)


def test_cache_is_written_once_keyed_by_size_and_hash_and_reused(omniglot_dir, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    first = load_omniglot("background", root=omniglot_dir, cache_dir=cache, image_size=12)
    files = sorted(p.name for p in cache.iterdir())
    sizes = {str(os.path.getsize(omniglot_dir / f"images_background_small{i}.zip")) for i in (1, 2)}
    assert len(files) == 2 and all(f.endswith("-12px.pt") for f in files)
    assert {f.split("-")[-3] for f in files} == sizes  # omniglot-<source>-<size>-<sha>-<S>px.pt
    monkeypatch.setattr(omniglot_module, "_decode_source", lambda *a: pytest.fail("decoded despite cache"))
    again = load_omniglot("background", root=omniglot_dir, cache_dir=cache, image_size=12)
    assert torch.equal(first.images, again.images) and first.class_names == again.class_names
    assert sorted(p.name for p in cache.iterdir()) == files  # no temp files left


def _small_zip(path, omniglot_dir, alphabet="Greek", corrupt=None):
    """A copy of one alphabet of small1 as a new archive; `corrupt` replaces one PNG's bytes."""
    with zipfile.ZipFile(omniglot_dir / "images_background_small1.zip") as src, \
            zipfile.ZipFile(path, "w") as dst:
        names = [n for n in src.namelist() if f"/{alphabet}/" in n and n.endswith(".png")]
        for i, n in enumerate(names):
            dst.writestr(n, corrupt if (corrupt is not None and i == 5) else src.read(n))
    return names


def test_extracted_tree_matches_zip_and_stale_cache_is_not_used(omniglot_dir, tmp_path):
    zroot, troot, cache = tmp_path / "z", tmp_path / "t", tmp_path / "cache"
    zroot.mkdir()
    _small_zip(zroot / "images_background.zip", omniglot_dir)
    from_zip = load_omniglot("background", root=zroot, cache_dir=cache)
    with zipfile.ZipFile(zroot / "images_background.zip") as zf:
        zf.extractall(troot)
    os.rename(troot / "images_background_small1", troot / "images_background")
    from_tree = load_omniglot("background", root=troot, cache_dir=cache)
    assert from_zip.num_classes == 24 and from_tree.class_names == from_zip.class_names
    assert torch.equal(from_tree.images, from_zip.images)
    # A changed archive gets a new cache entry instead of the old one.
    _small_zip(zroot / "images_background.zip", omniglot_dir, alphabet="Latin")
    assert load_omniglot("background", root=zroot, cache_dir=cache).num_classes == 26


def test_corrupt_png_raises_and_writes_no_cache(omniglot_dir, tmp_path):
    (tmp_path / "d").mkdir()
    names = _small_zip(tmp_path / "d" / "images_background.zip", omniglot_dir, corrupt=b"\x89PNG garbage")
    with pytest.raises(ValueError, match="corrupt Omniglot PNG .*" + names[5].split("/")[-1]):
        load_omniglot("background", root=tmp_path / "d", cache_dir=tmp_path / "cache")
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir())


def test_corrupt_archive_raises_and_writes_no_cache(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "images_evaluation.zip").write_bytes(b"PK\x03\x04 not really a zip" * 10)
    with pytest.raises(ValueError, match="corrupt Omniglot archive .*images_evaluation.zip"):
        load_omniglot("evaluation", root=tmp_path / "d", cache_dir=tmp_path / "cache")
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir())


def test_truncated_archive_raises(omniglot_dir, tmp_path):
    (tmp_path / "d").mkdir()
    data = (omniglot_dir / "images_background_small1.zip").read_bytes()
    (tmp_path / "d" / "images_background_small1.zip").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="corrupt Omniglot archive"):
        load_omniglot("background", root=tmp_path / "d", cache_dir=tmp_path / "cache")


def test_missing_split_names_every_path_tried_and_the_download_command(omniglot_dir, tmp_path, isolated_data_dirs,
                                                                       monkeypatch):
    monkeypatch.setenv("METALEARN_DATA", str(tmp_path / "env"))
    with pytest.raises(FileNotFoundError) as err:
        load_omniglot("evaluation", root=omniglot_dir, cache_dir=tmp_path / "cache")
    msg = str(err.value)
    for d in (omniglot_dir, omniglot_dir / "omniglot", tmp_path / "env", tmp_path / "env" / "omniglot",
              isolated_data_dirs / ".cache" / "metalearn", isolated_data_dirs / ".cache" / "metalearn" / "omniglot"):
        assert f"{d}/images_evaluation" in msg
    assert "metalearn data download omniglot --root DIR" in msg


def test_found_through_metalearn_data_and_omniglot_subdir(omniglot_dir, tmp_path, monkeypatch):
    (tmp_path / "env" / "omniglot").mkdir(parents=True)
    _small_zip(tmp_path / "env" / "omniglot" / "images_background_small2.zip", omniglot_dir, alphabet="Korean")
    monkeypatch.setenv("METALEARN_DATA", str(tmp_path / "env"))
    ds = load_omniglot("background", cache_dir=tmp_path / "cache")
    assert {n.split("/")[0] for n in ds.class_names} == {"Korean"}


def test_bad_split_name():
    with pytest.raises(ValueError, match="split"):
        load_omniglot("validation")
