"""IDX readers (plain and gzipped), header validation, the search order, and the real
Fashion-MNIST files from Debian's dataset-fashion-mnist."""
import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

import metalearn_ext.data.idx as idx_module
from metalearn_ext.data import load_mnist, load_omniglot, parse_idx, read_idx

DEBIAN = Path("/usr/share/datasets/fashion-mnist")


def idx_bytes(array: np.ndarray) -> bytes:
    codes = {np.dtype("uint8"): 0x08, np.dtype(">i4"): 0x0C, np.dtype(">f4"): 0x0D}
    header = bytes([0, 0, codes[array.dtype], array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.tobytes()


def write_split(directory: Path, split="train", n=7, gz=True, seed=0, labels=None):
    """Tiny IDX image/label files named like the official ones."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, size=n, dtype=np.uint8) if labels is None else labels
    directory.mkdir(parents=True, exist_ok=True)
    prefix = "train" if split == "train" else "t10k"
    for stem, arr in ((f"{prefix}-images-idx3-ubyte", images), (f"{prefix}-labels-idx1-ubyte", labels)):
        data = idx_bytes(arr)
        if gz:
            (directory / f"{stem}.gz").write_bytes(gzip.compress(data))
        else:
            (directory / stem).write_bytes(data)
    return images, labels


@pytest.mark.parametrize("gz", [False, True])
def test_read_idx_round_trips_types(tmp_path, gz):
    for arr in (np.arange(24, dtype=np.uint8).reshape(2, 3, 4), (np.arange(5) - 2).astype(">i4"),
                np.linspace(0, 1, 6, dtype=">f4").reshape(3, 2)):
        data = idx_bytes(arr)
        path = tmp_path / "x.idx"
        path.write_bytes(gzip.compress(data) if gz else data)
        out = read_idx(path)
        assert out.shape == arr.shape and np.array_equal(out, arr)


@pytest.mark.parametrize("data, match", [
    (b"", "bad magic"),
    (b"\x01\x00\x08\x01" + struct.pack(">I", 1) + b"\x00", "bad magic"),
    (b"\x00\x00\x07\x01" + struct.pack(">I", 1) + b"\x00", "unknown IDX type"),
    (b"\x00\x00\x08\x03\x00\x00", "truncated IDX header"),
    (b"\x00\x00\x08\x01" + struct.pack(">I", 5) + b"\x00\x00", "dims"),
    (b"\x00\x00\x08\x01" + struct.pack(">I", 1) + b"\x00\x00", "dims"),
])
def test_parse_idx_rejects_bad_headers(data, match):
    with pytest.raises(ValueError, match=match):
        parse_idx(data, "file.idx")


def test_truncated_gzip_is_a_clear_error(tmp_path):
    path = tmp_path / "t.gz"
    path.write_bytes(gzip.compress(idx_bytes(np.zeros((9, 28, 28), np.uint8)))[:40])
    with pytest.raises(ValueError, match="corrupt gzip"):
        read_idx(path)


@pytest.mark.parametrize("gz", [False, True])
def test_load_mnist_from_root_and_root_subdir(tmp_path, gz):
    images, labels = write_split(tmp_path / "a", "test", gz=gz)
    ds = load_mnist("test", root=tmp_path / "a")
    assert ds.images.shape == (7, 1, 28, 28) and ds.images.dtype == torch.float32
    assert torch.equal(ds.images[:, 0], torch.from_numpy(images).float() / 255)
    assert torch.equal(ds.labels, torch.from_numpy(labels.astype(np.int64)))
    assert ds.class_names == tuple("0123456789")
    write_split(tmp_path / "b" / "mnist", "test", gz=gz)
    assert len(load_mnist("test", root=tmp_path / "b")) == 7


def test_search_order_root_then_env_then_home(tmp_path, monkeypatch, isolated_data_dirs):
    write_split(isolated_data_dirs / ".cache" / "metalearn" / "mnist", n=3)
    assert len(load_mnist()) == 3
    write_split(tmp_path / "env" / "mnist", n=4)
    monkeypatch.setenv("METALEARN_DATA", str(tmp_path / "env"))
    assert len(load_mnist()) == 4
    write_split(tmp_path / "root", n=5)
    assert len(load_mnist(root=tmp_path / "root")) == 5


def test_missing_files_name_every_path_and_the_download_command(tmp_path, monkeypatch, isolated_data_dirs):
    monkeypatch.setenv("METALEARN_DATA", str(tmp_path / "env"))
    (tmp_path / "root").mkdir()
    with pytest.raises(FileNotFoundError) as err:
        load_mnist("train", root=tmp_path / "root")
    msg = str(err.value)
    for d in (tmp_path / "root", tmp_path / "root" / "mnist", tmp_path / "env" / "mnist",
              isolated_data_dirs / ".cache" / "metalearn" / "mnist"):
        assert f"{d}/train-images-idx3-ubyte[.gz]" in msg and f"{d}/train-labels-idx1-ubyte[.gz]" in msg
    assert "/usr/share/datasets" not in msg  # Debian's directory holds Fashion-MNIST only
    assert "metalearn data download mnist --root DIR" in msg


def test_fashion_search_ends_at_debian_directory(tmp_path, monkeypatch):
    monkeypatch.setattr(idx_module, "DEBIAN_FASHION_MNIST", tmp_path / "debian")
    with pytest.raises(FileNotFoundError, match="debian/t10k-images-idx3-ubyte") as err:
        load_mnist("test", name="fashion-mnist")
    assert "metalearn data download fashion-mnist" in str(err.value)
    write_split(tmp_path / "debian", "test", n=2)
    assert len(load_mnist("test", name="fashion-mnist")) == 2


def test_missing_fashion_mnist_says_in_its_first_line_where_it_looked_and_how_to_get_it(
        tmp_path, monkeypatch, isolated_data_dirs):
    monkeypatch.setattr(idx_module, "DEBIAN_FASHION_MNIST", tmp_path / "debian")
    monkeypatch.setenv("METALEARN_DATA", str(tmp_path / "env"))
    with pytest.raises(FileNotFoundError) as err:
        load_mnist("test", name="fashion-mnist")
    first = str(err.value).splitlines()[0]  # what callers that quote one line show (e.g. `metalearn eval`)
    for d in (tmp_path / "env" / "fashion-mnist", isolated_data_dirs / ".cache" / "metalearn" / "fashion-mnist",
              tmp_path / "debian"):
        assert str(d) in first
    assert "dataset-fashion-mnist" in first and "metalearn data download fashion-mnist --root DIR" in first
    assert f"{tmp_path / 'debian'}/t10k-labels-idx1-ubyte[.gz]" in str(err.value)  # the exact files follow


def test_a_root_that_is_not_a_directory_is_an_error_naming_it(tmp_path, monkeypatch, isolated_data_dirs):
    write_split(isolated_data_dirs / ".cache" / "metalearn" / "mnist", n=3)  # would be found otherwise
    with pytest.raises(FileNotFoundError, match=f"data root '{tmp_path / 'typo'}' does not exist"):
        load_mnist(root=tmp_path / "typo")
    (tmp_path / "file").write_text("x")
    with pytest.raises(FileNotFoundError, match="is a file, not a directory"):
        load_mnist(root=tmp_path / "file")
    with pytest.raises(FileNotFoundError, match="typo"):
        load_omniglot("background", root=tmp_path / "typo")
    assert len(load_mnist()) == 3


def test_mismatched_counts_and_bad_labels(tmp_path):
    write_split(tmp_path / "a", n=4, labels=np.zeros(3, np.uint8))
    with pytest.raises(ValueError, match="expected 4 labels"):
        load_mnist(root=tmp_path / "a")
    write_split(tmp_path / "b", n=3, labels=np.array([0, 10, 2], np.uint8))
    with pytest.raises(ValueError, match="0..9"):
        load_mnist(root=tmp_path / "b")
    write_split(tmp_path / "c", n=3)
    (tmp_path / "c" / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(b"\x00\x00\x08\x03junk"))
    with pytest.raises(ValueError, match="train-images-idx3-ubyte.gz"):
        load_mnist(root=tmp_path / "c")


def test_bad_arguments():
    with pytest.raises(ValueError, match="name"):
        load_mnist(name="kmnist")
    with pytest.raises(ValueError, match="split"):
        load_mnist("val")


@pytest.mark.skipif(not (DEBIAN / "t10k-images-idx3-ubyte.gz").is_file(),
                    reason="Debian's dataset-fashion-mnist is not installed (apt-get install dataset-fashion-mnist)")
def test_real_fashion_mnist_from_debian_package():
    test = load_mnist("test", name="fashion-mnist")
    assert test.images.shape == (10000, 1, 28, 28)
    assert torch.equal(test.class_counts(), torch.full((10,), 1000))
    assert test.class_names[0] == "T-shirt/top" and test.class_names[9] == "Ankle boot"
    assert abs(float(test.images.mean()) - 0.2868) < 0.002  # the published test-set mean
    train = load_mnist("train", name="fashion-mnist")
    assert train.images.shape == (60000, 1, 28, 28)
    assert torch.equal(train.class_counts(), torch.full((10,), 6000))
    assert abs(float(train.images.mean()) - 0.2860) < 0.002
