"""The explicit downloader against a local HTTP server on 127.0.0.1: good checksum → installed;
bad checksum, cut connection or no server → DownloadError and nothing left behind."""
import gzip
import hashlib
import http.server
import threading
import zipfile
from functools import partial

import numpy as np
import pytest

import metalearn_ext.data.download as download_module
from metalearn_ext.data import (
    DownloadError,
    RemoteFile,
    download_dataset,
    download_files,
    load_mnist,
)
from metalearn_ext.data.cli import add_data_subparser, main

from .test_idx import idx_bytes


class Handler(http.server.SimpleHTTPRequestHandler):
    """Serves a directory; /cut/<file> announces the full length, sends half, and hangs up."""

    def do_GET(self):
        if self.path.startswith("/cut/"):
            data = (self.server.root / self.path[len("/cut/"):]).read_bytes()
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data[: len(data) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        self.server.requests.append(self.path)
        super().do_GET()

    def log_message(self, *args):
        pass


@pytest.fixture
def server(tmp_path, monkeypatch):
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    root = tmp_path / "served"
    root.mkdir()
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(Handler, directory=str(root)))
    httpd.root, httpd.requests = root, []
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    httpd.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def small_archive(path):
    with zipfile.ZipFile(path, "w") as zf:
        for i in range(3):
            zf.writestr(f"images_background/Alpha/character01/000{i}_01.png", bytes(range(200)) * (i + 1))
    return path.read_bytes()


def sha256(data):
    return hashlib.sha256(data).hexdigest()


def test_good_checksum_installs_and_is_not_fetched_again(server, tmp_path):
    data = small_archive(server.root / "archive.zip")
    f = RemoteFile("archive.zip", (f"{server.url}/archive.zip",), sha256=sha256(data),
                   md5=hashlib.md5(data).hexdigest())
    dest = tmp_path / "data" / "omniglot"
    assert download_files([f], dest, timeout=5) == [dest / "archive.zip"]
    assert (dest / "archive.zip").read_bytes() == data
    assert sorted(p.name for p in dest.iterdir()) == ["archive.zip"]  # no staging left
    download_files([f], dest, timeout=5)
    assert server.requests == ["/archive.zip"]  # verified on disk, not fetched twice


def test_bad_checksum_leaves_nothing(server, tmp_path):
    small_archive(server.root / "archive.zip")
    f = RemoteFile("archive.zip", (f"{server.url}/archive.zip",), sha256="0" * 64)
    with pytest.raises(DownloadError, match="sha256 mismatch: expected 0{64}, got") as err:
        download_files([f], tmp_path / "new" / "dir", timeout=5)
    assert "archive.zip" in str(err.value) and "nothing was installed" in str(err.value)
    assert not (tmp_path / "new").exists()  # directories the call created are gone too


def test_cut_connection_leaves_nothing(server, tmp_path):
    data = small_archive(server.root / "archive.zip")
    dest = tmp_path / "existing"
    dest.mkdir()
    (dest / "keep.txt").write_text("mine")
    f = RemoteFile("archive.zip", (f"{server.url}/cut/archive.zip",), sha256=sha256(data))
    with pytest.raises(DownloadError, match="cut/archive.zip"):
        download_files([f], dest, timeout=5)
    assert sorted(p.name for p in dest.iterdir()) == ["keep.txt"]


def test_unreachable_server_is_a_clear_error(tmp_path):
    f = RemoteFile("x.zip", ("http://127.0.0.1:9/x.zip",), md5="0" * 32)
    with pytest.raises(DownloadError, match="127.0.0.1:9/x.zip"):
        download_files([f], tmp_path / "d", timeout=5)
    assert not (tmp_path / "d").exists()


def test_all_or_nothing_and_mirror_fallback(server, tmp_path):
    good = small_archive(server.root / "a.zip")
    (server.root / "b.bin").write_bytes(b"wrong bytes")
    ok = RemoteFile("a.zip", (f"{server.url}/missing.zip", f"{server.url}/a.zip"), sha256=sha256(good))
    bad = RemoteFile("b.bin", (f"{server.url}/b.bin",), sha256=sha256(b"right bytes"))
    with pytest.raises(DownloadError, match="b.bin"):
        download_files([ok, bad], tmp_path / "d", timeout=5)
    assert not (tmp_path / "d").exists()  # a.zip was fine but is not installed alone
    assert download_files([ok], tmp_path / "d", timeout=5) == [tmp_path / "d" / "a.zip"]  # 404 then mirror 2


def test_official_omniglot_checksums_reject_a_foreign_archive(server, tmp_path):
    small_archive(server.root / "images_background.zip")
    small_archive(server.root / "images_evaluation.zip")
    with pytest.raises(DownloadError, match="md5 mismatch: expected 68d2efa1b9178cc56df9314c21c6e718"):
        download_dataset("omniglot", tmp_path / "root", mirrors=[server.url], timeout=5)
    assert not (tmp_path / "root").exists()


def test_cli_download_then_load(server, tmp_path, monkeypatch, capsys):
    rng = np.random.default_rng(0)
    files = {
        "train-images-idx3-ubyte.gz": idx_bytes(rng.integers(0, 256, (5, 28, 28), dtype=np.uint8)),
        "train-labels-idx1-ubyte.gz": idx_bytes(np.arange(5, dtype=np.uint8)),
        "t10k-images-idx3-ubyte.gz": idx_bytes(rng.integers(0, 256, (2, 28, 28), dtype=np.uint8)),
        "t10k-labels-idx1-ubyte.gz": idx_bytes(np.arange(2, dtype=np.uint8)),
    }
    md5s = {}
    for name, data in files.items():
        blob = gzip.compress(data)
        (server.root / name).write_bytes(blob)
        md5s[name] = hashlib.md5(blob).hexdigest()
    root = tmp_path / "root"
    # With the official checksums the tiny files are refused: exit code 1, reason on stderr.
    assert main(["download", "mnist", "--root", str(root), "--mirror", server.url, "--timeout", "5"]) == 1
    assert "md5 mismatch" in capsys.readouterr().err and not root.exists()
    monkeypatch.setitem(download_module.CHECKSUMS, "mnist", md5s)
    assert main(["download", "mnist", "--root", str(root), "--mirror", server.url, "--timeout", "5"]) == 0
    assert str(root / "mnist" / "t10k-labels-idx1-ubyte.gz") in capsys.readouterr().out
    assert load_mnist("train", root=root).images.shape == (5, 1, 28, 28)


def test_an_unwritable_root_is_one_line_and_exit_code_2(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    root = tmp_path / "file" / "data"  # below a plain file: no directory can be made there
    assert main(["download", "mnist", "--root", str(root), "--mirror", "http://127.0.0.1:9/"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: cannot write the mnist files under ") and str(root) in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_subparser_wiring():
    import argparse

    parser = argparse.ArgumentParser(prog="metalearn")
    add_data_subparser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["data", "download", "fashion-mnist", "--root", "/tmp/x"])
    assert (args.name, args.root, args.mirror) == ("fashion-mnist", "/tmp/x", None) and callable(args.func)
    with pytest.raises(SystemExit):
        parser.parse_args(["data", "download", "cifar"])


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="name"):
        download_dataset("cifar", tmp_path / "root")
    with pytest.raises(ValueError, match="checksum"):
        RemoteFile("x", ("http://127.0.0.1/x",))
    assert not (tmp_path / "root").exists()
