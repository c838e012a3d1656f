"""The training objective: ELBO parts per example and beta schedules. Pure functions.

loss = recon + beta * KL, where recon = -log p(x|z) for one reparameterised z ~ q(z|x) and
KL = KL(q(z|x) || N(0, I)) in closed form. With beta = 1 the loss is the negative ELBO.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import Tensor

from .config import ObjectiveConfig
from .errors import ConfigError, show
from .models.base import LatentModel
from .models.distributions import DiagonalGaussian, standard_normal_log_prob


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
            f"unknown beta schedule '{show(cfg.schedule)}'; choose one of {', '.join(SCHEDULES)}"
        )
    return fn(cfg, epoch)


def iwae_log_px(
    model: LatentModel,
    x: Tensor,
    k: int,
    generator: torch.Generator | None = None,
    max_rows: int = 4096,
) -> Tensor:
    """Importance-weighted estimate of log p(x) per example with k samples from q(z|x).

    log p(x) >= log (1/k) sum_i p(x, z_i) / q(z_i|x), tighter as k grows (Burda et al., 2016).
    Samples are processed in chunks of at most ``max_rows`` decoder rows and folded into a
    running logsumexp, so memory stays bounded whatever k is (4096 rows measured fastest on a
    2-core CPU: the activations stay in cache).
    """
    q = model.posterior(x)
    if not isinstance(q, DiagonalGaussian):
        raise ConfigError("the importance-weighted bound needs a VAE (an AE has no posterior)")
    b = x.shape[0]
    per_chunk = max(1, min(k, max_rows // max(b, 1)))
    total = torch.full((b,), float("-inf"), device=x.device, dtype=x.dtype)
    done = 0
    while done < k:
        n = min(per_chunk, k - done)
        z = q.rsample(generator, n=n)  # (n, b, latent)
        out = model.decode(z.reshape(n * b, -1)).view(n, *x.shape)
        log_px_z = -model.likelihood.nll(out, x)
        log_w = log_px_z + standard_normal_log_prob(z) - q.log_prob(z)
        total = torch.logaddexp(total, torch.logsumexp(log_w, dim=0))
        done += n
    return total - math.log(k)
