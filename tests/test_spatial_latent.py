"""Spatial latents (``--spatial-latent``): z is read as C x h x w maps, so each latent value describes
its own region. Tested through that locality (a linear head or stem would spread every value over the
whole image), the shapes, a trained CLI run downstream, and the refusals."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from conftest import run_cli
from test_colour import _photos
from vaekit.config import ModelConfig
from vaekit.errors import ConfigError
from vaekit.models import build_model


def _model(arch: str) -> torch.nn.Module:
    torch.manual_seed(0)
    if arch == "resnet":
        cfg = ModelConfig(arch="resnet", hidden=[8, 8], res_blocks=1, latent_dim=4 * 8 * 8, spatial_latent=True,
                          likelihood="dlogistic", mixtures=2)
    else:
        cfg = ModelConfig(arch="conv", hidden=[8, 8], latent_dim=2 * 8 * 8, spatial_latent=True,
                          likelihood="bernoulli")
    model = build_model(cfg, (3, 32, 32))
    for block in model.modules():  # residual blocks start as the identity; give them weight so they spread
        if isinstance(block, torch.nn.Conv2d) and not block.weight.abs().sum():
            torch.nn.init.normal_(block.weight, std=0.1)
    return model


@pytest.mark.parametrize("arch", ["resnet", "conv"])
def test_a_latent_value_changes_only_its_own_region(arch: str) -> None:
    model = _model(arch)
    c = model.latent_dim // 64
    z = torch.randn(1, model.latent_dim)
    moved = z.clone().view(1, c, 8, 8)
    moved[0, :, 0, 0] += 3.0  # the top-left position of every map
    out, out_moved = model.decode(z), model.decode(moved.view(1, -1))
    changed = (out - out_moved).abs().amax(dim=1)[0] > 0  # (32, 32): pixels whose parameters moved
    assert changed[:4, :4].all()
    assert not changed[24:, :].any() and not changed[:, 24:].any()  # receptive field: 22 pixels


@pytest.mark.parametrize("arch", ["resnet", "conv"])
def test_a_pixel_changes_only_nearby_latent_positions(arch: str) -> None:
    model = _model(arch)
    x = torch.rand(1, 3, 32, 32)
    x2 = x.clone()
    x2[0, :, 31, 31] = 1 - x2[0, :, 31, 31]  # bottom-right pixel
    (mu, logvar), (mu2, logvar2) = model.encode(x), model.encode(x2)
    c = model.latent_dim // 64
    moved = ((mu - mu2).abs() + (logvar - logvar2).abs()).view(c, 8, 8).amax(0) > 0
    assert moved[7, 7]
    assert not moved[:3, :].any() and not moved[:, :3].any()


def test_shapes_and_parameter_count_against_the_vector_latent() -> None:
    spatial = _model("resnet")
    flat = build_model(ModelConfig(arch="resnet", hidden=[8, 8], latent_dim=256, likelihood="dlogistic",
                                   mixtures=2), (3, 32, 32))
    x = torch.rand(2, 3, 32, 32)
    out, mu, _ = spatial(x)
    assert out.shape == (2, 20, 32, 32) and mu.shape == (2, 256)
    assert spatial.sample(3).shape == (3, 3, 32, 32)
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(spatial) < count(flat) / 2  # 3x3 convolutions in place of 2 x (512 x 256) + (256 x 512) linears


def test_a_latent_size_that_is_not_whole_maps_is_refused() -> None:
    with pytest.raises(ConfigError, match="multiple of 64, got 100"):
        build_model(ModelConfig(arch="resnet", hidden=[8, 8], latent_dim=100, spatial_latent=True,
                                likelihood="gaussian"), (3, 32, 32))


def test_a_spatial_run_trains_evaluates_resumes_and_samples(tmp_path: Path) -> None:
    _photos(tmp_path / "photos", n_train=8, n_test=4)
    common = ["--dataset", f"folder:{tmp_path / 'photos'}", "--arch", "resnet", "--hidden", "8,8",
              "--latent-dim", "32", "--spatial-latent", "--likelihood", "dlogistic", "--mixtures", "2",
              "--batch-size", "12", "--no-progress", "--out", str(tmp_path / "run")]
    code, _, err = run_cli("train", *common, "--epochs", "2")
    assert code == 0, err
    cfg = json.loads((tmp_path / "run" / "config.json").read_text())
    assert cfg["model"]["spatial_latent"] is True
    assert "latent size 32 (2 maps of 4x4: a spatial latent)" in (tmp_path / "run" / "README.md").read_text()
    code, _, err = run_cli("train", "--resume", str(tmp_path / "run"), "--epochs", "3", "--no-progress")
    assert code == 0, err
    code, out, err = run_cli("evaluate", str(tmp_path / "run"), "--iwae-k", "4", "--json")
    assert code == 0, err
    m = json.loads(out)
    assert m["latent_dim"] == 32 and 0 < m["bits_per_dim"] < 8
    assert run_cli("sample", str(tmp_path / "run"), "-n", "4", "-o", str(tmp_path / "s.png"))[0] == 0
