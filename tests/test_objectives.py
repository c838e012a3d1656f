"""Reparameterisation, KL, likelihoods, beta schedules, and the seed-002 pitfalls."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from vaekit.config import ModelConfig, ObjectiveConfig, RunConfig
from vaekit.errors import ConfigError
from vaekit.likelihoods import Bernoulli, Gaussian, SquaredError, build_likelihood, resolve_output
from vaekit.models import build_model
from vaekit.models.distributions import DiagonalGaussian, PointMass, standard_normal_log_prob
from vaekit.objectives import beta_at, elbo_parts


def test_reparameterized_sample_carries_gradients_to_mu_and_logvar():
    mu = torch.tensor([1.0, -0.5], requires_grad=True)
    logvar = torch.tensor([0.0, 0.3], requires_grad=True)
    DiagonalGaussian(mu, logvar).rsample().sum().backward()
    assert mu.grad is not None and torch.equal(mu.grad, torch.ones(2))
    assert logvar.grad is not None and logvar.grad.abs().sum() > 0


def test_direct_sampling_gives_no_gradient():
    mu = torch.tensor([1.0, -0.5], requires_grad=True)
    logvar = torch.zeros(2, requires_grad=True)
    z = torch.distributions.Normal(mu, torch.exp(0.5 * logvar)).sample()
    assert not z.requires_grad
    with pytest.raises(RuntimeError):
        z.sum().backward()
    assert mu.grad is None


def test_logvar_gradient_is_half_std_eps():
    """d z / d logvar = 0.5 * std * eps: the noise enters through exp(0.5 * logvar)."""
    mu, logvar = torch.zeros(3), torch.tensor([0.0, 1.0, -2.0], requires_grad=True)
    eps = torch.tensor([0.5, -1.0, 2.0])
    DiagonalGaussian(mu, logvar).rsample(noise=eps).sum().backward()
    assert torch.allclose(logvar.grad, 0.5 * torch.exp(0.5 * logvar.detach()) * eps)


def test_kl_closed_form_matches_monte_carlo():
    torch.manual_seed(0)
    mu, logvar = torch.randn(4, 3), torch.randn(4, 3) * 0.5
    q = DiagonalGaussian(mu, logvar)
    z = q.rsample(n=200_000)
    mc = (q.log_prob(z) - standard_normal_log_prob(z)).mean(0)
    assert torch.allclose(q.kl(), mc, atol=0.02)
    ref = torch.distributions.kl_divergence(
        torch.distributions.Normal(mu, q.std), torch.distributions.Normal(0.0, 1.0)).sum(-1)
    assert torch.allclose(q.kl(), ref, atol=1e-5)


def test_log_prob_matches_torch_normal():
    mu, logvar = torch.randn(5, 2), torch.randn(5, 2)
    q = DiagonalGaussian(mu, logvar)
    z = torch.randn(7, 5, 2)
    ref = torch.distributions.Normal(mu, q.std).log_prob(z).sum(-1)
    assert torch.allclose(q.log_prob(z), ref, atol=1e-5)


def test_bernoulli_from_logits_equals_bce_on_sigmoid():
    torch.manual_seed(1)
    logits = torch.randn(6, 1, 5, 5) * 3
    x = torch.rand(6, 1, 5, 5)
    ref = F.binary_cross_entropy(torch.sigmoid(logits), x, reduction="none").flatten(1).sum(1)
    assert torch.allclose(Bernoulli().nll(logits, x), ref, atol=1e-4)


def test_bernoulli_from_logits_stays_finite_where_sigmoid_saturates():
    logits, x = torch.tensor([[40.0, -40.0]], requires_grad=True), torch.tensor([[0.0, 1.0]])
    nll = Bernoulli().nll(logits, x)
    nll.sum().backward()
    assert torch.isfinite(nll).all() and torch.allclose(nll, torch.tensor([80.0]))
    assert torch.isfinite(logits.grad).all()


def test_gaussian_nll_matches_torch_normal_and_learned_sigma_trains():
    mean, x = torch.randn(3, 4), torch.randn(3, 4)
    lik = Gaussian(sigma=0.3)
    ref = -torch.distributions.Normal(mean, 0.3).log_prob(x).sum(1)
    assert torch.allclose(lik.nll(mean, x), ref, atol=1e-4)
    learned = Gaussian(sigma=1.0, learn_sigma=True)
    assert [n for n, _ in learned.named_parameters()] == ["log_sigma"]
    learned.nll(mean, x).sum().backward()
    assert learned.log_sigma.grad is not None and learned.log_sigma.grad != 0
    assert list(Gaussian(0.3).parameters()) == []


def test_likelihood_and_output_registry_errors():
    with pytest.raises(ConfigError, match="unknown likelihood 'poisson'"):
        build_likelihood(ModelConfig(likelihood="poisson"))
    with pytest.raises(ConfigError, match="logits"):
        resolve_output(ModelConfig(likelihood="bernoulli", output="sigmoid"))
    with pytest.raises(ConfigError, match="learn_sigma"):
        RunConfig().with_overrides({"model.likelihood": "mse", "model.learn_sigma": True})
    assert resolve_output(ModelConfig(likelihood="gaussian")) == "identity"
    assert resolve_output(ModelConfig(likelihood="bernoulli")) == "logits"


def test_beta_schedules():
    warm = ObjectiveConfig(schedule="linear", warmup_epochs=5)
    assert [beta_at(warm, e) for e in range(1, 8)] == pytest.approx([0.2, 0.4, 0.6, 0.8, 1, 1, 1])
    assert beta_at(ObjectiveConfig(beta=4.0), 3) == 4.0
    cyc = ObjectiveConfig(schedule="cyclical", cycle_epochs=4, cycle_ramp=0.5, beta=2.0)
    assert [beta_at(cyc, e) for e in range(1, 9)] == pytest.approx([1, 2, 2, 2, 1, 2, 2, 2])
    with pytest.raises(ConfigError, match="unknown beta schedule"):
        beta_at(ObjectiveConfig(schedule="sigmoid"), 1)


# --- the seed-002 pitfalls, each with a test that would catch it --------------------------


def test_pitfall_variance_from_logvar_is_always_positive():
    """Using the raw output as a variance goes negative; exp(logvar) never does."""
    q = DiagonalGaussian(torch.zeros(4), torch.tensor([-30.0, -1.0, 0.0, 5.0]))
    assert (q.var > 0).all() and (q.std > 0).all()
    assert torch.isfinite(q.kl()).all()


def test_pitfall_std_is_exp_half_logvar_not_half_logvar():
    q = DiagonalGaussian(torch.zeros(2), torch.log(torch.tensor([4.0, 0.25])))
    assert torch.allclose(q.std, torch.tensor([2.0, 0.5]))
    torch.manual_seed(0)
    z = q.rsample(n=100_000)
    assert torch.allclose(z.std(0), torch.tensor([2.0, 0.5]), rtol=0.02)


def test_pitfall_sum_over_dimensions_not_mean():
    """Recon sums over all 784 pixels, so its scale is comparable with the summed KL."""
    x, out = torch.zeros(2, 1, 28, 28), torch.full((2, 1, 28, 28), 0.1)
    assert torch.allclose(SquaredError().nll(out, x), torch.full((2,), 784 * 0.01))
    assert torch.allclose(SquaredError().nll(out, x).sum(), F.mse_loss(out, x, reduction="sum"))
    mu, logvar = torch.ones(2, 20), torch.zeros(2, 20)
    assert torch.allclose(DiagonalGaussian(mu, logvar).kl(), torch.full((2,), 10.0))


def test_pitfall_noise_matches_device_and_dtype():
    q = DiagonalGaussian(torch.zeros(3, dtype=torch.float64), torch.zeros(3, dtype=torch.float64))
    assert q.rsample().dtype == torch.float64
    model = build_model(ModelConfig(hidden=[8], latent_dim=2, likelihood="mse"), (4,)).double()
    out, mu, _ = model(torch.randn(5, 4, dtype=torch.float64))
    assert out.dtype == mu.dtype == torch.float64


def test_pitfall_decoder_output_is_bounded_where_the_data_are():
    x = torch.rand(8, 1, 8, 8)
    for lik, output in [("mse", "sigmoid"), ("bernoulli", "logits")]:
        model = build_model(ModelConfig(hidden=[16], latent_dim=2, likelihood=lik, output=output), (1, 8, 8))
        with torch.no_grad():
            for p in model.parameters():
                p.mul_(50)  # push pre-activations far out
        for images in (model.sample(16), model.reconstruct(x)):
            assert images.min() >= 0 and images.max() <= 1


def test_pitfall_kl_sign_is_nonnegative_and_zero_only_at_prior():
    torch.manual_seed(2)
    q = DiagonalGaussian(torch.randn(1000, 5) * 2, torch.randn(1000, 5) * 2)
    assert (q.kl() >= 0).all()
    assert DiagonalGaussian(torch.zeros(1, 5), torch.zeros(1, 5)).kl().item() == 0.0
    model = build_model(ModelConfig(hidden=[16], latent_dim=3, likelihood="bernoulli"), (10,))
    recon, kl = elbo_parts(model, torch.rand(4, 10))
    assert (kl >= 0).all() and (recon >= 0).all()


def test_autoencoder_posterior_is_its_code_with_no_kl():
    code = torch.randn(3, 2, requires_grad=True)
    q = PointMass(code)
    assert q.rsample() is code and torch.equal(q.kl(), torch.zeros(3))
    assert math.isclose(float(q.kl_per_dim().sum()), 0.0)
