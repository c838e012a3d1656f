"""The conditional VAE (--conditional): the label reaches encoder and decoder in every command, the
bounds are on log p(x|y), bad combinations are one-line errors, resume stays exact, and on real
MNIST the samples of class C are classified as C by the feature net far above chance."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from conftest import run_cli as run
from vaekit.config import DataConfig, ModelConfig, ObjectiveConfig, RunConfig, TrainConfig
from vaekit.errors import ConfigError
from vaekit.models import build_model
from vaekit.objectives import iwae_log_px
from vaekit.train import fit

QUIET = dict(progress=False, log=lambda s: None)
DIGITS = DataConfig(dataset="digits", test_fraction=0.2)


def _cfg(epochs: int = 3, **model) -> RunConfig:
    return RunConfig(seed=5, data=DIGITS, model=ModelConfig(hidden=[64], latent_dim=4, conditional=True, **model),
                     train=TrainConfig(epochs=epochs, batch_size=64, lr=3e-3))


@pytest.fixture(scope="module")
def cvae(tmp_path_factory):
    return fit(_cfg(), tmp_path_factory.mktemp("cvae") / "run", **QUIET)


def test_the_label_reaches_the_decoder_and_the_encoder():
    model = build_model(ModelConfig(hidden=[16], latent_dim=3, conditional=True, classes=4), (1, 8, 8))
    z, x = torch.randn(4, 3), torch.rand(4, 1, 8, 8)
    with torch.no_grad():
        by_class = [model.decode(z, torch.full((4,), c)) for c in range(4)]
        assert all(not torch.allclose(by_class[0], other) for other in by_class[1:])
        assert not torch.allclose(model.encode(x, torch.zeros(4, dtype=torch.long))[0],
                                  model.encode(x, torch.ones(4, dtype=torch.long))[0])
        one_hot = torch.nn.functional.one_hot(torch.tensor([0, 1, 2, 3]), 4).float()
        assert torch.equal(model.decode(z, one_hot), model.decode(z, torch.arange(4)))  # class weights = labels
    with pytest.raises(ConfigError, match="conditional"):
        model.decode(z)
    with pytest.raises(ConfigError, match="one class number per row"):
        model.decode(z, torch.zeros(3, dtype=torch.long))
    plain = build_model(ModelConfig(hidden=[16], latent_dim=3), (1, 8, 8))
    with torch.no_grad():  # an unconditional model ignores labels
        assert torch.equal(plain.decode(z, torch.arange(4)), plain.decode(z))


@pytest.mark.parametrize("objective", [ObjectiveConfig(), ObjectiveConfig(kind="iwae", iwae_samples=3)])
def test_gradients_of_the_conditional_bounds_pass_a_finite_difference_check(objective):
    from conftest import objective_gradcheck

    torch.manual_seed(0)
    model = build_model(ModelConfig(hidden=[5], latent_dim=2, conditional=True, classes=3, likelihood="gaussian"),
                        (4,)).double()
    x, y = torch.randn(3, 4, dtype=torch.float64), torch.tensor([0, 2, 1])
    # fc_mu and the decoder's first layer hold the weights of the label's one-hot columns
    assert objective_gradcheck(model, x, objective, ["fc_mu.weight", "decoder.0.weight"], y=y)


def test_iwae_with_k_samples_gives_each_sample_its_own_label():
    torch.manual_seed(1)
    model = build_model(ModelConfig(hidden=[8], latent_dim=2, conditional=True, classes=3), (1, 8, 8))
    model.train(False)
    x, y = torch.rand(5, 1, 8, 8).round(), torch.tensor([0, 1, 2, 1, 0])
    with torch.no_grad():
        chunked = iwae_log_px(model, x, 12, torch.Generator().manual_seed(3), max_rows=10, y=y)
        one_by_one = torch.cat([iwae_log_px(model, x[i: i + 1], 12, torch.Generator().manual_seed(3), y=y[i: i + 1])
                                for i in range(5)])
        wrong = iwae_log_px(model, x, 12, torch.Generator().manual_seed(3), y=(y + 1) % 3)
    assert chunked.shape == (5,) and torch.isfinite(chunked).all()
    assert not torch.allclose(chunked, wrong)  # the label matters to the bound
    # the same bound, whatever the chunking; the noise differs, so agree within Monte Carlo error
    assert torch.allclose(chunked, one_by_one, atol=1.0)


def test_every_command_works_on_a_conditional_run(cvae, tmp_path):
    path = str(cvae.path)
    config = json.loads((cvae.path / "config.json").read_text())["model"]
    assert config["conditional"] is True and config["classes"] == 10  # counted from the data, saved
    code, out, err = run("evaluate", path, "--iwae-k", "20", "--json")
    assert code == 0, err
    metrics = json.loads(out)
    assert metrics["conditional_classes"] == 10 and metrics["nll_iwae"] <= metrics["loss"] + 0.5
    code, out, err = run("evaluate", path, "--iwae-k", "5")
    assert code == 0 and "log p(x | y)" in out, err
    code, out, err = run("sample", path, "-n", "20", "-o", str(tmp_path / "rows.npy"))
    assert code == 0 and "2 per class" in out, err
    assert np.load(tmp_path / "rows.npy").shape == (20, 1, 8, 8)
    code, out, err = run("sample", path, "-n", "6", "--label", "3", "-o", str(tmp_path / "three.png"))
    assert code == 0 and "class 3" in out, err
    for args in (["report", path, "--iwae-k", "5"], ["probe", path],  # report draws every plot
                 ["reconstruct", path, "-o", str(tmp_path / "rec.png")], ["sample", path, "--sampler", "gmm",
                 "--components", "3", "-o", str(tmp_path / "gmm.png")]):
        code, out, err = run(*args)
        assert code == 0, (args, err)
    assert (cvae.path / "plots" / "latent-grid.png").is_file() and (cvae.path / "report.html").is_file()


def test_anomaly_detection_runs_on_a_conditional_model(tmp_path):
    code, out, err = run("anomaly", "--dataset", "digits", "--conditional", "--holdout-class", "0", "--epochs", "2",
                         "--hidden", "32", "--latent-dim", "4", "--out", str(tmp_path / "a"), "--json", "--no-progress")
    assert code == 0, err
    result = json.loads(out.strip().splitlines()[-1])
    assert 0 <= result["auroc"] <= 1 and "held-out" in result["note"]


def test_labels_are_checked_before_anything_is_written(cvae, tmp_path):
    out = tmp_path / "s.png"
    code, _, err = run("sample", str(cvae.path), "--label", "10", "-o", str(out))
    assert code == 2 and "classes 0..9" in err and err.count("\n") == 1 and not out.exists()
    plain = fit(dataclasses.replace(_cfg(1), model=ModelConfig(hidden=[16], latent_dim=2)), tmp_path / "plain", **QUIET)
    code, _, err = run("sample", str(plain.path), "--label", "1", "-o", str(out))
    assert code == 2 and "not a conditional model" in err and not out.exists()


@pytest.mark.parametrize("flags,says", [
    (["--dataset", "vectors:{tmp}/v.npy", "--likelihood", "gaussian"], "no labels"),
    (["--model", "hvae", "--latent-dims", "4,2"], "model.conditional"),
    (["--prior", "vamp"], "needs --prior normal"),
    (["--set", "model.classes=3"], "has label 9"),
])
def test_bad_combinations_are_one_line_errors_and_write_nothing(flags, says, tmp_path):
    out = tmp_path / "run"
    np.save(tmp_path / "v.npy", np.random.default_rng(0).normal(size=(200, 5)).astype(np.float32))
    flags = [f.replace("{tmp}", str(tmp_path)) for f in flags]
    code, _, err = run("train", "--dataset", "digits", "--conditional", "--epochs", "1", "--out", str(out), *flags)
    assert code == 2 and says in err and err.count("\n") == 1, err
    assert not out.exists()


def test_a_conditional_run_resumes_exactly(tmp_path):
    straight = fit(_cfg(2), tmp_path / "straight", **QUIET)
    fit(_cfg(1), tmp_path / "resumed", **QUIET)
    resumed = fit(None, tmp_path / "resumed", resume=True, epochs=2, **QUIET)
    for a, b in zip(straight.model.parameters(), resumed.model.parameters()):
        assert torch.equal(a, b)


def test_the_explorer_decodes_a_chosen_class(cvae):
    pytest.importorskip("starlette", reason="the serve extra is not installed")
    from vaekit.explore import Explorer, RequestError

    e = Explorer(cvae.path)
    info = e.info()
    assert info["classes"] == 10 and 0 <= info["default_label"] < 10
    code = [0.0] * info["latent_dim"]
    assert e.decode(code, label=1)["png"] != e.decode(code, label=7)["png"]
    assert len(e.samples(4, 0, label=2)["samples"]) == 4 and len(e.interpolate(0, 1, 3)["steps"]) == 3
    with pytest.raises(RequestError, match="label"):
        e.decode(code, label=10)


@pytest.mark.slow
def test_label_conditioned_samples_are_classified_as_asked_on_mnist(mnist, tmp_path):
    """A short training on 10,000 real MNIST digits; the feature net (trained on the same examples)
    must call most samples of class C a C."""
    from vaekit.featurenet import feature_space

    data = dataclasses.replace(mnist, train_x=mnist.train_x[:10000], train_y=mnist.train_y[:10000],
                               test_x=mnist.test_x[:2000], test_y=mnist.test_y[:2000])  # a subset, for time
    cfg = RunConfig(seed=0, data=DataConfig(dataset="mnist", data_dir=str(tmp_path)),
                    model=ModelConfig(hidden=[256], latent_dim=4, conditional=True),
                    train=TrainConfig(epochs=6, batch_size=100, lr=2e-3))
    model = fit(cfg, tmp_path / "cvae", data=data, **QUIET).model
    space = feature_space(data, log=lambda s: None)
    assert space.test_accuracy > 0.95
    gen = torch.Generator().manual_seed(0)
    asked = torch.arange(10).repeat_interleave(50)
    with torch.no_grad():
        x = model.sample(len(asked), generator=gen, y=asked)
        predicted = space.classify(x).argmax(1)
    accuracy = float((predicted == asked).float().mean())
    assert accuracy > 0.6, accuracy  # chance: 0.1; measured 0.79 (a larger z takes longer to leave the class to y)
