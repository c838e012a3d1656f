"""``--precision fp32|bf16|fp16``: the networks run under autocast in the lower precision, while the
likelihood, the KL and every sum stay in float32 (the models hand float32 outputs to them); fp16
adds a gradient scaler, whose state is saved with the checkpoint so that resuming stays exact."""

from __future__ import annotations

import contextlib
import functools
from typing import Iterator

import torch
from torch import Tensor

from .errors import ConfigError, RunFolderError

DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def native(name: str) -> bool:
    """Whether this CPU multiplies matrices of precision ``name`` (bf16, fp16) in hardware (AVX512-BF16,
    AMX, AVX512-FP16), where autocast to it can pay; elsewhere it is emulated and slower than float32."""
    check = getattr(torch.ops.mkldnn, f"_is_mkldnn_{name}_supported", None)
    try:
        return bool(check()) if check is not None else False
    except RuntimeError:
        return False


# needs more than bfloat16's 8 significant bits, and more than the 16 of a two-bfloat16 split or TF32's 11
_PROBE = 1 + 2**-9 + 2**-20


def _onednn_flag():
    """torch's switch for oneDNN's float32 matrix products (torch >= 2.9), or None."""
    return getattr(getattr(torch.backends, "mkldnn", None), "matmul", None)


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
    except RuntimeError:
        return False
    finally:
        flag.fp32_precision = before


@contextlib.contextmanager
def cpu_matmul() -> Iterator[bool]:
    """Float32 matrix products through oneDNN's kernels while inside, where they stay full float32
    (``onednn_fp32_exact``): torch's default, MKL, does not use AVX-512 to the full on AMD's cores,
    where oneDNN's measured 2.2x its rate. Yields whether it is on; a choice the user made
    (``torch.backends.mkldnn.matmul.fp32_precision`` set to anything but ``none``) is left alone."""
    flag = _onednn_flag()
    if flag is None or flag.fp32_precision != "none" or not onednn_fp32_exact():
        yield False
        return
    flag.fp32_precision = "bf16"
    try:
        yield True
    finally:
        flag.fp32_precision = "none"


class Precision:
    """Autocast and (fp16) loss scaling for one device."""

    def __init__(self, name: str, device: torch.device) -> None:
        if name not in DTYPES:
            raise ConfigError(f"unknown precision '{name}'; choose one of {', '.join(DTYPES)}")
        self.name, self.device, self.dtype = name, device, DTYPES[name]
        scaler = getattr(torch.amp, "GradScaler", None)  # torch >= 2.3; before it, CUDA's own
        self.scaler = (scaler(device.type) if scaler else torch.cuda.amp.GradScaler()) if name == "fp16" else None

    @property
    def note(self) -> str | None:
        """A line for the user where the precision asked for will be slow on this device: a CPU
        without matrix instructions for it (AVX512-BF16/AMX for bf16, AVX512-FP16/AMX-FP16 for fp16)."""
        if self.device.type != "cpu" or self.dtype is None or native(self.name):
            return None
        return (f"--precision {self.name}: this CPU has no {self.name} matrix instructions, so they are emulated "
                "and training will likely be slower than with --precision fp32")

    @contextlib.contextmanager
    def autocast(self) -> Iterator[None]:
        if self.dtype is None:
            yield
            return
        with torch.autocast(self.device.type, dtype=self.dtype):
            yield

    def backward(self, loss: Tensor) -> None:
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward()

    def unscale(self, optimizer: torch.optim.Optimizer) -> None:
        """Gradients at their true scale (before clipping them)."""
        if self.scaler is not None:
            self.scaler.unscale_(optimizer)

    def step(self, optimizer: torch.optim.Optimizer) -> None:
        """The optimiser step; with fp16 skipped when the scaled gradients overflowed (the scale then shrinks)."""
        if self.scaler is None:
            optimizer.step()
            return
        self.scaler.step(optimizer)
        self.scaler.update()

    @property
    def checks_gradients(self) -> bool:
        """Whether a non-finite gradient is an error (with fp16 it is an overflow the scaler handles)."""
        return self.scaler is None

    def state(self) -> dict[str, Tensor]:
        """The scaler's state as tensors, for the checkpoint (empty without a scaler)."""
        if self.scaler is None or not self.scaler.is_enabled():
            return {}
        s = self.scaler.state_dict()
        return {"amp.scale": torch.tensor([float(s["scale"])], dtype=torch.float64),
                "amp.growth_tracker": torch.tensor([int(s["_growth_tracker"])], dtype=torch.int64)}

    def load_state(self, state: dict[str, Tensor]) -> None:
        """Restore the scaler from a checkpoint's ``state()``; a malformed entry is refused."""
        if self.scaler is None or "amp.scale" not in state:
            return
        scale, tracker = state.get("amp.scale"), state.get("amp.growth_tracker")
        ok = all(t is not None and t.numel() == 1 and t.dtype.is_floating_point == (t is scale) for t in (scale, tracker))
        if not ok or not (0 < float(scale) < float("inf")) or int(tracker) < 0:
            raise RunFolderError("training_state.safetensors: the fp16 loss-scaler state is malformed; cannot resume "
                                 "exactly")
        s = self.scaler.state_dict()
        s["scale"], s["_growth_tracker"] = float(scale), int(tracker)
        self.scaler.load_state_dict(s)
