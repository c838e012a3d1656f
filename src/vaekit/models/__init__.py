"""Models: a registry from ``ModelConfig.kind`` to class, and one builder that checks the budget."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch

from .. import budget
from ..config import ModelConfig, RunConfig, as_section
from ..errors import ConfigError, show
from .ae import AE
from .base import LatentModel
from .distributions import DiagonalGaussian, PointMass
from .hvae import HVAE
from .vae import VAE

MODELS: dict[str, type[LatentModel]] = {c.kind: c for c in (VAE, AE, HVAE)}
MAX_DATA_SIZE = 1 << 31  # values in one example


def check_data_shape(shape: object, source: str = "data shape") -> tuple[int, ...]:
    """One example's shape as ints: (D,) for vectors or (C, H, W) for images, every side >= 1."""
    if not isinstance(shape, (tuple, list)) or len(shape) not in (1, 3) or not all(
        isinstance(s, int) and not isinstance(s, bool) and s >= 1 for s in shape
    ) or math.prod(shape) > MAX_DATA_SIZE:
        raise ConfigError(f"{source}: {show(shape)} is not an example shape (D,) or (C, H, W) of positive sizes")
    return tuple(shape)


def _construct(cfg: ModelConfig, data_shape: tuple[int, ...]) -> LatentModel:
    cls = MODELS.get(cfg.kind)
    if cls is None:
        raise ConfigError(f"unknown model kind '{show(cfg.kind)}'; choose one of {', '.join(MODELS)}")
    return cls(cfg, data_shape)


def parameter_count(cfg: ModelConfig, data_shape: tuple[int, ...]) -> int:
    """Parameters of the model ``cfg`` describes, counted on the meta device (nothing allocated)."""
    with torch.device("meta"):
        return sum(p.numel() for p in _construct(cfg, check_data_shape(data_shape)).parameters())


@torch.no_grad()
def activation_values(model: LatentModel) -> int:
    """Values one example creates on its way through encoder and decoder (measured with hooks on a
    forward pass of the posterior mean: no random numbers are drawn, no weights change)."""
    values = [0]
    leaves = [m for m in model.modules() if not list(m.children())]
    hooks = [m.register_forward_hook(lambda mod, i, o: values.__setitem__(0, values[0] + o.numel()))
             for m in leaves]
    was_training = model.training
    model.train(False)
    try:
        x = torch.zeros(1, *model.data_shape, device=next(model.parameters()).device)
        y = model.default_labels(1)
        model.decode(model.encode(x, y)[0], y)
    finally:
        model.train(was_training)
        for h in hooks:
            h.remove()
    return values[0] + math.prod(model.data_shape)


def rows_within(model: LatentModel, nbytes: int, most: int = 4096) -> int:
    """How many examples can pass through ``model`` at once (no gradients) in about ``nbytes`` of
    activations: all ``most`` rows for small MLPs, fewer for conv nets on large images."""
    return max(1, min(most, nbytes // (4 * activation_values(model))))


def _need(params: int, per_example: int, batch_size: int, training: bool) -> int:
    """Bytes (float32) for weights (with gradients and Adam's two moments when training) and activations."""
    return 4 * (params * (4 if training else 1) + per_example * batch_size * (3 if training else 1))


def check_batch_budget(model: LatentModel, batch_size: int, what: str, training: bool = False) -> None:
    """Refuse running ``batch_size`` examples at once through ``model`` beyond the memory budget."""
    params = sum(p.numel() for p in model.parameters())
    budget.check(_need(params, activation_values(model), batch_size, training),
                 f"{what} ({params:,} parameters, {batch_size:,} examples at once)")


def build_model(cfg: ModelConfig | Mapping[str, Any], data_shape: tuple[int, ...], batch_size: int = 1,
                training: bool = False) -> LatentModel:
    """Build the model ``cfg`` describes for examples of ``data_shape``, after checking that its
    weights, and its activations for ``batch_size`` examples at a time, fit the memory budget. A
    ModelConfig given alone (or a dict of its fields) is checked as a run's would be (types, ranges,
    settings that do not apply)."""
    cfg = as_section(cfg, ModelConfig, "cfg")
    RunConfig(model=cfg).validate()
    data_shape = check_data_shape(data_shape)
    params = parameter_count(cfg, data_shape)
    budget.check(_need(params, 0, 0, training), f"the model ({params:,} parameters)")
    model = _construct(cfg, data_shape)
    check_batch_budget(model, batch_size, "the model", training)
    return model


__all__ = ["AE", "HVAE", "VAE", "LatentModel", "MODELS", "build_model", "check_data_shape",
           "check_batch_budget", "parameter_count", "rows_within", "DiagonalGaussian", "PointMass"]
