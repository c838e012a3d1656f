"""``--precision fp32|bf16|fp16``: the networks run under autocast in the lower precision, while the
likelihood, the KL and every sum stay in float32 (the models hand float32 outputs to them); fp16
adds a gradient scaler, whose state is saved with the checkpoint so that resuming stays exact."""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch
from torch import Tensor

from .config import PRECISIONS
from .errors import ConfigError, RunFolderError

DTYPES = dict(zip(PRECISIONS, (None, torch.bfloat16, torch.float16)))


def native(name: str) -> bool:
    """Whether this CPU multiplies matrices of precision ``name`` (bf16, fp16) in hardware (AVX512-BF16,
    AMX, AVX512-FP16), where autocast to it can pay; elsewhere it is emulated and slower than float32."""
    check = getattr(torch.ops.mkldnn, f"_is_mkldnn_{name}_supported", None)
    try:
        return bool(check()) if check is not None else False
    except RuntimeError:
        return False


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
