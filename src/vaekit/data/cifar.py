"""CIFAR-10 from its official binary distribution (plain bytes, no pickle).

Found in ``data_dir`` (or ``$VAEKIT_DATA``, or its ``cifar10`` sub-folder, else vaekit's cache folder, ``~/.cache/vaekit/cifar10``)
as the extracted ``cifar-10-batches-bin/`` folder or as the tarball ``cifar-10-binary.tar.gz``
(verified by its md5 and read member by member, nothing unpacked to disk); downloaded when neither
is there and downloading is allowed. The extracted files have no official checksums, so their
structure is checked: records of 3073 bytes (a label byte, then 1024 red, 1024 green and 1024 blue
values, rows top to bottom), labels 0-9, 10,000 records per file.
"""

from __future__ import annotations

import hashlib
import tarfile
import warnings
import zlib
from pathlib import Path

import numpy as np
import torch

from .. import budget
from ..errors import DataError, VaekitError, brief
from ..files import file_size, open_regular
from .dataset import Dataset
from .download import fetch
from .standard import search_dirs

URLS = ("https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz",)
TARBALL = "cifar-10-binary.tar.gz"
TARBALL_MD5 = "c32a1d4ab5d03f1284b67883e8d87530"
FOLDER = "cifar-10-batches-bin"
TRAIN_FILES = tuple(f"data_batch_{i}.bin" for i in range(1, 6))
TEST_FILE = "test_batch.bin"
RECORD = 3073
RECORDS_PER_FILE = 10_000
CLASS_NAMES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def parse_batch(data: bytes, source: str) -> tuple[np.ndarray, np.ndarray]:
    """Records -> images (N, 3, 32, 32) uint8 and labels (N,) int64, with the structure checked."""
    if not data or len(data) % RECORD:
        raise DataError(f"{source}: {len(data):,} bytes is not a whole number of 3073-byte CIFAR-10 records "
                        "(truncated or not a CIFAR-10 binary batch); delete it and download it again")
    records = np.frombuffer(data, dtype=np.uint8).reshape(-1, RECORD)
    labels = records[:, 0]
    bad = np.flatnonzero(labels > 9)
    if bad.size:
        raise DataError(f"{source}: record {int(bad[0])} has label {int(labels[bad[0]])} (CIFAR-10 labels are 0-9); "
                        "not a CIFAR-10 binary batch, or the file is corrupt")
    return records[:, 1:].reshape(-1, 3, 32, 32), labels.astype(np.int64)


def _read_folder(folder: Path) -> dict[str, bytes]:
    out = {}
    for name in (*TRAIN_FILES, TEST_FILE):
        path = folder / name
        if not (path.exists() or path.is_symlink()):
            raise DataError(f"{folder}: {name} is missing; the folder must hold data_batch_1.bin ... data_batch_5.bin "
                            "and test_batch.bin (delete the folder and download CIFAR-10 again)")
        with open_regular(path, "CIFAR-10 batch") as f:
            size = file_size(f)
            budget.check(size, f"{path}")
            out[name] = f.read(size)
    return out


def _md5_file(path: Path) -> str:
    h = hashlib.md5(usedforsecurity=False)
    with open_regular(path, "CIFAR-10 tarball") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _read_tarball(path: Path) -> dict[str, bytes]:
    digest = _md5_file(path)
    if digest != TARBALL_MD5:
        raise DataError(f"{path}: checksum mismatch, not the official {TARBALL} (corrupt or incomplete); delete it "
                        "and download it again")
    wanted = {f"{FOLDER}/{name}": name for name in (*TRAIN_FILES, TEST_FILE)}
    out: dict[str, bytes] = {}
    try:
        with open_regular(path, "CIFAR-10 tarball") as raw, tarfile.open(fileobj=raw, mode="r:gz") as tar:
            for member in tar:
                name = wanted.get(member.name)
                if name is None or not member.isfile():
                    continue
                budget.check(member.size, f"{path}: {member.name}")
                f = tar.extractfile(member)
                out[name] = f.read(member.size) if f is not None else b""
    except (tarfile.TarError, OSError, EOFError, zlib.error) as e:
        raise DataError(f"{path}: not a readable tar.gz ({brief(e)}); delete it and download it again") from None
    missing = [n for n in wanted.values() if n not in out]
    if missing:
        raise DataError(f"{path}: {missing[0]} is not in the tarball")
    return out


def locate(data_dir: str | None, download: bool, progress: bool) -> Path:
    """The extracted batch folder or the tarball, downloading the tarball when allowed and needed."""
    dirs, target = search_dirs("cifar10", data_dir)
    for d in dirs:
        if (d / TRAIN_FILES[0]).exists():
            return d
        if (d / FOLDER).is_dir():
            return d / FOLDER
        if (d / TARBALL).exists() or (d / TARBALL).is_symlink():
            return d / TARBALL
    where = ", ".join(map(str, dirs))
    if not download:
        raise DataError(f"cifar10: neither {FOLDER}/ nor {TARBALL} found in {where}; pass --data-dir DIR (or set "
                        "VAEKIT_DATA) to the folder holding either, or allow downloading")
    dest, errors = target / TARBALL, []
    for url in URLS:
        try:
            fetch(url, dest, progress)
            if _md5_file(dest) != TARBALL_MD5:
                raise DataError(f"{url}: the download's checksum does not match the official {TARBALL}")
            return dest
        except (OSError, VaekitError) as e:
            dest.unlink(missing_ok=True)
            errors.append(str(e))
    raise DataError(f"cifar10: neither {FOLDER}/ nor {TARBALL} found in {where} and the download failed "
                    f"({errors[-1]}); put either in a folder and pass --data-dir DIR or set VAEKIT_DATA")


def load_cifar10(data_dir: str | None, download: bool = True, progress: bool = True) -> Dataset:
    """The 50,000 training and 10,000 test images, uint8 (N, 3, 32, 32), with labels."""
    where = locate(data_dir, download, progress)
    raw = _read_tarball(where) if where.name == TARBALL else _read_folder(where)
    parts = {}
    for name, data in raw.items():
        source = f"{where}/{name}" if where.name != TARBALL else f"{where}: {name}"
        parts[name] = parse_batch(data, source)
        if len(parts[name][0]) != RECORDS_PER_FILE:
            warnings.warn(f"{source}: {len(parts[name][0]):,} records, the official file has {RECORDS_PER_FILE:,}",
                          stacklevel=2)
    train_x = np.concatenate([parts[n][0] for n in TRAIN_FILES])
    train_y = np.concatenate([parts[n][1] for n in TRAIN_FILES])
    test_x, test_y = parts[TEST_FILE]
    return Dataset("cifar10", torch.from_numpy(train_x.copy()), torch.from_numpy(train_y),
                   torch.from_numpy(test_x.copy()), torch.from_numpy(test_y.copy()), scale=255.0,
                   class_names=list(CLASS_NAMES))
