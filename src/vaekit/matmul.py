"""Where float32 matrix products run on a CPU: through oneDNN's kernels instead of torch's default BLAS
(MKL) when oneDNN keeps them full float32, which this module checks rather than assumes."""

from __future__ import annotations

import contextlib
import functools
from typing import Iterator

import torch

from .precision import native

# needs more than bfloat16's 8 significant bits, and more than the 16 of a two-bfloat16 split or TF32's 11
_PROBE = 1 + 2**-9 + 2**-20


def _onednn_flag():
    """torch's switch for oneDNN's float32 matrix products (torch >= 2.9), or None."""
    flag = getattr(getattr(torch.backends, "mkldnn", None), "matmul", None)
    return flag if hasattr(flag, "fp32_precision") else None


@functools.cache
def onednn_fp32_exact() -> bool:
    """Whether float32 matrix products routed to oneDNN (torch's ``mkldnn.matmul.fp32_precision = 'bf16'``,
    which only lets oneDNN narrow them) still come out in full float32 here: checked, not assumed, on the
    shapes a training step uses (plain, transposed, with a bias, batched), because on a CPU with AMX
    oneDNN does narrow them to bfloat16."""
    flag = _onednn_flag()
    if flag is None or not native("bf16"):  # torch routes float32 products to oneDNN only on such CPUs
        return False
    before = flag.fp32_precision
    try:
        flag.fp32_precision = "bf16"
        exact = torch.tensor(_PROBE, dtype=torch.float32)
        a = torch.zeros(128, 784)
        a[:, 3] = exact
        b = torch.zeros(784, 400)
        b[3] = 1
        results = (a @ b, torch.addmm(torch.zeros(400), a, b), (b.t() @ a.t()).t(), a.t().t() @ b.t().contiguous().t(),
                   torch.bmm(a.expand(3, -1, -1), b.expand(3, -1, -1)))
        return all(bool((r == exact).all()) for r in results)
    except (RuntimeError, ValueError):  # a torch that refuses the setting
        return False
    finally:
        flag.fp32_precision = before


def routes_to_onednn() -> bool:
    """Whether ``cpu_matmul`` would send float32 products to oneDNN now: torch has the switch, the user
    has not set it, and oneDNN keeps them float32 on this CPU."""
    flag = _onednn_flag()
    return flag is not None and flag.fp32_precision == "none" and onednn_fp32_exact()


@contextlib.contextmanager
def cpu_matmul() -> Iterator[bool]:
    """Float32 matrix products through oneDNN's kernels while inside, where they stay full float32
    (``onednn_fp32_exact``): torch's default, MKL, does not use AVX-512 to the full on AMD's cores,
    where oneDNN's measured 2.2x its rate. Yields whether it is on; a choice the user made
    (``torch.backends.mkldnn.matmul.fp32_precision`` set to anything but ``none``) is left alone."""
    if not routes_to_onednn():
        yield False
        return
    flag = _onednn_flag()
    flag.fp32_precision = "bf16"
    try:
        yield True
    finally:
        flag.fp32_precision = "none"
