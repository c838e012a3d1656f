"""Child processes vaekit starts itself (the runs of a sweep, torchrun for ``train --nproc``): they never
outlive their parent. The parent names itself in the child's environment; the child asks the kernel
for SIGTERM when that parent dies (even by kill -9), and SIGTERM makes a training run checkpoint and
stop (torchrun passes it on to its processes)."""

from __future__ import annotations

import os
import signal
import sys

PARENT = "VAEKIT_PARENT_PID"


def child_environment(base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for a vaekit child of this process."""
    return {**(os.environ if base is None else base), PARENT: str(os.getpid())}


def follow_parent() -> None:
    """In a vaekit child (Linux): SIGTERM when the parent that started it dies, or now if it already
    has. The variable is removed, so that processes this one starts do not inherit it."""
    parent = os.environ.pop(PARENT, None)
    if not parent or not sys.platform.startswith("linux"):
        return
    import ctypes

    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
    if str(os.getppid()) != parent:  # the parent died before the request was made
        os.kill(os.getpid(), signal.SIGTERM)

