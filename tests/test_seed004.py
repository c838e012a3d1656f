"""Seed 004 reproduced by the library's own classes, with both weight sets the seed mixes."""

from __future__ import annotations

import json

import torch
from torch import nn

from vaekit.cli import main
from vaekit.walkthrough import (FORWARD_KEYS, build_tiny, load_printed_weights, reference, run_pass,
                                seed_name, walkthrough)

REF = reference()


def _diff(a, b) -> float:
    return float((torch.as_tensor(a, dtype=torch.float64) - torch.as_tensor(b, dtype=torch.float64)).abs().max())


def test_printed_weights_float64_forward_matches_to_1e8():
    model = build_tiny(None, torch.float64)
    load_printed_weights(model)
    out = run_pass(model, torch.tensor([REF["x"]], dtype=torch.float64), torch.tensor(REF["eps"]))
    for key in FORWARD_KEYS:
        assert _diff(out[key], REF["forward"][key]) < 1e-8, key
    assert abs(out["loss"] - 31.510481828534605) < 1e-8


def test_seed42_weights_gradients_within_1e4_and_values_within_5e4():
    out = run_pass(build_tiny(42), torch.tensor([REF["x"]]))
    assert len([k for k in out if k.startswith("grad.")]) == 10
    for name, expected in REF["gradients"].items():
        assert _diff(out[f"grad.{name}"], expected) < 1e-4, name
    for key in FORWARD_KEYS:
        assert _diff(out[key], REF["forward"][key]) < 5e-4, key
    assert _diff(out["eps"], REF["eps"]) < 5e-5
    for name, printed in REF["weights"].items():
        assert _diff(out[f"weight.{name}"], printed) <= 5e-5 + 1e-7, name


def test_seeded_build_equals_hand_made_layers_in_seed_order():
    torch.manual_seed(42)
    layers = {"fc1": nn.Linear(4, 8), "fc_mu": nn.Linear(8, 2), "fc_logvar": nn.Linear(8, 2),
              "fc_dec1": nn.Linear(2, 8), "fc_dec2": nn.Linear(8, 4)}
    eps = torch.randn(1, 2)
    model = build_tiny(42)
    for name, p in model.named_parameters():
        layer, leaf = seed_name(name).split(".")
        assert torch.equal(p, getattr(layers[layer], leaf)), name
    out = run_pass(model, torch.tensor([REF["x"]]))
    assert torch.equal(torch.tensor(out["eps"]), eps[0])


def test_gradients_match_finite_differences():
    """The library's gradients are the true derivative of its loss (float64 central differences)."""
    model = build_tiny(None, torch.float64)
    load_printed_weights(model)
    x, eps = torch.tensor([REF["x"]], dtype=torch.float64), torch.tensor(REF["eps"])
    grads = run_pass(model, x, eps)
    p = model.fc_logvar.weight
    for idx in [(0, 0), (1, 4)]:
        losses = []
        for step in (1e-6, -2e-6, 1e-6):
            with torch.no_grad():
                p[idx] += step
            losses.append(run_pass(model, x, eps)["loss"])
        up, down = losses[0], losses[1]
        assert abs((up - down) / 2e-6 - grads["grad.fc_logvar.weight"][idx[0]][idx[1]]) < 1e-6


def test_walkthrough_checks_and_cli_json(capsys):
    w = walkthrough()
    c = w["checks"]
    assert c["weights_round_to_printed_table"] and c["eps_rounds_to_printed"]
    assert c["max_abs_diff_forward_printed_weights_float64_vs_seed"] < 1e-8
    assert c["max_abs_diff_gradients_seed42_vs_seed"] < 1e-4
    assert main(["walkthrough", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    for key in ("mu", "logvar", "z", "recon_x", "mse", "kl", "loss"):
        assert key in data
    for name in REF["gradients"]:
        assert f"grad.{name}" in data
    assert _diff(data["grad.fc1.weight"], REF["gradients"]["fc1.weight"]) < 1e-4
    assert main(["walkthrough"]) == 0
    text = capsys.readouterr().out
    assert "grad.fc_dec2.bias" in text and "printed" in text
