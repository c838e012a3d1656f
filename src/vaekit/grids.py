"""Image grids as PNG files: samples from the prior and reconstructions beside their inputs.

The grids are pure functions of arrays and models, written with Pillow (no plotting library
needed); ``sample_run`` and ``reconstruct_run`` (`vaekit sample`, `vaekit reconstruct`) make them,
or the raw values as .npy, from a run folder.
"""

from __future__ import annotations

import math
from typing import Any, Callable
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from . import budget
from .errors import InputError, VaekitError, whole_number
from .files import user_path, write_via_buffer
from .models import LatentModel

MIN_TILE = 56  # small images (8x8 digits) are enlarged so a grid is readable
MAX_GRID_PIXELS = 50_000_000  # Pillow itself refuses to open PNGs beyond ~179 megapixels


def image_grid(images: Tensor | np.ndarray, ncol: int | None = None, pad: int = 2) -> np.ndarray:
    """(N, C, H, W) values in [0, 1] -> one uint8 (rows*H, cols*W[, C]) picture, tiles on white."""
    arr = np.asarray(images.detach().cpu() if isinstance(images, Tensor) else images, dtype=np.float32)
    if arr.ndim != 4:
        raise ValueError(f"image_grid needs (N, C, H, W), got shape {arr.shape}")
    n, c, h, w = arr.shape
    ncol, nrow, zoom = check_grid(n, (c, h, w), ncol, pad)
    th, tw = h * zoom, w * zoom
    canvas = np.ones((c, nrow * (th + pad) + pad, ncol * (tw + pad) + pad), dtype=np.float32)
    for i in range(n):
        r, col = divmod(i, ncol)
        tile = arr[i].repeat(zoom, axis=1).repeat(zoom, axis=2)
        y, x = pad + r * (th + pad), pad + col * (tw + pad)
        canvas[:, y : y + th, x : x + tw] = tile
    out = (np.clip(canvas, 0, 1) * 255 + 0.5).astype(np.uint8)
    return out[0] if c == 1 else out.transpose(1, 2, 0)


def check_grid(n: int, shape: tuple[int, ...], ncol: int | None = None, pad: int = 2,
               per_item: int = 1) -> tuple[int, int, int]:
    """(columns, rows, zoom) of a grid of n images of ``shape``; refuses, before anything is decoded,
    a grid too large for image viewers or for the memory budget. ``per_item``: images per item of
    ``-n`` (2 for an input above its reconstruction), for the largest -n the message suggests."""
    c, h, w = shape
    ncol = ncol or math.ceil(math.sqrt(n))
    nrow = math.ceil(n / ncol)
    zoom = max(1, math.ceil(MIN_TILE / max(h, w)))
    th, tw = h * zoom, w * zoom
    pixels = (nrow * (th + pad) + pad) * (ncol * (tw + pad) + pad)
    if pixels > MAX_GRID_PIXELS:
        most = MAX_GRID_PIXELS // ((th + pad) * (tw + pad)) // per_item
        raise VaekitError(f"a grid of {n:,} images would be a {pixels / 1e6:.0f}-megapixel PNG, more than image viewers "
                          f"open; use -n {most:,} or fewer, or write -o FILE.npy for many samples")
    budget.check(5 * c * pixels, f"a grid of {n:,} images")
    return ncol, nrow, zoom


def save_png(picture: np.ndarray | Tensor, path: str | Path) -> Path:
    """Write a uint8 picture, (H, W) grey or (H, W, 3) colour as ``sample_grid`` makes it, as a PNG
    file, atomically; anything else is refused by name before a file is touched."""
    from PIL import Image

    from .files import output_file

    a = picture.detach().cpu().numpy() if isinstance(picture, Tensor) else picture
    if not isinstance(a, np.ndarray) or a.dtype != np.uint8 or a.size == 0 or not (
            a.ndim == 2 or (a.ndim == 3 and a.shape[2] in (3, 4))):
        given = f"{a.dtype} of shape {a.shape}" if isinstance(a, np.ndarray) else f"a {type(a).__name__}"
        raise InputError(f"save_png: {given}; give a uint8 picture of shape (H, W), (H, W, 3) or (H, W, 4), "
                         "as sample_grid makes it")
    out = output_file(path, (".png",), "path")
    return write_via_buffer(out, lambda buf: Image.fromarray(a).save(buf, format="PNG"))


def _need_images(model: LatentModel, what: str) -> None:
    if len(model.data_shape) != 3:
        raise VaekitError(
            f"{what}: this model's data are vectors of shape {model.data_shape}, not images; "
            "write .npy instead (-o FILE.npy)"
        )


def class_rows(model: LatentModel, codes: Tensor) -> tuple[Tensor, Tensor]:
    """Every code decoded as every class of a conditional model, class by class: (codes, labels) with
    len(codes) * classes rows, so that a grid of len(codes) columns has one row per class and each
    column keeps its z (its "style") across the classes."""
    y = torch.arange(model.classes, device=codes.device).repeat_interleave(len(codes))
    return codes.repeat(model.classes, 1), y


def grid_layout(model: LatentModel, n: int, label: int | None = None) -> tuple[int, int | None]:
    """(samples, columns) of a grid of about n samples: a conditional model without a ``label`` gets
    one row per class, n rounded up to whole columns; otherwise n samples, columns left to the grid."""
    if model.classes and label is None:
        ncol = math.ceil(n / model.classes)
        return ncol * model.classes, ncol
    return n, None


def grid_codes(model: LatentModel, n: int, draw: Callable[[int, Tensor | None], Tensor],
               label: int | None = None, shared_style: bool = True) -> tuple[Tensor, Tensor | None, int | None]:
    """Codes (from ``draw(k, labels)``), labels and columns for the grid ``grid_layout`` gives: each column
    one z decoded as every class (or, without ``shared_style``, each row's codes drawn for its class), or
    all of class ``label``, or unlabelled codes for other models."""
    count, ncol = grid_layout(model, n, label)
    if ncol:
        if shared_style:
            codes, y = class_rows(model, draw(ncol, None))
        else:
            y = torch.arange(model.classes, device=model.device).repeat_interleave(ncol)
            codes = draw(len(y), y)
        return codes, y, ncol
    y = None if label is None else torch.full((count,), label, dtype=torch.long, device=model.device)
    return draw(count, y), y, None


def sample_grid(model: LatentModel, n: int = 64, seed: int = 0, codes: Tensor | None = None,
                y: Tensor | None = None, ncol: int | None = None) -> np.ndarray:
    """n decoded draws from the prior as one picture (or the given ``codes``, decoded with labels ``y``).
    A conditional model's draws are laid out one row per class (about n in all)."""
    _need_images(model, "sample grid")
    if codes is None:
        count, cols = grid_layout(model, n)
        check_grid(count, model.data_shape, cols)
        gen = torch.Generator(device=model.device).manual_seed(seed)
        codes, y, ncol = grid_codes(model, n, lambda k, _: model.prior.sample(k, model, gen))
    else:
        check_grid(len(codes), model.data_shape, ncol)
    with torch.no_grad():
        return image_grid(model.mean(model.decode(codes, y)), ncol=ncol)


def reconstruction_grid(model: LatentModel, x: Tensor, ncol: int = 8, y: Tensor | None = None) -> np.ndarray:
    """Rows of inputs, each followed by a row of their reconstructions, labelled on the left
    (``y``: the inputs' labels, which a conditional model is given)."""
    _need_images(model, "reconstruction grid")
    recon = model.reconstruct(x, y)
    rows = []
    for start in range(0, len(x), ncol):
        rows += [x[start : start + ncol], recon[start : start + ncol]]
    pad = [torch.cat([r, r.new_ones(ncol - len(r), *r.shape[1:])]) if len(r) < ncol else r for r in rows]
    picture = image_grid(torch.cat(pad), ncol=ncol)
    h, w = x.shape[-2:]
    tile = h * max(1, math.ceil(MIN_TILE / max(h, w)))
    return label_rows(picture, ["input", "reconstruction"] * (len(rows) // 2), tile)


def label_rows(picture: np.ndarray, labels: list[str], tile: int, pad: int = 2, width: int = 96) -> np.ndarray:
    """The picture with a white margin on the left naming each row of tiles."""
    from PIL import Image, ImageDraw, ImageFont

    margin = np.full((picture.shape[0], width, *picture.shape[2:]), 255, dtype=np.uint8)
    canvas = Image.fromarray(np.concatenate([margin, picture], axis=1))
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default()
    for i, text in enumerate(labels):
        y = pad + i * (tile + pad) + tile // 2
        draw.text((4, y), text, fill=0 if canvas.mode == "L" else (0, 0, 0), font=font, anchor="lm")
    return np.asarray(canvas)


OUTPUTS = (".png", ".npy")
SAMPLE_CHUNK = 1000  # samples decoded at once for .npy output: memory stays that of one chunk


def sample_run(run_dir: str | Path, out: str | Path, n: int = 64, *, seed: int = 0, sampler: str = "prior",
               components: int = 10, refit: bool = False, label: int | str | None = None,
               data_dir: str | None = None, device: str = "cpu") -> dict[str, Any]:
    """`vaekit sample`: n decoded draws as a PNG grid, or their values as .npy (the suffix of ``out``
    says which). ``label``: a conditional run's class (number or recorded name); without it such a
    run's grid has one row per class. Returns the file, the count and where the codes came from."""
    from .checkpoint import class_label, load_run
    from .files import output_file
    from .models import check_batch_budget
    from .runlock import writing_into
    from .samplers import check_sampler, gmm_for_run, sample_codes

    out, n = output_file(out, OUTPUTS, "-o"), whole_number(n, "-n")
    seed = whole_number(seed, "--seed")
    check_sampler(sampler, components, refit, data_dir)
    run_dir = user_path(run_dir, "run_dir")
    with writing_into(run_dir, [out], "sample", "-o FILE", data_dir):  # none in the image folder; the run's lock inside it
        run = load_run(run_dir, device)
        number, name = class_label(run.path, label, run.model.classes)
        count, cols = grid_layout(run.model, n, number)  # a conditional model's grid: one row per class
        if out.suffix.lower() == ".png":
            _need_images(run.model, "sample grid")
            check_grid(count, run.model.data_shape, cols)
        chunk = min(count, SAMPLE_CHUNK)  # decoded this many at a time
        check_batch_budget(run.model, chunk, f"sample -n {count}")
        budget.check(count * (math.prod(run.model.data_shape) + run.model.latent_dim) * 4,
                     f"sample -n {count} (the codes and the samples, float32)")
        gmm = gmm_for_run(run.path, components, data_dir, refit) if sampler == "gmm" else None
        gen = torch.Generator(device=run.model.device).manual_seed(seed)
        per_class = gmm is not None and bool(gmm.by_class)  # each class's codes from its own mixture
        codes, y, ncol = grid_codes(run.model, n, lambda k, y: sample_codes(run.model, k, sampler, gen, gmm, y),
                                    number, shared_style=not per_class)
        if out.suffix.lower() == ".npy":
            values = np.empty((count, *run.model.data_shape), dtype=np.float32)
            with torch.no_grad():
                for i in range(0, count, chunk):
                    part = slice(i, i + chunk)
                    values[part] = run.model.mean(run.model.decode(codes[part], None if y is None else y[part])).cpu()
            write_via_buffer(out, lambda buf: np.save(buf, values))
        else:
            save_png(sample_grid(run.model, count, seed, codes, y, ncol), out)
        source = ("N(0, I): an AE has no prior and its codes need not follow one; --sampler gmm draws from a fit to them"
                  if sampler == "prior" and not run.model.variational else sampler) + (" per class" if per_class else "") + (
            f"; {ncol} per class, class by class" if ncol else "" if number is None else f"; class {number}{name}")
        return {"file": out, "n": count, "codes": source}


def reconstruct_run(run_dir: str | Path, out: str | Path, n: int = 32, *, data_dir: str | None = None,
                    device: str = "cpu") -> dict[str, Any]:
    """`vaekit reconstruct`: the first n test examples above their reconstructions as a PNG, or as
    .npy of shape (2, n, ...): the inputs, then the reconstructions. Returns the file and the count."""
    from .figures import open_run
    from .files import output_file
    from .runlock import writing_into

    out, n = output_file(out, OUTPUTS, "-o"), whole_number(n, "reconstruct -n")
    run_dir = user_path(run_dir, "run_dir")
    with writing_into(run_dir, [out], "reconstruct", "-o FILE", data_dir):  # as sample's
        view = open_run(run_dir, data_dir=data_dir, device=device)
        x, y = view.test_x(n), view.test_y(n)
        if out.suffix.lower() == ".npy":
            pair = np.empty((2, *x.shape), dtype=np.float32)
            pair[0] = x.cpu()
            with torch.no_grad():
                for i in range(0, len(x), SAMPLE_CHUNK):
                    part = slice(i, i + SAMPLE_CHUNK)
                    pair[1, part] = view.model.reconstruct(x[part], None if y is None else y[part]).cpu()
            write_via_buffer(out, lambda buf: np.save(buf, pair))
        else:
            _need_images(view.model, "reconstruction grid")
            check_grid(2 * len(x), view.model.data_shape, 8, per_item=2)
            save_png(reconstruction_grid(view.model, x, y=y), out)
        return {"file": out, "n": len(x)}
