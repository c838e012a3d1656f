"""A user's own images: one sub-folder per class, or a flat folder; loaded once with Pillow."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..config import DataConfig
from .. import budget
from ..errors import DataError, VaekitError, brief
from ..files import open_regular
from .dataset import Dataset, split

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
MAX_PIXELS = 4096 * 4096  # checked from the header before decoding


def _image_files(root: Path) -> tuple[list[Path], list[int] | None, list[str] | None]:
    entries = sorted(p for p in root.iterdir() if not p.name.startswith("."))
    subdirs = [p for p in entries if p.is_dir()]
    if subdirs:
        files, labels = [], []
        for label, d in enumerate(subdirs):
            for f in sorted(p for p in d.rglob("*") if p.is_file() and not p.name.startswith(".")):
                files.append(f)
                labels.append(label)
        return files, labels, [d.name for d in subdirs]
    return [p for p in entries if p.is_file()], None, None


def _load_image(path: Path, mode: str, size: int | None) -> np.ndarray:
    from PIL import Image

    if path.suffix.lower() not in IMAGE_SUFFIXES:
        raise DataError(f"{path}: not an image file (PNG/JPEG expected); move it out of the image folder")
    try:
        with open_regular(path, "image file") as f, Image.open(f) as im:
            if im.width * im.height > MAX_PIXELS:
                raise DataError(f"{path}: {im.width}x{im.height} is too large to load; downscale it first")
            im = im.convert(mode)
            if size is not None and im.size != (size, size):
                im = im.resize((size, size), Image.Resampling.BILINEAR)
            arr = np.asarray(im, dtype=np.uint8)
    except VaekitError:
        raise
    except Exception as e:  # Pillow's decoders raise many types on damaged files
        raise DataError(f"{path}: cannot read this image ({brief(e)}); remove or replace it") from None
    return arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)


def detect_channels(arg: str) -> int:
    """3 when the folder's first image is in colour, else 1 (for choosing a model without a preset)."""
    from PIL import Image

    root = Path(arg).expanduser()
    if not root.is_dir():
        return 1
    files = [f for f in _image_files(root)[0] if f.suffix.lower() in IMAGE_SUFFIXES][:1]
    if not files:
        return 1
    try:
        with open_regular(files[0], "image file") as f, Image.open(f) as im:
            return 1 if im.mode in ("1", "L", "LA", "I", "I;16", "F") else 3
    except Exception:  # the real load names the bad file
        return 1


def load_folder(cfg: DataConfig, arg: str) -> Dataset:
    """``folder:PATH``: grayscale or RGB (``data.channels``), resized to ``data.image_size`` if set."""
    root = Path(arg).expanduser()
    if not arg or not root.is_dir():
        raise DataError(f"folder:{arg}: no such folder; pass --dataset folder:PATH with a folder of images")
    files, labels, class_names = _image_files(root)
    if len(files) < 2:
        raise DataError(f"{root}: found {len(files)} image(s); a data set needs at least 2")
    mode = "L" if cfg.channels == 1 else "RGB"
    images = []
    for i, f in enumerate(files):
        arr = _load_image(f, mode, cfg.image_size)
        if i == 0:  # every image will have this size: the whole set must fit the budget
            budget.check(2 * len(files) * arr.nbytes, f"{root}: {len(files):,} images of {arr.shape[2]}x{arr.shape[1]}")
        if images and arr.shape != images[0].shape:
            raise DataError(
                f"{f}: size {arr.shape[2]}x{arr.shape[1]} differs from {files[0].name} "
                f"({images[0].shape[2]}x{images[0].shape[1]}); pass --image-size N to resize all images"
            )
        images.append(arr)
    x = torch.from_numpy(np.stack(images))
    y = torch.tensor(labels) if labels is not None else None
    return Dataset(f"folder:{root}", *split(x, y, cfg.test_fraction, cfg.split_seed), scale=255.0,
                   class_names=class_names)
