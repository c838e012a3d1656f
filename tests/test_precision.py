"""--precision and --compile on the CPU: lower-precision training learns, keeps the likelihood and the
KL in float32, saves the fp16 loss scale and resumes exactly (the compiled step: test_train)."""

from __future__ import annotations

import pytest
import torch

from vaekit.checkpoint import STATE, _read_tensors, read_history
from vaekit.config import ModelConfig
from vaekit.errors import ConfigError
from vaekit.models import build_model
from vaekit.precision import Precision
from vaekit.train import fit

QUIET = dict(progress=False, log=lambda s: None)


def _numbers(run):
    return [{k: v for k, v in r.items() if not k.endswith("seconds")} for r in read_history(run)]


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_lower_precision_learns_and_resumes_exactly(digits_cfg, tmp_path, precision):
    digits_cfg.train.precision = precision
    digits_cfg.train.grad_clip = 100.0
    digits_cfg.train.epochs = 4
    straight = fit(digits_cfg, tmp_path / "a", **QUIET)
    history = read_history(straight.path)
    assert history[-1]["test_loss"] < history[0]["test_loss"] and all(
        torch.isfinite(torch.tensor(r["train_loss"])) for r in history)
    digits_cfg.train.epochs = 2
    fit(digits_cfg, tmp_path / "b", **QUIET)
    tensors, _ = _read_tensors(tmp_path / "b" / STATE)
    assert ("rng.amp.scale" in tensors) == (precision == "fp16")
    resumed = fit(None, tmp_path / "b", resume=True, epochs=4, **QUIET)
    assert _numbers(straight.path) == _numbers(resumed.path)
    for (k, a), (_, b) in zip(straight.model.state_dict().items(), resumed.model.state_dict().items()):
        assert torch.equal(a, b), k


def test_autocast_leaves_the_likelihood_and_kl_in_float32():
    model = build_model(ModelConfig(hidden=[16], latent_dim=3), (1, 4, 4))
    x = torch.rand(5, 1, 4, 4)
    with Precision("bf16", torch.device("cpu")).autocast():
        mu, logvar = model.encode(x)
        out = model.decode(mu)
        assert model.encoder(x.flatten(1)).dtype == torch.bfloat16  # the network itself runs in bf16
    assert mu.dtype == logvar.dtype == out.dtype == torch.float32


def test_a_damaged_loss_scale_is_refused():
    from vaekit.errors import RunFolderError

    p = Precision("fp16", torch.device("cpu"))
    with pytest.raises(RunFolderError, match="loss-scaler state is malformed"):
        p.load_state({"amp.scale": torch.tensor([-1.0], dtype=torch.float64),
                      "amp.growth_tracker": torch.tensor([0])})
    with pytest.raises(ConfigError, match="unknown precision"):
        Precision("fp8", torch.device("cpu"))


def test_the_vampprior_density_is_not_lowered_by_autocast():
    """The mixture prior's density runs in float64 whatever autocast asks (bfloat16 would cost it its
    log-sum-exp over components): the same numbers inside and outside autocast."""
    from vaekit.models.priors import mixture_log_prob

    g = torch.Generator().manual_seed(0)
    z, mu, logvar = torch.randn(3, 7, 5, generator=g), torch.randn(11, 5, generator=g), torch.randn(11, 5, generator=g)
    plain = mixture_log_prob(z, mu, logvar)
    with Precision("bf16", torch.device("cpu")).autocast():
        lowered = mixture_log_prob(z, mu, logvar)
    assert lowered.dtype == torch.float32 and torch.equal(plain, lowered)


def test_bf16_trains_the_vampprior_on_the_iwae_bound_like_fp32_and_resumes_exactly(digits_cfg, tmp_path):
    """The configuration of the best NLL figure (VampPrior, IWAE K = 3) in bfloat16: it follows the
    float32 run closely and a stopped run resumes to the same numbers and weights."""
    digits_cfg.model.prior, digits_cfg.model.pseudo_inputs = "vamp", 10
    digits_cfg.objective.kind, digits_cfg.objective.iwae_samples = "iwae", 3
    digits_cfg.train.epochs = 4
    fp32 = read_history(fit(digits_cfg, tmp_path / "fp32", **QUIET).path)
    digits_cfg.train.precision = "bf16"
    straight = fit(digits_cfg, tmp_path / "a", **QUIET)
    bf16 = read_history(straight.path)
    assert bf16[-1]["test_loss"] < bf16[0]["test_loss"]
    assert bf16[-1]["test_loss"] == pytest.approx(fp32[-1]["test_loss"], rel=0.02)
    assert bf16[-1]["test_loss"] != fp32[-1]["test_loss"]  # the networks did run in bfloat16
    digits_cfg.train.epochs = 2
    fit(digits_cfg, tmp_path / "b", **QUIET)
    resumed = fit(None, tmp_path / "b", resume=True, epochs=4, **QUIET)
    assert _numbers(straight.path) == _numbers(resumed.path)
    for (k, a), (_, b) in zip(straight.model.state_dict().items(), resumed.model.state_dict().items()):
        assert torch.equal(a, b), k


@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
def test_a_precision_this_cpu_emulates_is_named_before_training(digits_cfg, tmp_path, precision):
    """Autocast to a type the CPU has no matrix instructions for is emulated and slow: training says
    so in one line (this machine's answer for each type comes from oneDNN, not from the test)."""
    from vaekit.precision import native

    digits_cfg.train.precision, digits_cfg.train.epochs = precision, 1
    lines: list[str] = []
    fit(digits_cfg, tmp_path / "run", progress=False, log=lines.append)
    notes = [line for line in lines if line.startswith("note: --precision")]
    emulated = precision != "fp32" and not native(precision)
    assert notes == ([f"note: --precision {precision}: this CPU has no {precision} matrix instructions, so they "
                      "are emulated and training will likely be slower than with --precision fp32"] if emulated else [])
