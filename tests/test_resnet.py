"""The residual conv architecture: shapes for 32 and 64 px colour images, for the one-layer VAE and the
hierarchy alike, identity blocks at the start, batch independence, and clear refusals."""

from __future__ import annotations

import pytest
import torch

from vaekit.config import ModelConfig
from vaekit.errors import ConfigError
from vaekit.models import build_model
from vaekit.models.resnet import ResBlock


@pytest.mark.parametrize("size", [32, 64])
@pytest.mark.parametrize("kind", ["vae", "hvae"])
def test_shapes_for_colour_images(size: int, kind: str) -> None:
    extra = dict(latent_dims=[8, 4], block_width=16) if kind == "hvae" else {}
    cfg = ModelConfig(kind=kind, arch="resnet", hidden=[8, 16, 16], res_blocks=2, latent_dim=8,
                      likelihood="dlogistic", mixtures=2, **extra)
    model = build_model(cfg, (3, size, size))
    x = torch.rand(2, 3, size, size)
    out, _, _ = model(x)
    assert out.shape == (2, 20, size, size)
    assert model.reconstruct(x).shape == x.shape
    assert model.sample(3).shape == (3, 3, size, size)


def test_blocks_start_as_the_identity() -> None:
    block = ResBlock(4)
    x = torch.randn(2, 4, 5, 5)
    assert torch.equal(block(x), x)


def test_an_example_does_not_depend_on_its_batch() -> None:
    torch.manual_seed(0)
    model = build_model(ModelConfig(arch="resnet", hidden=[8, 8], latent_dim=4, likelihood="gaussian"), (3, 8, 8))
    x = torch.rand(6, 3, 8, 8)
    model.train()
    assert torch.allclose(model.decode(model.encode(x)[0])[:2], model.decode(model.encode(x[:2])[0]), atol=1e-6)


def test_a_train_step_changes_every_weight_tensor() -> None:
    torch.manual_seed(0)
    model = build_model(ModelConfig(arch="resnet", hidden=[8, 8], latent_dim=4, likelihood="dlogistic"), (3, 8, 8))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    x = torch.randint(0, 256, (4, 3, 8, 8)).float() / 255
    for _ in range(2):  # zero-initialised convolutions get a gradient only once the block's output moves
        out, mu, logvar = model(x)
        loss = model.likelihood.nll(out, x).mean() + 0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar).sum(-1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    unchanged = [k for k, v in model.state_dict().items() if torch.equal(v, before[k])]
    assert unchanged == []


@pytest.mark.parametrize("shape,match", [((3, 30, 30), "divisible by 4"), ((64,), "image data")])
def test_refusals(shape: tuple[int, ...], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        build_model(ModelConfig(arch="resnet", hidden=[8, 8], likelihood="gaussian"), shape)
