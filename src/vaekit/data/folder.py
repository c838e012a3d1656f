"""A user's own images: one sub-folder per class, or a flat folder; loaded once with Pillow."""

from __future__ import annotations

import hashlib
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..config import DataConfig
from .. import budget
from ..errors import BudgetError, DataError, VaekitError, as_text, brief, counted, show
from ..files import cache_dir, cache_used, expand_home, file_size, open_regular, write_cache
from .dataset import Dataset, split

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".jpe", ".jfif", ".bmp", ".gif", ".webp", ".tif", ".tiff"}  # .jfif: Windows' JPEGs
MAX_PIXELS = 4096 * 4096  # checked from the header before decoding


SYSTEM_FILES = {"thumbs.db", "desktop.ini", "__macosx"}  # what file managers and archivers leave behind


def _listed(p: Path) -> bool:
    """Not a hidden file (.DS_Store, ._name) nor one of the system's own (Thumbs.db, __MACOSX/)."""
    return not p.name.startswith(".") and p.name.lower() not in SYSTEM_FILES


def _entries(folder: Path) -> list[Path]:
    """The listed entries of a folder, sorted; a broken link among them is an error naming it (it
    would otherwise be left out without a word)."""
    entries = sorted(p for p in folder.iterdir() if _listed(p))
    for p in entries:
        if p.is_symlink() and not p.exists():
            raise DataError(f"{p}: a broken link (to {show(os.readlink(p))}); remove it or restore what it points to")
    return entries


def _files_under(folder: Path) -> list[Path]:
    """Every listed file under ``folder``, following links to folders (as a file manager shows them),
    sorted by path. A folder reached twice (a link back up the tree) is an error; anything that is
    neither file nor folder (a FIFO, say) is kept, for the reader to refuse by name."""
    found: list[Path] = []
    seen: set[str] = set()

    def visit(d: Path) -> None:
        real = os.path.realpath(d)
        if real in seen:
            raise DataError(f"{d}: leads back to a folder already read ({show(real)}); remove the link")
        seen.add(real)
        for p in _entries(d):
            if p.is_dir():
                visit(p)
            else:
                found.append(p)

    visit(folder)
    return sorted(found)


def _no_loose_images(root: Path, entries: list[Path], folders: list[str], why: str) -> None:
    """Refuse an image that the folder's layout would leave out of the data without a word."""
    loose = [p for p in entries if not p.is_dir() and _listed(p) and p.suffix.lower() in IMAGE_SUFFIXES]
    if loose:
        named = ", ".join(f"{show(n)}/" for n in folders[:3]) + (", ..." if len(folders) > 3 else "")
        raise DataError(f"{loose[0]}: an image beside the folders {named} of {root} {why}")


def _image_files(root: Path) -> tuple[list[Path], list[int] | None, list[str] | None]:
    entries = _entries(root)
    subdirs = [p for p in entries if p.is_dir()]
    if subdirs:
        _no_loose_images(root, entries, [d.name for d in subdirs], "would belong to no class; move it into one, "
                         "or move the class folders out for a flat folder")
        files, labels = [], []
        for label, d in enumerate(subdirs):
            found = _files_under(d)
            if not found:
                raise DataError(f"{d}: class folder '{show(d.name)}' holds no images; add some or remove it")
            files += found
            labels += [label] * len(found)
        return files, labels, [d.name for d in subdirs]
    return entries, None, None


def _eight_bit(im: Any, path: Path) -> Any:
    """16-bit and 32-bit grey images scaled to 8 bits (Pillow's convert clips them at 255, so a
    16-bit PNG would turn white); other modes are left to convert."""
    from PIL import Image

    if im.mode not in ("I", "F") and not im.mode.startswith("I;16"):
        return im
    a = np.asarray(im, dtype=np.float64)
    if not np.isfinite(a).all() or a.min() < 0:
        raise DataError(f"{path}: a {im.mode}-mode image with negative or non-finite values; save it as 8- or 16-bit")
    if im.mode == "F":
        if a.max() > 1:
            raise DataError(f"{path}: a floating-point image with values above 1; save it as 8- or 16-bit")
        a = a * 255
    elif im.mode != "I" or a.max() > 255:  # "I" holding 0..255 is already 8-bit
        if a.max() > 65535:
            raise DataError(f"{path}: a 32-bit image with values above 65535; save it as 8- or 16-bit")
        a = a / 257
    return Image.fromarray(np.rint(a).astype(np.uint8), "L")


def _opaque(im: Any) -> Any:
    """An image with transparency composited over white, as viewers and browsers show it (converting
    would keep whatever colour the file hides under its transparent pixels); others as they are."""
    from PIL import Image

    if not (im.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in im.info):
        return im
    over = Image.new("RGBA", im.size, (255, 255, 255, 255))
    over.alpha_composite(im.convert("RGBA"))
    return over.convert("RGB")


def _square(im: Any, size: int, resize: str) -> Any:
    """``im`` as size x size: its centred square scaled (``crop``), or both sides scaled (``squash``)."""
    from PIL import Image

    if resize == "crop" and im.width != im.height:  # cut first: scaling within a box reads past its edges
        side = min(im.width, im.height)
        left, top = (im.width - side) // 2, (im.height - side) // 2
        im = im.crop((left, top, left + side, top + side))
    return im.resize((size, size), Image.Resampling.BILINEAR) if im.size != (size, size) else im


ARCHIVE_SUFFIXES = (".zip", ".tar", ".tgz", ".tar.gz", ".tar.bz2", ".tar.xz", ".7z", ".rar")
UNPACK = "unpack it (unzip, tar -xf) and pass the unpacked folder as --dataset folder:DIR"


def is_archive(path: Path) -> bool:
    """An archive by its name (a folder of photos as it is often shared)."""
    return path.name.lower().endswith(ARCHIVE_SUFFIXES)


def _check_image_name(path: Path) -> None:
    """Refuse a file that is no image by its name, before any is decoded (an archive of the images
    is named as one: it would otherwise be counted as the folder's only image)."""
    if path.suffix.lower() in IMAGE_SUFFIXES:
        return
    if is_archive(path):
        raise DataError(f"{path}: an archive, not an image; {UNPACK}")
    raise DataError(f"{path}: not an image file (PNG, JPEG, BMP, GIF, WebP or TIFF expected); move it out of the "
                    "image folder")


def _load_image(path: Path, mode: str, size: int | None, resize: str = "crop",
                animated: list[Path] | None = None) -> np.ndarray:
    """One image as uint8 (C, H, W); of an animation (GIF, APNG, WebP) its first frame, and its path
    is added to ``animated`` so that the caller can say so."""
    from PIL import Image, ImageOps

    _check_image_name(path)
    try:
        with open_regular(path, "image file") as f, Image.open(f) as im:
            if im.width * im.height > MAX_PIXELS:
                raise DataError(f"{path}: {im.width}x{im.height} is too large to load; downscale it first")
            if animated is not None and getattr(im, "n_frames", 1) > 1:
                animated.append(path)
            im = _opaque(_eight_bit(ImageOps.exif_transpose(im), path)).convert(mode)
            if size is not None and im.size != (size, size):
                im = _square(im, size, resize)
            arr = np.asarray(im, dtype=np.uint8)
    except VaekitError:
        raise
    except Exception as e:  # Pillow's decoders raise many types on damaged files
        raise DataError(f"{path}: cannot read this image ({brief(e)}); remove or replace it") from None
    return arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)


GREY_MODES = ("1", "L", "LA", "I", "F")
CHANNEL_PROBES = 16  # images looked at, spread over the folder (so over its classes)


def _probe_files(arg: str) -> list[Path]:
    """Up to CHANNEL_PROBES image files spread evenly over the folder (none when it is no folder)."""
    root = Path(expand_home(arg))
    if not root.is_dir():
        return []
    files = [f for f in _layout(root)[0] if f.suffix.lower() in IMAGE_SUFFIXES]
    return files[:: max(1, len(files) // CHANNEL_PROBES)][:CHANNEL_PROBES]


def probe_folder(arg: str) -> tuple[int, list[tuple[int, int]]]:
    """What choosing a model without a preset needs to know of a folder, from up to 16 of its images
    each opened once: 3 channels when one is in colour (an RGB file whose three channels are equal
    everywhere is grey saved as RGB), else 1; and their (width, height), from the headers. Files that
    cannot be read are left to the real load to name."""
    from PIL import Image

    channels, sizes = 1, []
    for f in _probe_files(arg):
        try:
            with open_regular(f, "image file") as fh, Image.open(fh) as im:
                sizes.append(im.size)
                if channels == 3 or im.mode in GREY_MODES or im.mode.startswith("I;16") \
                        or im.width * im.height > MAX_PIXELS:
                    continue
                rgb = np.asarray(_opaque(im).convert("RGB"))
        except Exception:
            continue
        if not (np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 1], rgb[..., 2])):
            channels = 3
    return channels, sizes


def detect_channels(arg: str) -> int:
    """3 when the folder holds colour images, else 1 (see probe_folder)."""
    return probe_folder(arg)[0]


SPLIT_FOLDERS = ("train", "test")
CACHE_VERSION = 3  # 2: 16-bit images scaled, EXIF orientation applied; 3: transparency over white


def _layout(root: Path) -> tuple[list[Path], list[int] | None, list[str] | None, int | None]:
    """Files, labels and class names; a folder holding exactly ``train/`` and ``test/`` keeps that
    split, and then the last value is the number of training files (else None: split at random)."""
    entries = _entries(root)
    if sorted(p.name for p in entries if p.is_dir()) != sorted(SPLIT_FOLDERS):
        files, labels, names = _image_files(root)
        return files, labels, names, None
    _no_loose_images(root, entries, list(SPLIT_FOLDERS), "is in neither split; move it into train/ or test/")
    train, train_labels, names = _image_files(root / "train")
    test, test_labels, test_names = _image_files(root / "test")
    if (names is None) != (test_names is None):
        raise DataError(f"{root}: train/ and test/ must both hold class sub-folders, or both hold images directly")
    if names is not None:
        unknown = sorted(set(test_names) - set(names))
        if unknown:
            raise DataError(f"{root / 'test' / unknown[0]}: class '{show(unknown[0])}' has no folder in {root / 'train'}")
        index = {n: i for i, n in enumerate(names)}
        test_labels = [index[test_names[label]] for label in test_labels]
        return train + test, train_labels + test_labels, names, len(train)
    return train + test, None, None, len(train)


def _cache_key(root: Path, files: list[Path], mode: str, size: int | None, resize: str) -> str:
    """Names, sizes and modification times of every file, and how they are decoded: any change to the
    folder's contents (a file added, removed, replaced or edited) gives another key."""
    h = hashlib.sha256(f"{CACHE_VERSION} {mode} {size}{' ' + resize if size else ''}".encode())
    for f in files:
        st = f.stat()
        h.update(f"\0{f.relative_to(root)}\0{st.st_size}\0{st.st_mtime_ns}".encode("utf-8", "surrogateescape"))
    return h.hexdigest()[:32]


def _read_cache(path: Path, n: int) -> np.ndarray | None:
    if not path.is_file():
        return None
    try:
        with open_regular(path, "image cache") as f:
            budget.check(file_size(f), f"{path} (decoded image cache)")
            x = np.load(f, allow_pickle=False)
    except BudgetError:
        raise
    except Exception:  # a damaged cache is rebuilt, never trusted
        return None
    if not isinstance(x, np.ndarray) or x.dtype != np.uint8 or x.ndim != 4 or len(x) != n:
        return None
    cache_used(path)
    return x


class ImageSizesDiffer(DataError):
    """Images of several sizes without --image-size; ``sizes``: (width, height) of two that differ."""

    def __init__(self, message: str, sizes: list[tuple[int, int]]) -> None:
        super().__init__(message)
        self.sizes = sizes


def _decode_all(root: Path, files: list[Path], mode: str, size: int | None, resize: str,
                progress: bool = True) -> np.ndarray:
    """Every image as one uint8 array (N, C, H, W), decoded once (with a progress bar where that takes
    a while) and then read from the cache."""
    from tqdm import tqdm

    cached = None
    if len(files) >= CACHE_MIN_FILES:
        cached = cache_dir("folders") / f"{_cache_key(root, files, mode, size, resize)}.npy"
        x = _read_cache(cached, len(files))
        if x is not None:
            return x
    images, animated = [], []
    shown = progress and cached is not None  # folders below the cache's size decode in under a second
    for i, f in enumerate(tqdm(files, desc=f"decoding {show(root.name or str(root), 40)}", unit="img", leave=False,
                               disable=None if shown else True)):
        arr = _load_image(f, mode, size, resize, animated)
        if i == 0:  # every image will have this size: the whole set must fit the budget
            budget.check(2 * len(files) * arr.nbytes, f"{root}: {len(files):,} images of {arr.shape[2]}x{arr.shape[1]}")
        if images and arr.shape != images[0].shape:
            raise ImageSizesDiffer(
                f"{f}: size {arr.shape[2]}x{arr.shape[1]} differs from {files[0].name} "
                f"({images[0].shape[2]}x{images[0].shape[1]}); pass --image-size N to resize all images",
                [(a.shape[2], a.shape[1]) for a in (images[0], arr)])
        images.append(arr)
    if animated:
        warnings.warn(f"{as_text(str(root))}: {counted(len(animated), 'animated image')}, e.g. {as_text(str(animated[0]))}: the "
                      f"first frame of {'each' if len(animated) > 1 else 'it'} is read", stacklevel=2)
    x = np.stack(images)
    if cached is not None:
        write_cache(cached, lambda buf: np.save(buf, x, allow_pickle=False))
    return x


CACHE_MIN_FILES = 1000  # smaller folders decode in well under a second


def load_folder(cfg: DataConfig, arg: str, progress: bool = True) -> Dataset:
    """``folder:PATH``: grayscale or RGB (``data.channels``), resized to ``data.image_size`` if set;
    ``train/`` and ``test/`` sub-folders keep their split, else ``data.test_fraction`` is held out."""
    root = Path(expand_home(arg))
    if not arg or not root.is_dir():
        raise DataError(f"folder:{arg}: no such folder; pass --dataset folder:PATH with a folder of images")
    files, labels, class_names, n_train = _layout(root)
    for f in files:
        _check_image_name(f)
    if len(files) < 2 or n_train == 0 or n_train == len(files):
        what = counted(len(files), 'image') if n_train is None else f"{n_train} training and {len(files) - (n_train or 0)} test images"
        raise DataError(f"{root}: found {what}; a data set needs at least 2 (and one of each in train/ and test/)")
    x = torch.from_numpy(_decode_all(root, files, "L" if cfg.channels == 1 else "RGB", cfg.image_size, cfg.resize,
                                     progress))
    y = torch.tensor(labels) if labels is not None else None
    if n_train is None:
        parts = split(x, y, cfg.test_fraction, cfg.split_seed)
    else:
        parts = (x[:n_train], None if y is None else y[:n_train], x[n_train:], None if y is None else y[n_train:])
    return Dataset(f"folder:{root}", *parts, scale=255.0, class_names=class_names and [as_text(n) for n in class_names])
