"""MNIST and Fashion-MNIST: the four official IDX files, found locally or downloaded, then verified.

Search order: ``data_dir`` (or ``$VAEKIT_DATA``), and its sub-folder named after the data set;
without either, ``~/.cache/vaekit/<name>`` (vaekit's cache folder: files.cache_dir). Files may be gzipped or not. Integrity is checked
on the uncompressed bytes (recompressed copies stay valid); for Fashion-MNIST, whose
uncompressed checksums are not published, the official .gz checksum is accepted instead.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import DataError, VaekitError, show
from .download import fetch
from ..files import cache_dir, expand_home, read_regular
from .idx import md5, parse_idx, read_idx_bytes

FILES = {
    "train_x": "train-images-idx3-ubyte",
    "train_y": "train-labels-idx1-ubyte",
    "test_x": "t10k-images-idx3-ubyte",
    "test_y": "t10k-labels-idx1-ubyte",
}


@dataclass(frozen=True)
class IdxSource:
    name: str
    mirrors: tuple[str, ...]
    md5: dict[str, str]  # file -> md5 of the uncompressed bytes
    gz_md5: dict[str, str]  # file -> md5 of the official .gz
    class_names: tuple[str, ...] = field(default_factory=tuple)


SOURCES = {
    "mnist": IdxSource(
        name="mnist",
        mirrors=("https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/"),
        md5={
            "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
            "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
            "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
            "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
        },
        gz_md5={
            "train-images-idx3-ubyte": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
            "train-labels-idx1-ubyte": "d53e105ee54ea40749a09fcbcd1e9432",
            "t10k-images-idx3-ubyte": "9fb629c4189551a2d022fa330f9573f3",
            "t10k-labels-idx1-ubyte": "ec29112dd5afa0611ce80d1b7f02629c",
        },
        class_names=tuple(str(i) for i in range(10)),
    ),
    "fashion-mnist": IdxSource(
        name="fashion-mnist",
        mirrors=(
            "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
            "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
        ),
        md5={},
        gz_md5={
            "train-images-idx3-ubyte": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
            "train-labels-idx1-ubyte": "25c81989df183df01b3e8a0aad5dffbe",
            "t10k-images-idx3-ubyte": "bef4ecab320f06d8554ea6380940ec79",
            "t10k-labels-idx1-ubyte": "bb300cfdad3c16e7a12a480ee83cd310",
        },
        class_names=("T-shirt", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                     "Sneaker", "Bag", "Ankle boot"),
    ),
}


def _data_root(path: str, what: str) -> Path:
    root = Path(expand_home(path))
    if root.exists() and not root.is_dir():
        raise DataError(f"{what} {show(path)}: is a file, not a folder; give the folder that holds the data files")
    return root


def search_dirs(name: str, data_dir: str | None) -> tuple[list[Path], Path]:
    """Folders searched for the files, in order, and the folder downloads go to."""
    if data_dir:
        root = _data_root(data_dir, "--data-dir")
        return [root, root / name], root
    if os.environ.get("VAEKIT_DATA"):
        root = _data_root(os.environ["VAEKIT_DATA"], "$VAEKIT_DATA")
        return [root / name, root], root / name
    cache = cache_dir(name)
    return [cache], cache


def _find(file: str, dirs: list[Path]) -> Path | None:
    for d in dirs:
        for candidate in (d / file, d / f"{file}.gz"):
            if candidate.exists() or candidate.is_symlink():  # a FIFO or device is refused when read
                return candidate
    return None


def _identify(digest: str, gz_digest: str | None) -> str | None:
    """Which official file of which data set these bytes are, if any."""
    for other in SOURCES.values():
        for name in FILES.values():
            if digest == other.md5.get(name) or (gz_digest and gz_digest == other.gz_md5.get(name)):
                return f"{other.name} {name}"
    return None


def _verify(src: IdxSource, file: str, path: Path, data: bytes) -> None:
    digest = md5(data)
    if src.md5.get(file) == digest:
        return
    gz_digest = md5(read_regular(path, "IDX file")) if path.suffix == ".gz" else None
    if gz_digest and src.gz_md5.get(file) == gz_digest:
        return
    known = _identify(digest, gz_digest)
    if known and not known.startswith(f"{src.name} "):
        other = known.split()[0]
        raise DataError(f"{path}: this is the official {known} file, not {src.name}'s (the file is fine, it is in the "
                        f"wrong folder); use --dataset {other}, or point --data-dir at the {src.name} files")
    if file not in src.md5 and path.suffix != ".gz":
        return  # no published checksum for these uncompressed bytes; the IDX header checks remain
    raise DataError(
        f"{path}: checksum mismatch, not the official {src.name} file (corrupt or incomplete); "
        "delete it and download it again"
    )


def locate(src: IdxSource, data_dir: str | None, download: bool, progress: bool) -> dict[str, Path]:
    """Paths of the four files, downloading the missing ones when allowed and online."""
    dirs, target = search_dirs(src.name, data_dir)
    found = {f: _find(f, dirs) for f in FILES.values()}
    missing = [f for f, p in found.items() if p is None]
    if missing and download:
        errors = []
        for f in missing:
            for mirror in src.mirrors:
                dest = target / f"{f}.gz"
                try:
                    fetch(mirror + f"{f}.gz", dest, progress)
                    _verify(src, f, dest, read_idx_bytes(dest))
                except (OSError, VaekitError) as e:
                    dest.unlink(missing_ok=True)
                    errors.append(str(e))
                    continue
                found[f] = dest
                break
        missing = [f for f, p in found.items() if p is None]
        if missing:
            raise DataError(
                f"{src.name}: {', '.join(missing)} (.gz or not) not found in "
                f"{', '.join(map(str, dirs))} and the download failed ({errors[-1]}); "
                "put the four IDX files in a folder and pass --data-dir DIR or set VAEKIT_DATA"
            )
    elif missing:
        raise DataError(
            f"{src.name}: {', '.join(missing)} (.gz or not) not found in {', '.join(map(str, dirs))}; "
            "pass --data-dir DIR (or set VAEKIT_DATA) to the folder holding the four IDX files, "
            "or allow downloading"
        )
    return {key: found[f] for key, f in FILES.items()}  # type: ignore[misc]


def load_idx_source(
    name: str, data_dir: str | None, download: bool = True, progress: bool = True
) -> dict[str, np.ndarray]:
    """The four arrays (train_x, train_y, test_x, test_y) of a standard data set, verified."""
    src = SOURCES[name]
    paths = locate(src, data_dir, download, progress)
    raw, arrays = {}, {}
    for key, path in paths.items():  # structure first: cheap, and names the exact problem
        raw[key] = read_idx_bytes(path)
        arr = parse_idx(raw[key], path)
        want_ndim = 3 if key.endswith("_x") else 1
        if arr.ndim != want_ndim or arr.dtype != np.uint8:
            raise DataError(f"{path}: expected a {want_ndim}-d uint8 IDX array, got {arr.ndim}-d {arr.dtype}")
        arrays[key] = arr
    for split in ("train", "test"):
        nx, ny = len(arrays[f"{split}_x"]), len(arrays[f"{split}_y"])
        if nx != ny:
            raise DataError(
                f"{paths[f'{split}_y']}: {ny} labels for {nx} images in {paths[f'{split}_x']}; "
                "the files are from different sets"
            )
    for key, path in paths.items():
        _verify(src, FILES[key], path, raw[key])
    return arrays
