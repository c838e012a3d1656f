"""What the image architectures share: the shape check (C, H, W with sides divisible by 2 per
stride-2 stage) and the latent heads at the deepest resolution (a vector or spatial maps)."""

from __future__ import annotations

from torch import nn

from ..config import ModelConfig
from ..errors import ConfigError
from . import spatial


class ImageArch:
    """Base of ``conv`` and ``resnet``: one stride-2 stage per entry of ``hidden`` (its channels)."""

    name = ""

    def _check(self, cfg: ModelConfig, shape: tuple[int, ...]) -> tuple[int, int, int]:
        """(channels, height, width) of the data at the deepest resolution, or a one-line error."""
        if len(shape) != 3:
            raise ConfigError(f"--arch {self.name} needs image data (C, H, W), got examples of shape {list(shape)}; "
                              "use --arch mlp for vectors")
        c, h, w = shape
        f = 2 ** len(cfg.hidden)
        if not cfg.hidden or h % f or w % f:
            raise ConfigError(f"--arch {self.name} with {len(cfg.hidden)} stride-2 stages (--hidden) needs image "
                              f"sides divisible by {f}, got {h}x{w}; change --hidden or --image-size")
        return (c, *spatial.map_size(cfg.hidden, h, w))

    def head(self, cfg: ModelConfig, shape: tuple[int, ...], features: int) -> nn.Module:
        _, h, w = self._check(cfg, shape)
        return spatial.head(cfg, cfg.hidden[-1], h, w, features)
