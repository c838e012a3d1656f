"""Encoder trunks and decoders, MLP and convolutional, built from a ModelConfig and a data shape.

An encoder trunk maps x to features (the latent heads live in the model); a decoder maps z
to the likelihood's parameters with the data's shape.
"""

from __future__ import annotations

import math
from typing import Protocol

from torch import Tensor, nn

from ..config import ModelConfig
from ..errors import ConfigError
from . import spatial
from .image_arch import ImageArch
from .resnet import ResNet

_ACTIVATIONS = {"logits": None, "identity": None, "sigmoid": nn.Sigmoid}


def _with_output(layers: list[nn.Module], output: str) -> nn.Sequential:
    act = _ACTIVATIONS[output]
    return nn.Sequential(*layers, *([act()] if act else []))


class Arch(Protocol):
    name: str

    def encoder(self, cfg: ModelConfig, shape: tuple[int, ...]) -> tuple[nn.Module, int]: ...

    def head(self, cfg: ModelConfig, shape: tuple[int, ...], features: int) -> nn.Module: ...

    def decoder(self, cfg: ModelConfig, shape: tuple[int, ...], output: str) -> nn.Module: ...

    def prepare(self, x: Tensor) -> Tensor: ...


class MLP:
    """Fully connected: Linear+ReLU per hidden width; the decoder mirrors the widths."""

    name = "mlp"

    def encoder(self, cfg: ModelConfig, shape: tuple[int, ...]) -> tuple[nn.Module, int]:
        layers: list[nn.Module] = []
        width = math.prod(shape)
        for h in cfg.hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            width = h
        return nn.Sequential(*layers), width

    def head(self, cfg: ModelConfig, shape: tuple[int, ...], features: int) -> nn.Module:
        return nn.Linear(features, cfg.latent_dim)

    def decoder(self, cfg: ModelConfig, shape: tuple[int, ...], output: str) -> nn.Module:
        layers: list[nn.Module] = []
        width = cfg.latent_dim
        for h in reversed(cfg.hidden):
            layers += [nn.Linear(width, h), nn.ReLU()]
            width = h
        layers.append(nn.Linear(width, math.prod(shape)))
        return _with_output(layers, output)

    def prepare(self, x: Tensor) -> Tensor:
        return x.flatten(1)


class Conv(ImageArch):
    """Stride-2 3x3 convolutions (one per entry of ``hidden``, as channels), then latent heads;
    the decoder is a linear layer and mirrored transposed convolutions (seed 001's shape)."""

    name = "conv"

    def encoder(self, cfg: ModelConfig, shape: tuple[int, ...]) -> tuple[nn.Module, int]:
        c, h, w = self._check(cfg, shape)
        layers: list[nn.Module] = []
        for ch in cfg.hidden:
            layers += [nn.Conv2d(c, ch, 3, stride=2, padding=1), nn.ReLU()]
            c = ch
        layers.append(nn.Flatten())
        return nn.Sequential(*layers), c * h * w

    def decoder(self, cfg: ModelConfig, shape: tuple[int, ...], output: str) -> nn.Module:
        _, h, w = self._check(cfg, shape)
        chans = list(reversed(cfg.hidden)) + [shape[0]]
        layers: list[nn.Module] = [*spatial.stem(cfg, h, w, chans[0]), nn.ReLU()]
        for i, (cin, cout) in enumerate(zip(chans[:-1], chans[1:])):
            layers.append(nn.ConvTranspose2d(cin, cout, 3, stride=2, padding=1, output_padding=1))
            if i < len(chans) - 2:
                layers.append(nn.ReLU())
        return _with_output(layers, output)

    def prepare(self, x: Tensor) -> Tensor:
        return x


ARCHS: dict[str, Arch] = {a.name: a for a in (MLP(), Conv(), ResNet())}


def get_arch(name: str) -> Arch:
    if name not in ARCHS:
        raise ConfigError(f"unknown architecture '{name}'; choose one of {', '.join(ARCHS)}")
    return ARCHS[name]
