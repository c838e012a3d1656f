"""The stop signals (SIGINT, SIGTERM, SIGHUP) routed to one handler for a block of code: the one
way every vaekit command, the training loop and the launcher take them over. Torch-free, so the
CLI can use it before torch loads."""

from __future__ import annotations

import contextlib
import signal
import threading
from typing import Any, Callable, Iterator

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


@contextlib.contextmanager
def stop_signals_to(handler: Callable[[int, Any], Any]) -> Iterator[None]:
    """Send the stop signals to ``handler`` inside the block, then put back what was there. Left
    alone: a signal the process was told to ignore (``nohup``, a script's ``&``), one whose handler
    was set outside Python (``signal.getsignal`` gives None, which cannot be put back), and all of
    them outside the main thread, where Python cannot take signals over."""
    previous: dict[int, Any] = {}
    if threading.current_thread() is threading.main_thread():
        for sig in STOP_SIGNALS:
            if signal.getsignal(sig) not in (signal.SIG_IGN, None):
                previous[sig] = signal.signal(sig, handler)
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
