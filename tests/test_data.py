"""Data sources on real files: MNIST IDX (local and 'downloaded' from a loopback mirror),
scikit-learn digits, image folders, vector files, binarisation."""

from __future__ import annotations

import functools
import gzip
import hashlib
import http.server
import os
import re
import shutil
import subprocess
import sys
import threading
import warnings

import numpy as np
import pytest
import torch

from conftest import on_a_terminal

from vaekit.config import DataConfig
from vaekit.data import binarize, load_dataset
from vaekit.data import standard
from vaekit.data.idx import parse_idx, read_idx_bytes
from vaekit.errors import DataError, VaekitError

MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]


def test_mnist_shapes_counts_classes(mnist):
    assert mnist.train_x.shape == (60000, 1, 28, 28) and mnist.test_x.shape == (10000, 1, 28, 28)
    assert mnist.train_x.dtype == torch.uint8 and mnist.scale == 255.0
    assert torch.bincount(mnist.train_y).tolist() == MNIST_TRAIN_COUNTS
    assert len(mnist.test_y) == 10000 and int(mnist.test_y.max()) == 9
    assert float(mnist.train_x.double().mean()) == pytest.approx(33.318, abs=1e-3)
    x = mnist.features(mnist.train_x[:10])
    assert x.dtype == torch.float32 and 0 <= x.min() and x.max() <= 1


def test_mnist_checksums_on_uncompressed_bytes(mnist_dir):
    for f, digest in standard.SOURCES["mnist"].md5.items():
        data = gzip.decompress((mnist_dir / f"{f}.gz").read_bytes())
        assert hashlib.md5(data).hexdigest() == digest


def _copy_mnist(mnist_dir, dest, gunzip=()):
    dest.mkdir(parents=True, exist_ok=True)
    for f in standard.FILES.values():
        src = mnist_dir / f"{f}.gz"
        if f in gunzip:
            (dest / f).write_bytes(gzip.decompress(src.read_bytes()))
        else:
            shutil.copy(src, dest / f"{f}.gz")


def test_uncompressed_files_and_vaekit_data_env(mnist_dir, tmp_path, monkeypatch):
    labels = ("t10k-labels-idx1-ubyte", "train-labels-idx1-ubyte")
    _copy_mnist(mnist_dir, tmp_path / "mnist", gunzip=labels)
    monkeypatch.setenv("VAEKIT_DATA", str(tmp_path))
    ds = load_dataset(DataConfig(dataset="mnist", download=False), progress=False)
    assert torch.bincount(ds.train_y).tolist() == MNIST_TRAIN_COUNTS


def test_corrupted_file_fails_checksum(mnist_dir, tmp_path):
    _copy_mnist(mnist_dir, tmp_path, gunzip=("t10k-labels-idx1-ubyte",))
    path = tmp_path / "t10k-labels-idx1-ubyte"
    data = bytearray(path.read_bytes())
    data[100] = (data[100] + 1) % 10
    path.write_bytes(bytes(data))
    with pytest.raises(DataError, match="checksum mismatch"):
        load_dataset(DataConfig(dataset="mnist", data_dir=str(tmp_path), download=False), progress=False)


def test_missing_files_offline_names_folder_and_files(tmp_path):
    with pytest.raises(DataError) as e:
        load_dataset(DataConfig(dataset="mnist", data_dir=str(tmp_path), download=False), progress=False)
    msg = str(e.value)
    assert str(tmp_path) in msg and "train-images-idx3-ubyte" in msg and "\n" not in msg


def test_a_file_as_the_data_folder_is_named_as_such(tmp_path, monkeypatch):
    afile = tmp_path / "notes.txt"
    afile.write_text("not a folder")
    for name in ("mnist", "cifar10"):
        with pytest.raises(DataError, match=f"^--data-dir {afile}: is a file, not a folder"):
            load_dataset(DataConfig(dataset=name, data_dir=str(afile)), progress=False)
        monkeypatch.setenv("VAEKIT_DATA", str(afile))
        with pytest.raises(DataError, match=r"^\$VAEKIT_DATA .*notes.txt: is a file, not a folder"):
            load_dataset(DataConfig(dataset=name), progress=False)
        monkeypatch.delenv("VAEKIT_DATA")


def test_failed_download_is_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr(standard, "SOURCES", {
        "mnist": standard.IdxSource("mnist", ("http://127.0.0.1:9/",), {}, {})})
    with pytest.raises(DataError, match="download failed"):
        load_dataset(DataConfig(dataset="mnist", data_dir=str(tmp_path)), progress=False)
    assert list(tmp_path.iterdir()) == []


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        """No line per request."""


class _QuietServer(http.server.ThreadingHTTPServer):
    def handle_error(self, request, client_address) -> None:
        """A client that hangs up mid-file (the download refused by the budget) is expected: no traceback."""


@pytest.fixture
def mirror(mnist_dir, tmp_path):
    """A loopback HTTP server serving the MNIST .gz files, standing in for the official mirror."""
    served = tmp_path / "mirror"
    _copy_mnist(mnist_dir, served)
    handler = functools.partial(_QuietHandler, directory=str(served))
    server = _QuietServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/", served
    server.shutdown()


def test_download_from_mirror_verifies_and_falls_back(mirror, tmp_path, monkeypatch):
    url, served = mirror
    real = standard.SOURCES["mnist"]
    dead = "http://127.0.0.1:9/"
    monkeypatch.setitem(standard.SOURCES, "mnist", standard.IdxSource(
        "mnist", (dead, url), real.md5, real.gz_md5, real.class_names))
    target = tmp_path / "downloaded"
    ds = load_dataset(DataConfig(dataset="mnist", data_dir=str(target)), progress=False)
    assert len(ds.train_x) == 60000
    assert sorted(p.name for p in target.iterdir()) == sorted(f"{f}.gz" for f in standard.FILES.values())
    # a mirror serving a corrupt file is rejected and nothing is left behind
    bad = served / "t10k-labels-idx1-ubyte.gz"
    bad.write_bytes(gzip.compress(b"\x00\x00\x08\x01\x00\x00\x27\x10" + bytes(10000)))
    (target / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError, match="checksum mismatch"):
        load_dataset(DataConfig(dataset="mnist", data_dir=str(target)), progress=False)
    assert not (target / "t10k-labels-idx1-ubyte.gz").exists()


@pytest.fixture
def broken_server():
    """A real loopback HTTP server that misbehaves: ``short`` promises 100,000 bytes and sends 1,000,
    ``stall`` answers nothing at all."""
    import socket
    import time

    servers = []

    def start(behaviour: str) -> str:
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        servers.append(sock)

        def serve():
            while True:
                try:
                    conn, _ = sock.accept()
                except OSError:
                    return
                conn.recv(65536)
                if behaviour == "short":
                    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" + b"x" * 1000)
                else:
                    time.sleep(3)
                conn.close()

        threading.Thread(target=serve, daemon=True).start()
        return f"http://127.0.0.1:{sock.getsockname()[1]}/file.gz"

    yield start
    for sock in servers:
        sock.close()


@pytest.mark.parametrize("behaviour", ["short", "stall"])
def test_a_download_cut_short_or_stalled_is_one_line_and_leaves_nothing(broken_server, tmp_path, monkeypatch,
                                                                         behaviour):
    from vaekit.data import download

    monkeypatch.setattr(download, "TIMEOUT_S", 1.0)
    url = broken_server(behaviour)
    with pytest.raises(DataError) as e:
        download.fetch(url, tmp_path / "file.gz", progress=False)
    assert url in str(e.value) and "\n" not in str(e.value)
    assert list(tmp_path.iterdir()) == []


def test_a_download_larger_than_the_budget_is_refused_as_it_comes(mirror, tmp_path):
    from vaekit import budget
    from vaekit.data import download
    from vaekit.errors import BudgetError

    url, _ = mirror
    with budget.limits(max_bytes=100_000), pytest.raises(BudgetError, match="memory budget"):
        download.fetch(url + "train-images-idx3-ubyte.gz", tmp_path / "x.gz", progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mirror"]


def test_idx_header_checks(tmp_path):
    good = b"\x00\x00\x08\x03" + (2).to_bytes(4, "big") + (3).to_bytes(4, "big") * 2 + bytes(range(18))
    p = tmp_path / "x-idx3-ubyte"
    assert parse_idx(good, p).shape == (2, 3, 3)
    with pytest.raises(DataError, match="truncated"):
        parse_idx(good[:-1], p)
    with pytest.raises(DataError, match="longer than its header"):
        parse_idx(good + b"\x00", p)
    with pytest.raises(DataError, match="bad magic"):
        parse_idx(b"\x01\x02" + good[2:], p)
    gz = tmp_path / "y.gz"
    gz.write_bytes(b"not gzip at all")
    with pytest.raises(DataError, match="not a readable gzip"):
        read_idx_bytes(gz)


def test_digits_fixed_split():
    a = load_dataset(DataConfig(dataset="digits", test_fraction=0.2))
    b = load_dataset(DataConfig(dataset="digits", test_fraction=0.2))
    assert a.shape == (1, 8, 8) and len(a.train_x) + len(a.test_x) == 1797
    assert len(a.test_x) == 359 and torch.equal(a.test_y, b.test_y) and torch.equal(a.test_x, b.test_x)
    x = a.features(a.train_x)
    assert x.min() == 0 and x.max() == 1


def test_digits_are_scikit_learns_without_importing_it(tmp_path):
    """The digits come from the CSV scikit-learn ships, read without importing scikit-learn (its import
    was the larger part of a small run's start): the same images and labels as its own loader."""
    code = ("import sys, numpy as np; from vaekit.data.bundled import _digits_arrays; x, y = _digits_arrays(); "
            "assert 'sklearn' not in sys.modules; np.save(sys.argv[1], x); np.save(sys.argv[2], y)")
    subprocess.run([sys.executable, "-c", code, str(tmp_path / "x.npy"), str(tmp_path / "y.npy")], check=True)
    x, y = np.load(tmp_path / "x.npy"), np.load(tmp_path / "y.npy")
    from sklearn.datasets import load_digits

    ref = load_digits()
    assert np.array_equal(x, ref.images) and np.array_equal(y, ref.target) and y.dtype == np.int64


def _png(path, size, value=128, mode="L"):
    from PIL import Image

    Image.new(mode, size, value if mode == "L" else (value, 0, 255 - value)).save(path)


def test_image_folder_with_classes_rgb_and_resize(tmp_path):
    for cls, n in [("cats", 3), ("dogs", 4)]:
        (tmp_path / cls).mkdir()
        for i in range(n):
            _png(tmp_path / cls / f"{i}.png", (20, 12), 10 * i, "RGB")
    ds = load_dataset(DataConfig(dataset=f"folder:{tmp_path}", channels=3, image_size=16, test_fraction=0.3))
    assert ds.shape == (3, 16, 16) and ds.class_names == ["cats", "dogs"]
    assert len(ds.train_x) + len(ds.test_x) == 7
    assert sorted(torch.cat([ds.train_y, ds.test_y]).tolist()) == [0, 0, 0, 1, 1, 1, 1]
    gray = load_dataset(DataConfig(dataset=f"folder:{tmp_path}", channels=1, image_size=8))
    assert gray.shape == (1, 8, 8)


def test_16_bit_grey_images_are_scaled_not_clipped(tmp_path):
    from PIL import Image

    deep = np.array([[0, 257 * 100], [257 * 200, 65535]], dtype=np.uint16)  # 0, 100, 200, 255 in 8 bits
    for i in range(2):
        Image.fromarray(deep).save(tmp_path / f"{i}.png")
    assert Image.open(tmp_path / "0.png").mode.startswith("I;16")
    for channels in (1, 3):
        ds = load_dataset(DataConfig(dataset=f"folder:{tmp_path}", channels=channels))
        assert ds.train_x[0, 0].tolist() == [[0, 100], [200, 255]]
    Image.fromarray(np.array([[0.0, 0.5], [1.0, 0.25]], dtype=np.float32)).save(tmp_path / "0.tif")
    (tmp_path / "0.png").unlink()
    ds = load_dataset(DataConfig(dataset=f"folder:{tmp_path}", test_fraction=0.5))
    assert sorted(torch.cat([ds.train_x, ds.test_x])[:, 0].flatten().tolist()) == [0, 0, 64, 100, 128, 200, 255, 255]
    Image.fromarray(np.array([[0.0, 2.0], [1.0, 0.25]], dtype=np.float32)).save(tmp_path / "0.tif")
    with pytest.raises(DataError, match="0.tif: a floating-point image with values above 1"):
        load_dataset(DataConfig(dataset=f"folder:{tmp_path}"))


def test_exif_orientation_is_applied(tmp_path):
    from PIL import Image

    pixels = np.zeros((2, 4), dtype=np.uint8)
    pixels[0, 0] = 255  # stored 4 wide, 2 high; orientation 6 says: show it turned 90 degrees clockwise
    exif = Image.Exif()
    exif[0x0112] = 6
    for i in range(2):
        Image.fromarray(pixels).save(tmp_path / f"{i}.png", exif=exif)
    ds = load_dataset(DataConfig(dataset=f"folder:{tmp_path}"))
    assert ds.shape == (1, 4, 2) and ds.train_x[0, 0].tolist() == [[0, 255], [0, 0], [0, 0], [0, 0]]


def test_an_animated_image_is_read_as_its_first_frame_and_said_so(tmp_path):
    """An animated GIF or WebP in an image folder is no error, but no frame is left out without a word."""
    from PIL import Image

    first, second = np.full((4, 4), 200, np.uint8), np.full((4, 4), 20, np.uint8)
    Image.fromarray(first).save(tmp_path / "a.gif", save_all=True, append_images=[Image.fromarray(second)])
    Image.fromarray(first).save(tmp_path / "b.webp", save_all=True, append_images=[Image.fromarray(second)],
                                lossless=True)
    Image.fromarray(second).save(tmp_path / "c.png")
    with pytest.warns(UserWarning, match=r"2 animated images, e.g. .*a.gif: the first frame of each is read"):
        ds = load_dataset(DataConfig(dataset=f"folder:{tmp_path}", test_fraction=0.34))
    firsts = sorted(int(v) for v in torch.cat([ds.train_x, ds.test_x])[:, 0, 0, 0])
    assert firsts == [20, 200, 200]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # still images say nothing
        (tmp_path / "a.gif").unlink()
        (tmp_path / "b.webp").unlink()
        Image.fromarray(first).save(tmp_path / "d.png")
        load_dataset(DataConfig(dataset=f"folder:{tmp_path}"))


def test_transparent_pixels_are_composited_over_white(tmp_path):
    """The colour a file hides under transparent pixels (here red) is not what anyone sees: every
    kind of transparency (alpha channel, grey + alpha, a palette's transparent index) shows white."""
    from PIL import Image

    from vaekit.data.folder import detect_channels

    rgba = np.zeros((2, 2, 4), dtype=np.uint8)
    rgba[..., 0] = 255  # red everywhere, hidden where transparent
    rgba[0, 0] = (0, 0, 0, 255)  # opaque black
    rgba[0, 1] = (0, 0, 0, 128)  # half-transparent black
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    la = np.array([[[0, 255], [0, 128]], [[77, 0], [77, 0]]], dtype=np.uint8)
    Image.fromarray(la, "LA").save(tmp_path / "b.png")
    pal = Image.fromarray(np.array([[0, 1], [1, 1]], dtype=np.uint8), "P")
    pal.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    pal.save(tmp_path / "c.gif", transparency=1)
    assert detect_channels(str(tmp_path)) == 1
    ds = load_dataset(DataConfig(dataset=f"folder:{tmp_path}", test_fraction=0.34))
    grey = {tuple(v.flatten().tolist()) for v in torch.cat([ds.train_x, ds.test_x])}
    assert grey == {(0, 127, 255, 255), (0, 255, 255, 255)}  # the RGBA and LA files; the GIF
    colour = load_dataset(DataConfig(dataset=f"folder:{tmp_path}", channels=3, test_fraction=0.34))
    assert {tuple(v[:, 1, 1].tolist()) for v in torch.cat([colour.train_x, colour.test_x])} == {(255, 255, 255)}


def test_system_files_and_folders_are_not_images(tmp_path):
    for cls in ("a", "b"):
        (tmp_path / cls).mkdir()
        for i in range(2):
            _png(tmp_path / cls / f"{i}.png", (4, 4))
        (tmp_path / cls / "Thumbs.db").write_bytes(b"\0junk")
        (tmp_path / cls / "desktop.ini").write_text("[.ShellClassInfo]")
        (tmp_path / cls / "__MACOSX").mkdir()
        (tmp_path / cls / "__MACOSX" / "._0.png").write_bytes(b"\0\5\26\7")
    (tmp_path / "__MACOSX").mkdir()
    (tmp_path / "__MACOSX" / "x.png").write_bytes(b"\0\5\26\7")
    (tmp_path / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    ds = load_dataset(DataConfig(dataset=f"folder:{tmp_path}"))
    assert ds.class_names == ["a", "b"] and len(ds.train_x) + len(ds.test_x) == 4


def test_jpegs_under_every_name_cameras_and_windows_give_them_are_images(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    for name in ("a.JPG", "b.jpeg", "c.jfif", "d.jpe", "e.PNG", "f.Tif"):
        fmt = {"e.PNG": "PNG", "f.Tif": "TIFF"}.get(name, "JPEG")
        Image.fromarray(rng.integers(0, 255, (8, 8), dtype=np.uint8)).save(tmp_path / name, format=fmt)
    ds = load_dataset(DataConfig(dataset=f"folder:{tmp_path}", test_fraction=0.5))
    assert len(ds.train_x) + len(ds.test_x) == 6
    (tmp_path / "g.heic").write_bytes(b"\0\0\0\x18ftypheic")
    with pytest.raises(DataError, match="g.heic: not an image file \\(PNG, JPEG, BMP, GIF, WebP or TIFF expected\\)"):
        load_dataset(DataConfig(dataset=f"folder:{tmp_path}"))


def test_no_image_is_left_out_of_a_class_layout_without_a_word(tmp_path):
    """An image beside the class folders (or beside train/ and test/) belongs to no class or split,
    and an empty class folder is a class without examples: each is an error naming it."""
    _folder_of_pngs(tmp_path, ["a", "b"], 2)
    (tmp_path / "notes.txt").write_text("a file that is no image is left alone here")
    assert load_dataset(DataConfig(dataset=f"folder:{tmp_path}")).class_names == ["a", "b"]
    _png(tmp_path / "stray.png", (4, 4))
    with pytest.raises(DataError, match=r"stray.png: an image beside the folders a/, b/ .* would belong to no class"):
        load_dataset(DataConfig(dataset=f"folder:{tmp_path}"))
    (tmp_path / "stray.png").unlink()
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    with pytest.raises(DataError, match="class folder 'c' holds no images"):
        load_dataset(DataConfig(dataset=f"folder:{tmp_path}"))
    split = tmp_path / "split"
    _folder_of_pngs(split / "train", ["a"], 2)
    _folder_of_pngs(split / "test", ["a"], 2)
    _png(split / "stray.png", (4, 4))
    with pytest.raises(DataError, match="stray.png: an image beside the folders train/, test/ .* is in neither split"):
        load_dataset(DataConfig(dataset=f"folder:{split}"))


def test_links_in_an_image_folder_are_followed_and_broken_ones_named(tmp_path):
    """A linked folder of images inside a class is read like a folder (it used to be left out without a
    word); a broken link, a link back up the tree and a FIFO are errors naming them."""
    root = tmp_path / "photos"
    _folder_of_pngs(root, ["a", "b"], 3)
    _folder_of_pngs(tmp_path / "elsewhere", ["more"], 4)
    (root / "a" / "more").symlink_to(tmp_path / "elsewhere" / "more")
    ds = load_dataset(DataConfig(dataset=f"folder:{root}", test_fraction=0.5))
    assert len(ds.train_x) + len(ds.test_x) == 10
    assert sorted((ds.train_y.tolist() + ds.test_y.tolist())) == [0] * 7 + [1] * 3
    (tmp_path / "elsewhere" / "more" / "up").symlink_to(root)
    with pytest.raises(DataError, match=r"more/up/a: leads back to a folder already read"):
        load_dataset(DataConfig(dataset=f"folder:{root}"))
    (tmp_path / "elsewhere" / "more" / "up").unlink()
    (root / "b" / "gone.png").symlink_to(tmp_path / "nowhere.png")
    with pytest.raises(DataError, match=r"b/gone.png: a broken link \(to .*nowhere.png\)"):
        load_dataset(DataConfig(dataset=f"folder:{root}"))
    (root / "b" / "gone.png").unlink()
    os.mkfifo(root / "b" / "pipe.png")
    with pytest.raises(VaekitError, match=r"pipe.png: is a FIFO"):
        load_dataset(DataConfig(dataset=f"folder:{root}"))


def test_flat_image_folder_errors(tmp_path):
    for i in range(3):
        _png(tmp_path / f"{i}.png", (8, 8))
    ds = load_dataset(DataConfig(dataset=f"folder:{tmp_path}"))
    assert ds.shape == (1, 8, 8) and ds.train_y is None
    _png(tmp_path / "big.png", (10, 10))
    with pytest.raises(DataError, match="--image-size"):
        load_dataset(DataConfig(dataset=f"folder:{tmp_path}"))
    (tmp_path / "big.png").unlink()
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(DataError, match="notes.txt: not an image file"):
        load_dataset(DataConfig(dataset=f"folder:{tmp_path}"))
    (tmp_path / "notes.txt").unlink()
    (tmp_path / "broken.png").write_bytes(b"\x89PNG garbage")
    with pytest.raises(DataError, match="broken.png: cannot read"):
        load_dataset(DataConfig(dataset=f"folder:{tmp_path}"))
    with pytest.raises(DataError, match="no such folder"):
        load_dataset(DataConfig(dataset=f"folder:{tmp_path / 'missing'}"))


def test_vectors_npy_npz_and_labels(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(50, 768)).astype(np.float32)
    y = rng.integers(0, 3, 50)
    np.save(tmp_path / "emb.npy", x)
    np.save(tmp_path / "labels.npy", y)
    ds = load_dataset(DataConfig(dataset=f"vectors:{tmp_path / 'emb.npy'}", labels=str(tmp_path / "labels.npy")))
    assert ds.shape == (768,) and len(ds.train_x) == 45 and ds.train_y is not None
    np.savez(tmp_path / "emb.npz", x=x, y=y)
    dz = load_dataset(DataConfig(dataset=f"vectors:{tmp_path / 'emb.npz'}"))
    assert torch.equal(dz.train_x, ds.train_x) and torch.equal(dz.train_y, ds.train_y)
    np.savez(tmp_path / "float_labels.npz", x=x, y=y.astype(np.float64))  # as pandas saves a column with gaps
    df = load_dataset(DataConfig(dataset=f"vectors:{tmp_path / 'float_labels.npz'}"))
    assert df.train_y.dtype == torch.int64 and torch.equal(df.train_y, ds.train_y)
    np.savez(tmp_path / "fractions.npz", x=x, y=y + 0.5)
    with pytest.raises(DataError, match="labels must be N=50 integers"):
        load_dataset(DataConfig(dataset=f"vectors:{tmp_path / 'fractions.npz'}"))


def test_npz_labels_under_the_names_a_table_takes_and_never_lost_without_a_word(tmp_path):
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(50, 8)).astype(np.float32), rng.integers(0, 3, 50)
    np.savez(tmp_path / "label.npz", x=x, label=y, ids=np.arange(50))  # a label key, and other per-row data
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ds = load_dataset(DataConfig(dataset=f"vectors:{tmp_path / 'label.npz'}"))
    assert ds.train_y is not None and sorted(set(ds.train_y.tolist()) | set(ds.test_y.tolist())) == [0, 1, 2]
    np.savez(tmp_path / "named.npz", x=x, species=y, meta=np.arange(3))
    with pytest.warns(UserWarning, match=r"\['species'\] has one value per row but is not read as labels"):
        assert load_dataset(DataConfig(dataset=f"vectors:{tmp_path / 'named.npz'}")).train_y is None
    np.save(tmp_path / "y.npy", y)
    with warnings.catch_warnings():  # --labels gives them: nothing to say
        warnings.simplefilter("error")
        load_dataset(DataConfig(dataset=f"vectors:{tmp_path / 'named.npz'}", labels=str(tmp_path / "y.npy")))
    np.savez(tmp_path / "both.npz", x=x, y=y, targets=y)
    with pytest.raises(DataError, match="arrays y and targets could both be the labels"):
        load_dataset(DataConfig(dataset=f"vectors:{tmp_path / 'both.npz'}"))


@pytest.mark.parametrize(
    "array,match",
    [
        (np.zeros((4, 8, 8, 5), np.float32), r"expected vectors \(N, D\) or images .* got shape \(4, 8, 8, 5\)"),
        (np.zeros((4, 2, 2, 2, 2), np.float32), "got shape"),
        (np.zeros((4, 1, 8, 3), np.float32), r"could hold their 1 or their 3 channels first; save them as \(N, C, H, W\)"),
        (np.array([[1.0, 2.0], [0.0, 1.0], [1.0, np.nan]], np.float32), r"1 non-finite .* row 2 \(rows counted from 0\)"),
        (np.array([[1.0, 2.0], [1e300, -1e300]]), r"2 values beyond float32's range \(3.4e38\), the first in row 1"),
        (np.zeros((0, 5), np.float32), "too few rows"),
        (np.array([["a", "b"], ["c", "d"]]), "not numeric"),
    ],
)
def test_vectors_bad_arrays(tmp_path, array, match):
    np.save(tmp_path / "bad.npy", array)
    with pytest.raises(DataError, match=match):
        load_dataset(DataConfig(dataset=f"vectors:{tmp_path / 'bad.npy'}"))


def test_an_array_of_images_is_read_as_images(tmp_path):
    """Images saved with numpy.save (as Keras and many tutorials hold MNIST or CIFAR: (N, 28, 28) or
    (N, 32, 32, 3) bytes) were refused as "expected a 2-d array": they are images, 8-bit ones kept as
    bytes like a folder's, channels-last ones turned channels-first, with their labels."""
    from vaekit.autoconfig import choose_model

    rng = np.random.default_rng(0)
    grey = rng.integers(0, 256, (30, 16, 16), dtype=np.uint8)
    colour = rng.integers(0, 256, (30, 32, 32, 3), dtype=np.uint8)
    np.savez(tmp_path / "grey.npz", x=grey, y=np.arange(30) % 3)
    np.save(tmp_path / "colour.npy", colour)
    np.save(tmp_path / "floats.npy", rng.random((30, 3, 8, 8), dtype=np.float32))
    g = load_dataset(DataConfig(dataset=f"vectors:{tmp_path / 'grey.npz'}"), progress=False)
    assert g.shape == (1, 16, 16) and g.is_image and g.train_x.dtype == torch.uint8 and g.scale == 255.0
    assert g.train_y is not None and sorted(set(g.train_y.tolist()) | set(g.test_y.tolist())) == [0, 1, 2]
    whole = torch.cat([g.train_x, g.test_x])[:, 0].numpy()
    assert sorted(map(bytes, whole)) == sorted(map(bytes, grey))  # every image, whole
    c = load_dataset(DataConfig(dataset=f"vectors:{tmp_path / 'colour.npy'}"), progress=False)
    assert c.shape == (3, 32, 32) and c.train_x.dtype == torch.uint8
    first = c.train_x[0].permute(1, 2, 0).numpy()
    assert any(np.array_equal(first, image) for image in colour)  # channels last -> first, pixels in place
    assert "residual conv VAE" in choose_model(c)[1] and "3x32x32 colour images" in choose_model(c)[1]
    f = load_dataset(DataConfig(dataset=f"vectors:{tmp_path / 'floats.npy'}"), progress=False)
    assert f.shape == (3, 8, 8) and f.train_x.dtype == torch.float32 and f.scale == 1.0


def test_rows_of_pixels_are_read_as_images_of_the_shape_given(tmp_path):
    """A table of MNIST pixels (Kaggle's mnist_train.csv: a label, then 784 columns of 0..255) trained as
    784-d vectors of a Gaussian; --image-shape 28,28 (here 4,4) reads each row as an image, 8-bit values
    kept as bytes; H,W,C rows (flattened channels-last images) have their channels moved first."""
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (12, 16))
    (tmp_path / "px.csv").write_text("label," + ",".join(f"pixel{i}" for i in range(16)) + "\n" + "".join(
        f"{i % 3}," + ",".join(map(str, row)) + "\n" for i, row in enumerate(pixels)))
    d = load_dataset(DataConfig(dataset=f"vectors:{tmp_path / 'px.csv'}", image_shape=[4, 4]), progress=False)
    assert d.shape == (1, 4, 4) and d.train_x.dtype == torch.uint8 and d.scale == 255.0 and d.train_y is not None
    assert sorted(map(bytes, torch.cat([d.train_x, d.test_x]).reshape(12, 16).numpy())) == \
        sorted(map(bytes, pixels.astype(np.uint8)))
    colour = rng.random((10, 2, 3, 3), dtype=np.float32)  # (N, H, W, C), saved as rows
    np.save(tmp_path / "hwc.npy", colour.reshape(10, -1))
    c = load_dataset(DataConfig(dataset=f"vectors:{tmp_path / 'hwc.npy'}", image_shape=[2, 3, 3]), progress=False)
    assert c.shape == (3, 2, 3) and c.train_x.dtype == torch.float32
    assert any(np.array_equal(c.train_x[0].permute(1, 2, 0).numpy(), image) for image in colour)
    with pytest.raises(DataError, match=re.escape("--image-shape 5,5 holds 25 values, but its rows have 16")):
        load_dataset(DataConfig(dataset=f"vectors:{tmp_path / 'px.csv'}", image_shape=[5, 5]), progress=False)


def test_a_held_out_class_the_test_split_lacks_is_refused_before_training(tmp_path):
    """`anomaly --holdout-class C` trained a whole run, then said "the test split needs examples of both
    held-out and seen classes"; a class found only in the test split was "no class C to hold out"."""
    x = np.random.default_rng(0).normal(size=(60, 3)).astype(np.float32)
    refused = 0
    for where in range(60):  # the rare class's one example lands in train for one split, in test for another
        y = np.zeros(60, int)
        y[where] = 1
        np.savez(tmp_path / "rare.npz", x=x, y=y)
        cfg = DataConfig(dataset=f"vectors:{tmp_path / 'rare.npz'}", holdout_classes=[1])
        try:
            d = load_dataset(cfg, progress=False)
        except DataError as e:
            assert "none of its test examples is of the held-out class 1" in str(e)
            refused += 1
            continue
        assert int((d.test_y == 1).sum()) == 1 and not (d.train_y == 1).any()  # found in test: held out
        assert refused  # and, before, in the training split only: refused
        break
    else:
        raise AssertionError("no split put the rare example in the test split")


def test_vectors_from_safetensors_and_pickles_refused(tmp_path):
    """Embeddings saved as .safetensors (the Hugging Face format) are read like an .npz (data 'x' or
    'embeddings', labels 'y' or 'labels'; half floats as float32); a torch.save .pt file is a pickle,
    refused by name without being loaded; a damaged .safetensors file is one line."""
    from safetensors.torch import save_file

    x = torch.randn(40, 6)
    save_file({"embeddings": x.to(torch.bfloat16), "labels": torch.arange(40) % 4}, tmp_path / "e.safetensors")
    d = load_dataset(DataConfig(dataset=f"vectors:{tmp_path / 'e.safetensors'}"), progress=False)
    assert d.shape == (6,) and d.train_x.dtype == torch.float32 and d.train_y is not None
    assert torch.equal(torch.cat([d.train_x, d.test_x]).sort(0).values, x.to(torch.bfloat16).float().sort(0).values)
    save_file({"a": x, "b": x.clone()}, tmp_path / "two.safetensors")
    (tmp_path / "cut.safetensors").write_bytes((tmp_path / "e.safetensors").read_bytes()[:-7])
    torch.save(x, tmp_path / "x.pt")
    for name, says in (("two.safetensors", "has arrays ['a', 'b']; name the data 'x'"),
                       ("cut.safetensors", "not a readable safetensors file"),
                       ("x.pt", "a pickle (torch.save), which vaekit never loads")):
        with pytest.raises(DataError, match=re.escape(says)):
            load_dataset(DataConfig(dataset=f"vectors:{tmp_path / name}"), progress=False)


def test_vectors_object_array_is_refused_without_unpickling(tmp_path):
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    with pytest.raises(DataError, match="not a readable numeric"):
        load_dataset(DataConfig(dataset=f"vectors:{tmp_path / 'obj.npy'}"))


def test_unknown_dataset_names_what_was_probably_meant(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "photos").mkdir()
    np.save(tmp_path / "emb.npy", np.zeros((4, 2), np.float32))
    for spec, meant in [("cifar", "did you mean 'cifar10'?"), ("MNIST", "did you mean 'mnist'?"),
                        ("fashion_mnist", "did you mean 'fashion-mnist'?"), ("photos", "did you mean folder:photos?"),
                        ("emb.npy", "did you mean vectors:emb.npy?"), ("folders:photos", "did you mean folder:photos?"),
                        ("vectors:photos", "did you mean folder:photos?"), ("folder:emb.npy", "did you mean vectors:emb.npy?"),
                        ("svhn", "choose one of mnist, fashion-mnist")]:
        with pytest.raises(DataError) as e:
            load_dataset(DataConfig(dataset=spec))
        assert spec in str(e.value) and meant in str(e.value), str(e.value)


def test_binarisation_static_and_dynamic():
    static = load_dataset(DataConfig(dataset="digits", binarize="static"))
    assert set(static.features(static.train_x).unique().tolist()) == {0.0, 1.0}
    again = load_dataset(DataConfig(dataset="digits", binarize="static"))
    assert torch.equal(static.train_x, again.train_x)
    dyn = load_dataset(DataConfig(dataset="digits", binarize="dynamic"))
    assert set(dyn.features(dyn.test_x).unique().tolist()) == {0.0, 1.0}
    assert len(dyn.features(dyn.train_x).unique()) > 2  # binarised per batch while training
    p = torch.full((20000,), 0.3)
    assert float(binarize(p, torch.Generator().manual_seed(0)).mean()) == pytest.approx(0.3, abs=0.02)


def test_fashion_mnist_offline_error_names_files_and_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("VAEKIT_DATA", str(tmp_path))
    with pytest.raises(DataError) as e:
        load_dataset(DataConfig(dataset="fashion-mnist", download=False), progress=False)
    msg = str(e.value)
    assert str(tmp_path / "fashion-mnist") in msg and "t10k-labels-idx1-ubyte" in msg and "--data-dir" in msg


def _folder_of_pngs(root, classes, n, size=(4, 4), mode="L"):
    for c in classes:
        (root / c).mkdir(parents=True)
        for i in range(n):
            _png(root / c / f"{i}.png", size, (37 * i + 11 * len(c)) % 256, mode)


def test_train_and_test_subfolders_keep_their_split(tmp_path):
    _folder_of_pngs(tmp_path / "train", ["cat", "dog"], 3)
    _folder_of_pngs(tmp_path / "test", ["dog"], 2)
    ds = load_dataset(DataConfig(dataset=f"folder:{tmp_path}"))
    assert (len(ds.train_x), len(ds.test_x)) == (6, 2)
    assert ds.class_names == ["cat", "dog"] and ds.test_y.tolist() == [1, 1]  # 'dog' is class 1 in both
    (tmp_path / "test" / "bird").mkdir()
    _png(tmp_path / "test" / "bird" / "0.png", (4, 4), 9, "L")
    with pytest.raises(DataError, match="class 'bird' has no folder in"):
        load_dataset(DataConfig(dataset=f"folder:{tmp_path}"))


def test_decoded_folders_are_cached_and_the_cache_follows_the_contents(tmp_path, monkeypatch):
    from vaekit.data import folder

    monkeypatch.setenv("VAEKIT_CACHE", str(tmp_path / "cache"))
    _folder_of_pngs(tmp_path / "imgs", ["a", "b"], folder.CACHE_MIN_FILES // 2)
    cfg = DataConfig(dataset=f"folder:{tmp_path / 'imgs'}")
    first = load_dataset(cfg)
    cached = list((tmp_path / "cache" / "folders").glob("*.npy"))
    assert len(cached) == 1
    calls = []
    monkeypatch.setattr(folder, "_load_image", lambda *a: calls.append(a))  # a cache hit decodes nothing
    again = load_dataset(cfg)
    assert calls == [] and torch.equal(first.train_x, again.train_x) and torch.equal(first.test_y, again.test_y)
    monkeypatch.undo()
    monkeypatch.setenv("VAEKIT_CACHE", str(tmp_path / "cache"))
    _png(tmp_path / "imgs" / "a" / "0.png", (4, 4), 255, "L")  # same name, new contents
    import os
    os.utime(tmp_path / "imgs" / "a" / "0.png", ns=(1, 1))
    changed = load_dataset(cfg)
    assert len(list((tmp_path / "cache" / "folders").glob("*.npy"))) == 2
    assert not torch.equal(torch.cat([first.train_x, first.test_x]).sort(0).values,
                           torch.cat([changed.train_x, changed.test_x]).sort(0).values)
    for f in (tmp_path / "cache" / "folders").glob("*.npy"):
        f.write_bytes(b"garbage")  # a damaged cache is rebuilt, not trusted
    assert torch.equal(load_dataset(cfg).train_x, changed.train_x)
    for f in (tmp_path / "cache" / "folders").glob("*.npy"):
        f.unlink()
        f.mkdir()  # the cache file cannot be written: decoded all the same, and said
    with pytest.warns(UserWarning, match=r"not cached: .*\.npy: is a folder; .*; it is computed again"):
        assert torch.equal(load_dataset(cfg).train_x, changed.train_x)


def test_decoding_a_large_folder_shows_progress_on_a_terminal(tmp_path):
    """1,000 images and more take seconds to decode (60,000 CIFAR photos: 14 s): a bar shows it, once;
    the cached read after it shows none (nor does progress=False: the same switch as the cached read's)."""
    from vaekit.data import folder

    _folder_of_pngs(tmp_path / "imgs", ["a", "b"], folder.CACHE_MIN_FILES // 2)
    code = ("from vaekit.data import load_dataset; from vaekit.config import DataConfig\n"
            f"load_dataset(DataConfig(dataset='folder:{tmp_path / 'imgs'}'), progress={{}})")
    env = {"VAEKIT_CACHE": str(tmp_path / "cache")}
    shown = on_a_terminal(code.format(True), env)
    assert "decoding imgs:" in shown and f"/{folder.CACHE_MIN_FILES} [" in shown, shown
    assert "decoding" not in on_a_terminal(code.format(True), env)  # read from the cache


def test_grey_images_saved_as_rgb_count_as_grey_when_choosing_a_model(tmp_path):
    from PIL import Image

    from vaekit.data.folder import detect_channels

    for cls in ("a", "b"):
        (tmp_path / cls).mkdir()
        for i in range(5):
            _png(tmp_path / cls / f"{i}.png", (6, 6), 40 * i, "L")
            Image.open(tmp_path / cls / f"{i}.png").convert("RGB").save(tmp_path / cls / f"{i}.png")
    assert Image.open(tmp_path / "a" / "0.png").mode == "RGB" and detect_channels(str(tmp_path)) == 1
    _png(tmp_path / "b" / "4.png", (6, 6), 100, "RGB")  # one real colour image, in the second class
    assert detect_channels(str(tmp_path)) == 3


def test_a_class_folder_named_by_a_number_is_sampled_by_that_name(tmp_path):
    from conftest import run_cli

    _folder_of_pngs(tmp_path / "imgs", ["1", "2", "3"], 6)
    run = str(tmp_path / "run")
    code, _, err = run_cli("train", "--dataset", f"folder:{tmp_path / 'imgs'}", "--conditional", "--arch", "mlp",
                           "--hidden", "8", "--latent-dim", "2", "--epochs", "1", "--no-progress", "--out", run)
    assert code == 0, err
    code, out, err = run_cli("sample", run, "-n", "2", "--label", "3", "-o", str(tmp_path / "s.npy"))
    assert code == 0 and 'class 2 "3"' in out, (out, err)  # the folder "3" is the third class, number 2
    code, out, err = run_cli("sample", run, "-n", "2", "--label", "0", "-o", str(tmp_path / "s.npy"))
    assert code == 0 and 'class 0 "1"' in out, (out, err)  # no class is named 0: the number
    code, _, err = run_cli("sample", run, "--label", "7", "-o", str(tmp_path / "t.npy"))
    assert code == 2 and "classes 0..2" in err


def test_the_cache_stays_within_its_limit_removing_the_least_recently_used(tmp_path, monkeypatch):
    """Each changed folder or --image-size leaves a new cached array (60,000 photos: 184 MB each); the
    cache grew without end. Now the entries of all kinds stay within $VAEKIT_CACHE_MAX together: the
    least recently used (written or read) are removed first, and an entry larger than that is not kept."""
    from vaekit.files import cache_dir, cache_used, write_cache

    monkeypatch.setenv("VAEKIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("VAEKIT_CACHE_MAX", "10K")
    blob = lambda n: lambda buf: buf.write(bytes(n))  # noqa: E731
    names = [cache_dir(kind) / f"{i}.bin" for i, kind in enumerate(["folders", "tables", "featurenets", "folders"])]
    for i, name in enumerate(names[:3]):
        assert write_cache(name, blob(3000))
        os.utime(name, (1000 + i, 1000 + i))  # written in this order
    cache_used(names[0])  # read again: now the most recently used
    assert write_cache(names[3], blob(3000))  # 12,000 bytes would pass 10K: the oldest, names[1], goes
    assert [n.exists() for n in names] == [True, False, True, True]
    with pytest.warns(UserWarning, match=r"not cached: 19.5 KiB is more than the cache may hold "
                                         r"\(\$VAEKIT_CACHE_MAX=10.0 KiB\); it is computed again"):
        assert not write_cache(cache_dir("tables") / "huge.bin", blob(20_000))  # over the limit on its own
    assert not (cache_dir("tables") / "huge.bin").exists() and all(names[i].exists() for i in (0, 2, 3))
    (cache_dir("folders") / "mine.txt").mkdir()  # not a cache entry: never counted, never removed
    monkeypatch.setenv("VAEKIT_CACHE_MAX", "lots")
    with pytest.warns(UserWarning, match=r"\$VAEKIT_CACHE_MAX: 'lots' is not a size.*; nothing is cached"):
        assert not write_cache(cache_dir("tables") / "more.bin", blob(10))
    assert (cache_dir("folders") / "mine.txt").is_dir()
    monkeypatch.setenv("VAEKIT_CACHE_MAX", "0")  # the cache switched off: nothing kept, nothing said
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert not write_cache(cache_dir("tables") / "off.bin", blob(10))


def test_a_cache_entry_never_takes_the_last_free_space_of_its_disk(small_fs, monkeypatch):
    """A run's checkpoints need the space more: an entry that would leave its disk nearly full (under
    5 % of a small disk, 1 GiB of a large one) is not kept, and a warning says so. On a real 4 MiB file system."""
    from conftest import fill_disk

    from vaekit.files import write_cache

    disk = small_fs(4 << 20)
    monkeypatch.setenv("VAEKIT_CACHE", str(disk / "cache"))
    assert write_cache(disk / "cache" / "folders" / "a.bin", lambda buf: buf.write(bytes(1 << 20)))
    fill_disk(disk, leave=(1 << 20) + 100_000)
    with pytest.warns(UserWarning, match=r"not cached: the disk of .*/cache/folders has .* free, kept for the runs'"):
        assert not write_cache(disk / "cache" / "folders" / "b.bin", lambda buf: buf.write(bytes(1 << 20)))
    assert not (disk / "cache" / "folders" / "b.bin").exists()
