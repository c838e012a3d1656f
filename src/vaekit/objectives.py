"""The training objective: ELBO parts per example and beta schedules. Pure functions.

loss = recon + beta * KL, where recon = -log p(x|z) for one reparameterised z ~ q(z|x) and
KL = KL(q(z|x) || N(0, I)) in closed form. With beta = 1 the loss is the negative ELBO.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from .config import ObjectiveConfig
from .errors import ConfigError
from .models.base import LatentModel


def elbo_parts(
    model: LatentModel, x: Tensor, generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor]:
    """Per-example reconstruction NLL and KL, each of shape (batch,)."""
    q = model.posterior(x)
    out = model.decode(q.rsample(generator))
    return model.likelihood.nll(out, x), q.kl()


def loss_from_parts(recon: Tensor, kl: Tensor, beta: float) -> Tensor:
    """Mean over the batch of recon + beta * KL (per-example scale, independent of batch size)."""
    return (recon + beta * kl).mean()


def _constant(cfg: ObjectiveConfig, epoch: int) -> float:
    return cfg.beta


def _linear(cfg: ObjectiveConfig, epoch: int) -> float:
    return cfg.beta * min(1.0, epoch / cfg.warmup_epochs)


def _cyclical(cfg: ObjectiveConfig, epoch: int) -> float:
    position = ((epoch - 1) % cfg.cycle_epochs + 1) / cfg.cycle_epochs
    return cfg.beta * min(1.0, position / cfg.cycle_ramp)


SCHEDULES: dict[str, Callable[[ObjectiveConfig, int], float]] = {
    "constant": _constant,
    "linear": _linear,
    "cyclical": _cyclical,
}


def beta_at(cfg: ObjectiveConfig, epoch: int) -> float:
    """The KL weight during ``epoch`` (1-based); linear warm-up gives min(1, epoch/N) * beta."""
    fn = SCHEDULES.get(cfg.schedule)
    if fn is None:
        raise ConfigError(
            f"unknown beta schedule '{cfg.schedule}'; choose one of {', '.join(SCHEDULES)}"
        )
    return fn(cfg, epoch)
