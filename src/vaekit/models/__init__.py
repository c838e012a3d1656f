"""Models: a registry from ``ModelConfig.kind`` to class, and one builder."""

from __future__ import annotations

from ..config import ModelConfig
from ..errors import ConfigError
from .ae import AE
from .base import LatentModel
from .distributions import DiagonalGaussian, PointMass
from .vae import VAE

MODELS: dict[str, type[LatentModel]] = {c.kind: c for c in (VAE, AE)}


def build_model(cfg: ModelConfig, data_shape: tuple[int, ...]) -> LatentModel:
    """Build the model ``cfg`` describes for examples of ``data_shape``."""
    cls = MODELS.get(cfg.kind)
    if cls is None:
        raise ConfigError(f"unknown model kind '{cfg.kind}'; choose one of {', '.join(MODELS)}")
    return cls(cfg, data_shape)


__all__ = ["AE", "VAE", "LatentModel", "MODELS", "build_model", "DiagonalGaussian", "PointMass"]
