"""What VAE and AE share: encoder trunk, latent heads, decoder and observation model p(x|z).

Layers are created in the order encoder trunk, ``fc_mu``, ``fc_logvar``, decoder, so that a
seeded build draws the same initial weights as a hand-written model in that order (seed 004).

A conditional model (``conditional``: p(x|z,y) and q(z|x,y), Sohn et al. 2015) appends the one-hot
class label y to the encoder's features before the latent heads and to z before the decoder; every
method that encodes or decodes takes ``y`` (class numbers), which unconditional models ignore.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import ModelConfig
from ..errors import ConfigError, InputError, integer
from ..likelihoods import Likelihood, build_likelihood, param_shape, resolve_output
from .distributions import DiagonalGaussian, PointMass, full_precision
from .nets import get_arch
from .priors import build_prior


def _autocast_on(device_type: str) -> bool:
    """Whether autocast runs on this kind of device (torch before 2.4 asks CPU and CUDA apart)."""
    try:
        return torch.is_autocast_enabled(device_type)
    except TypeError:
        return torch.is_autocast_cpu_enabled() if device_type == "cpu" else torch.is_autocast_enabled()


class LatentModel(nn.Module):
    """x -> encoder -> (mu, logvar) -> z -> decoder -> parameters of p(x|z)."""

    variational: ClassVar[bool] = True
    kind: ClassVar[str] = ""
    one_latent_layer: ClassVar[bool] = True  # q(z|x) is one DiagonalGaussian (False for a hierarchy)
    classes: int = 0  # a conditional model's number of classes; 0 for an unconditional one

    def __init__(self, cfg: ModelConfig, data_shape: tuple[int, ...]) -> None:
        super().__init__()
        self.config = cfg
        self.data_shape = tuple(int(s) for s in data_shape)
        self.param_shape = param_shape(cfg, self.data_shape)
        self.latent_dim = cfg.latent_dim
        self.arch = get_arch(cfg.arch)
        self.classes = cfg.classes if cfg.conditional else 0
        if cfg.conditional and not cfg.classes:
            raise ConfigError("a conditional model needs its number of classes (model.classes)")
        output = resolve_output(cfg)
        self.encoder, features = self.arch.encoder(cfg, self.data_shape)
        self.fc_mu = self.arch.head(cfg, self.data_shape, features + self.classes)
        if self.variational:
            self.fc_logvar = self.arch.head(cfg, self.data_shape, features + self.classes)
        decoder_cfg = dataclasses.replace(cfg, latent_dim=cfg.latent_dim + self.classes) if self.classes else cfg
        self.decoder = self.arch.decoder(decoder_cfg, self.param_shape, output)
        self.likelihood: Likelihood = build_likelihood(cfg, self.data_shape)
        self.prior = build_prior(cfg, self.data_shape, self.likelihood.needs_unit_range)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def check_input(self, x: Any, name: str, shape: tuple[int, ...]) -> None:
        """Refuse what a method cannot take, naming it: ``x`` must be a float tensor of shape (N, *shape)."""
        if not isinstance(x, Tensor):
            raise InputError(f"{name}: a {type(x).__name__}; give a torch tensor (torch.as_tensor({name}))")
        if x.shape[1:] != shape or x.dim() != len(shape) + 1:
            takes = f"(N, {', '.join(map(str, shape))})"
            hint = f"; add the batch axis: {name}[None]" if x.shape == shape else ""
            raise InputError(f"{name} of shape {tuple(x.shape)}: this model takes {takes}{hint}")
        if not x.is_floating_point():
            hint = " (8-bit images: x.float() / 255)" if name == "x" else ""
            raise InputError(f"{name} holds {str(x.dtype).replace('torch.', '')}: give floats as the model was "
                             f"trained on them{hint}")
        weights = next(self.parameters()).dtype
        if x.dtype != weights and not _autocast_on(x.device.type):
            kind = str(weights).replace("torch.", "")
            raise InputError(f"{name} holds {str(x.dtype).replace('torch.', '')}, the model's weights {kind}: give "
                             f"{name}.to({weights}) (or convert the model)")

    def with_label(self, h: Tensor, y: Tensor | None) -> Tensor:
        """h with the one-hot label of each row appended (a conditional model); h itself otherwise.
        ``y`` holds class numbers (rows,), or class weights (rows, classes) to blend classes."""
        if not self.classes:
            return h
        if y is None:
            raise ConfigError("this model is conditional: give the class label of every example (y)")
        if not isinstance(y, Tensor):
            raise InputError(f"y: a {type(y).__name__}; give a torch tensor of class numbers (torch.as_tensor(y))")
        if y.dim() == 2 and y.shape == (h.shape[0], self.classes) and y.is_floating_point():
            return torch.cat([h, y.to(h.dtype)], dim=-1)
        if y.shape != h.shape[:1] or y.is_floating_point():
            raise ConfigError(f"labels of shape {tuple(y.shape)} for {h.shape[0]} rows; give one class number per row")
        return torch.cat([h, F.one_hot(y.long(), self.classes).to(h.dtype)], dim=-1)

    def default_labels(self, n: int) -> Tensor | None:
        """Labels for n generated examples when none are asked for: the classes in turn (0, 1, ..., 0, 1, ...)."""
        return torch.arange(n, device=self.device) % self.classes if self.classes else None

    def encode(self, x: Tensor, y: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        """Posterior parameters (mu, logvar); the AE returns (code, None)."""
        self.check_input(x, "x", self.data_shape)
        h = self.with_label(self.encoder(self.arch.prepare(self.likelihood.model_input(x))), y)
        # under autocast the heads' outputs go back to float32
        return full_precision(self.fc_mu(h)), (full_precision(self.fc_logvar(h)) if self.variational else None)

    def posterior(self, x: Tensor, y: Tensor | None = None) -> DiagonalGaussian | PointMass:
        mu, logvar = self.encode(x, y)
        return DiagonalGaussian(mu, logvar) if logvar is not None else PointMass(mu)

    def reparameterize(
        self, mu: Tensor, logvar: Tensor | None, generator: torch.Generator | None = None
    ) -> Tensor:
        if logvar is None:
            return mu
        return DiagonalGaussian(mu, logvar).rsample(generator)

    def decode(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        """The likelihood's parameters for each z (logits for Bernoulli), shaped like the data (or
        with more channels where the likelihood needs them: ``param_shape``)."""
        self.check_input(z, "z", (self.latent_dim,))
        return full_precision(self.decoder(self.with_label(z, y))).reshape(z.shape[0], *self.param_shape)

    def forward(self, x: Tensor, y: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor | None]:
        mu, logvar = self.encode(x, y)
        z = self.reparameterize(mu, logvar)
        return self.decode(z, y), mu, logvar

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
    def sample(self, n: int, generator: torch.Generator | None = None, y: Tensor | None = None) -> Tensor:
        """Decode n draws from the prior; returns expected images/vectors. A conditional model draws
        the classes ``y`` (default: ``default_labels``)."""
        count = integer(n)
        if count is None or count < 0:
            raise InputError(f"sample: n = {n!r}; give a whole number of samples >= 0")
        n = count
        z = self.prior.sample(n, self, generator)
        return self.mean(self.decode(z, self.default_labels(n) if y is None else y))

    @torch.no_grad()
    def reconstruct(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        """Decode each example's posterior mean; returns expected values in data space."""
        return self.mean(self.decode(self.encode(x, y)[0], y))


def blend_labels(classes: int, a: int, b: int, t: Tensor) -> Tensor:
    """Class weights (len(t), classes) moving from class a (t = 0) to class b (t = 1), for decoding a
    conditional model along a path between an example of each."""
    ends = F.one_hot(torch.tensor([int(a), int(b)], device=t.device), classes).to(t.dtype)
    return (1 - t)[:, None] * ends[0] + t[:, None] * ends[1]


class FixedClass:
    """A conditional model seen with one class held fixed, for latent pictures (grid, traversals):
    decoding z means decoding it as that class."""

    def __init__(self, model: LatentModel, label: int) -> None:
        self.model, self.label = model, int(label)
        self.variational = model.variational
        self.latent_dim = model.latent_dim

    @property
    def device(self) -> torch.device:
        return self.model.device

    def decode(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        return self.model.decode(z, torch.full((z.shape[0],), self.label, device=z.device, dtype=torch.long))

    def mean(self, out: Tensor) -> Tensor:
        return self.model.mean(out)
