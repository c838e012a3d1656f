"""A user's vectors (e.g. sentence embeddings): an (N, D) float array in .npy or .npz."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import torch

from ..config import DataConfig
from ..errors import DataError
from .dataset import Dataset, split

X_KEYS = ("x", "X", "data", "embeddings", "features")
Y_KEYS = ("y", "labels", "targets")


def _short(e: BaseException) -> str:
    text = (str(e).splitlines() or [type(e).__name__])[0]
    return text if len(text) <= 80 else text[:77] + "..."


def _declared_nbytes(f, what: str) -> int:
    """Bytes an .npy stream declares in its header (read without loading the data)."""
    from numpy.lib import format as npy_format

    version = npy_format.read_magic(f)
    if version == (1, 0):
        shape, _, dtype = npy_format.read_array_header_1_0(f)
    else:
        shape, _, dtype = npy_format.read_array_header_2_0(f)
    return int(np.prod(shape, dtype=np.float64) * dtype.itemsize)


def _check_sizes(path: Path) -> None:
    """Every array's declared size must fit in the bytes the file really has: no huge allocation."""
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as z:
                for info in z.infolist():
                    with z.open(info) as f:
                        if _declared_nbytes(f, info.filename) > info.file_size:
                            raise DataError(f"{path}: array '{info.filename}' is larger than its data; file corrupt")
        else:
            with open(path, "rb") as f:
                if _declared_nbytes(f, path.name) > path.stat().st_size:
                    raise DataError(f"{path}: the array header declares more data than the file holds; file corrupt")
    except DataError:
        raise
    except FileNotFoundError:
        raise DataError(f"{path}: no such file; pass --dataset vectors:PATH to an .npy or .npz file") from None
    except Exception as e:  # numpy's header parser raises many types on hostile bytes (seen: TokenError)
        raise DataError(f"{path}: not a readable numeric .npy/.npz array ({_short(e)}); "
                        "save it with numpy.save as float32") from None


def _read_array(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    _check_sizes(path)
    try:
        loaded = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise DataError(f"{path}: no such file; pass --dataset vectors:PATH to an .npy or .npz file") from None
    except Exception as e:  # as above: untrusted bytes, any parser error is the file's fault
        raise DataError(f"{path}: not a readable numeric .npy/.npz array ({_short(e)}); "
                        "save it with numpy.save as float32") from None
    if isinstance(loaded, np.ndarray):
        return loaded, None
    with loaded:
        keys = list(loaded.keys())
        xk = next((k for k in X_KEYS if k in keys), keys[0] if len(keys) == 1 else None)
        if xk is None:
            raise DataError(f"{path}: .npz has arrays {keys}; name the data 'x' (and labels 'y')")
        yk = next((k for k in Y_KEYS if k in keys), None)
        try:
            return loaded[xk], (loaded[yk] if yk else None)
        except Exception as e:  # corrupt member data: any parser error is the file's fault
            raise DataError(f"{path}: cannot read array '{xk}' ({e})") from None


def load_vectors(cfg: DataConfig, arg: str) -> Dataset:
    """``vectors:PATH``; labels from the .npz key 'y' or from ``data.labels`` (.npy)."""
    path = Path(arg).expanduser()
    if not arg:
        raise DataError("vectors: no file given; pass --dataset vectors:PATH to an (N, D) .npy or .npz file")
    x, y = _read_array(path)
    if x.dtype.kind not in "fiub":
        raise DataError(f"{path}: array dtype {x.dtype} is not numeric; save a float32 (N, D) array")
    if x.ndim != 2:
        raise DataError(f"{path}: expected a 2-d array (N, D), got shape {x.shape}")
    if x.shape[0] < 2 or x.shape[1] < 1:
        raise DataError(f"{path}: array of shape {x.shape} has too few rows or columns (need N >= 2, D >= 1)")
    x = x.astype(np.float32)
    bad = ~np.isfinite(x)
    if bad.any():
        row = int(np.argwhere(bad)[0][0])
        raise DataError(f"{path}: {int(bad.sum())} non-finite values (NaN/inf), first in row {row}; clean the data")
    if cfg.labels:
        y, _ = _read_array(Path(cfg.labels).expanduser())
    if y is not None:
        if y.ndim != 1 or len(y) != len(x) or y.dtype.kind not in "iub":
            raise DataError(
                f"{cfg.labels or path}: labels must be N={len(x)} integers, got shape {y.shape} dtype {y.dtype}"
            )
        y = torch.from_numpy(y.astype(np.int64))
    xt = torch.from_numpy(x)
    return Dataset(f"vectors:{path}", *split(xt, y, cfg.test_fraction, cfg.split_seed))
