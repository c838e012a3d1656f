"""A user's vectors (e.g. sentence embeddings): an (N, D) float array in .npy, .npz or .safetensors, or a
text table. An array of images ((N, H, W), (N, C, H, W) or (N, H, W, C)) is read as images, and so are
rows of pixels given ``data.image_shape``."""

from __future__ import annotations

import contextlib
import math
import warnings
import zipfile
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch

from ..config import DataConfig
from .. import budget
from ..errors import DataError, VaekitError, brief, show
from ..files import expand_home, file_size, open_regular
from .dataset import Dataset, split
from .folder import UNPACK, is_archive
from .table import LABEL_COLUMNS, is_text_table, read_label_column, read_table

X_KEYS = ("x", "X", "data", "embeddings", "features")
Y_KEYS = ("y", *LABEL_COLUMNS)  # the names a table's label column may have, and y


MAX_MEMBERS = 1000


def _header(f) -> tuple[tuple[int, ...], np.dtype]:
    """An .npy stream's shape and dtype, read from its header without the data."""
    from numpy.lib import format as npy_format

    version = npy_format.read_magic(f)
    if version == (1, 0):
        shape, _, dtype = npy_format.read_array_header_1_0(f)
    else:
        shape, _, dtype = npy_format.read_array_header_2_0(f)
    return shape, dtype


def _declared_nbytes(f) -> int:
    """Bytes an .npy stream declares in its header (read without loading the data)."""
    shape, dtype = _header(f)
    return int(np.prod(shape, dtype=np.float64) * dtype.itemsize)


def _unreadable(path: Path, e: BaseException) -> DataError:
    return DataError(f"{path}: not a readable numeric .npy/.npz array ({brief(e)}); save it with numpy.save as "
                     "float32, or as a .csv/.tsv/.txt table")


def _check_sizes(path: Path, f: BinaryIO) -> None:
    """Every array's declared size must fit in the bytes the file really has, and in the memory
    budget; an .npz member must not inflate beyond the ratio limit (a zip bomb)."""
    size = file_size(f)
    if zipfile.is_zipfile(f):
        f.seek(0)
        with zipfile.ZipFile(f) as z:
            infos = z.infolist()
            if len(infos) > MAX_MEMBERS:
                raise DataError(f"{path}: .npz holds {len(infos)} arrays; vaekit reads at most {MAX_MEMBERS}")
            budget.check(sum(i.file_size for i in infos), f"{path} (all arrays, uncompressed)")
            for info in infos:
                budget.check_ratio(info.file_size, info.compress_size, f"{path}: array '{show(info.filename)}'")
                with z.open(info) as member:
                    if _declared_nbytes(member) > info.file_size:
                        raise DataError(f"{path}: array '{show(info.filename)}' is larger than its data; file corrupt")
    else:
        f.seek(0)
        declared = _declared_nbytes(f)
        if declared > size:
            raise DataError(f"{path}: the array header declares more data than the file holds; file corrupt")
        budget.check(declared, f"{path} (array header)")
    f.seek(0)


def _data_and_label_keys(path: Path, keys: list[str]) -> tuple[str, str | None]:
    """Which of a file's named arrays are the data and the labels (X_KEYS, Y_KEYS; a lone array is the data)."""
    xs, ys = [k for k in X_KEYS if k in keys], [k for k in Y_KEYS if k in keys]
    for found, what in ((xs, "the data"), (ys, "the labels")):
        if len(found) > 1:
            raise DataError(f"{path}: arrays {show(found[0])} and {show(found[1])} could both be {what}; "
                            "keep one of them")
    xk = xs[0] if xs else keys[0] if len(keys) == 1 else None
    if xk is None:
        raise DataError(f"{path}: has arrays {show(keys)}; name the data 'x' (and labels 'y')")
    return xk, ys[0] if ys else None


PICKLED = (".pt", ".pth", ".pkl", ".pickle", ".ckpt")  # torch.save and pickle files: never unpickled


def _read_safetensors(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    """The data (and labels) of a .safetensors file, named as in an .npz; half floats read as float32."""
    from safetensors.torch import load

    with open_regular(path, ".safetensors file") as f:
        budget.check(2 * file_size(f), f"{path} (read, then its tensors)")
        data = f.read()
    n = int.from_bytes(data[:8], "little")
    if len(data) < 8 or n > len(data) - 8:
        raise DataError(f"{path}: not a safetensors file (header size {n} of {len(data)} bytes)")
    try:
        tensors = load(data)
    except Exception as e:  # hostile bytes: any parser error is the file's
        raise DataError(f"{path}: not a readable safetensors file ({brief(e)})") from None
    del data
    xk, yk = _data_and_label_keys(path, sorted(tensors))
    as_numpy = lambda t: (t.float() if t.is_floating_point() and t.element_size() < 4 else t).numpy()  # noqa: E731
    return as_numpy(tensors[xk]), (as_numpy(tensors[yk]) if yk else None)


def _read_array(path: Path, labels_elsewhere: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
    """The data array and, from an .npz or .safetensors file, its labels; ``labels_elsewhere``: --labels
    gives them."""
    if path.suffix.lower() in PICKLED:
        raise DataError(f"{path}: a pickle (torch.save), which vaekit never loads (it can run code); give the "
                        "tensor as an .npy file (numpy) or a .safetensors file instead")
    if path.suffix.lower() == ".safetensors":
        return _read_safetensors(path)
    with open_regular(path, ".npy/.npz file") as f:
        try:
            _check_sizes(path, f)
            loaded = np.load(f, allow_pickle=False)
        except VaekitError:
            raise
        except Exception as e:  # numpy's parsers raise many types on hostile bytes (seen: TokenError)
            raise _unreadable(path, e) from None
        if isinstance(loaded, np.ndarray):
            return loaded, None
        with loaded:
            keys = list(loaded.keys())
            xk, yk = _data_and_label_keys(path, keys)
            try:
                x, y = loaded[xk], (loaded[yk] if yk else None)
            except Exception as e:  # corrupt member data: any parser error is the file's fault
                raise DataError(f"{path}: cannot read array '{show(xk)}' ({brief(e)})") from None
            if y is None and x.ndim and not labels_elsewhere:  # labels under another name: not lost without a word
                _warn_of_unnamed_labels(path, loaded.zip, [k for k in keys if k != xk], len(x))
            return x, y


def _warn_of_unnamed_labels(path: Path, members: zipfile.ZipFile, others: list[str], rows: int) -> None:
    """Other arrays of one value per row (their headers read, not their data), which may be labels
    under a name vaekit does not read."""
    alike = []
    for k in others:
        with contextlib.suppress(Exception), members.open(f"{k}.npy") as member:  # a member it cannot read: no guess
            if _header(member)[0] == (rows,):
                alike.append(k)
    if alike:
        warnings.warn(f"{path}: {show(alike)} {'has' if len(alike) == 1 else 'have'} one value per row but "
                      f"{'is' if len(alike) == 1 else 'are'} not read as labels; name the labels one of "
                      f"{', '.join(Y_KEYS)} to use them", stacklevel=3)


def load_vectors(cfg: DataConfig, arg: str, progress: bool = True) -> Dataset:
    """``vectors:PATH``; labels from the .npz key 'y', a table's label column or ``data.labels`` (.npy or text)."""
    path = Path(expand_home(arg))
    if not arg:
        raise DataError("vectors: no file given; pass --dataset vectors:PATH to an (N, D) .npy/.npz file or a .csv table")
    if not path.exists() and not path.is_symlink():
        raise DataError(f"vectors:{show(arg)}: no such file; pass --dataset vectors:PATH with an (N, D) .npy/.npz "
                        "file or a .csv/.tsv/.txt table")
    if is_archive(path):
        raise DataError(f"{path}: an archive; vectors: reads an (N, D) .npy/.npz file or a .csv/.tsv/.txt table "
                        f"(for images in it: {UNPACK})")
    class_names = None
    if is_text_table(path):
        x, y, class_names = read_table(path, progress)
    else:
        x, y = _read_array(path, labels_elsewhere=bool(cfg.labels))
    if not isinstance(x, np.ndarray) or x.dtype.kind not in "fiub":
        raise DataError(f"{path}: array dtype {x.dtype} is not numeric; save a float32 (N, D) array")
    if cfg.image_shape:
        x = _reshaped(path, x, cfg.image_shape)
    x = _as_examples(path, x)
    if x.shape[0] < 2 or min(x.shape[1:]) < 1:
        raise DataError(f"{path}: array of shape {x.shape} has too few rows or columns (need N >= 2, D >= 1)")
    budget.check(x.size * 4 * 3, f"{path} as float32 (train and test copies)")
    pixels8 = x.ndim == 4 and eight_bit(x)  # images kept as bytes, made floats in [0, 1] per batch
    with np.errstate(over="ignore"):  # the overflow is found and named below
        raw, x = x, (x.astype(np.uint8) if pixels8 else x.astype(np.float32))
    for values, what in ((raw, "non-finite value{} (NaN/inf)"), (x, "value{} beyond float32's range (3.4e38)")):
        bad = ~np.isfinite(values)
        if bad.any():
            row, n = int(np.argwhere(bad)[0][0]), int(bad.sum())
            first = "the first" if n > 1 else "it is"
            raise DataError(f"{path}: {n} {what.format('s' if n > 1 else '')}, {first} in row {row} (rows counted "
                            "from 0); clean or rescale the data")
    del raw
    if cfg.labels and y is not None:
        raise DataError(f"{path}: has labels of its own (an .npz key 'y', or a label column); --labels "
                        f"{show(cfg.labels)} would replace them: give one of them")
    if cfg.labels:
        labels = Path(expand_home(cfg.labels))
        if is_text_table(labels):
            y, class_names = read_label_column(labels)
        else:
            (y, _), class_names = _read_array(labels), None
    if y is not None:
        if y.dtype.kind == "f" and y.ndim == 1 and np.isfinite(y).all() and (y == np.rint(y)).all():
            y = y.astype(np.int64)  # class numbers saved as floats (a pandas column with a gap, say)
        if y.ndim != 1 or len(y) != len(x) or y.dtype.kind not in "iub":
            raise DataError(
                f"{cfg.labels or path}: labels must be N={len(x)} integers, got shape {show(y.shape)} dtype {y.dtype}"
            )
        if len(y) and (y.min() < 0 or y.max() >= 2**31):
            raise DataError(f"{cfg.labels or path}: labels must be class numbers 0, 1, 2, ..., got {int(y.min())} "
                            f"to {int(y.max())}")
        y = torch.from_numpy(y.astype(np.int64))
    xt = torch.from_numpy(np.ascontiguousarray(x))
    return Dataset(f"vectors:{path}", *split(xt, y, cfg.test_fraction, cfg.split_seed),
                   scale=255.0 if pixels8 else 1.0, class_names=class_names)


CHANNELS = (1, 3)


def _reshaped(path: Path, x: np.ndarray, shape: list[int]) -> np.ndarray:
    """Rows of D values as images of ``shape`` (--image-shape: H,W; C,H,W; or H,W,C, whose channels
    ``_as_examples`` then moves first)."""
    if x.ndim != 2 or x.shape[1] != math.prod(shape):
        raise DataError(f"{path}: --image-shape {','.join(map(str, shape))} holds {math.prod(shape)} values, but "
                        f"its rows have {x.shape[1] if x.ndim == 2 else 'shape ' + str(x.shape[1:])}")
    return x.reshape(len(x), *shape)


def eight_bit(x: np.ndarray) -> bool:
    """Whole numbers 0..255 (not all 0/1): 8-bit pixels, whatever type they were saved as (images kept as
    bytes; rows of them suggest --image-shape)."""
    if x.dtype == np.uint8:
        return True
    if x.dtype.kind not in "fiu" or not x.size:
        return False
    with np.errstate(invalid="ignore"):
        lo, hi = x.min(), x.max()
        return bool(0 <= lo and 1 < hi <= 255 and np.array_equal(x, np.rint(x)))


def _as_examples(path: Path, x: np.ndarray) -> np.ndarray:
    """Rows of an array as vaekit's examples: (N, D) vectors, or images (N, C, H, W) from an array of
    grey images (N, H, W) or of images channels first (N, C, H, W) or last (N, H, W, C), C 1 or 3."""
    if x.ndim == 2:
        return x
    if x.ndim == 3:
        return x[:, None]
    if x.ndim == 4:
        first, last = x.shape[1] in CHANNELS, x.shape[3] in CHANNELS
        if first and last and x.shape[1] != x.shape[3]:
            raise DataError(f"{path}: images of shape {x.shape[1:]} could hold their {x.shape[1]} or their "
                            f"{x.shape[3]} channels first; save them as (N, C, H, W)")
        if first:
            return x
        if last:
            return x.transpose(0, 3, 1, 2)
    raise DataError(f"{path}: expected vectors (N, D) or images (N, H, W), (N, C, H, W) or (N, H, W, C) with C "
                    f"1 or 3, got shape {x.shape}")
