"""Data sets as in-memory tensors. ``load_dataset(cfg)`` dispatches on the name before ':'.

Names: ``mnist``, ``fashion-mnist`` (official IDX files), ``cifar10`` (official binary batches), ``digits`` (scikit-learn, no
download), ``blobs[:D]`` (toy vectors), ``folder:PATH`` (your images), ``vectors:PATH``
(your .npy/.npz).
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from pathlib import Path
from collections.abc import Mapping
from typing import Any, Callable

import torch

from ..config import DOWNLOADED, DataConfig, RunConfig, as_section
from ..errors import DataError, did_you_mean, show
from ..files import expand_home, user_path
from .bundled import load_blobs, load_digits
from .cifar import load_cifar10
from .dataset import Dataset
from .folder import UNPACK, is_archive, load_folder
from .standard import SOURCES, load_idx_source
from .vectors import load_vectors


def _idx_loader(name: str) -> Callable[[DataConfig, str, bool], Dataset]:
    def load(cfg: DataConfig, arg: str, progress: bool = True) -> Dataset:
        a = load_idx_source(name, cfg.data_dir, cfg.download, progress)
        to_t = lambda k: torch.from_numpy(a[k].copy())  # noqa: E731
        return Dataset(name, to_t("train_x").unsqueeze(1), to_t("train_y").long(),
                       to_t("test_x").unsqueeze(1), to_t("test_y").long(), scale=255.0,
                       class_names=list(SOURCES[name].class_names))

    return load


LOADERS: dict[str, Callable[..., Dataset]] = {
    "mnist": _idx_loader("mnist"),
    "fashion-mnist": _idx_loader("fashion-mnist"),
    "cifar10": lambda cfg, arg, progress=True: load_cifar10(cfg.data_dir, cfg.download, progress),
    "digits": lambda cfg, arg, progress=True: load_digits(cfg, arg),
    "blobs": lambda cfg, arg, progress=True: load_blobs(cfg, arg),
    "folder": lambda cfg, arg, progress=True: load_folder(cfg, arg, progress),
    "vectors": lambda cfg, arg, progress=True: load_vectors(cfg, arg, progress),
}


def load_dataset(cfg: DataConfig | Mapping[str, Any], progress: bool = True) -> Dataset:
    """Load the data set ``cfg.dataset`` names and apply static binarisation if asked. ``cfg`` may be a
    dict of DataConfig's fields; its values are checked before any file is read."""
    cfg = as_section(cfg, DataConfig, "cfg")
    RunConfig(data=cfg).check_ranges()
    kind, _, arg = cfg.dataset.partition(":")
    loader = LOADERS.get(kind)
    if loader is None:
        raise DataError(f"unknown data set '{show(cfg.dataset)}'{_did_you_mean(kind, arg)}")
    path = Path(expand_home(arg))
    if arg and kind in FILE_SOURCES and path.exists() and path.is_dir() != (kind == "folder"):
        raise DataError(f"{show(cfg.dataset)}: is {'a folder' if path.is_dir() else 'a file'}{_did_you_mean(kind, arg)}")
    ds = loader(cfg, arg, progress)
    if cfg.holdout_classes:
        if ds.train_y is None:
            raise DataError(f"{cfg.dataset}: has no labels, so no class can be held out")
        present = set(ds.train_y.unique().tolist()) | set(ds.test_y.unique().tolist() if ds.test_y is not None else [])
        missing = sorted(set(cfg.holdout_classes) - present)
        if missing:
            labels = sorted(present)
            named = f"; its classes are {show(', '.join(repr(n) for n in ds.class_names), 200)}" if ds.class_names else ""
            raise DataError(f"{cfg.dataset}: no class {missing[0]} to hold out (labels are {labels}{named})")
        keep = ~torch.isin(ds.train_y, torch.tensor(cfg.holdout_classes))
        ds.train_x, ds.train_y = ds.train_x[keep], ds.train_y[keep]
        held = int(torch.isin(ds.test_y, torch.tensor(cfg.holdout_classes)).sum()) if ds.test_y is not None else 0
        if held == 0 or held == len(ds.test_x) or not len(ds.train_x):
            what = ("none of its test examples is of" if held == 0 else
                    "every test example is of" if held == len(ds.test_x) else "every training example is of")
            raise DataError(f"{cfg.dataset}: {what} the held-out class{'es' if len(cfg.holdout_classes) > 1 else ''} "
                            f"{', '.join(map(str, cfg.holdout_classes))}, so held-out and seen classes cannot be told "
                            "apart; hold out another class, or change --test-fraction or data.split_seed")
    if cfg.binarize != "none":
        lo, hi = ds.value_range()
        if lo < 0 or hi > 1:  # Bernoulli draws need probabilities; clamping would binarise nonsense
            raise DataError(f"{cfg.dataset}: values span [{lo:.3g}, {hi:.3g}] but --binarize {cfg.binarize} needs "
                            "[0, 1]; leave it out (or rescale the data)")
        gen = torch.Generator().manual_seed(cfg.split_seed)
        test = binarize(ds.features(ds.test_x), gen)
        train = binarize(ds.features(ds.train_x), gen) if cfg.binarize == "static" else None
        ds.test_x = (test * ds.scale).to(ds.test_x.dtype)
        if train is not None:
            ds.train_x = (train * ds.scale).to(ds.train_x.dtype)
    ds.source = resolve_paths(cfg)
    return ds


FILE_SOURCES = ("folder", "vectors")  # data sets named by a path of the user's
NAMES = "mnist, fashion-mnist, cifar10, digits, blobs[:D], folder:PATH, vectors:PATH"


def _did_you_mean(kind: str, arg: str) -> str:
    """What a data set name that loads nothing probably meant: a path given without its kind (or
    with the other one), a name in other case or with a typo; else the list of names."""
    if not kind and not arg:
        return f": no name given; choose one of {NAMES}"
    path = Path(expand_home(arg or kind))
    if (arg or ":" not in kind) and path.is_file() and is_archive(path):
        return f"; an archive of images? {UNPACK}"
    if (arg or ":" not in kind) and path.exists():
        meant = f"folder:{arg or kind}" if path.is_dir() else f"vectors:{arg or kind}"
        return f"; did you mean {meant}? (folder: takes a folder of images, vectors: an array or table file)"
    close = did_you_mean(f"{kind}:{arg}" if arg else kind, [f"{k}:{arg}" if arg else k for k in LOADERS])
    return f"{close}; choose one of {NAMES}"


def resolve_paths(cfg: DataConfig) -> DataConfig:
    """The same data config with every path absolute, so that a run folder works from any directory."""
    kind, sep, arg = cfg.dataset.partition(":")
    absolute = lambda p: os.path.abspath(expand_home(p)) if p else p  # noqa: E731
    dataset = f"{kind}:{absolute(arg)}" if kind in FILE_SOURCES and arg else cfg.dataset
    return dataclasses.replace(cfg, dataset=dataset, data_dir=absolute(cfg.data_dir), labels=absolute(cfg.labels))


def reads_files(cfg: DataConfig) -> bool:
    """Whether these data are read from files (which --data-dir can point at), not built into vaekit."""
    kind = cfg.dataset.partition(":")[0]
    return kind in FILE_SOURCES or kind in DOWNLOADED


def check_outside(cfg: DataConfig, out: str | Path, flag: str) -> None:
    """Refuse to write a run, a sweep or plots inside the image folder the data are read from: their
    PNG and other files would become part of the data (or an error in them) the next time it is read."""
    kind, _, arg = cfg.dataset.partition(":")
    if kind != "folder" or not arg:
        return
    root, where = os.path.realpath(expand_home(arg)), os.path.realpath(out)
    if where == root or where.startswith(root.rstrip(os.sep) + os.sep):
        raise DataError(f"{flag} {show(str(out))}: inside the image folder {show(root)} that the data are read "
                        "from, where its files would become part of the data; choose a place outside it")


def check_data_dir(cfg: DataConfig, data_dir: str | None) -> None:
    """Refuse a data folder for data that are read from none (a flag that would do nothing)."""
    if data_dir and not reads_files(cfg):
        raise DataError(f"--data-dir {show(data_dir)}: this run's data ({cfg.dataset.partition(':')[0]}) are built "
                        "into vaekit and read from no folder; leave --data-dir out")


def relocate(cfg: DataConfig, data_dir: str | None) -> DataConfig:
    """Where a run's data are on this machine: ``data_dir`` holds the IDX files, or (for folder: and
    vectors: data) the moved folder or file under its old name, or is that folder itself, or that
    file, renamed or not (the run's data record then tells whether they are the same data)."""
    if data_dir is not None:
        data_dir = str(user_path(data_dir, "data_dir"))
    kind, _, arg = cfg.dataset.partition(":")
    check_data_dir(cfg, data_dir)
    if kind not in FILE_SOURCES or not arg:
        return resolve_paths(dataclasses.replace(cfg, data_dir=data_dir)) if data_dir else cfg
    old = Path(arg)
    if data_dir:
        root = Path(data_dir)
        itself = root.name == old.name or (kind == "vectors" and root.is_file() and root.suffix == old.suffix)
        moved = root if itself and not (root / old.name).exists() else root / old.name
        labels = cfg.labels
        if labels and not Path(labels).exists() and (root / Path(labels).name).exists():
            labels = str(root / Path(labels).name)
        cfg = resolve_paths(dataclasses.replace(cfg, dataset=f"{kind}:{moved}", labels=labels, data_dir=None))
    path = Path(cfg.dataset.partition(":")[2])
    if not path.exists():
        where = f"not in {data_dir}" if data_dir else "not there any more"
        renamed = " (or that folder itself, if it still has that name)" if kind == "folder" else " (or the file itself)"
        raise DataError(f"{kind}:{show(str(path))}: this run's data ('{show(old.name)}') are {where}; pass --data-dir "
                        f"DIR (Python: data_dir=DIR) with the folder that now holds '{show(old.name)}'{renamed}")
    return cfg


# what decides which examples a data config loads (where IDX files are read from does not: they are checksummed)
IDENTITY = ("dataset", "channels", "image_size", "resize", "labels", "image_shape", "test_fraction", "split_seed", "holdout_classes", "binarize")


def check_loaded_for(data: object, cfg: DataConfig) -> Dataset:
    """``data`` handed to ``fit`` must be what ``cfg`` loads, since every later command (evaluate,
    sample, plot, resume) reloads the data from the run's saved config."""
    if not isinstance(data, Dataset):
        raise DataError(f"data=: expected a vaekit Dataset (from vaekit.config_for_data or vaekit.load_dataset), "
                        f"not {type(data).__name__}")
    if data.source is None:
        raise DataError("data=: this Dataset was made by hand, so the run folder could not load it again (evaluate, "
                        "sample, plot and resume reload the data from the saved config); save the arrays with "
                        "numpy.save and train on dataset='vectors:FILE.npy' (vectors (N, D), or images (N, C, H, W) as bytes "
                        "or floats in [0, 1])")
    given, wanted = resolve_paths(data.source), resolve_paths(cfg)
    for key in IDENTITY:
        if getattr(given, key) != getattr(wanted, key):
            raise DataError(f"data=: these data were loaded with data.{key}={getattr(given, key)!r}, but the config "
                            f"says {getattr(wanted, key)!r}, and the run folder would reload what the config says; "
                            "pass the config config_for_data returned with them, or load_dataset(cfg.data)")
    return data


def fingerprint(ds: Dataset) -> str:
    """A short hash of the examples and labels as loaded: the same data give the same fingerprint
    on any machine, whatever the files' names, compression or modification times."""
    h = hashlib.sha256()
    for t in (ds.train_x, ds.train_y, ds.test_x, ds.test_y):
        if t is not None:
            t = t.detach().cpu().contiguous()
            h.update(str((tuple(t.shape), str(t.dtype))).encode())
            h.update(t.numpy().tobytes() if t.dtype != torch.bfloat16 else t.float().numpy().tobytes())
    return h.hexdigest()[:16]


def binarize(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Each value in [0, 1] becomes 1 with that probability, else 0."""
    return torch.bernoulli(x.clamp(0, 1), generator=generator)


__all__ = ["Dataset", "LOADERS", "binarize", "check_data_dir", "check_outside", "fingerprint", "load_dataset", "reads_files",
           "relocate", "resolve_paths"]
