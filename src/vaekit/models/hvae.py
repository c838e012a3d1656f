"""A hierarchical VAE with L Gaussian latent layers, ladder-style (Sønderby et al. 2016; NVAE):

generative, top-down:  p(z_L) p(z_{L-1} | z_L) ... p(z_1 | z_2) p(x | z_1)
inference, top-down:   q(z_L | x) q(z_{L-1} | x, z_L) ... q(z_1 | x, z_2)

A bottom-up pass computes deterministic features d_1 .. d_L from x once; q(z_l | .) combines
d_l with the same top-down state h_l = f_l(z_{l+1}) that parameterises the prior p(z_l | z_{l+1}),
so the two paths share their features and the upper layers see the data directly (which keeps
them from collapsing). Every KL is closed form (Gaussian against Gaussian), per dimension.

The code z of the rest of vaekit is all layers concatenated, [z_1, ..., z_L]; the decoder reads
z_1. The encoder trunk and decoder come from the architecture registry (mlp now, conv blocks
later), so this file only adds the stochastic layers.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import torch
from torch import Tensor, nn

from ..config import ModelConfig
from ..errors import ConfigError
from ..likelihoods import Likelihood, build_likelihood, param_shape, resolve_output
from .base import LatentModel
from .distributions import full_precision, gaussian_noise
from .nets import get_arch
from .priors import VampPrior

_LOG_2PI = math.log(2 * math.pi)


def _block(width_in: int, width: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(width_in, width), nn.ReLU())


def _log_normal(z: Tensor, mu: Tensor, logvar: Tensor) -> Tensor:
    return -0.5 * (((z - mu) ** 2) * torch.exp(-logvar) + logvar + _LOG_2PI)


def _kl_normal(qm: Tensor, qlv: Tensor, pm: Tensor, plv: Tensor) -> Tensor:
    """KL(N(qm, e^qlv) || N(pm, e^plv)) per dimension."""
    return 0.5 * (plv - qlv + (torch.exp(qlv) + (qm - pm) ** 2) * torch.exp(-plv) - 1.0)


class HierarchicalPosterior:
    """q(z|x) over all layers. ``rsample`` walks top-down and remembers the layers' parameters
    for the sample it drew, so that ``kl`` (closed form, per layer) and ``log_prob`` of that same
    sample need no second pass."""

    def __init__(self, model: HVAE, features: list[Tensor]) -> None:
        self.model, self.features = model, features
        self._last: tuple[Tensor, list[tuple[Tensor, Tensor, Tensor, Tensor]]] | None = None

    def rsample(self, generator: torch.Generator | None = None, n: int | None = None) -> Tensor:
        z, params = self.model.top_down(self.features, n=n, generator=generator)
        self._last = (z, params)
        return z

    def mode(self) -> Tensor:
        return self.model.top_down(self.features, mode=True)[0]

    def _params(self, z: Tensor) -> list[tuple[Tensor, Tensor, Tensor, Tensor]]:
        if self._last is not None and self._last[0] is z:
            return self._last[1]
        n = z.shape[0] if z.dim() == 3 else None
        return self.model.top_down(self.features, n=n, given=z)[1]

    def log_prob(self, z: Tensor) -> Tensor:
        """log q(z|x), summed over all layers' dimensions."""
        parts = self.model.split(z)
        return sum(_log_normal(zl, qm, qlv).sum(-1) for zl, (qm, qlv, _, _) in zip(parts, self._params(z)))

    def kl_per_dim(self) -> Tensor | None:
        """Closed-form KL(q(z_l | x, z_{>l}) || p(z_l | z_{l+1})) per dimension, layers concatenated,
        at the upper layers of the last sample drawn; None under a VampPrior on the top layer."""
        if self._last is None:
            self.rsample()
        if self.model.top_prior is not None:
            return None
        return torch.cat([_kl_normal(*p) for p in self._last[1]], dim=-1)

    def kl(self) -> Tensor:
        """Per example: the layers' closed-form KLs; under a VampPrior the top layer's KL is
        log q(z_L|x) - log p(z_L) at the sample."""
        if self._last is None:
            self.rsample()
        z, params = self._last
        if self.model.top_prior is None:
            return self.kl_per_dim().sum(-1)
        lower = sum((_kl_normal(*p).sum(-1) for p in params[:-1]), torch.zeros(()))
        z_top = self.model.split(z)[-1]
        qm, qlv = params[-1][:2]
        return lower + _log_normal(z_top, qm, qlv).sum(-1) - self.model.top_prior.log_prob(z_top, self.model)


class HierarchicalPrior(nn.Module):
    """p(z) = p(z_L) prod_l p(z_l | z_{l+1}), given by the model's top-down path (no own weights)."""

    name = "hierarchical"

    def __init__(self, closed_form: bool = True) -> None:
        super().__init__()
        self.closed_form = closed_form

    def log_prob(self, z: Tensor, model: HVAE) -> Tensor:
        return model.prior_log_density(z)

    def kl(self, q: HierarchicalPosterior, z: Tensor, model: HVAE) -> Tensor:
        if q._last is None or q._last[0] is not z:
            q._last = (z, q._params(z))  # the KL at this z, not at the last sample drawn
        return q.kl()

    def kl_per_dim(self, q: HierarchicalPosterior) -> Tensor:
        return q.kl_per_dim()

    def sample(self, n: int, model: HVAE, generator: torch.Generator | None = None) -> Tensor:
        return model.ancestral_sample(n, generator)


class TopLayer:
    """The hierarchy seen through its top layer, for latent pictures (grid, traversals): a code is
    z_L, and decoding fills the layers below with their prior means."""

    variational = True

    def __init__(self, model: HVAE) -> None:
        self.model = model
        self.latent_dim = model.dims[-1]

    @property
    def device(self) -> torch.device:
        return self.model.device

    def decode(self, z_top: Tensor, y: Tensor | None = None) -> Tensor:
        return self.model.decode(self.model.fill_from_top(z_top))

    def mean(self, out: Tensor) -> Tensor:
        return self.model.mean(out)


class HVAE(LatentModel):
    """``--model hvae --latent-dims 64,32``: bottom layer first. ``hidden`` is the bottom-up trunk
    (and the decoder's widths); ``block_width`` the width of each layer's blocks."""

    variational = True
    one_latent_layer = False
    kind = "hvae"

    def __init__(self, cfg: ModelConfig, data_shape: tuple[int, ...]) -> None:
        nn.Module.__init__(self)
        dims = list(cfg.latent_dims)
        if len(dims) < 2:
            raise ConfigError("--model hvae needs two or more latent layers, e.g. --latent-dims 64,32")
        if cfg.prior not in ("normal", "vamp"):
            raise ConfigError(f"--prior {cfg.prior}: the hierarchy's top layer takes normal or vamp")
        self.config = cfg
        self.data_shape = tuple(int(s) for s in data_shape)
        self.param_shape = param_shape(cfg, self.data_shape)
        self.dims = dims
        self.latent_dim = sum(dims)
        self.arch = get_arch(cfg.arch)
        width = cfg.block_width
        self.encoder, features = self.arch.encoder(cfg, self.data_shape)
        self.up = nn.ModuleList([_block(features if i == 0 else width, width) for i in range(len(dims))])
        self.fc_mu = nn.Linear(width, 2 * dims[-1])  # q(z_L | x): mean and log-variance
        self.down = nn.ModuleList([_block(dims[i + 1], width) for i in range(len(dims) - 1)])
        self.prior_heads = nn.ModuleList([nn.Linear(width, 2 * dims[i]) for i in range(len(dims) - 1)])
        self.post_heads = nn.ModuleList([nn.Linear(2 * width, 2 * dims[i]) for i in range(len(dims) - 1)])
        self.decoder = self.arch.decoder(dataclasses.replace(cfg, latent_dim=dims[0]), self.param_shape,
                                         resolve_output(cfg))
        self.likelihood: Likelihood = build_likelihood(cfg, self.data_shape)
        self.prior = HierarchicalPrior(closed_form=cfg.prior == "normal")
        self.top_prior = VampPrior(cfg, self.data_shape, self.likelihood.needs_unit_range) \
            if cfg.prior == "vamp" else None  # p(z_L): N(0, I) unless the VampPrior

    def prior_components(self, u: Tensor) -> tuple[Tensor, Tensor]:
        """The top layer's posterior parameters for pseudo-inputs u (the VampPrior's components)."""
        mu, logvar = self.fc_mu(self.bottom_up(u)[-1]).chunk(2, dim=-1)
        return mu, logvar

    def split(self, z: Tensor) -> list[Tensor]:
        return list(torch.split(z, self.dims, dim=-1))

    def bottom_up(self, x: Tensor) -> list[Tensor]:
        self.check_input(x, "x", self.data_shape)
        d = self.encoder(self.arch.prepare(self.likelihood.model_input(x)))
        features = []
        for block in self.up:
            d = block(d)
            features.append(d)
        return features

    def top_down(self, features: list[Tensor], n: int | None = None, generator: torch.Generator | None = None,
                 given: Tensor | None = None, mode: bool = False) -> tuple[Tensor, list[tuple[Any, ...]]]:
        """Walk q top-down: sample each layer (or take ``given``'s, or the means with ``mode``).
        Returns z (layers concatenated; a leading axis of n samples if n) and, per layer, the
        parameters (q mean, q log-variance, p mean, p log-variance)."""
        if n is not None:
            features = [f.expand(n, *f.shape) for f in features]
        parts = self.split(given) if given is not None else None
        top = len(self.dims) - 1
        zs: list[Tensor] = [features[0]] * len(self.dims)
        params: list[tuple[Any, ...]] = [()] * len(self.dims)

        def draw(layer: int, mu: Tensor, logvar: Tensor) -> Tensor:
            if parts is not None:
                return parts[layer]
            if mode:
                return mu
            return mu + torch.exp(0.5 * logvar) * gaussian_noise(mu, generator)

        qm, qlv = full_precision(self.fc_mu(features[top])).chunk(2, dim=-1)
        params[top] = (qm, qlv, torch.zeros_like(qm), torch.zeros_like(qlv))
        zs[top] = draw(top, qm, qlv)
        for layer in range(top - 1, -1, -1):
            h = self.down[layer](zs[layer + 1])
            pm, plv = full_precision(self.prior_heads[layer](h)).chunk(2, dim=-1)
            qm, qlv = full_precision(self.post_heads[layer](torch.cat([h, features[layer]], dim=-1))).chunk(2, dim=-1)
            params[layer] = (qm, qlv, pm, plv)
            zs[layer] = draw(layer, qm, qlv)
        return torch.cat(zs, dim=-1), params

    def posterior(self, x: Tensor, y: Tensor | None = None) -> HierarchicalPosterior:
        return HierarchicalPosterior(self, self.bottom_up(x))

    def encode(self, x: Tensor, y: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """The posterior means of every layer, upper layers at their means (and their log-variances)."""
        z, params = self.top_down(self.bottom_up(x), mode=True)
        return z, torch.cat([p[1] for p in params], dim=-1)

    def reparameterize(self, mu: Tensor, logvar: Tensor | None,
                       generator: torch.Generator | None = None) -> Tensor:
        raise ConfigError("a hierarchical posterior is sampled top-down: use model.posterior(x).rsample()")

    def forward(self, x: Tensor, y: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        q = self.posterior(x)
        mu, logvar = self.encode(x)
        return self.decode(q.rsample()), mu, logvar

    def decode(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        """p(x | z_1): the decoder reads the bottom layer of the concatenated code (no label: a
        hierarchy is not conditional, ``y`` is ignored)."""
        self.check_input(z, "z", (self.latent_dim,))
        z1 = z[..., : self.dims[0]]
        return full_precision(self.decoder(z1)).reshape(z1.shape[0], *self.param_shape)

    def prior_log_density(self, z: Tensor) -> Tensor:
        """log p(z_L) + sum_l log p(z_l | z_{l+1}) for concatenated codes z."""
        parts = self.split(z)
        if self.top_prior is not None:
            total = self.top_prior.log_prob(parts[-1], self)
        else:
            total = _log_normal(parts[-1], torch.zeros_like(parts[-1]), torch.zeros_like(parts[-1])).sum(-1)
        for layer in range(len(self.dims) - 1):
            pm, plv = full_precision(self.prior_heads[layer](self.down[layer](parts[layer + 1]))).chunk(2, dim=-1)
            total = total + _log_normal(parts[layer], pm, plv).sum(-1)
        return total

    def fill_from_top(self, z_top: Tensor) -> Tensor:
        """Full codes for top-layer values: each layer below at its prior mean given the one above."""
        zs = [z_top]
        for layer in range(len(self.dims) - 2, -1, -1):
            zs.insert(0, self.prior_heads[layer](self.down[layer](zs[0])).chunk(2, dim=-1)[0])
        return torch.cat(zs, dim=-1)

    def ancestral_sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """z ~ p(z), top layer first."""
        top = self.top_prior.sample(n, self, generator) if self.top_prior is not None else \
            torch.randn(n, self.dims[-1], generator=generator, device=self.device)
        zs = [top]
        for layer in range(len(self.dims) - 2, -1, -1):
            pm, plv = self.prior_heads[layer](self.down[layer](zs[0])).chunk(2, dim=-1)
            zs.insert(0, pm + torch.exp(0.5 * plv) * gaussian_noise(pm, generator))
        return torch.cat(zs, dim=-1)
