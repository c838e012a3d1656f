"""``--arch resnet``: residual convolutional encoder and decoder for images (32x32, 64x64, ...).

One stage per entry of ``hidden`` (its channels): the encoder halves the resolution at the start of
each stage, then applies ``res_blocks`` residual blocks; the decoder mirrors it with transposed
convolutions. Blocks are pre-activation (SiLU, conv 3x3, SiLU, conv 3x3) with the last convolution
initialised at zero, so every block starts as the identity and deep stacks train from the first
step. No batch statistics: an example's output never depends on the rest of its batch, which the
importance-sampled bounds and exact resume rely on.
"""

from __future__ import annotations

from torch import Tensor, nn

from ..config import ModelConfig
from . import spatial
from .image_arch import ImageArch


class ResBlock(nn.Module):
    """x + conv(silu(conv(silu(x)))), starting as the identity."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.SiLU(), nn.Conv2d(channels, channels, 3, padding=1),
                                  nn.SiLU(), nn.Conv2d(channels, channels, 3, padding=1))
        nn.init.zeros_(self.body[-1].weight)
        nn.init.zeros_(self.body[-1].bias)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


class ResNet(ImageArch):
    """Residual stages; see the module docstring."""

    name = "resnet"

    def encoder(self, cfg: ModelConfig, shape: tuple[int, ...]) -> tuple[nn.Module, int]:
        c, h, w = self._check(cfg, shape)
        layers: list[nn.Module] = []
        for ch in cfg.hidden:
            layers.append(nn.Conv2d(c, ch, 4, stride=2, padding=1))
            layers += [ResBlock(ch) for _ in range(cfg.res_blocks)]
            c = ch
        layers += [nn.SiLU(), nn.Flatten()]
        return nn.Sequential(*layers), c * h * w

    def decoder(self, cfg: ModelConfig, shape: tuple[int, ...], output: str) -> nn.Module:
        out_channels, h, w = self._check(cfg, shape)
        chans = list(reversed(cfg.hidden))
        layers: list[nn.Module] = spatial.stem(cfg, h, w, chans[0])
        for cin, cout in zip(chans, chans[1:] + [chans[-1]]):
            layers += [ResBlock(cin) for _ in range(cfg.res_blocks)]
            layers += [nn.SiLU(), nn.ConvTranspose2d(cin, cout, 4, stride=2, padding=1)]
        layers += [nn.SiLU(), nn.Conv2d(chans[-1], out_channels, 1)]
        if output == "sigmoid":
            layers.append(nn.Sigmoid())
        return nn.Sequential(*layers)

    def prepare(self, x: Tensor) -> Tensor:
        return x * 2 - 1  # images in [0, 1] enter centred
