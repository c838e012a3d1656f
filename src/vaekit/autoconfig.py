"""A model that fits the data, for `vaekit train --dataset D` without a preset (``config_for_data``).

An image folder is colour (3 channels) when any of 16 images spread over it is, unless --channels
says otherwise.
The rules, in order (an explicit preset or flag always wins over them):
- images larger than 128 px, or of several sizes, are resized to 64 px (or their smallest side, a
  multiple of 8, when smaller; a non-square image is cropped to its centred square first, unless
  --resize squash), unless --image-size says otherwise;
- images (C, H, W) with sides divisible by 4 and at least 16: the conv architecture, two
  stride-2 layers of 32 and 64 channels (three, adding 128, from 64 px up); smaller or odd
  sizes: an MLP of 512, 256;
- vectors (D,): an MLP of two layers of clamp(2D, 64, 512) units;
- latent size: 16 for grey images up to 32 px, 32 for colour or larger images, and
  clamp(D / 8, 2, 64) for vectors;
- colour 8-bit images of at least 32 px with sides divisible by 8: the residual conv architecture
  (stages of 32 and 64 channels, one block each; 128 more from 64 px) with a spatial latent of 8 maps
  at the deepest resolution (32x32 -> 8 maps of 8x8 = 512 values) and a discretised logistic mixture
  of 5 components per pixel, a true likelihood of the 256 levels (bits per dimension mean something).
  On CIFAR-10 this wiring beat a 64-d vector latent by 1.3 bits/dim in equal 8-minute runs;
- likelihood otherwise: Bernoulli for grey images and for vectors of only 0s and 1s (values in
  [0, 1]); else a Gaussian with one learned sigma (embeddings, any real values);
- `--model hvae` without `--latent-dims`: two latent layers, the latent size above and half of it;
- batch size 128, or the number of training examples when fewer.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Callable

from .config import RunConfig, dotted
from .errors import line_sink
from .data import Dataset
from .models.spatial import map_size


_VECTOR_LATENT = 32  # colour or larger images
_MAPS = 8  # latent maps for colour images: the cifar10-resnet preset's measured choice


def _clamp(v: int, lo: int, hi: int) -> int:
    return max(lo, min(hi, v))


# Choices that only make sense together: a flag that sets one of the keys drops the others' choice too.
_GROUPS = {
    "model.spatial_latent": {"model.arch", "model.hidden", "model.latent_dim", "model.kind", "model.conditional"},
    "model.learn_sigma": {"model.likelihood"},
    "model.standardize": {"model.likelihood"},
    "model.mixtures": {"model.likelihood"},
}


def choose_model(data: Dataset, given: Mapping[str, Any] | None = None) -> tuple[dict[str, Any], str]:
    """Config overrides that fit ``data``, and one line saying what was chosen and why. ``given``: the
    settings the user made (they always win, and a choice that belongs with one of them goes with it);
    the line describes the model they make together."""
    given = dotted(given)
    chosen, what = _choose(data)
    if chosen.get("model.spatial_latent") and (_GROUPS["model.spatial_latent"] & set(given)
                                               or given.get("model.spatial_latent", True) is False):
        chosen["model.latent_dim"] = _VECTOR_LATENT  # a vector latent again, sized as for other colour images
        chosen.pop("model.spatial_latent")
    kept = {k: v for k, v in chosen.items() if k not in given and not _GROUPS.get(k, set()) & set(given)}
    cfg = RunConfig().with_choices(kept, given)
    if cfg.model.kind == "hvae" and "model.latent_dims" not in given:  # two layers: the latent size, then half
        latent = cfg.model.latent_dim
        kept["model.latent_dims"] = f"{latent},{max(1, latent // 2)}"
        cfg = RunConfig().with_choices(kept, given)
    why = f"no --preset: chose {_described(cfg, data)} for {what}; any flag or --preset overrides this"
    mine = sorted(k for k in given if k.startswith("model.") and k in chosen)
    if mine:
        why += f" (your flags set {', '.join(k.split('.', 1)[1] for k in mine)}, and the choices that go with them)"
    shape = _pixel_rows(data)
    if shape:
        why += f"; rows of {data.shape[0]} whole numbers in 0..255 look like images: --image-shape {shape} reads them so"
    return kept, why


def _pixel_rows(data: Dataset) -> str | None:
    """The --image-shape that vectors of 8-bit pixel values would have (a table of MNIST: 784 values of
    0..255 -> '28,28'), if they look like square grey or colour images; None otherwise."""
    if data.is_image or data.scale != 1.0:
        return None
    from .data.vectors import eight_bit

    (d,) = data.shape
    if not eight_bit(data.train_x.cpu().numpy()):
        return None
    for channels, suffix in ((1, ""), (3, ",3")):
        side = math.isqrt(d // channels)
        if side >= 8 and channels * side * side == d:
            return f"{side},{side}{suffix}"
    return None


_ARCH_WORDS = {"conv": "a conv", "mlp": "an MLP", "resnet": "a residual conv"}
_KIND_WORDS = {"vae": "VAE", "ae": "autoencoder", "hvae": "hierarchical VAE"}


def _described(cfg: RunConfig, data: Dataset) -> str:
    """The model a config makes, in words: 'an MLP VAE (400, 400; latent 20; Bernoulli likelihood)'."""
    m = cfg.model
    arch = _ARCH_WORDS.get(m.arch, f"a {m.arch}")
    kind = ("conditional " if m.conditional else "") + _KIND_WORDS.get(m.kind, m.kind)
    if m.kind == "hvae":
        latent = f"latent layers {', '.join(map(str, m.latent_dims))}"
    elif m.spatial_latent:
        mh, mw = map_size(m.hidden, *data.shape[1:])
        latent = f"spatial latent of {m.latent_dim // (mh * mw)} maps of {mh}x{mw}"
    else:
        latent = f"latent {m.latent_dim}"
    likelihood = {
        "bernoulli": "Bernoulli likelihood",
        "mse": "squared error",
        "gaussian": "Gaussian with learned sigma likelihood" if m.learn_sigma else f"Gaussian likelihood (sigma {m.sigma:g})",
        "dlogistic": f"discretised logistic mixture of {m.mixtures}",
    }.get(m.likelihood, f"{m.likelihood} likelihood")
    if m.standardize:
        likelihood += ", each feature standardised"
    return f"{arch} {kind} ({', '.join(map(str, m.hidden))}; {latent}; {likelihood})"


def _choose(data: Dataset) -> tuple[dict[str, Any], str]:
    """The settings for ``data`` and the data in words ('1x28x28 grey images')."""
    shape = data.shape
    lo, hi = data.value_range()
    if data.is_image:
        c, h, w = shape
        colour = "colour" if c == 3 else "grey"
        if h % 4 == 0 and w % 4 == 0 and min(h, w) >= 16:
            deep = h % 8 == 0 and w % 8 == 0 and min(h, w) >= 64
            arch, hidden = "conv", [32, 64, 128] if deep else [32, 64]
        else:
            arch, hidden = "mlp", [512, 256]
        latent = 16 if c == 1 and max(h, w) <= 32 else _VECTOR_LATENT
        bernoulli = c == 1
        what = f"{c}x{h}x{w} {colour} images"
        if c == 3 and data.scale == 255.0 and str(data.train_x.dtype) == "torch.uint8" and h % 8 == 0 \
                and w % 8 == 0 and min(h, w) >= 32:
            stages = [32, 64, 128] if min(h, w) >= 64 else [32, 64]
            mh, mw = map_size(stages, h, w)
            overrides = {"model.arch": "resnet", "model.hidden": ",".join(map(str, stages)), "model.res_blocks": 1,
                         "model.latent_dim": _MAPS * mh * mw, "model.spatial_latent": True,
                         "model.likelihood": "dlogistic", "model.mixtures": 5,
                         "model.learn_sigma": False, "train.batch_size": min(128, len(data.train_x))}
            return overrides, what
    else:
        (d,) = shape
        arch, hidden = "mlp", [_clamp(2 * d, 64, 512)] * 2
        latent = _clamp(d // 8, 2, 64)
        binary = bool(((data.train_x == 0) | (data.train_x == data.scale)).all())
        bernoulli = binary and lo >= 0 and hi <= 1
        what = f"{d}-d vectors in [{lo:.3g}, {hi:.3g}]"
    likelihood = "bernoulli" if bernoulli else "gaussian"
    overrides: dict[str, Any] = {
        "model.arch": arch, "model.hidden": ",".join(map(str, hidden)), "model.latent_dim": latent,
        "model.likelihood": likelihood, "model.learn_sigma": not bernoulli,
        "train.batch_size": min(128, len(data.train_x)),
    }
    if not data.is_image and not bernoulli:  # vectors of any scale: the model standardises each feature
        overrides["model.standardize"] = True
    return overrides, what


AUTO_MAX_SIDE = 128  # without --image-size, larger images are resized (as are images of mixed sizes)
AUTO_SIZE = 64


def image_size_for(sizes: list[tuple[int, int]]) -> int | None:
    """The side images are resized to when no --image-size is given: None when they share one size of
    at most AUTO_MAX_SIDE, else 64, or the smallest side (a multiple of 8, at least 16) when smaller."""
    if not sizes or (len(set(sizes)) == 1 and max(sizes[0]) <= AUTO_MAX_SIDE):
        return None
    smallest = min(min(w, h) for w, h in sizes)
    return max(16, min(AUTO_SIZE, smallest // 8 * 8))


def _sizes_text(sizes: list[tuple[int, int]]) -> str:
    distinct = sorted(set(sizes), key=lambda s: s[0] * s[1])
    shown = ", ".join(f"{w}x{h}" for w, h in distinct[:3]) + (", ..." if len(distinct) > 3 else "")
    return shown if len(distinct) == 1 else f"several sizes ({shown})"


def _resize_to_fit(overrides: dict[str, Any], sizes: list[tuple[int, int]], log: Callable[[str], None]) -> None:
    """Set the image size ``image_size_for`` gives (if any) and say why in one line."""
    size = image_size_for(sizes)
    if size:
        overrides["data.image_size"] = size
        why = "one model needs one size" if len(set(sizes)) > 1 else "a model of their full size would not fit"
        how = ("squashed" if overrides.get("data.resize") == "squash" else
               "cropped to their centred squares and scaled" if any(w != h for w, h in sizes) else "scaled")
        log(f"no --image-size: images of {_sizes_text(sizes)} are {how} to {size}x{size} ({why}; "
            "--image-size N chooses)")


def _data_flags(overrides: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in overrides.items() if k.startswith("data.")}


def config_for_data(dataset: str, overrides: Mapping[str, Any] | None = None, *, progress: bool = True,
                    log: Callable[[str], None] = print) -> tuple[RunConfig, Dataset]:
    """What `vaekit train --dataset D` without a preset trains: the data loaded once, a model chosen to
    fit them (``log`` gets the line saying what and why) with ``overrides`` (dotted keys) applied on
    top; returns the config and the data, to hand to ``fit(cfg, run_dir, data=data)``."""
    from .data import load_dataset
    from .data.folder import ImageSizesDiffer, probe_folder

    overrides, log = {**dotted(overrides), "data.dataset": dataset}, line_sink(log)
    # Checked before any file is opened: every value's range, and whether each data flag applies (that of
    # --resize is known after the probe, that of a model flag once the model is chosen from the data).
    RunConfig().check_values(overrides)
    RunConfig().with_overrides({k: v for k, v in _data_flags(overrides).items() if k != "data.resize"})
    kind, _, arg = str(dataset).partition(":")
    channels, sizes = probe_folder(arg) if kind == "folder" else (1, [])
    if kind == "folder" and "data.channels" not in overrides:
        overrides["data.channels"] = channels
    if kind == "folder" and "data.image_size" not in overrides:
        _resize_to_fit(overrides, sizes, log)
    try:
        data = load_dataset(RunConfig().with_overrides(_data_flags(overrides)).data, progress=progress)
    except ImageSizesDiffer as e:  # an image the probe did not see has another size: resize them all
        _resize_to_fit(overrides, sizes + e.sizes, log)
        data = load_dataset(RunConfig().with_overrides(_data_flags(overrides)).data, progress=progress)
    chosen, why = choose_model(data, given=overrides)
    log(why)
    return RunConfig().with_choices(chosen, overrides), data
