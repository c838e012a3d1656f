"""Posterior objects: KL to the prior and log-densities become one-liners for objectives."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..distributed import noise_rows
from ..errors import InputError

_LOG_2PI = math.log(2 * math.pi)


def standard_normal_log_prob(z: Tensor) -> Tensor:
    """log N(z; 0, I), summed over the last dimension."""
    return -0.5 * (z.pow(2) + _LOG_2PI).sum(-1)


def full_precision(t: Tensor) -> Tensor:
    """Half-precision values (from autocast) as float32; float32 and float64 pass unchanged."""
    return t.float() if t.dtype in (torch.float16, torch.bfloat16) else t


def gaussian_noise(like: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Standard normal noise shaped like ``like``; ``torch.randn_like`` unless a generator is given.
    In a data-parallel step the rows are cut from the whole global batch's draw (distributed.py)."""
    shared = noise_rows(like.shape, generator, like.device, like.dtype)
    if shared is not None:
        return shared
    if generator is None:
        return torch.randn_like(like)
    return torch.randn(like.shape, generator=generator, device=like.device, dtype=like.dtype)


class DiagonalGaussian:
    """q(z|x) = N(mu, diag(exp(logvar))), batched over the leading dimension."""

    def __init__(self, mu: Tensor, logvar: Tensor) -> None:
        if not (isinstance(mu, Tensor) and isinstance(logvar, Tensor)) or mu.shape != logvar.shape:
            shapes = [tuple(t.shape) if isinstance(t, Tensor) else type(t).__name__ for t in (mu, logvar)]
            raise InputError(f"DiagonalGaussian: mu {shapes[0]} and logvar {shapes[1]}; give two tensors of one shape")
        self.mu = mu
        self.logvar = logvar

    @property
    def std(self) -> Tensor:
        return torch.exp(0.5 * self.logvar)

    @property
    def var(self) -> Tensor:
        return torch.exp(self.logvar)

    def rsample(
        self, generator: torch.Generator | None = None, n: int | None = None, noise: Tensor | None = None
    ) -> Tensor:
        """Reparameterised sample mu + std * eps (gradients reach mu and logvar).

        ``n`` adds a leading axis of n samples; ``noise`` supplies eps instead of drawing it.
        """
        mu, std = self.mu, self.std
        if n is not None:
            mu, std = mu.expand(n, *mu.shape), std.expand(n, *std.shape)
        eps = gaussian_noise(std, generator) if noise is None else noise
        return mu + std * eps

    def mode(self) -> Tensor:
        return self.mu

    def detached(self) -> DiagonalGaussian:
        """The same density with its parameters cut from the graph: log q(z) then passes gradients
        to z only (the doubly reparameterised IWAE gradient needs exactly that)."""
        return DiagonalGaussian(self.mu.detach(), self.logvar.detach())

    def kl(self) -> Tensor:
        """Closed-form KL(q || N(0, I)) per example, summed over latent dimensions."""
        return 0.5 * (self.mu.pow(2) + self.logvar.exp() - 1.0 - self.logvar).sum(-1)

    def kl_per_dim(self) -> Tensor:
        return 0.5 * (self.mu.pow(2) + self.logvar.exp() - 1.0 - self.logvar)

    def log_prob(self, z: Tensor) -> Tensor:
        """log q(z|x) summed over latent dimensions; z may carry extra leading sample axes."""
        return -0.5 * (((z - self.mu) ** 2) * torch.exp(-self.logvar) + self.logvar + _LOG_2PI).sum(-1)


class PointMass:
    """The autoencoder's 'posterior': its code, with no sampling and no KL term."""

    def __init__(self, code: Tensor) -> None:
        self.mu = code
        self.logvar = None

    def rsample(
        self, generator: torch.Generator | None = None, n: int | None = None, noise: Tensor | None = None
    ) -> Tensor:
        return self.mu if n is None else self.mu.expand(n, *self.mu.shape)

    def mode(self) -> Tensor:
        return self.mu

    def kl(self) -> Tensor:
        return self.mu.new_zeros(self.mu.shape[:-1])

    def kl_per_dim(self) -> Tensor:
        return torch.zeros_like(self.mu)
