"""A model that fits the data, for `vaekit train --dataset D` without a preset.

An image folder's channels follow its first image (colour: 3) unless --channels says otherwise.
The rules, in order (an explicit preset or flag always wins over them):
- images (C, H, W) with sides divisible by 4 and at least 16: the conv architecture, two
  stride-2 layers of 32 and 64 channels (three, adding 128, from 64 px up); smaller or odd
  sizes: an MLP of 512, 256;
- vectors (D,): an MLP of two layers of clamp(2D, 64, 512) units;
- latent size: 16 for grey images up to 32 px, 32 for colour or larger images, and
  clamp(D / 8, 2, 64) for vectors;
- colour 8-bit images of at least 32 px with sides divisible by 8: the residual conv architecture
  (stages of 32, 64 and 128 channels, one block each) with a discretised logistic mixture of 5
  components per pixel, a true likelihood of the 256 levels (bits per dimension mean something);
- likelihood otherwise: Bernoulli for grey images and for vectors of only 0s and 1s (values in
  [0, 1]); else a Gaussian with one learned sigma (embeddings, any real values);
- batch size 128, or the number of training examples when fewer.
"""

from __future__ import annotations

from typing import Any

from .data import Dataset


def _clamp(v: int, lo: int, hi: int) -> int:
    return max(lo, min(hi, v))


def choose_model(data: Dataset) -> tuple[dict[str, Any], str]:
    """Config overrides that fit ``data``, and one line saying what was chosen and why."""
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
        latent = 16 if c == 1 and max(h, w) <= 32 else 32
        bernoulli = c == 1
        if c == 3 and data.scale == 255.0 and str(data.train_x.dtype) == "torch.uint8" and h % 8 == 0 \
                and w % 8 == 0 and min(h, w) >= 32:
            overrides = {"model.arch": "resnet", "model.hidden": "32,64,128", "model.res_blocks": 1,
                         "model.latent_dim": latent, "model.likelihood": "dlogistic", "model.mixtures": 5,
                         "model.learn_sigma": False, "train.batch_size": min(128, len(data.train_x))}
            return overrides, (f"no --preset: chose a residual conv VAE (32, 64, 128; latent {latent}; discretised "
                               f"logistic mixture of 5) for {c}x{h}x{w} colour images; any flag or --preset "
                               "overrides this")
        what = f"{c}x{h}x{w} {colour} images"
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
    lik = "Bernoulli" if bernoulli else "Gaussian with learned sigma"
    name = {"conv": "a conv", "mlp": "an MLP"}[arch]
    why = (f"no --preset: chose {name} VAE ({', '.join(map(str, hidden))}; latent {latent}; {lik} likelihood) "
           f"for {what}; any flag or --preset overrides this")
    return overrides, why
