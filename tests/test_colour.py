"""Colour images through every command: a residual VAE with the discretised logistic likelihood on a
small RGB folder (train/ and test/ sub-folders) trains, evaluates in bits per dimension, and gives
colour samples, reconstructions, plots, a report, a probe and anomaly scores."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import run_cli

COLOURS = {"red": (220, 40, 30), "green": (30, 200, 60), "blue": (40, 60, 210)}


def _photos(root: Path, n_train: int = 24, n_test: int = 8) -> None:
    rng = np.random.default_rng(0)
    for split, n in (("train", n_train), ("test", n_test)):
        for name, rgb in COLOURS.items():
            (root / split / name).mkdir(parents=True)
            for i in range(n):
                img = np.clip(np.array(rgb) + rng.normal(0, 25, (16, 16, 3)), 0, 255).astype(np.uint8)
                img[4 + i % 8: 8 + i % 8, 4:12] = 255  # a bar that moves
                Image.fromarray(img).save(root / split / name / f"{i}.png")


@pytest.fixture(scope="module")
def colour_run(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("colour")
    _photos(root / "photos")
    code, out, err = run_cli("train", "--dataset", f"folder:{root / 'photos'}", "--arch", "resnet", "--hidden", "8,16",
                             "--latent-dim", "4", "--likelihood", "dlogistic", "--mixtures", "3", "--epochs", "25",
                             "--batch-size", "24", "--lr", "1e-2", "--out", str(root / "run"), "--no-progress")
    assert code == 0, err
    return root / "run"


def _rgb_png(path: Path) -> None:
    """The picture shows colour: many pixels whose channels differ (a grey rendering has none)."""
    with Image.open(path) as im:
        arr = np.asarray(im.convert("RGB")).astype(int)
    spread = arr.max(-1) - arr.min(-1)
    assert (spread > 60).mean() > 0.01, f"{path} shows no colour"


def test_evaluate_reports_bits_per_dimension_of_the_256_levels(colour_run: Path) -> None:
    code, out, err = run_cli("evaluate", str(colour_run), "--iwae-k", "8", "--json")
    assert code == 0, err
    m = json.loads(out)
    assert m["n"] == 24 and m["units"] == "nats"
    assert m["bits_per_dim"] == pytest.approx(m["nll_iwae"] / (3 * 16 * 16 * np.log(2)))
    assert m["elbo_bits_per_dim"] >= m["bits_per_dim"] - 1e-6
    assert 0 < m["bits_per_dim"] < 8


def test_samples_reconstructions_and_plots_are_in_colour(colour_run: Path, tmp_path: Path) -> None:
    assert run_cli("sample", str(colour_run), "-n", "16", "-o", str(tmp_path / "s.png"))[0] == 0
    _rgb_png(tmp_path / "s.png")
    assert run_cli("reconstruct", str(colour_run), "-n", "8", "-o", str(tmp_path / "r.png"))[0] == 0
    _rgb_png(tmp_path / "r.png")
    assert run_cli("reconstruct", str(colour_run), "-n", "8", "-o", str(tmp_path / "r.npy"))[0] == 0
    assert np.load(tmp_path / "r.npy").shape == (2, 8, 3, 16, 16)
    code, out, err = run_cli("report", str(colour_run), "--iwae-k", "4")  # draws every plot, as `plot` does
    assert code == 0, err
    for name in ("samples", "reconstructions", "interpolation", "traversals", "latent-grid"):
        _rgb_png(colour_run / "plots" / f"{name}.png")
    page = (colour_run / "report.html").read_text()
    assert "bits per dimension" in page


def test_probe_and_anomaly_work_on_colour(colour_run: Path, tmp_path: Path) -> None:
    code, out, err = run_cli("probe", str(colour_run), "--json", "-o", str(tmp_path / "cm.png"))
    assert code == 0, err
    assert json.loads(out)["linear_accuracy"] > 0.5  # the colours are far apart
    root = colour_run.parent / "photos"
    code, out, err = run_cli("anomaly", "--dataset", f"folder:{root}", "--arch", "resnet", "--hidden", "8,16",
                             "--latent-dim", "4", "--likelihood", "dlogistic", "--holdout-class", "2", "--epochs", "2",
                             "--batch-size", "16", "--out", str(tmp_path / "anom"), "--no-progress", "--json")
    assert code == 0, err
    result = json.loads(out.strip().splitlines()[-1])
    assert result["n_anomalous"] == 8 and 0 <= result["auroc"] <= 1


def test_the_colour_model_exports_to_onnx_and_explores_in_colour(colour_run: Path, tmp_path: Path) -> None:
    """The residual net and the logistic mixture's mean through ONNX, and the explorer's RGB pictures."""
    import base64
    import io

    import torch

    from vaekit.checkpoint import load_run
    from vaekit.explore import Explorer

    ort = pytest.importorskip("onnxruntime", reason="the onnx extra is not installed")
    code, _, err = run_cli("export", str(colour_run), "--out", str(tmp_path / "onnx"))
    assert code == 0, err
    model = load_run(colour_run).model
    x = torch.rand(3, *model.data_shape)
    mu, logvar = model.encode(x)
    enc = ort.InferenceSession(str(tmp_path / "onnx" / "encoder.onnx")).run(None, {"x": x.numpy()})
    np.testing.assert_allclose(enc[0], mu.detach().numpy(), rtol=1e-5, atol=1e-5)
    z = torch.randn(3, model.latent_dim)
    params, mean = ort.InferenceSession(str(tmp_path / "onnx" / "decoder.onnx")).run(None, {"z": z.numpy()})
    with torch.no_grad():
        np.testing.assert_allclose(params, model.decode(z).numpy(), rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(mean, model.mean(model.decode(z)).numpy(), rtol=1e-5, atol=1e-5)
    e = Explorer(colour_run)
    png = e.example(0)["decoded"]["png"].split(",", 1)[1]
    with Image.open(io.BytesIO(base64.b64decode(png))) as im:
        assert im.mode == "RGB" and im.size == (16, 16)
