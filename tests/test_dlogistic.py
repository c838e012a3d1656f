"""The discretised logistic (mixture) likelihood for 8-bit images: a true distribution over the 256
levels, the right values at the edges, finite-difference gradients, and its use by the models."""

from __future__ import annotations

import math

import pytest
import torch

from vaekit.config import ModelConfig, RunConfig
from vaekit.likelihoods import DiscretizedLogistic, param_shape
from vaekit.models import build_model

LEVELS = torch.arange(256, dtype=torch.float64) / 255


def _out(mixtures: int, channels: int, n: int = 1, scale: float = 1.0, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    k = mixtures * (1 + DiscretizedLogistic.per_component(channels))
    return torch.randn(n, k, 1, 1, generator=g, dtype=torch.float64) * scale


@pytest.mark.parametrize("mixtures", [1, 3])
def test_grey_levels_sum_to_one(mixtures: int) -> None:
    lik = DiscretizedLogistic(mixtures)
    for seed, scale in [(0, 1.0), (1, 3.0), (2, 0.1)]:
        out = _out(mixtures, 1, scale=scale, seed=seed).expand(256, -1, -1, -1)
        p = torch.exp(-lik.nll(out, LEVELS.view(256, 1, 1, 1)))
        assert p.sum().item() == pytest.approx(1.0, abs=1e-12)
        assert (p > 0).all()


def test_colour_pixel_sums_to_one_over_all_256_cubed_values() -> None:
    """With the channel coupling, the 16.7 million colours of one pixel still sum to 1."""
    lik = DiscretizedLogistic(2)
    out = _out(2, 3, seed=3)
    g, b = torch.meshgrid(LEVELS, LEVELS, indexing="ij")
    total = 0.0
    for r in LEVELS:
        x = torch.stack([torch.full_like(g, float(r)), g, b]).reshape(3, -1).T.reshape(-1, 3, 1, 1)
        total += torch.exp(-lik.nll(out.expand(len(x), -1, -1, -1), x)).sum().item()
    assert total == pytest.approx(1.0, abs=1e-9)


def test_matches_direct_computation_at_the_edges_and_inside() -> None:
    lik = DiscretizedLogistic(1)
    mu, log_s = 0.3, -2.0
    out = torch.tensor([0.0, mu, log_s], dtype=torch.float64).view(1, 3, 1, 1).expand(3, -1, -1, -1)
    x = torch.tensor([0, 255, 180], dtype=torch.float64).view(3, 1, 1, 1) / 255
    got = torch.exp(-lik.nll(out, x))
    s = math.exp(log_s)
    cdf = lambda v: 1 / (1 + math.exp(-(v - mu) / s))  # noqa: E731
    centre = 2 * 180 / 255 - 1
    want = [cdf(-1 + 1 / 255), 1 - cdf(1 - 1 / 255), cdf(centre + 1 / 255) - cdf(centre - 1 / 255)]
    assert got.tolist() == pytest.approx(want, rel=1e-10)


def test_far_tails_stay_finite() -> None:
    """A sharp component far from the data value: the log-probability is very negative, not -inf or NaN."""
    lik = DiscretizedLogistic(1)
    out = torch.tensor([0.0, 0.99, -7.0], dtype=torch.float64).view(1, 3, 1, 1).requires_grad_(True)
    nll = lik.nll(out, torch.full((1, 1, 1, 1), 3 / 255, dtype=torch.float64))
    nll.sum().backward()
    assert torch.isfinite(nll).all() and nll.item() > 100
    assert torch.isfinite(out.grad).all()


@pytest.mark.parametrize("mixtures,channels", [(1, 1), (3, 1), (2, 3)])
def test_gradients_match_finite_differences(mixtures: int, channels: int) -> None:
    lik = DiscretizedLogistic(mixtures)
    g = torch.Generator().manual_seed(5)
    out = torch.randn(2, mixtures * (1 + lik.per_component(channels)), 2, 2, generator=g, dtype=torch.float64)
    x = torch.randint(0, 256, (2, channels, 2, 2), generator=g).to(torch.float64) / 255
    x[0, 0, 0, 0], x[1, 0, 1, 1] = 0.0, 1.0  # both edge levels take part
    assert torch.autograd.gradcheck(lambda o: lik.nll(o, x), (out.requires_grad_(True),))


def test_sample_axes_broadcast_against_the_data() -> None:
    """(S, B, ...) decoder outputs against (B, ...) data, as importance sampling passes them."""
    lik = DiscretizedLogistic(2)
    out = torch.randn(4, 3, 2 * 10, 5, 5, dtype=torch.float64)
    x = torch.randint(0, 256, (3, 3, 5, 5)).to(torch.float64) / 255
    per_sample = lik.nll(out, x)
    assert per_sample.shape == (4, 3)
    assert torch.allclose(per_sample[2], lik.nll(out[2], x))


def test_mean_is_an_image_in_the_unit_range() -> None:
    lik = DiscretizedLogistic(3)
    out = torch.randn(2, 3 * 10, 4, 4) * 3
    m = lik.mean(out)
    assert m.shape == (2, 3, 4, 4) and m.min() >= 0 and m.max() <= 1
    one = DiscretizedLogistic(1).mean(torch.tensor([0.0, 0.5, -3.0]).view(1, 3, 1, 1))
    assert one.item() == pytest.approx(0.75)


def test_models_output_the_likelihoods_parameters() -> None:
    cfg = ModelConfig(arch="conv", hidden=[8, 16], latent_dim=4, likelihood="dlogistic", mixtures=2)
    assert param_shape(cfg, (3, 8, 8)) == (20, 8, 8)
    torch.manual_seed(0)
    model = build_model(cfg, (3, 8, 8))
    x = torch.randint(0, 256, (5, 3, 8, 8)).float() / 255
    out, _, _ = model(x)
    assert out.shape == (5, 20, 8, 8)
    assert model.likelihood.nll(out, x).shape == (5,)
    assert model.reconstruct(x).shape == x.shape
    hcfg = ModelConfig(kind="hvae", hidden=[32], latent_dims=[4, 2], block_width=16, likelihood="dlogistic")
    assert build_model(hcfg, (1, 4, 4)).sample(3).shape == (3, 1, 4, 4)


def test_refused_for_vectors() -> None:
    from vaekit.errors import ConfigError

    with pytest.raises(ConfigError, match="8-bit images"):
        param_shape(ModelConfig(likelihood="dlogistic"), (16,))
    with pytest.raises(ConfigError, match="applies only to --likelihood dlogistic"):
        RunConfig().with_overrides({"model.mixtures": 3})
