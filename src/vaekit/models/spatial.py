"""Spatial latents for the convolutional architectures (``--spatial-latent``).

The code z stays one vector of ``latent_dim`` values for the rest of vaekit; only its wiring
changes: z is read as a C x h x w map at the encoder's deepest resolution (C = latent_dim / (h w)),
the posterior heads are 3x3 convolutions over the trunk's feature map instead of one linear layer
over all of it, and the decoder starts with a 3x3 convolution from that map. Each latent value
then describes its own region of the image, which is how colour VAEs carry detail (IAF-VAE, NVAE).
"""

from __future__ import annotations

from torch import nn

from ..config import ModelConfig
from ..errors import ConfigError


def map_size(hidden: list[int], h: int, w: int) -> tuple[int, int]:
    """The encoder's deepest resolution, where a spatial latent lives: each of the ``hidden`` stages halves
    the sides (the architectures refuse sides that do not divide)."""
    f = 2 ** len(hidden)
    return h // f, w // f


def latent_channels(cfg: ModelConfig, h: int, w: int) -> int:
    """C of the C x h x w latent map; refuses a latent size that is not a whole number of maps."""
    if cfg.latent_dim % (h * w):
        raise ConfigError(f"--spatial-latent reads z as C x {h} x {w} maps (the encoder's deepest resolution), so "
                          f"--latent-dim must be a multiple of {h * w}, got {cfg.latent_dim}")
    return cfg.latent_dim // (h * w)


def head(cfg: ModelConfig, channels: int, h: int, w: int, features: int) -> nn.Module:
    """Flat trunk features (``channels`` maps of h x w) -> ``latent_dim`` posterior parameters: one linear
    layer for a vector latent, a 3x3 convolution per position for a spatial one."""
    if not cfg.spatial_latent:
        return nn.Linear(features, cfg.latent_dim)
    latent = latent_channels(cfg, h, w)
    return nn.Sequential(nn.Unflatten(1, (channels, h, w)), nn.Conv2d(channels, latent, 3, padding=1), nn.Flatten())


def stem(cfg: ModelConfig, h: int, w: int, channels: int) -> list[nn.Module]:
    """The decoder's first layers, flat z -> ``channels`` feature maps of h x w: one linear layer for a
    vector latent, a 3x3 convolution from z's own maps for a spatial one."""
    if not cfg.spatial_latent:
        return [nn.Linear(cfg.latent_dim, channels * h * w), nn.Unflatten(1, (channels, h, w))]
    latent = latent_channels(cfg, h, w)
    return [nn.Unflatten(1, (latent, h, w)), nn.Conv2d(latent, channels, 3, padding=1)]
