"""Device names from flags and configs, checked in one place (cpu, cuda[:N], mps, or auto)."""

from __future__ import annotations

import torch

from .errors import ConfigError, show

KINDS = ("cpu", "cuda", "mps")


def pick_device(name: str) -> torch.device:
    """The torch device ``name`` means on this machine; one-line error if it is not usable here."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError, TypeError):
        device = None
    if device is None or device.type not in KINDS:
        raise ConfigError(f"--device {show(name)} is not a device vaekit can use; choose auto, cpu, cuda, cuda:N or mps")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"--device {name}: no CUDA GPU is available on this machine; use --device cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA GPU(s)")
    if device.type == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise ConfigError(f"--device {name}: Apple's MPS backend is not available on this machine; use --device cpu")
    return device
