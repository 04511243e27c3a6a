"""load_omniglot_image: one PNG decoded exactly as the archive pipeline decodes it; bad files named.
And the held-out character split by count."""
import zipfile

import pytest
import torch

from metalearn_ext.data import load_omniglot, load_omniglot_image, omniglot_character_split


def test_a_png_extracted_from_the_archive_equals_the_pipelines_image(omniglot_dir, omniglot_background, tmp_path):
    with zipfile.ZipFile(omniglot_dir / "images_background_small1.zip") as zf:
        members = sorted(n for n in zf.namelist() if n.endswith(".png"))
        member = members[len(members) // 3]
        (tmp_path / "drawing.png").write_bytes(zf.read(member))
    with zipfile.ZipFile(omniglot_dir / "images_background_small2.zip") as zf:
        members += [n for n in zf.namelist() if n.endswith(".png")]
    # The pipeline's rows are its drawings sorted by <Alphabet>/<characterNN>/<file>, shared ones once.
    keys = sorted({"/".join(n.split("/")[-3:]) for n in members})
    row = keys.index("/".join(member.split("/")[-3:]))
    image = load_omniglot_image(tmp_path / "drawing.png")
    assert image.shape == (1, 28, 28) and image.dtype == torch.float32
    assert torch.equal(image, omniglot_background.images[row])
    assert omniglot_background.class_names[omniglot_background.labels[row]] == "/".join(member.split("/")[-3:-1])
    # polarity: strokes 1 on a 0 background
    assert float(image.mean()) < 0.3 and float(image.max()) > 0.9 and float(image[:, 0].max()) == 0.0
    assert load_omniglot_image(tmp_path / "drawing.png", image_size=105).unique().tolist() == [0.0, 1.0]


def test_bad_files_are_named(tmp_path):
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(ValueError, match="empty Omniglot PNG .*empty.png"):
        load_omniglot_image(tmp_path / "empty.png")
    (tmp_path / "bad.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(ValueError, match="corrupt Omniglot PNG .*bad.png"):
        load_omniglot_image(tmp_path / "bad.png")
    with pytest.raises(FileNotFoundError, match="missing.png"):
        load_omniglot_image(tmp_path / "missing.png")
    with pytest.raises(ValueError, match="image_size"):
        load_omniglot_image(tmp_path / "bad.png", image_size=0)


def test_character_split_by_count_cuts_the_same_permutation(omniglot_dir, omniglot_cache):
    names = [f"A{i // 20:02d}/character{i % 20 + 1:02d}" for i in range(242)]
    train, test = omniglot_character_split(names, seed=0)
    train50, test50 = omniglot_character_split(names, seed=0, n_test=50)
    assert (len(train50), len(test50)) == (192, 50) and set(train) < set(train50) and set(test50) < set(test)
    for bad in (0, 242):
        with pytest.raises(ValueError, match=f"n_test={bad}"):
            omniglot_character_split(names, seed=0, n_test=bad)
    kw = dict(root=omniglot_dir, cache_dir=omniglot_cache, test_characters=50)
    held_out = load_omniglot("test", **kw)
    assert held_out.num_classes == 50 and not set(held_out.class_names) & set(load_omniglot("train", **kw).class_names)
