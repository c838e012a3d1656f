"""Models: build, shared VAE/AE interface, save/load round trip, a train step changes weights,
an eval step does not (Pythae's test categories)."""

from __future__ import annotations

import pytest
import torch

from vaekit.checkpoint import load_run, save_checkpoint, save_config
from vaekit.config import ModelConfig, RunConfig
from vaekit.errors import ConfigError
from vaekit.models import AE, VAE, build_model
from vaekit.objectives import elbo_parts, loss_from_parts

CASES = [
    ("vae", "mlp", (1, 28, 28), [32, 16]),
    ("ae", "mlp", (1, 28, 28), [32]),
    ("vae", "conv", (1, 28, 28), [16, 32]),
    ("ae", "conv", (1, 28, 28), [16, 32]),
    ("vae", "conv", (3, 32, 32), [8, 16, 32]),
    ("vae", "mlp", (768,), [64, 64]),
]


@pytest.mark.parametrize("kind,arch,shape,hidden", CASES)
def test_build_and_interface(kind, arch, shape, hidden):
    lik = "mse" if len(shape) == 1 else "bernoulli"
    model = build_model(ModelConfig(kind=kind, arch=arch, hidden=hidden, latent_dim=3, likelihood=lik), shape)
    assert isinstance(model, VAE if kind == "vae" else AE)
    x = torch.rand(5, *shape)
    mu, logvar = model.encode(x)
    assert mu.shape == (5, 3)
    assert (logvar is None) == (kind == "ae")
    out, mu2, logvar2 = model(x)
    assert out.shape == x.shape and torch.equal(mu, mu2)
    z = model.reparameterize(mu, logvar)
    assert z.shape == (5, 3)
    if kind == "ae":
        assert torch.equal(z, mu)
    assert model.decode(z).shape == x.shape
    assert model.sample(4).shape == (4, *shape)
    recon, kl = elbo_parts(model, x)
    assert recon.shape == kl.shape == (5,)


MISFITS = [  # (what is handed over, the words of the refusal)
    (lambda m, x, z: m.encode(x.numpy()), "x: a ndarray; give a torch tensor"),
    (lambda m, x, z: m.encode(x[0]), "add the batch axis: x[None]"),
    (lambda m, x, z: m.posterior(x[..., :-1]), "this model takes (N, "),
    (lambda m, x, z: m(x[:, None]), "this model takes (N, "),
    (lambda m, x, z: m.reconstruct((x * 255).to(torch.uint8)), "x holds uint8: give floats as the model was trained on them (8-bit images: x.float() / 255)"),
    (lambda m, x, z: m.decode(z[:, :-1]), "z of shape (5, 2): this model takes (N, 3)"),
    (lambda m, x, z: m.encode(x.double()), "x holds float64, the model's weights float32: give x.to(torch.float32)"),
    (lambda m, x, z: m.decode(z.tolist()), "z: a list"),
    (lambda m, x, z: m.sample(-1), "sample: n = -1"),
]


@pytest.mark.parametrize("cfg", [ModelConfig(hidden=[16], latent_dim=3), ModelConfig(kind="ae", hidden=[16], latent_dim=3),
                                 ModelConfig(arch="conv", hidden=[8, 16], latent_dim=3),
                                 ModelConfig(kind="hvae", hidden=[16], latent_dims=[2, 1])],
                         ids=["vae", "ae", "conv", "hvae"])
@pytest.mark.parametrize("call,words", MISFITS)
def test_a_tensor_that_does_not_fit_the_model_is_refused_by_name_before_torch_fails_inside(cfg, call, words):
    """Every family's methods name what they were given and what they take (an InputError, a ValueError
    too), where torch said "mat1 and mat2 shapes cannot be multiplied" from inside a layer."""
    from vaekit.errors import InputError

    model = build_model(cfg, (1, 8, 8))
    x, z = torch.rand(5, 1, 8, 8), torch.randn(5, 3)
    with pytest.raises(InputError) as e:
        call(model, x, z)
    assert words in str(e.value) and isinstance(e.value, ValueError)


def test_a_conditional_model_names_labels_that_are_not_a_tensor():
    from vaekit.errors import InputError

    model = build_model(ModelConfig(hidden=[16], latent_dim=3, conditional=True, classes=4), (6,))
    with pytest.raises(InputError, match="y: a list; give a torch tensor of class numbers"):
        model.encode(torch.rand(2, 6), [0, 1])
    assert model.encode(torch.rand(2, 6), torch.tensor([0, 3]))[0].shape == (2, 3)


def test_seed001_conv_shapes_and_parameter_count():
    vae = build_model(ModelConfig(arch="conv", hidden=[16, 32], latent_dim=2, likelihood="mse",
                                  output="sigmoid"), (1, 28, 28))
    ae = build_model(ModelConfig(kind="ae", arch="conv", hidden=[16, 32], latent_dim=2, likelihood="mse",
                                 output="sigmoid"), (1, 28, 28))
    conv = 16 * 9 + 16 + 32 * 16 * 9 + 32
    dec = 2 * 1568 + 1568 + 32 * 16 * 9 + 16 + 16 * 9 + 1
    assert sum(p.numel() for p in ae.parameters()) == conv + (1568 * 2 + 2) + dec
    assert sum(p.numel() for p in vae.parameters()) == conv + 2 * (1568 * 2 + 2) + dec
    assert isinstance(vae.decoder[-1], torch.nn.Sigmoid)


def test_seed003_parameter_count():
    model = build_model(ModelConfig(hidden=[400, 400], latent_dim=20), (1, 28, 28))
    enc = 784 * 400 + 400 + 400 * 400 + 400 + 2 * (400 * 20 + 20)
    dec = 20 * 400 + 400 + 400 * 400 + 400 + 400 * 784 + 784
    assert sum(p.numel() for p in model.parameters()) == enc + dec


def test_conv_needs_divisible_image_sides_and_images():
    with pytest.raises(ConfigError, match="divisible by 4"):
        build_model(ModelConfig(arch="conv", hidden=[16, 32]), (1, 30, 30))
    with pytest.raises(ConfigError, match="needs image data"):
        build_model(ModelConfig(arch="conv", hidden=[16, 32], likelihood="mse"), (768,))
    with pytest.raises(ConfigError, match="unknown model kind"):
        build_model(ModelConfig(kind="gan"), (4,))


@pytest.mark.parametrize("kind", ["vae", "ae"])
def test_train_step_changes_weights_eval_step_does_not(kind):
    torch.manual_seed(0)
    model = build_model(ModelConfig(kind=kind, hidden=[16], latent_dim=2), (1, 8, 8))
    x = torch.rand(16, 1, 8, 8)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.eval()
    with torch.no_grad():
        elbo_parts(model, x)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    loss = loss_from_parts(*elbo_parts(model, x), beta=1.0)
    loss.backward()
    opt.step()
    changed = [k for k, v in model.state_dict().items() if not torch.equal(before[k], v)]
    assert set(changed) == {k for k, _ in model.named_parameters()}


def test_save_load_round_trip(tmp_path):
    cfg = RunConfig(model=ModelConfig(hidden=[16], latent_dim=3, likelihood="gaussian", learn_sigma=True))
    torch.manual_seed(0)
    model = build_model(cfg.model, (1, 8, 8))
    with torch.no_grad():
        model.likelihood.log_sigma.fill_(-1.5)
    opt = torch.optim.Adam(model.parameters())
    save_config(tmp_path, cfg)
    save_checkpoint(tmp_path, model, opt, 7, {"torch": torch.get_rng_state()})
    run = load_run(tmp_path)
    assert run.epoch == 7 and run.data_shape == (1, 8, 8) and run.config == cfg
    for (k, a), (k2, b) in zip(model.state_dict().items(), run.model.state_dict().items()):
        assert k == k2 and torch.equal(a, b)
    x = torch.rand(3, 1, 8, 8)
    assert torch.equal(model.reconstruct(x), run.model.reconstruct(x))
    assert not run.model.training
