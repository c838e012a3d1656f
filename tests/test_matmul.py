"""Float32 matrix products through oneDNN (vaekit.matmul): only where they stay full float32, switched
back after, a user's own choice left alone."""

from __future__ import annotations

import pytest
import torch

from vaekit.matmul import _PROBE, cpu_matmul, onednn_fp32_exact
from vaekit.train import fit


def _flag():
    return torch.backends.mkldnn.matmul


def test_the_probe_value_tells_full_float32_from_any_narrower_product():
    """The value the oneDNN check multiplies survives float32 but not bfloat16, a two-bfloat16 split
    (torch's 'high' on such CPUs) or TF32 (11 significant bits), so a narrowing kernel cannot pass it."""
    x = torch.tensor(_PROBE, dtype=torch.float32)
    assert float(x) == _PROBE
    hi = x.bfloat16()
    two = hi.float() + (x - hi.float()).bfloat16().float()
    mantissa, exponent = torch.frexp(x)
    tf32 = torch.ldexp(torch.round(mantissa * 2**11) / 2**11, exponent)
    for narrowed in (hi.float(), two, tf32):
        assert float(narrowed) != _PROBE


needs_onednn = pytest.mark.skipif(
    not onednn_fp32_exact(),
    reason="this CPU or torch does not route float32 matrix products to oneDNN in full float32 "
           "(needs torch >= 2.9 and AVX512-BF16 without AMX narrowing)")


@needs_onednn
def test_products_routed_to_onednn_stay_float32_and_the_setting_is_restored():
    """Inside cpu_matmul the products go to oneDNN (torch's flag says so) and are as accurate as the
    default BLAS's: an exact sum on shapes the check did not try, and a linear layer's gradients
    against float64."""
    g = torch.Generator().manual_seed(0)
    x, w = torch.randn(37, 513, generator=g), torch.randn(129, 513, generator=g)
    exact = x.double() @ w.double().t()

    def errors():
        a = torch.zeros(37, 513)
        a[:, 100] = _PROBE
        ones = torch.zeros(513, 129)
        ones[100] = 1
        wr = w.clone().requires_grad_(True)
        (x @ wr.t()).pow(2).sum().backward()
        grad64 = 2 * (exact.t() @ x.double())
        return (bool(((a @ ones) == torch.tensor(_PROBE)).all()), float(((x @ w.t()).double() - exact).abs().max()),
                float((wr.grad.double() - grad64).abs().max() / grad64.abs().max()))

    plain = errors()
    with cpu_matmul() as on:
        assert on and _flag().fp32_precision == "bf16"
        routed = errors()
    assert _flag().fp32_precision == "none" and torch.get_float32_matmul_precision() == "highest"
    assert plain[0] and routed[0]
    assert routed[1] < 4 * plain[1] + 1e-5 and routed[2] < 4 * plain[2] + 1e-7


@needs_onednn
def test_training_runs_with_onednn_products_and_leaves_a_users_choice_alone(digits_cfg, tmp_path):
    """fit trains with the products routed to oneDNN and switches it back after; a user who chose
    the precision of float32 products (here 'ieee': the default BLAS) keeps that choice."""
    seen: list[str] = []
    digits_cfg.train.epochs = 1
    fit(digits_cfg, tmp_path / "a", progress=False, log=lambda line: seen.append(_flag().fp32_precision))
    assert seen and set(seen) == {"bf16"} and _flag().fp32_precision == "none"
    _flag().fp32_precision = "ieee"
    try:
        seen.clear()
        fit(digits_cfg, tmp_path / "b", progress=False, log=lambda line: seen.append(_flag().fp32_precision))
        assert seen and set(seen) == {"ieee"} and _flag().fp32_precision == "ieee"
    finally:
        _flag().fp32_precision = "none"
