"""``--standardize``: the model standardises each value with the training set's statistics, its
densities stay exact in the data's own units (values and gradients), the statistics travel with the
weights, and vectors far from unit scale train where they used to end in NaN at the first step."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from conftest import run_cli as run
from vaekit.checkpoint import load_run
from vaekit.config import ModelConfig
from vaekit.likelihoods import Standardized
from vaekit.models import build_model


def _model(likelihood: str = "gaussian", **kw) -> torch.nn.Module:
    cfg = ModelConfig(hidden=[8], latent_dim=2, likelihood=likelihood, standardize=True, **kw)
    return build_model(cfg, (5,)).to(torch.float64)


def test_the_density_is_the_raw_data_gaussian_in_values_and_gradients():
    """nll(out, x) = -log N(x; shift + scale * out, (scale * sigma)^2), summed over the values."""
    torch.manual_seed(0)
    lik = _model(learn_sigma=True, sigma=0.7).likelihood
    assert isinstance(lik, Standardized)
    lik.shift.copy_(torch.randn(5) * 100)
    lik.scale.copy_(torch.rand(5) * 50 + 0.01)
    x = lik.shift + lik.scale * torch.randn(3, 5)
    out = torch.randn(3, 5, dtype=torch.float64, requires_grad=True)
    log_sigma = lik.inner.log_sigma

    ours = lik.nll(out, x)
    raw = torch.distributions.Normal(lik.shift + lik.scale * out, lik.scale * log_sigma.exp())
    reference = -raw.log_prob(x).sum(-1)
    assert torch.allclose(ours, reference, rtol=1e-12, atol=1e-9)
    g_ours = torch.autograd.grad(ours.sum(), (out, log_sigma))
    g_ref = torch.autograd.grad(reference.sum(), (out, log_sigma))
    for a, b in zip(g_ours, g_ref):
        assert torch.allclose(a, b, rtol=1e-10, atol=1e-9)
    assert torch.allclose(lik.mean(out), lik.shift + lik.scale * out)
    assert torch.allclose(lik.model_input(x), (x - lik.shift) / lik.scale)


def test_squared_error_is_measured_in_standardised_units_without_a_jacobian():
    lik = _model("mse").likelihood
    lik.scale.fill_(10.0)
    x, out = torch.full((1, 5), 20.0, dtype=torch.float64), torch.zeros(1, 5, dtype=torch.float64)
    assert float(lik.nll(out, x)) == pytest.approx(5 * 2.0**2)  # (20 / 10 - 0)^2 per value, no log-scale term


def test_statistics_come_from_the_training_set_in_chunks_and_constant_values_keep_scale_one():
    lik = _model().likelihood
    g = torch.Generator().manual_seed(3)
    x = torch.randn(10_000, 5, generator=g, dtype=torch.float64) * torch.tensor([1.0, 1e3, 1e-3, 5.0, 1.0]) + 7
    x[:, 4] = 42.0  # a value that never varies
    lik.fit_data(x, lambda t: t * 2)  # the statistics are of the model's inputs (the features), not the stored values
    f = x * 2
    assert torch.allclose(lik.shift, f.mean(0), rtol=1e-10)
    std = f.std(0, correction=0)
    assert torch.allclose(lik.scale[:4], std[:4], rtol=1e-8) and float(lik.scale[4]) == 1.0


def test_standardize_needs_a_likelihood_of_real_values():
    code, _, err = run("train", "--standardize", "--likelihood", "bernoulli", "--epochs", "1", "--no-progress",
                       "--out", "/nonexistent/never-made")
    assert code == 2 and "model.standardize" in err and "bernoulli" in err and len(err.strip().splitlines()) == 1


@pytest.fixture(scope="module")
def wide_vectors(tmp_path_factory):
    """1,000 vectors on a 2-d manifold, at scales 1 to 10^4 and offsets of thousands."""
    g = np.random.default_rng(0)
    t = g.normal(size=(1000, 2))
    x = np.concatenate([np.sin(t), np.cos(t), t, t[:, :1] * t[:, 1:]], axis=1)
    x = x * np.array([1e4, 3e3, 1.0, 50.0, 2e2, 1e3, 7.0]) + np.array([5e3, -2e3, 0.0, 1e4, 3.0, 0.0, 8e2])
    path = tmp_path_factory.mktemp("vec") / "wide.npy"
    np.save(path, (x + g.normal(size=x.shape) * 1e-2 * np.abs(x).mean(0)).astype(np.float32))
    return path


def test_wide_vectors_train_standardised_and_the_statistics_travel_with_the_weights(wide_vectors, tmp_path):
    common = ["--dataset", f"vectors:{wide_vectors}", "--likelihood", "gaussian", "--learn-sigma", "--hidden", "64,64",
              "--latent-dim", "2", "--no-progress"]
    code, _, err = run("train", *common, "--epochs", "2", "--out", str(tmp_path / "raw"))
    assert code == 2 and "NaN/inf" in err and "--standardize" in err

    out = tmp_path / "std"
    code, _, err = run("train", *common, "--standardize", "--epochs", "30", "--lr", "3e-3", "--batch-size", "64",
                       "--out", str(out))
    assert code == 0, err
    history = [json.loads(line) for line in (out / "history.jsonl").read_text().splitlines()]
    assert all(np.isfinite(h["test_loss"]) for h in history)
    # in nats of the raw data: better than a Gaussian with each feature's own mean and spread (which
    # sees none of the 2-d structure), whose NLL is sum(log std) + 7/2 log(2 pi e), about 44.7 here
    data = np.load(wide_vectors)
    independent = float(np.log(data.std(0)).sum() + 0.5 * data.shape[1] * np.log(2 * np.pi * np.e))
    assert history[-1]["test_loss"] < independent - 1.0

    run_ = load_run(out)
    # the training split's statistics (900 of the 1,000 vectors), saved in model.safetensors
    assert np.allclose(run_.model.likelihood.shift.numpy(), data.mean(0), atol=0.1 * data.std(0).max())
    assert np.allclose(run_.model.likelihood.scale.numpy(), data.std(0), rtol=0.1)
    with torch.no_grad():
        samples = run_.model.sample(4000, generator=torch.Generator().manual_seed(0)).numpy()
    # samples come out in the data's units: their mean and spread are the data's, feature by feature
    assert np.allclose(samples.mean(0), data.mean(0), atol=0.3 * data.std(0).max(), rtol=0)
    assert np.all(samples.std(0) < 3 * data.std(0)) and np.all(samples.std(0) > 0.2 * data.std(0))

    code, out_json, err = run("evaluate", str(out), "--json", "--iwae-k", "10")
    assert code == 0, err
    metrics = json.loads(out_json)
    assert metrics["loss"] == pytest.approx(history[-1]["test_loss"], rel=1e-4)
    assert metrics["nll_iwae"] <= metrics["loss"] + 1e-6


def test_without_a_preset_wide_vectors_are_standardised(wide_vectors, tmp_path):
    code, stdout, err = run("train", "--dataset", f"vectors:{wide_vectors}", "--epochs", "1", "--no-progress",
                            "--out", str(tmp_path / "auto"))
    assert code == 0, err
    assert "each feature standardised" in stdout + err
    assert json.loads((tmp_path / "auto" / "config.json").read_text())["model"]["standardize"] is True


@pytest.mark.parametrize("kind", ["vae", "ae", "hvae"])
def test_every_model_family_encodes_the_standardised_data(kind):
    """The standardisation sits where every family reads x (the encoder's input): a standardised model
    given x encodes exactly as its unstandardised twin (same weights) given (x - shift) / scale."""
    extra = dict(latent_dims=[3, 2], block_width=8) if kind == "hvae" else {}
    cfg = ModelConfig(kind=kind, hidden=[8], latent_dim=3, likelihood="gaussian", **extra)
    torch.manual_seed(0)
    plain = build_model(cfg, (5,))
    torch.manual_seed(0)
    standard = build_model(ModelConfig(**{**cfg.__dict__, "standardize": True}), (5,))
    standard.load_state_dict({**plain.state_dict(), "likelihood.shift": torch.arange(5.0) * 100,
                              "likelihood.scale": torch.arange(1.0, 6.0) * 10}, strict=False)
    x = torch.randn(4, 5) * 30 + 200
    lik = standard.likelihood
    with torch.no_grad():
        a = standard.encode(x)[0]
        b = plain.encode((x - lik.shift) / lik.scale)[0]
    assert torch.allclose(a, b, atol=1e-6)


def test_the_vampprior_of_a_standardising_model_starts_among_the_data(tmp_path):
    """Pseudo-inputs live on the encoder's standardised scale: with data around 10^6 (std 1) they still
    start where the data are, and training stays finite."""
    g = np.random.default_rng(1)
    x = (g.normal(size=(600, 6)) + 1e6).astype(np.float64)
    np.save(tmp_path / "far.npy", x)
    code, _, err = run("train", "--dataset", f"vectors:{tmp_path / 'far.npy'}", "--likelihood", "gaussian",
                       "--standardize", "--prior", "vamp", "--pseudo-inputs", "10", "--hidden", "32",
                       "--latent-dim", "2", "--epochs", "2", "--no-progress", "--out", str(tmp_path / "run"))
    assert code == 0, err
    model = load_run(tmp_path / "run").model
    u = model.likelihood.data_from_input(model.prior.inputs()).detach()
    assert float((u - 1e6).abs().max()) < 10  # pseudo-inputs in the data's own place


def test_a_standardising_run_resumes_bit_exactly_with_its_saved_statistics(wide_vectors, tmp_path):
    from safetensors.torch import load_file

    common = ["--dataset", f"vectors:{wide_vectors}", "--likelihood", "gaussian", "--standardize", "--hidden", "16",
              "--latent-dim", "2", "--batch-size", "100", "--no-progress"]
    assert run("train", *common, "--epochs", "3", "--out", str(tmp_path / "once"))[0] == 0
    assert run("train", *common, "--epochs", "1", "--out", str(tmp_path / "twice"))[0] == 0
    code, _, err = run("train", "--resume", str(tmp_path / "twice"), "--epochs", "3", "--no-progress")
    assert code == 0, err
    once, twice = load_file(tmp_path / "once" / "model.safetensors"), load_file(tmp_path / "twice" / "model.safetensors")
    assert once.keys() == twice.keys() and any("shift" in k for k in once)
    assert all(torch.equal(once[k], twice[k]) for k in once)


def test_vectors_of_values_near_float32s_limit_evaluate_plot_and_report(tmp_path):
    """Raw values of 1e30 train standardised; their squared errors (1e60) overflow float32, so the
    per-example MSE is computed in float64, printed as 4 significant digits and drawn as a histogram."""
    data = np.random.default_rng(0).normal(size=(300, 8)).astype(np.float32) * np.float32(1e30)
    np.save(tmp_path / "huge.npy", data)
    out = tmp_path / "run"
    code, _, err = run("train", "--dataset", f"vectors:{tmp_path / 'huge.npy'}", "--epochs", "1", "--no-progress",
                       "--out", str(out))
    assert code == 0, err
    code, text, err = run("evaluate", str(out), "--iwae-k", "2", "--no-progress")
    assert code == 0, err
    mse = next(line for line in text.splitlines() if "per-example MSE: mean" in line).split()[-1]
    assert "e+" in mse and 1e58 < float(mse) < 1e62 and len(mse) <= 12
    code, _, err = run("report", str(out), "--iwae-k", "2", "--no-progress")
    assert code == 0, err
    assert (out / "plots" / "error-histogram.png").is_file() and "internal error" not in err
