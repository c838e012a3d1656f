"""Objectives by name: the IWAE training bound and free bits, tested for what they claim
(K = 1 is the ELBO in expectation, the bound tightens with K, float64 gradients match finite
differences), and trained end to end with exact resume."""

from __future__ import annotations

import math

import pytest
import torch

from vaekit.config import DataConfig, ModelConfig, ObjectiveConfig, RunConfig, TrainConfig
from vaekit.models import build_model
from vaekit.objectives import elbo_objective, iwae_objective

QUIET = dict(progress=False, log=lambda s: None)


def tiny(double: bool = False):
    torch.manual_seed(0)
    model = build_model(ModelConfig(hidden=[16], latent_dim=3), (10,))
    x = (torch.rand(6, 10, generator=torch.Generator().manual_seed(1)) > 0.5).float()
    if double:
        model, x = model.double(), x.double()
    return model, x


def _mean_bound(model, x, k: int, draws: int, seed: int = 0) -> tuple[float, float]:
    gen = torch.Generator().manual_seed(seed)
    cfg = ObjectiveConfig(kind="iwae", iwae_samples=k)
    with torch.no_grad():
        values = torch.stack([-iwae_objective(model, x, 1.0, cfg, gen).loss for _ in range(draws)])
    return float(values.mean()), float(values.std() / math.sqrt(draws))


def test_iwae_with_one_sample_is_the_elbo_in_expectation():
    model, x = tiny()
    with torch.no_grad():
        q = model.posterior(x)
        gen = torch.Generator().manual_seed(3)
        recon = torch.stack([model.likelihood.nll(model.decode(q.rsample(gen)), x) for _ in range(4000)]).mean()
        elbo = -float((recon + q.kl().mean()) if recon.dim() == 0 else (recon.mean() + q.kl().mean()))
    mean, se = _mean_bound(model, x, 1, 4000)
    assert abs(mean - elbo) < 4 * se + 1e-3, (mean, elbo, se)


def test_the_bound_tightens_as_k_grows():
    model, x = tiny()
    b1, _ = _mean_bound(model, x, 1, 400)
    b5, _ = _mean_bound(model, x, 5, 400)
    b50, _ = _mean_bound(model, x, 50, 200)
    assert b1 < b5 < b50


@pytest.mark.parametrize("kind,extra", [("iwae", {"iwae_samples": 4}), ("elbo", {"free_bits": 0.3})])
def test_gradients_match_finite_differences_in_float64(kind, extra):
    from conftest import objective_gradcheck

    model, x = tiny(double=True)
    cfg = ObjectiveConfig(kind=kind, **extra)
    assert objective_gradcheck(model, x, cfg, ["fc_mu.weight", "fc_logvar.bias", "decoder.2.weight"])


def test_free_bits_floor_each_dimensions_kl():
    model, x = tiny()
    cfg = ObjectiveConfig(free_bits=5.0)  # far above any dimension's KL at initialisation
    step = elbo_objective(model, x, 1.0, cfg, torch.Generator().manual_seed(0))
    plain = elbo_objective(model, x, 1.0, ObjectiveConfig(), torch.Generator().manual_seed(0))
    assert torch.equal(step.recon, plain.recon) and torch.allclose(step.kl, plain.kl)
    assert float(step.loss.detach()) == pytest.approx(float(step.recon.mean().detach()) + 5.0 * 3, rel=1e-6)
    step.loss.backward()
    with_floor = model.fc_logvar.bias.grad.clone()
    model.zero_grad()
    elbo_objective(model, x, 1.0, cfg, torch.Generator().manual_seed(0)).recon.mean().backward()
    assert torch.allclose(with_floor, model.fc_logvar.bias.grad)  # below the floor the KL adds no gradient


def cfg(kind: str = "iwae", epochs: int = 4, gradient: str = "standard") -> RunConfig:
    return RunConfig(seed=4, data=DataConfig(dataset="digits", test_fraction=0.2, binarize="dynamic"),
                     model=ModelConfig(hidden=[32], latent_dim=4),
                     objective=ObjectiveConfig(kind=kind, iwae_samples=3, iwae_gradient=gradient, schedule="linear",
                                               warmup_epochs=2),
                     train=TrainConfig(epochs=epochs, batch_size=64, lr=2e-3))


@pytest.mark.parametrize("gradient", ["standard", "dreg"])
def test_an_iwae_run_trains_and_resumes_exactly(tmp_path, gradient):
    from vaekit.checkpoint import load_run, read_history
    from vaekit.train import fit

    straight = fit(cfg(epochs=4, gradient=gradient), tmp_path / "a", **QUIET)
    fit(cfg(epochs=2, gradient=gradient), tmp_path / "b", **QUIET)
    resumed = fit(None, tmp_path / "b", resume=True, epochs=4, **QUIET)
    strip = lambda h: [{k: v for k, v in r.items() if "seconds" not in k} for r in h]  # noqa: E731
    assert strip(read_history(straight.path)) == strip(read_history(resumed.path))
    for k, v in load_run(straight.path).model.state_dict().items():
        assert torch.equal(v, load_run(resumed.path).model.state_dict()[k]), k
    history = read_history(straight.path)
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    # trained on the tighter bound, its ELBO-based test loss is still a proper number
    assert all(math.isfinite(r["test_loss"]) for r in history)
