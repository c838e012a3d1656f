"""Device names from flags and configs, checked in one place (cpu, cuda[:N], mps, or auto)."""

from __future__ import annotations

import torch

from .errors import ConfigError, counted, show

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
            raise ConfigError(f"--device {name}: this machine has {counted(torch.cuda.device_count(), 'CUDA GPU')} (numbered from 0)")
    if device.type == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise ConfigError(f"--device {name}: Apple's MPS backend is not available on this machine; use --device cpu")
    return device


def check_compile(device: torch.device) -> None:
    """What ``--compile`` needs on ``device``, checked before any work: torch.compile's code generator
    builds C++ for the CPU (a compiler) and Triton kernels for CUDA GPUs (the triton package)."""
    if device.type == "cpu":
        try:
            from torch._inductor.cpp_builder import get_cpp_compiler
        except ImportError:  # an older torch: its own message when the step is compiled
            return
        try:
            get_cpp_compiler()
        except Exception as e:  # torch's InvalidCxxCompiler and whatever running the compiler raised
            raise ConfigError(f"--compile: torch.compile needs a working C++ compiler for the CPU, and none was "
                              f"found ({show(str(e).splitlines()[0], 160)}); install one (g++), or leave "
                              "--compile out") from None
    elif device.type == "cuda":
        import importlib.util

        if importlib.util.find_spec("triton") is None:
            raise ConfigError("--compile: torch.compile needs the triton package for CUDA GPUs; install it (pip "
                              "install triton), or leave --compile out")
