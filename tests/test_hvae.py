"""The hierarchical VAE: correct by construction checks against a linear-Gaussian hierarchy whose
marginal p(x) is known in closed form, closed-form KLs against Monte Carlo, float64 gradients,
and first-class handling by train (exact resume), evaluate, plot and sample."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from conftest import run_cli as run
from vaekit.config import ModelConfig, ObjectiveConfig
from vaekit.models import build_model
from vaekit.objectives import iwae_log_px


def linear_gaussian_hvae():
    """z2 ~ N(0, 1), z1 | z2 ~ N(A z2 + a, S1), x | z1 ~ N(B z1 + b, 0.5^2 I): every block linear,
    the prior's variance constant, so log p(x) is a Gaussian's log-density."""
    torch.manual_seed(3)
    model = build_model(ModelConfig(kind="hvae", latent_dims=[2, 1], block_width=4, hidden=[4],
                                    likelihood="gaussian", sigma=0.5), (3,)).double()
    for name, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            if isinstance(child, nn.ReLU):
                setattr(module, child_name, nn.Identity())
    with torch.no_grad():
        model.prior_heads[0].weight[2:].zero_()  # log-variance rows: constant in z2
    return model


def _affine(fn, dim_in: int):
    zero = fn(torch.zeros(1, dim_in, dtype=torch.float64))[0]
    cols = [fn(torch.eye(dim_in, dtype=torch.float64)[i : i + 1])[0] - zero for i in range(dim_in)]
    return torch.stack(cols, dim=1), zero


def exact_log_px(model, x):
    with torch.no_grad():
        prior = lambda z2: model.prior_heads[0](model.down[0](z2))  # noqa: E731
        (P, p0), (Dm, d0) = _affine(lambda z: prior(z)[:, :2], 1), _affine(lambda z: model.decoder(z), 2)
        s1 = torch.diag(torch.exp(prior(torch.zeros(1, 1, dtype=torch.float64))[0, 2:]))
        cov = Dm @ (P @ P.T + s1) @ Dm.T + 0.25 * torch.eye(3, dtype=torch.float64)
        mean = Dm @ p0 + d0
    return torch.distributions.MultivariateNormal(mean, cov).log_prob(x)


def test_iwae_approaches_the_exact_marginal_and_the_elbo_stays_below():
    model = linear_gaussian_hvae()
    x = torch.tensor([[0.3, -0.8, 1.1], [1.5, 0.2, -0.4]], dtype=torch.float64)
    exact = exact_log_px(model, x)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        estimates = {k: iwae_log_px(model, x, k, gen) for k in (1, 10, 100, 20000)}
        q = model.posterior(x)
        elbo = torch.stack([-(model.likelihood.nll(model.decode(z), x) + model.kl(q, z))
                            for z in [q.rsample(gen) for _ in range(4000)]]).mean(0)
    assert torch.all(elbo < exact)
    gaps = [float((exact - estimates[k]).mean()) for k in (1, 10, 100, 20000)]
    assert gaps[0] > gaps[1] > gaps[2] > gaps[3] > -0.02
    assert torch.allclose(estimates[20000], exact, atol=0.03), (estimates[20000], exact)


def test_closed_form_layer_kls_match_monte_carlo():
    model = linear_gaussian_hvae()
    x = torch.tensor([[0.3, -0.8, 1.1]], dtype=torch.float64).expand(20000, 3)  # one example, 20,000 draws
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        q = model.posterior(x)
        z = q.rsample(gen)
        a, s = model.kl(q, z), q.log_prob(z) - model.prior_log_prob(z)
    assert float(a.mean()) == pytest.approx(float(s.mean()), abs=4 * float(s.std()) / math.sqrt(len(s)) + 1e-3)


@pytest.mark.parametrize("kind", ["elbo", "iwae"])
def test_hvae_gradients_match_finite_differences_in_float64(kind):
    from conftest import objective_gradcheck

    torch.manual_seed(0)
    model = build_model(ModelConfig(kind="hvae", latent_dims=[3, 2], block_width=5, hidden=[6]), (7,)).double()
    x = (torch.rand(4, 7, generator=torch.Generator().manual_seed(2)) > 0.5).double()
    cfg = ObjectiveConfig(kind=kind, iwae_samples=3 if kind == "iwae" else 5)
    assert objective_gradcheck(model, x, cfg, ["fc_mu.weight", "post_heads.0.weight", "prior_heads.0.bias",
                                               "up.0.0.weight"], beta=0.8)


HV = ["--preset", "digits-mlp", "--model", "hvae", "--latent-dims", "8,4", "--block-width", "64", "--hidden", "64",
      "--no-progress"]


def test_every_command_handles_an_hvae_and_resume_is_exact(tmp_path):
    from vaekit.checkpoint import load_run, read_history

    assert run("train", *HV, "--epochs", "4", "--out", str(tmp_path / "a"))[0] == 0
    assert run("train", *HV, "--epochs", "2", "--out", str(tmp_path / "b"))[0] == 0
    assert run("train", "--resume", str(tmp_path / "b"), "--epochs", "4", "--no-progress")[0] == 0
    strip = lambda h: [{k: v for k, v in r.items() if "seconds" not in k} for r in h]  # noqa: E731
    assert strip(read_history(tmp_path / "a")) == strip(read_history(tmp_path / "b"))
    a, b = load_run(tmp_path / "a").model.state_dict(), load_run(tmp_path / "b").model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    code, out, err = run("evaluate", str(tmp_path / "a"), "--json", "--iwae-k", "20")
    m = json.loads(out)
    assert code == 0 and m["latent_dims"] == [8, 4] and len(m["kl_per_layer"]) == 2 and len(m["kl_per_dim"]) == 12
    assert m["nll_iwae"] <= m["loss"] + 1e-6
    assert sum(m["kl_per_layer"]) == pytest.approx(m["kl"], rel=1e-6)
    assert run("plot", str(tmp_path / "a"))[0] == 0
    assert run("sample", str(tmp_path / "a"), "-n", "6", "-o", str(tmp_path / "s.npy"))[0] == 0
    assert run("train", *HV, "--objective", "iwae", "--iwae-samples", "3", "--epochs", "1", "--out",
               str(tmp_path / "c"))[0] == 0


@pytest.mark.parametrize("flags,needle", [
    (["--model", "hvae", "--latent-dims", "8"], "two or more latent layers"),
    (["--model", "hvae"], "two or more latent layers"),
    (["--model", "hvae", "--latent-dims", "8,4", "--prior", "vamp", "--free-bits", "1"], "--prior normal"),
    (["--model", "hvae", "--latent-dims", "8,0"], "model.latent_dims"),
    (["--model", "ae", "--latent-dims", "8,4"], "applies only to --model hvae"),
])
def test_bad_hierarchies_are_refused(flags, needle, tmp_path):
    code, _, err = run("train", *flags, "--out", str(tmp_path / "r"), "--no-progress")
    assert code == 2 and needle in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "r").exists()


def test_latent_pictures_of_a_hierarchy_show_its_top_layer(tmp_path):
    from vaekit.figures import PLOTS, open_run
    from vaekit.models.hvae import TopLayer

    assert run("train", *HV, "--epochs", "1", "--out", str(tmp_path / "h"))[0] == 0
    view = open_run(tmp_path / "h")
    assert isinstance(view.surface, TopLayer) and view.surface_codes.shape[1] == 4
    with torch.no_grad():
        z = view.model.fill_from_top(torch.zeros(3, 4))
    assert z.shape == (3, 12) and torch.equal(z[:, 8:], torch.zeros(3, 4))
    for name in ("latent-scatter", "latent-grid", "traversals", "samples"):
        assert PLOTS[name](view) is not None
    assert "top-down prior" in PLOTS["samples"](view).axes[0].get_title() or \
        "top-down prior" in PLOTS["samples"](view)._suptitle.get_text()


def test_a_vampprior_on_the_top_layer(tmp_path):
    """The hierarchy's p(z_L) as a VampPrior over its top layer's posteriors: trains, resumes,
    evaluates (total KL, no per-dimension KL), samples; its top prior integrates to 1 in 2-D."""
    torch.manual_seed(0)
    model = build_model(ModelConfig(kind="hvae", latent_dims=[3, 2], block_width=6, hidden=[5], prior="vamp",
                                    pseudo_inputs=4, likelihood="gaussian"), (4,))
    axis = torch.linspace(-12, 12, 401)
    grid = torch.cartesian_prod(axis, axis)
    with torch.no_grad():
        density = model.top_prior.log_prob(grid, model).exp()
    assert float(density.sum()) * float(axis[1] - axis[0]) ** 2 == pytest.approx(1.0, abs=2e-3)
    flags = [*HV, "--prior", "vamp", "--pseudo-inputs", "10"]
    assert run("train", *flags, "--epochs", "2", "--out", str(tmp_path / "v"))[0] == 0
    assert run("train", "--resume", str(tmp_path / "v"), "--epochs", "3", "--no-progress")[0] == 0
    code, out, err = run("evaluate", str(tmp_path / "v"), "--json", "--iwae-k", "10")
    m = json.loads(out)
    assert code == 0 and "kl_per_dim" not in m and m["kl"] > 0 and m["nll_iwae"] <= m["loss"] + 1e-6
    assert run("sample", str(tmp_path / "v"), "-n", "4", "-o", str(tmp_path / "s.npy"))[0] == 0


def test_the_kl_is_taken_at_the_sample_it_is_asked_about():
    model = linear_gaussian_hvae()
    x = torch.tensor([[0.3, -0.8, 1.1]], dtype=torch.float64)
    gen = torch.Generator().manual_seed(4)
    with torch.no_grad():
        q = model.posterior(x)
        first, second = q.rsample(gen), q.rsample(gen)
        at_first = model.kl(q, first)
        fresh = model.posterior(x)
        fresh._last = (first, fresh._params(first))
        assert torch.allclose(at_first, fresh.kl()) and not torch.allclose(model.kl(q, second), at_first)
