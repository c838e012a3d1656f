"""Child processes vaekit starts itself (the runs of a sweep, torchrun for ``train --nproc``): they never
outlive their parent. The parent names itself in the child's environment; a thread in the child
watches for that parent to be gone (even after kill -9) and then sends the child SIGTERM, once, which
makes a training run checkpoint and stop (torchrun passes it on to its processes). The kernel's own
parent-death signal is not used: it fires once per thread of a parent as each exits, and a second
signal means "stop at once"."""

from __future__ import annotations

import os
import signal
import threading

PARENT = "VAEKIT_PARENT_PID"
WATCH_SECONDS = 0.5


def child_environment(base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for a vaekit child of this process."""
    return {**(os.environ if base is None else base), PARENT: str(os.getpid())}


def follow_parent() -> None:
    """In a vaekit child: SIGTERM to this process when the parent that started it is gone, or now if it
    already is. The variable is removed, so that processes this one starts do not inherit it."""
    parent = os.environ.pop(PARENT, "")
    if not parent.isdigit():
        return
    pause = threading.Event()  # never set: a sleep that does not hold up the interpreter's exit

    def watch() -> None:
        while os.getppid() == int(parent):
            pause.wait(WATCH_SECONDS)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="vaekit-follow-parent", daemon=True).start()
