"""Priors p(z) by name (a registry): the standard normal, and the VampPrior of Tomczak & Welling
(2018), a uniform mixture of the posteriors of N learned pseudo-inputs (for a hierarchy: of its
top layer's posteriors, ``model.prior_components``).

A prior gives log p(z), draws z, and the KL of a posterior against it: in closed form where
one exists (the standard normal, also per dimension), otherwise a one-sample estimate
log q(z|x) - log p(z) at the z that the objective drew. The VampPrior needs the model's encoder,
which it is handed per call (it does not own the model, so the weights are saved once).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from ..config import ModelConfig
from ..errors import ConfigError, show
from .distributions import DiagonalGaussian, standard_normal_log_prob

if TYPE_CHECKING:
    from .base import LatentModel

_LOG_2PI = math.log(2 * math.pi)


class StandardNormal(nn.Module):
    """p(z) = N(0, I): no parameters, so models built with it draw the same weights as ever."""

    name = "normal"
    closed_form = True

    def __init__(self, cfg: ModelConfig, data_shape: tuple[int, ...], unit_range: bool) -> None:
        super().__init__()
        self.latent_dim = cfg.latent_dim

    def log_prob(self, z: Tensor, model: LatentModel) -> Tensor:
        return standard_normal_log_prob(z)

    def kl(self, q: Any, z: Tensor, model: LatentModel) -> Tensor:
        return q.kl()

    def kl_per_dim(self, q: Any) -> Tensor | None:
        return q.kl_per_dim()

    def sample(self, n: int, model: LatentModel, generator: torch.Generator | None = None) -> Tensor:
        device = model.device
        return torch.randn(n, self.latent_dim, generator=generator, device=device)


def mixture_log_prob(z: Tensor, mu: Tensor, logvar: Tensor) -> Tensor:
    """log (1/N) sum_k N(z; mu_k, diag exp(logvar_k)) for z (..., d) and N components (N, d).

    The squared distances are expanded into three matrix products (z^2/var - 2 z mu/var + mu^2/var),
    so no (..., N, d) tensor is formed; in float64, where the expansion's cancellation costs nothing.
    """
    shape, d = z.shape[:-1], z.shape[-1]
    z64, mu64, inv = z.reshape(-1, d).double(), mu.double(), torch.exp(-logvar.double())
    quad = (z64 * z64) @ inv.T - 2 * z64 @ (mu64 * inv).T + (mu64 * mu64 * inv).sum(-1)
    per = -0.5 * (quad.clamp_min(0) + logvar.double().sum(-1) + d * _LOG_2PI)  # (rows, N)
    out = torch.logsumexp(per, dim=-1) - math.log(mu.shape[0])
    return out.to(z.dtype).reshape(shape)


class VampPrior(nn.Module):
    """p(z) = (1/N) sum_k q(z | u_k) over N learned pseudo-inputs u_k (kept in the data's range:
    through a sigmoid for data in [0, 1]; for a standardising model learned on the encoder's
    standardised scale, so they start among the data whatever the data's scale)."""

    name = "vamp"
    closed_form = False

    def __init__(self, cfg: ModelConfig, data_shape: tuple[int, ...], unit_range: bool) -> None:
        super().__init__()
        self.unit_range = unit_range
        self.pseudo = nn.Parameter(torch.randn(cfg.pseudo_inputs, *data_shape) * (0.5 if unit_range else 1.0))

    def inputs(self) -> Tensor:
        return torch.sigmoid(self.pseudo) if self.unit_range else self.pseudo

    def components(self, model: LatentModel) -> DiagonalGaussian:
        mu, logvar = model.prior_components(model.likelihood.data_from_input(self.inputs()))
        return DiagonalGaussian(mu, logvar)

    def log_prob(self, z: Tensor, model: LatentModel) -> Tensor:
        c = self.components(model)  # (N, d)
        return mixture_log_prob(z, c.mu, c.logvar)

    def kl(self, q: Any, z: Tensor, model: LatentModel) -> Tensor:
        return q.log_prob(z) - self.log_prob(z, model)

    def kl_per_dim(self, q: Any) -> Tensor | None:
        return None  # a mixture has no per-dimension KL

    def sample(self, n: int, model: LatentModel, generator: torch.Generator | None = None) -> Tensor:
        c = self.components(model)
        k = torch.randint(len(c.mu), (n,), generator=generator, device=c.mu.device)
        return DiagonalGaussian(c.mu[k], c.logvar[k]).rsample(generator)


PRIORS: dict[str, type[nn.Module]] = {p.name: p for p in (StandardNormal, VampPrior)}


def build_prior(cfg: ModelConfig, data_shape: tuple[int, ...], unit_range: bool) -> nn.Module:
    cls = PRIORS.get(cfg.prior)
    if cls is None:
        raise ConfigError(f"unknown prior '{show(cfg.prior)}'; choose one of {', '.join(PRIORS)}")
    if cfg.kind == "ae" and cls is not StandardNormal:
        raise ConfigError(f"--prior {cfg.prior} needs a VAE: an autoencoder has no prior (use --model vae)")
    return cls(cfg, data_shape, unit_range)
