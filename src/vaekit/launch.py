"""``vaekit train --nproc N``: the same training started through PyTorch's launcher (torchrun) with N
processes on this machine, so that a single-node data-parallel run needs no second command."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from typing import Sequence

from .errors import ConfigError


def without_nproc(argv: Sequence[str]) -> list[str]:
    """``argv`` with ``--nproc N`` / ``--nproc=N`` taken out."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == "--nproc":
            skip = True
        elif not a.startswith("--nproc="):
            out.append(a)
    return out


def torchrun_command(argv: Sequence[str], nproc: int, out: str | None) -> list[str]:
    """The torchrun command line for ``vaekit ARGV`` in ``nproc`` processes (one node, local rendezvous)."""
    args = without_nproc(argv)
    if out is not None and "--resume" not in args and "--out" not in args:
        args += ["--out", out]  # every process must name the same folder
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
            "-m", "vaekit", *args]


def launch(argv: Sequence[str], nproc: int, out: str | None) -> int:
    """Run the job and return its exit code; Ctrl-C, SIGTERM and SIGHUP reach the launcher, which stops
    the processes at a clean point (each saves nothing but rank 0, which checkpoints once)."""
    if nproc < 1:
        raise ConfigError(f"--nproc {nproc}: give the number of processes, 1 or more")
    proc = subprocess.Popen(torchrun_command(argv, nproc, out))
    previous = {sig: signal.signal(sig, lambda s, f: proc.send_signal(signal.SIGTERM))
                for sig in (signal.SIGTERM, signal.SIGHUP) if signal.getsignal(sig) is not signal.SIG_IGN}
    try:
        while True:
            try:
                return _code(proc.wait())
            except KeyboardInterrupt:  # the terminal's Ctrl-C reached the launcher too; wait for it
                time.sleep(0.1)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _code(returncode: int) -> int:
    """torchrun's exit code as vaekit's: 0 when all went well, 130 for a stop by signal, else 2."""
    if returncode == 0:
        return 0
    return 130 if returncode in (130, -signal.SIGINT, -signal.SIGTERM, -signal.SIGHUP, 143) else 2
