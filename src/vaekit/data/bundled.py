"""Data sets that ship with a dependency (scikit-learn), so they work with no download."""

from __future__ import annotations

import gzip
import importlib.util
from pathlib import Path

import numpy as np
import torch

from ..config import DataConfig
from .. import budget
from ..errors import DataError, show
from ..files import open_regular
from .dataset import Dataset, split

N_BLOBS = 2000


def _digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """The 1,797 digits (N, 8, 8) and their labels, read from the CSV scikit-learn ships: found without
    importing scikit-learn, whose import costs more than the rest of a small run's start."""
    spec = importlib.util.find_spec("sklearn")
    folders = list(spec.submodule_search_locations or []) if spec is not None else []
    path = Path(folders[0]) / "datasets" / "data" / "digits.csv.gz" if folders else None
    if path is None or not path.is_file():
        from sklearn.datasets import load_digits as sk_digits

        d = sk_digits()
        return d.images, d.target
    with open_regular(path, "scikit-learn's digits") as f, gzip.open(f) as text:
        table = np.loadtxt(text, delimiter=",", dtype=np.float64)
    return table[:, :-1].reshape(-1, 8, 8), table[:, -1].astype(np.int64)


def load_digits(cfg: DataConfig, arg: str) -> Dataset:
    """scikit-learn's 1,797 8x8 digits, grey levels 0-16 stored as uint8 (scale 16)."""
    images, target = _digits_arrays()
    x = torch.from_numpy(images).to(torch.uint8).unsqueeze(1)
    y = torch.from_numpy(target).long()
    return Dataset("digits", *split(x, y, cfg.test_fraction, cfg.split_seed), scale=16.0,
                   class_names=[str(i) for i in range(10)])


def load_blobs(cfg: DataConfig, arg: str) -> Dataset:
    """Four Gaussian blobs in D dimensions (``blobs:D``, default 4): a toy set for tiny models."""
    from sklearn.datasets import make_blobs

    try:
        dim = int(arg) if arg else 4
    except ValueError:
        dim = 0
    if dim < 1:
        raise DataError(f"blobs:{show(arg)}: the dimension must be a positive integer, e.g. blobs:4")
    budget.check(3 * N_BLOBS * dim * 8, f"blobs:{dim} ({N_BLOBS} examples of {dim:,} values)")
    x, y = make_blobs(n_samples=N_BLOBS, n_features=dim, centers=4, random_state=cfg.split_seed)
    x = torch.from_numpy(x).float()
    y = torch.from_numpy(y).long()
    return Dataset(f"blobs:{dim}", *split(x, y, cfg.test_fraction, cfg.split_seed),
                   class_names=[str(i) for i in range(4)])
