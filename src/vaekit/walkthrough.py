"""Seed 004 rebuilt with vaekit's own classes: every intermediate, the loss and all ten gradients.

Two weight sets are involved, and the seed mixes them:
- its forward values (mu ... loss) follow from the *printed* 4-decimal weights and the printed
  eps; in float64 they match the seed to 1e-8;
- its gradients come from the *unrounded* weights that ``torch.manual_seed(42)`` gives
  ``nn.Linear`` layers made in the order fc1, fc_mu, fc_logvar, fc_dec1, fc_dec2, with eps
  from the next ``torch.randn_like``. Building the ``tiny-4-8-2`` model after that seed gives
  exactly those weights; they round to the printed table, every printed forward number is then
  within 5e-4 and every gradient within 1e-4.
"""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

import torch

from .models import LatentModel, build_model
from .models.distributions import DiagonalGaussian, gaussian_noise
from .objectives import loss_from_parts
from .presets import get_preset

# vaekit parameter name -> the name seed 004 uses
SEED_NAMES = {
    "encoder.0": "fc1",
    "fc_mu": "fc_mu",
    "fc_logvar": "fc_logvar",
    "decoder.0": "fc_dec1",
    "decoder.2": "fc_dec2",
}
FORWARD_KEYS = ("hidden_pre", "hidden", "mu", "logvar", "var", "std", "z", "decoder_hidden_pre",
                "decoder_hidden", "recon_x", "mse", "kl", "loss")


def reference() -> dict[str, Any]:
    """The numbers seed 004 prints (weights, eps, forward values, gradients)."""
    return json.loads(resources.files("vaekit").joinpath("reference/seed004.json").read_text())


def seed_name(param: str) -> str:
    module, _, leaf = param.rpartition(".")
    return f"{SEED_NAMES[module]}.{leaf}"


def build_tiny(seed: int | None = 42, dtype: torch.dtype = torch.float32) -> LatentModel:
    """The tiny-4-8-2 preset's model, its weights drawn right after ``torch.manual_seed(seed)``."""
    if seed is not None:
        torch.manual_seed(seed)
    return build_model(get_preset("tiny-4-8-2").model, (4,)).to(dtype)


def load_printed_weights(model: LatentModel) -> None:
    """Overwrite the model's weights with the 4-decimal table seed 004 prints."""
    printed = reference()["weights"]
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(torch.tensor(printed[seed_name(name)], dtype=p.dtype))


def run_pass(model: LatentModel, x: torch.Tensor, eps: torch.Tensor | None = None) -> dict[str, Any]:
    """One forward and backward pass of seed 004, recording every intermediate (batch of one).

    Without ``eps`` the noise is the next ``torch.randn_like``, as in the seed.
    """
    captured: dict[str, torch.Tensor] = {}
    hooks = [
        model.encoder[0].register_forward_hook(lambda m, i, o: captured.__setitem__("hidden_pre", o)),
        model.decoder[0].register_forward_hook(lambda m, i, o: captured.__setitem__("decoder_hidden_pre", o)),
    ]
    try:
        model.zero_grad(set_to_none=True)
        mu, logvar = model.encode(x)
        q = DiagonalGaussian(mu, logvar)
        eps = gaussian_noise(q.std) if eps is None else eps.to(x.dtype).reshape(q.std.shape)
        z = q.rsample(noise=eps)
        recon_x = model.decode(z)
        mse = model.likelihood.nll(recon_x, x)
        kl = q.kl()
        loss = loss_from_parts(mse, kl, beta=1.0)
        loss.backward()
    finally:
        for h in hooks:
            h.remove()
    values = {
        "x": x, "hidden_pre": captured["hidden_pre"], "hidden": captured["hidden_pre"].relu(),
        "mu": mu, "logvar": logvar, "var": q.var, "std": q.std, "eps": eps, "z": z,
        "decoder_hidden_pre": captured["decoder_hidden_pre"],
        "decoder_hidden": captured["decoder_hidden_pre"].relu(), "recon_x": recon_x,
    }
    out: dict[str, Any] = {k: v.detach()[0].tolist() for k, v in values.items()}
    out.update(mse=float(mse.detach()[0]), kl=float(kl.detach()[0]), loss=float(loss.detach()))
    for name, p in model.named_parameters():
        out[f"grad.{seed_name(name)}"] = p.grad.tolist()
    for name, p in model.named_parameters():
        out[f"weight.{seed_name(name)}"] = p.detach().tolist()
    return out


def _max_diff(a: Any, b: Any) -> float:
    return float((torch.as_tensor(a, dtype=torch.float64) - torch.as_tensor(b, dtype=torch.float64)).abs().max())


def _round4(a: Any) -> torch.Tensor:
    return torch.as_tensor(a, dtype=torch.float64).mul(1e4).round().div(1e4)


def walkthrough() -> dict[str, Any]:
    """Seed 004 from the seed-42 weights, plus the checks that tie both weight sets to the seed."""
    ref = reference()
    x = torch.tensor([ref["x"]])
    result = run_pass(build_tiny(42), x)

    printed_model = build_tiny(None, torch.float64)
    load_printed_weights(printed_model)
    printed = run_pass(printed_model, x.double(), torch.tensor(ref["eps"]))

    rounding = max(_max_diff(_round4(result[f"weight.{k}"]), v) for k, v in ref["weights"].items())
    result["checks"] = {
        "weights_round_to_printed_table": rounding < 1e-9,
        "eps_rounds_to_printed": _max_diff(_round4(result["eps"]), ref["eps"]) < 1e-9,
        "max_abs_diff_forward_seed42_vs_seed": max(_max_diff(result[k], ref["forward"][k])
                                                   for k in FORWARD_KEYS),
        "max_abs_diff_gradients_seed42_vs_seed": max(_max_diff(result[f"grad.{k}"], v)
                                                     for k, v in ref["gradients"].items()),
        "max_abs_diff_forward_printed_weights_float64_vs_seed": max(_max_diff(printed[k], ref["forward"][k])
                                                                    for k in FORWARD_KEYS),
    }
    result["printed_weights_float64"] = {k: printed[k] for k in FORWARD_KEYS}
    result["sources"] = {
        "top level": "weights from torch.manual_seed(42) (unrounded), eps from the next torch.randn_like, "
                     "float32: the weight set behind the seed's gradients",
        "printed_weights_float64": "the seed's printed 4-decimal weights and printed eps, float64: "
                                   "the numbers behind the seed's forward values",
    }
    return result


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.8f}"
    if isinstance(v, list) and v and isinstance(v[0], list):
        return "\n      " + "\n      ".join(_fmt(r) for r in v)
    return "[" + ", ".join(f"{e:9.5f}" for e in v) + "]"


def format_walkthrough(w: dict[str, Any]) -> str:
    """A readable report: each value, the seed's number, and where it comes from."""
    ref = reference()
    lines = ["A 4-8-2-8-4 VAE worked through with vaekit (tiny-4-8-2 preset: summed squared error + KL)", "",
             "Weights: torch.manual_seed(42), layers made in the order fc1, fc_mu, fc_logvar, fc_dec1, fc_dec2."]
    for k in ref["weights"]:
        lines.append(f"  {k}: {_fmt(w['weight.' + k])}")
    lines += ["", f"x   = {_fmt(w['x'])}", f"eps = {_fmt(w['eps'])}   (the next torch.randn_like)", "",
              "Forward pass (seed-42 weights, float32)       | seed prints | same with printed weights, float64"]
    for k in FORWARD_KEYS:
        lines.append(f"  {k:<19} {_fmt(w[k])}")
        lines.append(f"  {'  seed':<19} {_fmt(ref['forward'][k])}")
        lines.append(f"  {'  printed, f64':<19} {_fmt(w['printed_weights_float64'][k])}")
    lines += ["", "Gradients of the loss (seed-42 weights)"]
    for k in ref["gradients"]:
        lines.append(f"  grad.{k}: {_fmt(w['grad.' + k])}")
    c = w["checks"]
    lines += [
        "", "Checks",
        f"  seed-42 weights round to the printed table:          {c['weights_round_to_printed_table']}",
        f"  seed-42 eps rounds to the printed eps:               {c['eps_rounds_to_printed']}",
        f"  forward values, seed-42 weights vs seed (max |diff|): {c['max_abs_diff_forward_seed42_vs_seed']:.2e}",
        f"  gradients, seed-42 weights vs seed (max |diff|):      {c['max_abs_diff_gradients_seed42_vs_seed']:.2e}",
        f"  forward values, printed weights in float64 vs seed:   "
        f"{c['max_abs_diff_forward_printed_weights_float64_vs_seed']:.2e}",
        "", "The seed's forward values come from its printed (rounded) weights; its gradients from the",
        "unrounded seed-42 weights. Both are reproduced above.",
    ]
    return "\n".join(lines)
