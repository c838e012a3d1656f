"""Generation metrics: FID against scipy's matrix square root, ~0 for a set against itself and large
against noise; precision and recall moving the right way on constructed cases; the feature net
trained once per data set, cached, and accurate enough to trust."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from conftest import run_cli as run
from vaekit.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from vaekit.data import load_dataset
from vaekit.generation import frechet_distance, generation_metrics, precision_recall
from vaekit.train import fit


def test_frechet_distance_matches_the_textbook_formula():
    from scipy import linalg

    g = torch.Generator().manual_seed(0)
    a = torch.randn(500, 6, generator=g, dtype=torch.float64) @ torch.randn(6, 6, generator=g, dtype=torch.float64)
    b = torch.randn(400, 6, generator=g, dtype=torch.float64) * 2 + 1
    mu_a, mu_b, s_a, s_b = a.mean(0).numpy(), b.mean(0).numpy(), np.cov(a.T.numpy()), np.cov(b.T.numpy())
    want = ((mu_a - mu_b) ** 2).sum() + np.trace(s_a + s_b - 2 * linalg.sqrtm(s_a @ s_b).real)
    assert frechet_distance(a, b) == pytest.approx(want, rel=1e-6)
    assert abs(frechet_distance(a, a)) < 1e-6


def test_precision_and_recall_separate_fidelity_from_coverage():
    g = torch.Generator().manual_seed(1)
    real = torch.randn(2000, 4, generator=g)
    dropped = real[real[:, 0] > 0.5][:600] + 0.01 * torch.randn(600, 4, generator=g)  # faithful, but one region only
    spread = torch.randn(2000, 4, generator=g) * 3  # covers everything, mostly off the data
    p_same, r_same = precision_recall(real[:1000], real[1000:])
    p_drop, r_drop = precision_recall(real, dropped)
    p_wide, r_wide = precision_recall(real, spread)
    assert p_same > 0.85 and r_same > 0.85
    assert p_drop > 0.9 and r_drop < 0.5  # mode dropping: precision stays, recall falls
    assert p_wide < 0.5 and r_wide > 0.9  # too diffuse: recall stays, precision falls


@pytest.fixture(scope="module")
def digits():
    return load_dataset(DataConfig(dataset="digits", test_fraction=0.2), progress=False)


def test_the_test_set_against_itself_scores_perfectly_and_noise_badly(digits):
    lines: list[str] = []
    own = generation_metrics(digits.features(digits.test_x), digits, log=lines.append)
    assert any("training the feature net" in line for line in lines)
    assert own["feature_net_accuracy"] > 0.85  # a feature space worth measuring in
    assert abs(own["fid"]) < 1e-6 and own["precision"] == 1.0 and own["recall"] == 1.0
    noise = torch.rand(len(digits.test_x), *digits.shape, generator=torch.Generator().manual_seed(0))
    lines.clear()
    bad = generation_metrics(noise, digits, log=lines.append)
    assert not any("training" in line for line in lines)  # the cached net
    assert bad["fid"] > 100 * max(own["fid"], 1e-3) and bad["fid"] > 10 and bad["precision"] < 0.2


def test_evaluate_generation_compares_samplers_and_is_saved(tmp_path):
    cfg = RunConfig(seed=2, data=DataConfig(dataset="digits", test_fraction=0.2),
                    model=ModelConfig(hidden=[128], latent_dim=8), train=TrainConfig(epochs=15, batch_size=64, lr=3e-3))
    path = fit(cfg, tmp_path / "vae", progress=False, log=lambda s: None).path
    results = {}
    for sampler in ("prior", "gmm"):
        mixture = ["--components", "5"] if sampler == "gmm" else []  # a flag that does nothing is refused
        code, out, err = run("evaluate", str(path), "--iwae-k", "0", "--generation", "--generation-n", "300",
                             "--sampler", sampler, *mixture, "--json")
        assert code == 0, err
        results[sampler] = json.loads(out)
        assert results[sampler]["generation_sampler"] == sampler and results[sampler]["generation_n"] == 300
    for m in results.values():
        assert m["fid"] > 0 and 0 <= m["precision"] <= 1 and 0 <= m["recall"] <= 1
    saved = json.loads((path / "metrics.json").read_text())
    assert saved["fid"] == results["gmm"]["fid"] and "| fid |" in (path / "README.md").read_text()


def test_vectors_are_measured_on_their_raw_values(tmp_path):
    vectors = tmp_path / "emb.npy"
    rng = np.random.default_rng(0)
    np.save(vectors, np.concatenate([rng.normal(-2, 0.5, (300, 5)), rng.normal(2, 0.5, (300, 5))]).astype(np.float32))
    cfg = RunConfig(seed=1, data=DataConfig(dataset=f"vectors:{vectors}"),
                    model=ModelConfig(hidden=[32], latent_dim=2, likelihood="gaussian", learn_sigma=True),
                    train=TrainConfig(epochs=20, batch_size=50, lr=3e-3))
    path = fit(cfg, tmp_path / "v", progress=False, log=lambda s: None).path
    code, out, err = run("evaluate", str(path), "--iwae-k", "0", "--generation", "--json")
    assert code == 0, err
    m = json.loads(out)
    assert m["feature_space"] == "the raw vectors" and m["feature_net_accuracy"] is None
    assert m["generation_n"] == m["n"] and m["fid"] < 5 and 0 <= m["precision"] <= 1  # a 2-blob set a VAE fits well
