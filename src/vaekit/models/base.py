"""What VAE and AE share: encoder trunk, latent heads, decoder and observation model p(x|z).

Layers are created in the order encoder trunk, ``fc_mu``, ``fc_logvar``, decoder, so that a
seeded build draws the same initial weights as a hand-written model in that order (seed 004).
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor, nn

from ..config import ModelConfig
from ..likelihoods import Likelihood, build_likelihood, param_shape, resolve_output
from .distributions import DiagonalGaussian, PointMass, full_precision
from .nets import get_arch
from .priors import build_prior


class LatentModel(nn.Module):
    """x -> encoder -> (mu, logvar) -> z -> decoder -> parameters of p(x|z)."""

    variational: ClassVar[bool] = True
    kind: ClassVar[str] = ""

    def __init__(self, cfg: ModelConfig, data_shape: tuple[int, ...]) -> None:
        super().__init__()
        self.config = cfg
        self.data_shape = tuple(int(s) for s in data_shape)
        self.param_shape = param_shape(cfg, self.data_shape)
        self.latent_dim = cfg.latent_dim
        self.arch = get_arch(cfg.arch)
        output = resolve_output(cfg)
        self.encoder, features = self.arch.encoder(cfg, self.data_shape)
        self.fc_mu = nn.Linear(features, cfg.latent_dim)
        if self.variational:
            self.fc_logvar = nn.Linear(features, cfg.latent_dim)
        self.decoder = self.arch.decoder(cfg, self.param_shape, output)
        self.likelihood: Likelihood = build_likelihood(cfg)
        self.prior = build_prior(cfg, self.data_shape, self.likelihood.needs_unit_range)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor | None]:
        """Posterior parameters (mu, logvar); the AE returns (code, None)."""
        h = self.encoder(self.arch.prepare(x))  # under autocast the heads' outputs go back to float32
        return full_precision(self.fc_mu(h)), (full_precision(self.fc_logvar(h)) if self.variational else None)

    def posterior(self, x: Tensor) -> DiagonalGaussian | PointMass:
        mu, logvar = self.encode(x)
        return DiagonalGaussian(mu, logvar) if logvar is not None else PointMass(mu)

    def reparameterize(
        self, mu: Tensor, logvar: Tensor | None, generator: torch.Generator | None = None
    ) -> Tensor:
        if logvar is None:
            return mu
        return DiagonalGaussian(mu, logvar).rsample(generator)

    def decode(self, z: Tensor) -> Tensor:
        """The likelihood's parameters for each z (logits for Bernoulli), shaped like the data (or
        with more channels where the likelihood needs them: ``param_shape``)."""
        return full_precision(self.decoder(z)).reshape(z.shape[0], *self.param_shape)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor | None]:
        mu, logvar = self.encode(x)
        z = self.reparameterize(mu, logvar)
        return self.decode(z), mu, logvar

    def mean(self, out: Tensor) -> Tensor:
        """Decoder output -> the expected x in data space (e.g. probabilities from logits)."""
        return self.likelihood.mean(out)

    def prior_components(self, u: Tensor) -> tuple[Tensor, Tensor]:
        """q(z|u)'s parameters for pseudo-inputs u (the VampPrior's mixture components)."""
        mu, logvar = self.encode(u)
        return mu, logvar

    def prior_log_prob(self, z: Tensor) -> Tensor:
        """log p(z) under the model's prior, summed over latent dimensions (extra leading axes kept)."""
        return self.prior.log_prob(z, self)

    def kl(self, q: DiagonalGaussian | PointMass, z: Tensor) -> Tensor:
        """KL(q(z|x) || p(z)) per example: closed form where the prior allows, else at the sample z."""
        return self.prior.kl(q, z, self)

    def kl_per_dim(self, q: DiagonalGaussian | PointMass) -> Tensor | None:
        """Closed-form KL per latent dimension (batch, latent), or None when the prior has none."""
        return self.prior.kl_per_dim(q)

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """Decode n draws from the prior; returns expected images/vectors."""
        return self.mean(self.decode(self.prior.sample(n, self, generator)))

    @torch.no_grad()
    def reconstruct(self, x: Tensor) -> Tensor:
        """Decode each example's posterior mean; returns expected values in data space."""
        return self.mean(self.decode(self.encode(x)[0]))
