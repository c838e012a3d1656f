"""Metrics: the importance-weighted NLL against exact log p(x), active units, the metric dict."""

from __future__ import annotations

import html
import math

import pytest
import torch

from vaekit.config import DataConfig, ModelConfig
from vaekit.data import Dataset, load_dataset
from vaekit.evaluate import active_units, elbo_per_example, evaluate_model, iwae_nll, paired_loss
from vaekit.likelihoods import NOT_NORMALISED
from vaekit.models import build_model
from vaekit.models.distributions import standard_normal_log_prob
from vaekit.objectives import elbo_parts, iwae_log_px, loss_from_parts


def _fit(model, x, steps, lr=1e-2):
    opt = torch.optim.Adam(model.parameters(), lr)
    for _ in range(steps):
        idx = torch.randint(0, len(x), (256,))
        loss = loss_from_parts(*elbo_parts(model, x[idx]), 1.0)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model


@pytest.fixture(scope="module")
def one_d_model():
    """A VAE with a 1-d latent and 6 Bernoulli pixels, so log p(x) is a 1-d integral."""
    torch.manual_seed(0)
    truth = build_model(ModelConfig(hidden=[16], latent_dim=1), (6,))
    with torch.no_grad():
        for p in truth.decoder.parameters():
            p.mul_(3)
        x = torch.bernoulli(truth.mean(truth.decode(torch.randn(4000, 1))))
    model = build_model(ModelConfig(hidden=[32], latent_dim=1), (6,))
    return model, x


def exact_log_px(model, x):
    """log p(x) = log integral p(x|z) p(z) dz on a fine grid over [-10, 10]."""
    grid = torch.linspace(-10, 10, 40001)
    with torch.no_grad():
        out = model.decode(grid[:, None])
        n = len(x)
        log_joint = -model.likelihood.nll(
            out[:, None, :].expand(-1, n, -1).reshape(-1, x.shape[1]), x.repeat(len(grid), 1)
        ).view(len(grid), n) + standard_normal_log_prob(grid[:, None, None]).view(-1, 1)
    return torch.logsumexp(log_joint, 0) + math.log(float(grid[1] - grid[0]))


def test_iwae_converges_to_exact_log_px(one_d_model):
    model, x = one_d_model
    torch.manual_seed(1)
    _fit(model, x, 1500)
    xs = x[:40]
    exact = exact_log_px(model, xs)
    est = iwae_log_px(model, xs, 5000, torch.Generator().manual_seed(0)).detach()
    assert float((exact - est).abs().max()) < 0.05
    assert float((exact - est).mean()) == pytest.approx(0.0, abs=0.01)


def test_iwae_bound_tightens_with_k_and_beats_the_elbo():
    torch.manual_seed(2)
    model = build_model(ModelConfig(hidden=[16], latent_dim=1), (6,))  # untrained: q is a poor proposal
    x = torch.bernoulli(torch.full((300, 6), 0.3))
    exact = exact_log_px(model, x).mean()
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        recon, kl = elbo_parts(model, x, gen)
        elbo = float(-(recon + kl).mean())
        bounds = [float(iwae_log_px(model, x, k, gen).mean()) for k in (1, 10, 100, 2000)]
    assert elbo == pytest.approx(bounds[0], abs=0.3)  # k = 1 is the ELBO
    assert bounds[0] < bounds[1] < bounds[2] < bounds[3] <= float(exact) + 0.01
    assert float(exact) - bounds[3] < 0.05


def test_iwae_matches_a_linear_gaussian_closed_form():
    """p(z) = N(0, I), p(x|z) = N(Wz + b, s^2 I) gives p(x) = N(b, W W^T + s^2 I) exactly."""
    torch.manual_seed(3)
    model = build_model(ModelConfig(hidden=[], latent_dim=2, likelihood="gaussian", sigma=0.5), (3,))
    x = torch.randn(20, 3)
    _fit(model, x.repeat(100, 1), 500, lr=5e-3)  # fit q (and the decoder) to these points
    w, b = model.decoder[0].weight.detach().double(), model.decoder[0].bias.detach().double()
    cov = w @ w.T + 0.25 * torch.eye(3, dtype=torch.float64)
    exact = torch.distributions.MultivariateNormal(b, cov).log_prob(x.double())
    est = iwae_log_px(model, x, 5000, torch.Generator().manual_seed(0)).detach().double()
    assert float((exact - est).abs().max()) < 0.05


def test_iwae_memory_is_bounded_by_chunks(one_d_model):
    model, x = one_d_model
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    a = iwae_log_px(model, x[:8], 3000, g1, max_rows=64)  # 8 samples per chunk
    b = iwae_log_px(model, x[:8], 3000, g2, max_rows=10**6)
    assert torch.allclose(a, b, atol=0.05)


def test_active_units_counts_a_constant_dimension_as_inactive():
    means = torch.randn(500, 4)
    means[:, 1] = 0.7
    means[:, 3] *= 0.05  # variance 0.0025 < 0.01
    assert active_units(means) == 2


def _digits(kind):
    data = load_dataset(DataConfig(dataset="digits", test_fraction=0.2))
    torch.manual_seed(0)
    model = build_model(ModelConfig(kind=kind, hidden=[64], latent_dim=6), data.shape)
    x = data.features(data.train_x)
    _fit(model, x, 300, lr=3e-3)
    return model, data


def test_vae_metric_dict():
    model, data = _digits("vae")
    m = evaluate_model(model, data, iwae_k=50, progress=False)
    for key in ("loss", "recon", "kl", "n", "nll_iwae", "iwae_k", "bits_per_dim", "kl_per_dim",
                "active_units", "mse_mean", "mse_median", "mse_std", "mse_min", "mse_max"):
        assert key in m, key
    assert m["nll_iwae"] <= m["loss"] and m["iwae_k"] == 50
    assert m["bits_per_dim"] == pytest.approx(m["nll_iwae"] / (64 * math.log(2)))
    assert len(m["kl_per_dim"]) == 6 and sum(m["kl_per_dim"]) == pytest.approx(m["kl"])
    assert 0 <= m["active_units"] <= 6 and m["mse_min"] <= m["mse_median"] <= m["mse_max"]
    recon, kl, _ = elbo_per_example(model, data, "test")
    per = (recon + kl).numpy()
    assert m["loss_se"] == pytest.approx(per.std(ddof=1) / math.sqrt(len(per))) and m["loss_se"] > 0
    nll = iwae_nll(model, data, 50, progress=False).numpy()  # the same seed: the same estimates
    assert m["nll_iwae_se"] == pytest.approx(nll.std(ddof=1) / math.sqrt(len(nll)))
    from vaekit.evaluate import standard_error

    assert standard_error(torch.tensor([2.5])) is None  # one example has no spread to measure: unknown, not 0


def test_a_wide_latents_kl_per_dim_is_one_short_line_naming_its_largest_dims():
    from vaekit.cli import format_metrics

    narrow = format_metrics({"n": 3, "kl_per_dim": [0.5, 0.25]})
    assert "KL per latent dim            0.50 0.25" in narrow
    kl = [0.0] * 512
    kl[25], kl[300] = 1.5, 0.75
    line = next(t for t in format_metrics({"n": 3, "kl_per_dim": kl}).splitlines() if "KL per latent dim" in t)
    assert "512 dims" in line and "1.50 (dim 25), 0.75 (dim 300)" in line and "--json" in line and len(line) < 300


def test_ae_metric_dict_has_no_bound_metrics():
    model, data = _digits("ae")
    m = evaluate_model(model, data, iwae_k=50, progress=False)
    assert not {"loss", "kl", "nll_iwae", "bits_per_dim", "kl_per_dim"} & set(m)
    assert {"recon", "n", "mse_mean", "mse_median", "mse_std", "mse_min", "mse_max"} <= set(m)


def test_iwae_nll_per_example_on_a_dataset():
    model, data = _digits("vae")
    small = Dataset("d", data.train_x, None, data.test_x[:10], None, scale=data.scale)
    nll = iwae_nll(model, small, 20, progress=False)
    assert nll.shape == (10,) and torch.isfinite(nll).all() and (nll > 0).all()


def test_paired_loss_cancels_what_the_examples_share():
    """Two models on the same examples: the difference's standard error comes from the per-example
    differences, far below either mean's own; a model against itself differs by exactly 0."""
    model, data = _digits("vae")
    torch.manual_seed(1)
    other = build_model(ModelConfig(kind="vae", hidden=[64], latent_dim=6), data.shape)
    other.load_state_dict(model.state_dict())
    with torch.no_grad():
        for p in other.parameters():
            p.add_(0.01 * torch.randn_like(p))
    same = paired_loss(model, model, data)
    assert same["difference"] == 0 and same["difference_se"] == 0 and same["n"] == len(data.test_x)
    pair = paired_loss(model, other, data)
    la = sum(elbo_per_example(model, data, "test")[:2]).numpy()
    lb = sum(elbo_per_example(other, data, "test")[:2]).numpy()
    assert pair["a"] == pytest.approx(la.mean()) and pair["b"] == pytest.approx(lb.mean())
    assert pair["difference"] == pytest.approx((la - lb).mean())
    assert pair["difference_se"] == pytest.approx((la - lb).std(ddof=1) / math.sqrt(len(la)))
    assert pair["difference_se"] < 0.5 * la.std(ddof=1) / math.sqrt(len(la))
    with pytest.raises(ValueError, match="'train' or 'test'"):
        paired_loss(model, other, data, 0)  # a seed where the split goes is an error, not the training split


def test_bernoulli_nats_of_grey_values_are_marked_as_no_normalised_likelihood(tmp_path):
    """Grey digits under a Bernoulli likelihood give a training loss, not an NLL comparable with binarised
    results: the metrics say so (JSON ``normalised``), and so do the text, the model card and the report."""
    from conftest import run_cli

    model, data = _digits("vae")
    assert evaluate_model(model, data, iwae_k=0, progress=False)["normalised"] is False
    binary = load_dataset(DataConfig(dataset="digits", binarize="static"))
    assert evaluate_model(model, binary, iwae_k=0, progress=False)["normalised"] is True
    gaussian = build_model(ModelConfig(hidden=[16], latent_dim=2, likelihood="gaussian"), (64,))
    vectors = Dataset("v", torch.randn(40, 64), None, torch.randn(10, 64), None)
    assert evaluate_model(gaussian, vectors, iwae_k=0, progress=False)["normalised"] is True
    mse = build_model(ModelConfig(hidden=[16], latent_dim=2, likelihood="mse"), (64,))
    assert "normalised" not in evaluate_model(mse, vectors, iwae_k=0, progress=False)

    grey, binarised = tmp_path / "grey", tmp_path / "binarised"
    for run, extra in ((grey, []), (binarised, ["--binarize", "dynamic"])):
        assert run_cli("train", "--epochs", "1", "--no-progress", "--out", str(run), *extra)[0] == 0
        code, out, _ = run_cli("evaluate", str(run), "--iwae-k", "0", "--no-progress")
        assert code == 0 and (NOT_NORMALISED in out) == (run == grey)
        assert (NOT_NORMALISED in (run / "README.md").read_text()) == (run == grey)
        assert run_cli("report", str(run), "--iwae-k", "0", "--no-progress")[0] == 0
        assert (html.escape(NOT_NORMALISED) in (run / "report.html").read_text()) == (run == grey)
