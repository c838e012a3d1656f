"""The CIFAR-10 binary loader on small files in the official format that the tests write: round trip,
the tarball path, and one-line refusals of truncated, mislabelled and incomplete data."""

from __future__ import annotations

import hashlib
import io
import tarfile
import warnings
from pathlib import Path

import numpy as np
import pytest

from vaekit.config import DataConfig
from vaekit.data import cifar, load_dataset
from vaekit.errors import DataError, VaekitError

from conftest import run_cli

NAMES = (*cifar.TRAIN_FILES, cifar.TEST_FILE)


def _records(n: int, seed: int) -> tuple[bytes, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8)
    labels = rng.integers(0, 10, n, dtype=np.uint8)
    data = np.concatenate([labels[:, None], images.reshape(n, -1)], axis=1).tobytes()
    return data, images, labels


def _write_folder(root: Path, n: int = 7) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    folder = root / cifar.FOLDER
    folder.mkdir(parents=True)
    truth = {}
    for i, name in enumerate(NAMES):
        data, images, labels = _records(n + i, i)
        (folder / name).write_bytes(data)
        truth[name] = images, labels
    return truth


def _load(root: Path, **kw) -> object:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return load_dataset(DataConfig(dataset="cifar10", data_dir=str(root), download=False, **kw), progress=False)


def test_extracted_folder_round_trips(tmp_path: Path) -> None:
    truth = _write_folder(tmp_path)
    with pytest.warns(UserWarning, match="the official file has 10,000"):
        ds = load_dataset(DataConfig(dataset="cifar10", data_dir=str(tmp_path), download=False), progress=False)
    assert ds.shape == (3, 32, 32) and ds.train_x.dtype.is_floating_point is False
    want_x = np.concatenate([truth[n][0] for n in cifar.TRAIN_FILES])
    assert np.array_equal(ds.train_x.numpy(), want_x)
    assert np.array_equal(ds.train_y.numpy(), np.concatenate([truth[n][1] for n in cifar.TRAIN_FILES]))
    assert np.array_equal(ds.test_x.numpy(), truth[cifar.TEST_FILE][0])
    assert ds.class_names[0] == "airplane" and ds.scale == 255.0
    # the batch folder itself, or VAEKIT_DATA/cifar10/, are found too
    assert len(_load(tmp_path / cifar.FOLDER).test_x) == len(truth[cifar.TEST_FILE][0])


def test_the_channel_order_is_red_green_blue(tmp_path: Path) -> None:
    folder = tmp_path / cifar.FOLDER
    folder.mkdir()
    record = bytes([3]) + bytes([10] * 1024 + [20] * 1024 + [30] * 1024)
    for name in NAMES:
        (folder / name).write_bytes(record * 2)
    ds = _load(tmp_path)
    assert ds.train_x[0, :, 5, 7].tolist() == [10, 20, 30] and ds.train_y[0].item() == 3


def test_tarball_is_read_member_by_member(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    truth = _write_folder(tmp_path / "src")
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        tar.add(tmp_path / "src" / cifar.FOLDER, arcname=cifar.FOLDER)
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / cifar.TARBALL).write_bytes(buf.getvalue())
    with pytest.raises(DataError, match="checksum mismatch, not the official cifar-10-binary.tar.gz"):
        _load(tmp_path / "d")
    monkeypatch.setattr(cifar, "TARBALL_MD5", hashlib.md5(buf.getvalue()).hexdigest())  # as if it were official
    ds = _load(tmp_path / "d")
    assert np.array_equal(ds.test_x.numpy(), truth[cifar.TEST_FILE][0])
    assert not any(p.suffix == ".bin" for p in (tmp_path / "d").rglob("*"))  # nothing unpacked to disk


@pytest.mark.parametrize("damage,match", [
    (lambda b: b[:-5], "not a whole number of 3073-byte CIFAR-10 records"),
    (lambda b: b"", "not a whole number"),
    (lambda b: bytes([11]) + b[1:], "record 0 has label 11"),
    (lambda b: b[:3073 * 2] + bytes([200]) + b[3073 * 2 + 1:], "record 2 has label 200"),
])
def test_damaged_batches_are_refused_with_one_line(tmp_path: Path, damage, match: str) -> None:
    _write_folder(tmp_path)
    path = tmp_path / cifar.FOLDER / "data_batch_3.bin"
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(DataError, match=match) as e:
        _load(tmp_path)
    assert "data_batch_3.bin" in str(e.value) and "\n" not in str(e.value)


def test_missing_files_name_the_file_and_the_flag(tmp_path: Path) -> None:
    _write_folder(tmp_path)
    (tmp_path / cifar.FOLDER / cifar.TEST_FILE).unlink()
    with pytest.raises(DataError, match="test_batch.bin is missing"):
        _load(tmp_path)
    with pytest.raises(DataError, match="pass --data-dir"):
        _load(tmp_path / "nothing-here")


def test_a_fifo_in_place_of_a_batch_is_refused(tmp_path: Path) -> None:
    import os

    _write_folder(tmp_path)
    path = tmp_path / cifar.FOLDER / "data_batch_1.bin"
    path.unlink()
    os.mkfifo(path)
    with pytest.raises(VaekitError, match="data_batch_1.bin: is a FIFO"):
        _load(tmp_path)


def test_trains_from_the_command_line(tmp_path: Path) -> None:
    _write_folder(tmp_path / "c", n=40)
    code, out, err = run_cli("train", "--dataset", "cifar10", "--data-dir", str(tmp_path / "c"), "--arch", "resnet",
                             "--hidden", "8,8", "--latent-dim", "4", "--likelihood", "dlogistic", "--mixtures", "2",
                             "--epochs", "1", "--batch-size", "16", "--out", str(tmp_path / "r"), "--no-progress")
    assert code == 0, err
    code, out, err = run_cli("evaluate", str(tmp_path / "r"), "--iwae-k", "4", "--json")
    assert code == 0, err
    import json

    m = json.loads(out)
    assert m["bits_per_dim"] == pytest.approx(m["nll_iwae"] / (3 * 32 * 32 * np.log(2)))
    assert 0 < m["bits_per_dim"] < 9  # random pixels: about 8 bits each, and never above log2(256) by much
