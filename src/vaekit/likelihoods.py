"""Observation models p(x|z): each turns the decoder's output into a per-example NLL and a mean.

Every ``nll(out, x)`` sums over the data dimensions and returns one number per example, in
nats (``mse`` is the seeds' summed squared error, which is not a normalised log-likelihood).
``out`` may carry extra leading sample axes, (S, B, *shape) against x of shape (B, *shape):
x is broadcast, not copied, which keeps importance sampling cheap.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .config import STANDARDIZABLE, ModelConfig
from .errors import ConfigError


def _sum_data_dims(per_element: Tensor, x: Tensor) -> Tensor:
    return per_element.flatten(-(x.dim() - 1)).sum(-1)


class Likelihood(nn.Module):
    """Base class: ``nll(out, x)`` per example and ``mean(out)`` in data space."""

    name = ""
    outputs: tuple[str, ...] = ()  # decoder output activations this likelihood accepts; first = default
    needs_unit_range = False  # data must lie in [0, 1]
    is_density = True  # nll is a true negative log-likelihood in nats (so bits/dim mean something)
    discrete_8bit = False  # a distribution over the 256 levels of 8-bit data (bits/dim with no offset)

    @classmethod
    def param_shape(cls, cfg: ModelConfig, data_shape: tuple[int, ...]) -> tuple[int, ...]:
        """Shape of the decoder output per example: one value per data value unless a likelihood needs more."""
        return tuple(data_shape)

    def nll(self, out: Tensor, x: Tensor) -> Tensor:
        raise NotImplementedError

    def mean(self, out: Tensor) -> Tensor:
        return out

    def model_input(self, x: Tensor) -> Tensor:
        """What the encoder is given for data x (the data themselves, unless standardised)."""
        return x

    def data_from_input(self, u: Tensor) -> Tensor:
        """The data whose ``model_input`` is u (its inverse)."""
        return u

    def fit_data(self, train_x: Tensor, features: Callable[[Tensor], Tensor]) -> None:
        """Take what this likelihood needs from the training set before training (nothing, by default)."""

    def normalised_on(self, x: Tensor) -> bool:
        """Whether ``nll`` is a normalised negative log-likelihood of data such as ``x`` (nats that compare
        with other models' on the same data), not only a training loss."""
        return self.is_density


NOT_NORMALISED = (  # said beside such figures
    "Bernoulli nats of values other than 0 and 1 are a training loss, not a normalised likelihood: they compare only "
    "with runs of the same kind (--binarize gives the discrete NLL of binary images)")


class Bernoulli(Likelihood):
    """Bernoulli pixels from logits: stable BCE-with-logits, also for grey values in [0, 1]."""

    name = "bernoulli"
    outputs = ("logits",)
    needs_unit_range = True

    def nll(self, out: Tensor, x: Tensor) -> Tensor:
        return _sum_data_dims(F.binary_cross_entropy_with_logits(out, x.expand_as(out), reduction="none"), x)

    def mean(self, out: Tensor) -> Tensor:
        return torch.sigmoid(out)

    def normalised_on(self, x: Tensor) -> bool:
        """Only on binary data: the Bernoulli "probability" of grey values sums to no distribution of them."""
        return bool(((x == 0) | (x == 1)).all())


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


class DiscretizedLogistic(Likelihood):
    """8-bit data: per pixel a mixture of ``mixtures`` logistics discretised onto the 256 levels
    (PixelCNN++, Salimans et al. 2017). Within a component the channels are modelled in order,
    each mean shifted linearly by the pixel's earlier channels, so colour correlations given z are
    captured; the probabilities of the 256^C values of a pixel sum to 1 exactly.

    Decoder output per pixel: ``mixtures`` weight logits, then per component and channel a mean (in
    [-1, 1] units), a log-scale, and C(C-1)/2 coupling coefficients."""

    name = "dlogistic"
    outputs = ("identity",)
    needs_unit_range = True
    discrete_8bit = True
    MIN_LOG_SCALE = -7.0
    MAX_LOG_SCALE = 7.0  # a scale of e^7 is ~500x the data's range; above ~88 exp(-s) underflows and log p is -inf

    def __init__(self, mixtures: int = 1) -> None:
        super().__init__()
        self.mixtures = mixtures

    @staticmethod
    def per_component(channels: int) -> int:
        return 2 * channels + channels * (channels - 1) // 2

    @classmethod
    def param_shape(cls, cfg: ModelConfig, data_shape: tuple[int, ...]) -> tuple[int, ...]:
        if len(data_shape) != 3:
            raise ConfigError(f"--likelihood dlogistic models 8-bit images (C, H, W), not examples of shape "
                              f"{list(data_shape)}; use --likelihood gaussian for vectors")
        c, h, w = data_shape
        return (cfg.mixtures * (1 + cls.per_component(c)), h, w)

    def _split(self, out: Tensor, channels: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """(..., K*(1+P), H, W) -> weight logits (..., K, H, W), means and log-scales (..., K, C, H, W),
        coupling coefficients (..., K, C(C-1)/2, H, W)."""
        k = self.mixtures
        lead, (h, w) = out.shape[:-3], out.shape[-2:]
        logits = out[..., :k, :, :]
        rest = out[..., k:, :, :].reshape(*lead, k, self.per_component(channels), h, w)
        means, log_scales = rest[..., :channels, :, :], rest[..., channels:2 * channels, :, :]
        coeffs = torch.tanh(rest[..., 2 * channels:, :, :])
        return logits, means, log_scales.clamp(self.MIN_LOG_SCALE, self.MAX_LOG_SCALE), coeffs

    @staticmethod
    def _coupled(means: Tensor, coeffs: Tensor, given: Tensor) -> Tensor:
        """Each channel's mean plus coefficient x earlier channel, for earlier channels ``given``
        (data or expected values in [-1, 1], broadcast against the component axis)."""
        channels = means.shape[-3]
        shifted, j = [means[..., 0, :, :]], 0
        for c in range(1, channels):
            m = means[..., c, :, :]
            for prev in range(c):
                m = m + coeffs[..., j, :, :] * given[..., prev, :, :]
                j += 1
            shifted.append(m)
        return torch.stack(shifted, dim=-3)

    def nll(self, out: Tensor, x: Tensor) -> Tensor:
        channels = x.shape[-3]
        logits, means, log_scales, coeffs = self._split(out, channels)
        xs = (x * 2 - 1).unsqueeze(-4)  # [-1, 1], component axis added
        means = self._coupled(means, coeffs, xs)
        inv_s = torch.exp(-log_scales)
        upper = (xs - means + 1 / 255) * inv_s
        lower = (xs - means - 1 / 255) * inv_s
        # log(sigmoid(upper) - sigmoid(lower)) = log sigmoid(upper) + log sigmoid(-lower) + log(1 - e^-(upper-lower)),
        # finite everywhere, so the edge cases can be chosen with where() without NaN gradients
        log_cdf_upper = F.logsigmoid(upper)
        log_sf_lower = F.logsigmoid(-lower)
        mid = log_cdf_upper + log_sf_lower + torch.log(-torch.expm1(-(2 / 255) * inv_s))
        level = torch.round(x * 255).unsqueeze(-4).expand_as(mid)
        log_p = torch.where(level <= 0, log_cdf_upper, torch.where(level >= 255, log_sf_lower, mid))
        log_mix = log_p.sum(-3) + F.log_softmax(logits, dim=-3)  # (..., K, H, W)
        return -torch.logsumexp(log_mix, dim=-3).flatten(-2).sum(-1)

    def mean(self, out: Tensor) -> Tensor:
        """The expected image in [0, 1]: each component's channel means taken in order (the
        coupling uses the expected earlier channels), weighted by the mixture weights."""
        channels = out.shape[-3] // self.mixtures - 1
        channels = next(c for c in range(1, 64) if self.per_component(c) == channels)
        logits, means, _, coeffs = self._split(out, channels)
        expected = means.clone()
        for c in range(1, channels):
            expected[..., c, :, :] = self._coupled(means, coeffs, expected.clamp(-1, 1))[..., c, :, :]
        weights = torch.softmax(logits, dim=-3).unsqueeze(-3)
        return (((weights * expected.clamp(-1, 1)).sum(-4) + 1) / 2).clamp(0, 1)  # rounding can leave [0, 1]


class Standardized(Likelihood):
    """Another likelihood seen through a per-value standardisation x' = (x - shift) / scale, with the
    training set's mean and standard deviation (``--standardize``: features of any scale train as
    well as unit-scale ones). The encoder gets x', the inner likelihood models x', and ``nll`` adds
    the change of variables (sum of log scale) for a density, so every figure stays in the data's own
    units; ``mean`` maps back. The statistics are buffers, saved with the weights."""

    def __init__(self, inner: Likelihood, data_shape: tuple[int, ...]) -> None:
        super().__init__()
        self.inner = inner
        self.name, self.outputs, self.is_density = inner.name, inner.outputs, inner.is_density
        self.register_buffer("shift", torch.zeros(data_shape))
        self.register_buffer("scale", torch.ones(data_shape))

    def fit_data(self, train_x: Tensor, features: Callable[[Tensor], Tensor]) -> None:
        """Mean and standard deviation of each value over the training set (float64, two passes in
        chunks: no cancellation for values far from 0); a value that never varies keeps scale 1."""
        chunks = lambda: (features(c).to(torch.float64) for c in train_x.split(4096))  # noqa: E731
        n = len(train_x)
        mean = sum(x.sum(0) for x in chunks()) / n
        std = (sum((x - mean).pow(2).sum(0) for x in chunks()) / n).sqrt()
        flat = std <= 1e-6 * (1 + mean.abs())
        self.shift.copy_(mean.to(self.shift))
        self.scale.copy_(torch.where(flat, torch.ones_like(std), std).to(self.scale))

    def model_input(self, x: Tensor) -> Tensor:
        return (x - self.shift) / self.scale

    def data_from_input(self, u: Tensor) -> Tensor:
        return self.shift + self.scale * u

    def nll(self, out: Tensor, x: Tensor) -> Tensor:
        nll = self.inner.nll(out, self.model_input(x))
        return nll + self.scale.log().sum() if self.is_density else nll

    def mean(self, out: Tensor) -> Tensor:
        return self.shift + self.scale * self.inner.mean(out)

    @property
    def sigma(self) -> float:
        """The inner Gaussian's sigma, in standardised units."""
        return self.inner.sigma


LIKELIHOODS: dict[str, type[Likelihood]] = {
    c.name: c for c in (Bernoulli, SquaredError, Gaussian, DiscretizedLogistic)
}


def build_likelihood(cfg: ModelConfig, data_shape: tuple[int, ...] = ()) -> Likelihood:
    """The likelihood named in ``cfg`` (registry lookup, clear error for unknown names), standardised
    for examples of ``data_shape`` when ``cfg.standardize``."""
    inner = _build_likelihood(cfg)
    if not cfg.standardize:
        return inner
    if cfg.likelihood not in STANDARDIZABLE:
        raise ConfigError(f"model.standardize (--standardize) needs a likelihood of real values "
                          f"({', '.join(STANDARDIZABLE)}), not '{cfg.likelihood}'")
    return Standardized(inner, data_shape)


def _build_likelihood(cfg: ModelConfig) -> Likelihood:
    cls = LIKELIHOODS.get(cfg.likelihood)
    if cls is None:
        raise ConfigError(
            f"unknown likelihood '{cfg.likelihood}'; choose one of {', '.join(LIKELIHOODS)}"
        )
    if cls is Gaussian:
        return Gaussian(cfg.sigma, cfg.learn_sigma)
    return DiscretizedLogistic(cfg.mixtures) if cls is DiscretizedLogistic else cls()


def param_shape(cfg: ModelConfig, data_shape: tuple[int, ...]) -> tuple[int, ...]:
    """The decoder's output shape per example for the likelihood ``cfg`` names."""
    cls = LIKELIHOODS.get(cfg.likelihood)
    if cls is None:
        raise ConfigError(f"unknown likelihood '{cfg.likelihood}'; choose one of {', '.join(LIKELIHOODS)}")
    return cls.param_shape(cfg, tuple(data_shape))


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
