"""Observation models p(x|z): each turns the decoder's output into a per-example NLL and a mean.

Every ``nll(out, x)`` sums over the data dimensions and returns one number per example, in
nats (``mse`` is the seeds' summed squared error, which is not a normalised log-likelihood).
``out`` may carry extra leading sample axes, (S, B, *shape) against x of shape (B, *shape):
x is broadcast, not copied, which keeps importance sampling cheap.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .config import ModelConfig
from .errors import ConfigError


def _sum_data_dims(per_element: Tensor, x: Tensor) -> Tensor:
    return per_element.flatten(-(x.dim() - 1)).sum(-1)


class Likelihood(nn.Module):
    """Base class: ``nll(out, x)`` per example and ``mean(out)`` in data space."""

    name = ""
    outputs: tuple[str, ...] = ()  # decoder output activations this likelihood accepts; first = default
    needs_unit_range = False  # data must lie in [0, 1]
    is_density = True  # nll is a true negative log-likelihood in nats (so bits/dim mean something)

    def nll(self, out: Tensor, x: Tensor) -> Tensor:
        raise NotImplementedError

    def mean(self, out: Tensor) -> Tensor:
        return out


class Bernoulli(Likelihood):
    """Bernoulli pixels from logits: stable BCE-with-logits, also for grey values in [0, 1]."""

    name = "bernoulli"
    outputs = ("logits",)
    needs_unit_range = True

    def nll(self, out: Tensor, x: Tensor) -> Tensor:
        return _sum_data_dims(F.binary_cross_entropy_with_logits(out, x.expand_as(out), reduction="none"), x)

    def mean(self, out: Tensor) -> Tensor:
        return torch.sigmoid(out)


class SquaredError(Likelihood):
    """Summed squared error, exactly ``F.mse_loss(x_hat, x, reduction='sum')`` per example."""

    name = "mse"
    outputs = ("identity", "sigmoid")
    is_density = False  # a distance, not a normalised density: no nats, no bits per dimension

    def nll(self, out: Tensor, x: Tensor) -> Tensor:
        return _sum_data_dims((out - x).pow(2), x)


class Gaussian(Likelihood):
    """Gaussian with the decoder output as mean and one sigma, fixed or learned (in log space)."""

    name = "gaussian"
    outputs = ("identity", "sigmoid")

    def __init__(self, sigma: float = 1.0, learn_sigma: bool = False) -> None:
        super().__init__()
        log_sigma = torch.tensor(math.log(sigma))
        if learn_sigma:
            self.log_sigma = nn.Parameter(log_sigma)
        else:
            self.register_buffer("log_sigma", log_sigma)

    def nll(self, out: Tensor, x: Tensor) -> Tensor:
        log_sigma = self.log_sigma.to(out.dtype)
        z2 = ((x - out) * torch.exp(-log_sigma)).pow(2)
        per_dim = 0.5 * z2 + log_sigma + 0.5 * math.log(2 * math.pi)
        return _sum_data_dims(per_dim, x)

    @property
    def sigma(self) -> float:
        return float(self.log_sigma.detach().exp())


LIKELIHOODS: dict[str, type[Likelihood]] = {c.name: c for c in (Bernoulli, SquaredError, Gaussian)}


def build_likelihood(cfg: ModelConfig) -> Likelihood:
    """The likelihood named in ``cfg`` (registry lookup, clear error for unknown names)."""
    cls = LIKELIHOODS.get(cfg.likelihood)
    if cls is None:
        raise ConfigError(
            f"unknown likelihood '{cfg.likelihood}'; choose one of {', '.join(LIKELIHOODS)}"
        )
    if cfg.learn_sigma and cls is not Gaussian:
        raise ConfigError("model.learn_sigma needs the gaussian likelihood (--likelihood gaussian)")
    return Gaussian(cfg.sigma, cfg.learn_sigma) if cls is Gaussian else cls()


def resolve_output(cfg: ModelConfig) -> str:
    """The decoder's output activation: ``auto`` picks the likelihood's natural one."""
    cls = LIKELIHOODS.get(cfg.likelihood)
    if cls is None:
        raise ConfigError(
            f"unknown likelihood '{cfg.likelihood}'; choose one of {', '.join(LIKELIHOODS)}"
        )
    if cfg.output == "auto":
        return cls.outputs[0]
    if cfg.output not in cls.outputs:
        hint = (
            "the Bernoulli likelihood works on logits (same model as sigmoid + BCE, but stable)"
            if cls is Bernoulli
            else "logits only make sense for the Bernoulli likelihood"
        )
        raise ConfigError(
            f"model.output='{cfg.output}' does not fit likelihood '{cfg.likelihood}' "
            f"(use one of: auto, {', '.join(cls.outputs)}); {hint}"
        )
    return cfg.output
