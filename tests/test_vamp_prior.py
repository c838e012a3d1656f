"""The VampPrior: a proper density (integrates to 1 in 1-D and 2-D), sampled consistently, and a
first-class prior for every command (train, resume, evaluate, plot, sample); bad combinations are
refused before anything is written."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from conftest import run_cli as run
from vaekit.config import ModelConfig
from vaekit.models import build_model


@pytest.mark.parametrize("latent", [1, 2])
def test_the_vamp_density_integrates_to_one(latent):
    torch.manual_seed(0)
    model = build_model(ModelConfig(hidden=[8], latent_dim=latent, prior="vamp", pseudo_inputs=3,
                                    likelihood="gaussian"), (4,))
    n = 2001 if latent == 1 else 401
    axis = torch.linspace(-12, 12, n)
    step = float(axis[1] - axis[0])
    grid = axis[:, None] if latent == 1 else torch.cartesian_prod(axis, axis)
    with torch.no_grad():
        density = model.prior_log_prob(grid).exp()
    assert float(density.sum()) * step**latent == pytest.approx(1.0, abs=2e-3)


def test_samples_follow_the_mixture():
    torch.manual_seed(1)
    model = build_model(ModelConfig(hidden=[8], latent_dim=2, prior="vamp", pseudo_inputs=4,
                                    likelihood="gaussian"), (4,))
    with torch.no_grad():
        z = model.prior.sample(40000, model, torch.Generator().manual_seed(0))
        c = model.prior.components(model)
    assert torch.allclose(z.mean(0), c.mu.mean(0), atol=0.03)


@pytest.fixture(scope="module")
def vamp_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("vamp") / "run"
    assert run("train", "--preset", "digits-mlp", "--hidden", "32", "--latent-dim", "4", "--prior", "vamp",
               "--pseudo-inputs", "20", "--epochs", "4", "--no-progress", "--out", str(out))[0] == 0
    return out


def test_every_command_handles_a_vamp_run(vamp_run, tmp_path):
    code, out, err = run("evaluate", str(vamp_run), "--json", "--iwae-k", "20")
    m = json.loads(out)
    assert code == 0 and "kl_per_dim" not in m and m["nll_iwae"] <= m["loss"] + 1e-6 and m["kl"] > 0
    assert run("sample", str(vamp_run), "-n", "8", "-o", str(tmp_path / "s.npy"))[0] == 0
    assert np.load(tmp_path / "s.npy").shape == (8, 1, 8, 8)
    code, out, err = run("report", str(vamp_run), "--iwae-k", "5")  # draws every plot, as `plot` does
    assert code == 0 and "kl-per-dim: not applicable" in out and (vamp_run / "plots" / "traversals.png").is_file()


def test_a_vamp_run_resumes_exactly(vamp_run, tmp_path):
    from vaekit.checkpoint import load_run, read_history

    half = tmp_path / "half"
    assert run("train", "--preset", "digits-mlp", "--hidden", "32", "--latent-dim", "4", "--prior", "vamp",
               "--pseudo-inputs", "20", "--epochs", "2", "--no-progress", "--out", str(half))[0] == 0
    assert run("train", "--resume", str(half), "--epochs", "4", "--no-progress")[0] == 0
    strip = lambda h: [{k: v for k, v in r.items() if "seconds" not in k} for r in h]  # noqa: E731
    assert strip(read_history(half)) == strip(read_history(vamp_run))
    a, b = load_run(half).model.state_dict(), load_run(vamp_run).model.state_dict()
    assert "prior.pseudo" in a and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("flags,needle", [
    (["--prior", "vamp", "--model", "ae"], "needs a VAE"),
    (["--prior", "vamp", "--free-bits", "0.5"], "--prior normal"),
    (["--prior", "vamp", "--pseudo-inputs", "0"], "model.pseudo_inputs=0"),
    (["--set", "model.prior=flat"], "unknown prior 'flat'"),
])
def test_bad_prior_combinations_are_refused(flags, needle, tmp_path):
    code, _, err = run("train", *flags, "--out", str(tmp_path / "r"), "--no-progress")
    assert code == 2 and needle in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("scale", [1.0, 30.0])
def test_the_mixture_density_matches_a_direct_sum_even_for_narrow_components(scale):
    """The expanded form (three matrix products) against the plain per-component sum, with components
    as narrow as a collapsed posterior (logvar -14) and codes far from them."""
    from vaekit.models.priors import mixture_log_prob

    g = torch.Generator().manual_seed(0)
    mu = torch.randn(7, 5, generator=g, dtype=torch.float64) * scale
    logvar = torch.empty(7, 5, dtype=torch.float64).uniform_(-14, 2, generator=g)
    z = torch.cat([mu[:3] + 1e-4 * torch.randn(3, 5, generator=g, dtype=torch.float64),
                   torch.randn(4, 5, generator=g, dtype=torch.float64) * scale])[None].expand(2, -1, -1)
    direct = torch.stack([torch.distributions.Normal(mu[k], (0.5 * logvar[k]).exp()).log_prob(z).sum(-1)
                          for k in range(7)], -1)
    want = torch.logsumexp(direct, -1) - np.log(7)
    got = mixture_log_prob(z, mu, logvar)
    assert got.shape == (2, 7)
    torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-6)
    got32 = mixture_log_prob(z.float(), mu.float(), logvar.float())
    assert got32.dtype == torch.float32
    torch.testing.assert_close(got32.double(), want, rtol=1e-5, atol=1e-3)
