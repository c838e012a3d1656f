"""The ex-post Gaussian mixture sampler: its density against scikit-learn's, a round trip through the
run folder without pickle, refusal of damaged files, and that it gives an AE usable samples."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import run_cli as run
from vaekit.checkpoint import load_run
from vaekit.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from vaekit.samplers import GMM_FILE, GaussianMixture, fit_gmm, gmm_for_run, sample_codes
from vaekit.train import fit

QUIET = dict(progress=False, log=lambda s: None)


@pytest.fixture(scope="module")
def ae_run(tmp_path_factory):
    cfg = RunConfig(seed=3, data=DataConfig(dataset="digits", test_fraction=0.2),
                    model=ModelConfig(kind="ae", hidden=[128, 64], latent_dim=6, likelihood="bernoulli"),
                    train=TrainConfig(epochs=30, batch_size=64, lr=3e-3))
    return fit(cfg, tmp_path_factory.mktemp("gmm") / "ae", **QUIET).path


def test_the_mixture_density_matches_scikit_learn_and_its_samples_follow_it():
    from sklearn.mixture import GaussianMixture as SkGMM

    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal([0, 0, 0], 0.3, (400, 3)), rng.normal([3, -2, 1], [1.0, 0.2, 0.5], (600, 3))])
    gmm = fit_gmm(torch.from_numpy(x), components=2, seed=1)
    sk = SkGMM(2, covariance_type="full", reg_covar=1e-6, max_iter=300, random_state=1).fit(x)
    np.testing.assert_allclose(gmm.log_prob(torch.from_numpy(x[:50])).numpy(), sk.score_samples(x[:50]), rtol=1e-8)
    z = gmm.sample(20000, torch.Generator().manual_seed(0)).double()
    np.testing.assert_allclose(z.mean(0).numpy(), x.mean(0), atol=0.06)
    np.testing.assert_allclose(np.cov(z.numpy().T), np.cov(x.T), atol=0.08)
    assert torch.equal(gmm.sample(5, torch.Generator().manual_seed(3)), gmm.sample(5, torch.Generator().manual_seed(3)))


def test_the_fitted_mixture_round_trips_through_the_run_folder_without_pickle(ae_run):
    gmm = gmm_for_run(ae_run, components=4, log=lambda s: None)
    raw = (ae_run / GMM_FILE).read_bytes()
    header = raw[8: 8 + int.from_bytes(raw[:8], "little")]
    assert b"vaekit-gmm-sampler" in header and b"\x80\x04\x95" not in raw  # safetensors + JSON, no pickle stream
    again = GaussianMixture.load(ae_run / GMM_FILE, 6)
    for a, b in [(gmm.weights, again.weights), (gmm.means, again.means), (gmm.chol, again.chol)]:
        assert torch.equal(a, b)
    assert gmm_for_run(ae_run, components=4, log=lambda s: 1 / 0).info == gmm.info  # read, not refitted
    code, out, err = run("sample", str(ae_run), "-n", "16", "--sampler", "gmm", "--components", "4",
                         "-o", str(ae_run.parent / "a.npy"))
    code2, _, _ = run("sample", str(ae_run), "-n", "16", "--sampler", "gmm", "--components", "4",
                      "-o", str(ae_run.parent / "b.npy"))
    assert code == code2 == 0 and "gmm" in out, err
    assert np.array_equal(np.load(ae_run.parent / "a.npy"), np.load(ae_run.parent / "b.npy"))


def test_gmm_samples_of_an_autoencoder_look_like_the_data_and_prior_ones_do_not(ae_run):
    """Seed 001's point, measured: an AE's codes do not fill N(0, I), so its prior samples lie far from
    every real digit, while draws from the mixture fitted to its codes lie near them."""
    from vaekit.data import load_dataset

    run_ = load_run(ae_run)
    model = run_.model
    data = load_dataset(run_.config.data, progress=False)
    test = data.features(data.test_x).reshape(len(data.test_x), -1)
    gmm = gmm_for_run(ae_run, components=4, log=lambda s: None)

    def distance(sampler: str) -> float:
        gen = torch.Generator().manual_seed(0)
        with torch.no_grad():
            x = model.mean(model.decode(sample_codes(model, 300, sampler, gen, gmm))).reshape(300, -1)
        return float(torch.cdist(x, test).min(1).values.median())

    near, far = distance("gmm"), distance("prior")
    assert near < 0.8 * far, (near, far)
    code, out, err = run("sample", str(ae_run), "-n", "4", "-o", str(ae_run.parent / "prior.npy"))
    assert code == 0 and "an AE has no prior" in out and "--sampler gmm" in out, err  # the command says so too


def test_a_damaged_or_foreign_mixture_file_is_one_line(ae_run, tmp_path):
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(ae_run, copy)
    gmm_for_run(copy, components=3, refit=True, log=lambda s: None)
    data = bytearray((copy / GMM_FILE).read_bytes())
    data[-40:] = b"\x7f" * 40  # NaN-ish bytes in the Cholesky factors
    (copy / GMM_FILE).write_bytes(bytes(data))
    code, _, err = run("sample", str(copy), "-n", "4", "--sampler", "gmm", "--components", "3",
                       "-o", str(tmp_path / "x.png"))
    assert code == 2 and GMM_FILE in err and len(err.strip().splitlines()) == 1
    (copy / GMM_FILE).write_bytes(b"\x00" * 3)
    code, _, err = run("sample", str(copy), "-n", "4", "--sampler", "gmm", "-o", str(tmp_path / "x.png"))
    assert code == 2 and GMM_FILE in err and not (tmp_path / "x.png").exists()


def test_a_hierarchy_samples_through_a_mixture_over_all_its_layers(tmp_path):
    cfg = RunConfig(seed=1, data=DataConfig(dataset="digits", test_fraction=0.2),
                    model=ModelConfig(kind="hvae", hidden=[32, 16], latent_dims=[5, 3], block_width=16),
                    train=TrainConfig(epochs=2, batch_size=64, lr=3e-3))
    path = fit(cfg, tmp_path / "h", **QUIET).path
    code, out, err = run("sample", str(path), "-n", "9", "--sampler", "gmm", "--components", "2",
                         "-o", str(tmp_path / "h.png"))
    assert code == 0, err
    assert GaussianMixture.load(path / GMM_FILE, 8).dim == 8  # the codes of both layers, 5 + 3


def test_fitting_a_mixture_per_class_shows_progress_on_a_terminal():
    """MNIST's eleven mixtures take about a minute: a bar counts them on a terminal, and nothing is
    drawn where stderr is no terminal or progress is off."""
    from conftest import on_a_terminal

    code = ("import torch; from vaekit.samplers import fit_gmm_by_class\n"
            "labels = torch.arange(3).repeat_interleave(40)\n"
            "codes = torch.randn(120, 2, generator=torch.Generator().manual_seed(0)) + 5 * labels[:, None]\n"
            "print(sorted(fit_gmm_by_class(codes, labels, components=2, progress={}).by_class))")
    shown = on_a_terminal(code.format(True), {})
    assert "fitting Gaussian mixtures:" in shown and "/4 [" in shown and "[0, 1, 2]" in shown, shown
    assert "fitting" not in on_a_terminal(code.format(False), {})


def test_a_mixture_per_class_draws_each_class_from_its_own_codes(tmp_path):
    """Three classes whose codes lie in separate places: a class's draws come from its own place, the
    pooled mixture's from all three, and the file keeps every class's mixture (a damaged one is refused)."""
    from vaekit.samplers import fit_gmm_by_class

    g = torch.Generator().manual_seed(0)
    centres = torch.tensor([[-6.0, 0.0], [0.0, 6.0], [6.0, 0.0]])
    labels = torch.arange(3).repeat_interleave(300)
    codes = centres[labels] + 0.5 * torch.randn(900, 2, generator=g)
    gmm = fit_gmm_by_class(codes, labels, components=2, seed=0)
    assert sorted(gmm.by_class) == [0, 1, 2]
    asked = torch.tensor([2, 0, 1]).repeat(200)
    z = gmm.sample(len(asked), torch.Generator().manual_seed(1), asked)
    nearest = torch.cdist(z, centres).argmin(1)
    assert torch.equal(nearest, asked)
    pooled = gmm.sample(3000, torch.Generator().manual_seed(1))
    assert torch.bincount(torch.cdist(pooled, centres).argmin(1), minlength=3).min() > 800

    gmm.write(tmp_path / GMM_FILE)
    again = GaussianMixture.load(tmp_path / GMM_FILE, 2)
    assert sorted(again.by_class) == [0, 1, 2]
    for c in range(3):
        assert torch.equal(again.by_class[c].means, gmm.by_class[c].means)
    assert torch.equal(again.sample(30, torch.Generator().manual_seed(5), asked[:30]),
                       gmm.sample(30, torch.Generator().manual_seed(5), asked[:30]))
    from safetensors.torch import load_file, save_file

    tensors = load_file(tmp_path / GMM_FILE)
    tensors["class1.weights"] = torch.tensor([0.5, 0.7], dtype=torch.float64)  # does not sum to 1
    meta = {"kind": "vaekit-gmm-sampler", "info": "{}"}
    save_file(tensors, tmp_path / "bad.safetensors", metadata=meta)
    with pytest.raises(Exception, match="damaged"):
        GaussianMixture.load(tmp_path / "bad.safetensors", 2)
    tensors = load_file(tmp_path / GMM_FILE)
    tensors["classX.weights"] = tensors.pop("class1.weights")
    save_file(tensors, tmp_path / "bad2.safetensors", metadata=meta)
    with pytest.raises(Exception, match="not a vaekit GMM sampler file"):
        GaussianMixture.load(tmp_path / "bad2.safetensors", 2)


def test_a_conditional_run_samples_each_class_from_its_own_mixture(tmp_path):
    cfg = RunConfig(seed=2, data=DataConfig(dataset="digits", test_fraction=0.2),
                    model=ModelConfig(hidden=[64], latent_dim=3, conditional=True),
                    train=TrainConfig(epochs=2, batch_size=64, lr=3e-3))
    path = fit(cfg, tmp_path / "c", **QUIET).path
    pooled = fit_gmm(torch.randn(100, 3), components=3)  # a mixture written before mixtures per class
    pooled.write(path / GMM_FILE)
    code, out, err = run("sample", str(path), "-n", "20", "--sampler", "gmm", "--components", "3",
                         "-o", str(tmp_path / "c.npy"))
    assert code == 0 and "per class" in out, err
    gmm = GaussianMixture.load(path / GMM_FILE, 3)
    assert sorted(gmm.by_class) == list(range(10))  # refitted: one mixture per class
    assert np.load(tmp_path / "c.npy").shape == (20, 1, 8, 8)  # 2 columns of 10 classes
    code, out, err = run("sample", str(path), "-n", "5", "--sampler", "gmm", "--components", "3", "--label", "7",
                         "-o", str(tmp_path / "seven.npy"))
    assert code == 0 and "class 7" in out, err
    model = load_run(path).model
    y = torch.full((6,), 4)
    a = sample_codes(model, 6, "gmm", torch.Generator().manual_seed(0), gmm, y)
    b = gmm.by_class[4].sample(6, torch.Generator().manual_seed(
        int(torch.randint(2**62, (1,), generator=torch.Generator().manual_seed(0)).item())))
    assert torch.equal(a, b)  # class 4's codes come from class 4's mixture


def test_a_mixture_fitted_before_more_training_is_fitted_again(tmp_path):
    from vaekit.samplers import saved_gmm

    cfg = RunConfig(seed=2, data=DataConfig(dataset="digits", test_fraction=0.2),
                    model=ModelConfig(kind="ae", hidden=[32], latent_dim=3), train=TrainConfig(epochs=1, batch_size=64))
    path = fit(cfg, tmp_path / "r", **QUIET).path
    first = gmm_for_run(path, components=2, log=lambda s: None)
    assert first.info["epoch"] == 1 and saved_gmm(path, load_run(path)) is not None
    fit(None, path, resume=True, epochs=2, **QUIET)
    assert saved_gmm(path, load_run(path)) is None  # the explorer does not offer a stale mixture
    lines = []
    again = gmm_for_run(path, components=2, log=lines.append)
    assert "fitted to the codes of epoch 1, the run is at epoch 2" in lines[0] and again.info["epoch"] == 2
    assert not torch.equal(first.means, again.means)
    assert GaussianMixture.load(path / GMM_FILE, 3).info["epoch"] == 2


def test_a_read_only_run_folder_still_samples_from_a_mixture(small_fs, tmp_path):
    """On a real tmpfs remounted read-only: the mixture is fitted, used and said not to be kept."""
    import subprocess

    fs = small_fs(24 << 20)
    cfg = RunConfig(seed=2, data=DataConfig(dataset="digits", test_fraction=0.2),
                    model=ModelConfig(kind="ae", hidden=[32], latent_dim=3), train=TrainConfig(epochs=1, batch_size=64))
    path = fit(cfg, fs / "r", **QUIET).path
    subprocess.run(["mount", "-o", "remount,ro", str(fs)], check=True)
    try:
        code, out, err = run("sample", str(path), "-n", "4", "--sampler", "gmm", "--components", "2",
                             "-o", str(tmp_path / "s.npy"))
    finally:
        subprocess.run(["mount", "-o", "remount,rw", str(fs)], check=True)
    assert code == 0 and "not kept" in out and "Read-only" in out, (out, err)
    assert np.load(tmp_path / "s.npy").shape == (4, 1, 8, 8) and not (path / GMM_FILE).exists()
