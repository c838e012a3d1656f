"""``vaekit train --nproc N``: the same training started through PyTorch's launcher (torchrun) with N
processes on this machine, so that a single-node data-parallel run needs no second command.
``python -m vaekit.launch TORCHRUN-ARGS`` is torchrun as this launcher runs it (see ``torchrun``)."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from typing import Any, Sequence

from .children import child_environment, follow_parent
from .errors import ConfigError, one_line


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
    return [sys.executable, "-m", "vaekit.launch", "--standalone", f"--nproc-per-node={nproc}", "-m", "vaekit", *args]


def launch(argv: Sequence[str], nproc: int, out: str | None) -> int:
    """Run the job and return its exit code. torchrun runs in a session of its own, so that a signal
    reaches the processes once, from here: Ctrl-C, SIGTERM and SIGHUP to the launcher (from the terminal
    or sent to its pid alone) become SIGTERM to torchrun, which stops the processes at a clean point (rank
    0 checkpoints once)."""
    if nproc < 1:
        raise ConfigError(f"--nproc {nproc}: give the number of processes, 1 or more")
    proc = subprocess.Popen(torchrun_command(argv, nproc, out), env=child_environment(), start_new_session=True)
    stopping: list[bool] = []

    def stop(signum: int, frame: Any) -> None:
        stopping.append(True)
        proc.send_signal(signal.SIGTERM)

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
                if signal.getsignal(sig) is not signal.SIG_IGN}
    try:
        while True:
            try:
                code = _code(proc.wait())
                return 130 if stopping and code else code  # asked to stop: however the processes ended
            except KeyboardInterrupt:  # a signal that arrived before the handlers were in place
                stop(signal.SIGINT, None)
                time.sleep(0.1)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _code(returncode: int) -> int:
    """torchrun's exit code as vaekit's: 0 when all went well, 130 for a stop by signal, else 2."""
    if returncode == 0:
        return 0
    return 130 if returncode in (130, -signal.SIGINT, -signal.SIGTERM, -signal.SIGHUP, 143) else 2


def torchrun(args: list[str]) -> int:
    """torchrun in this process, as vaekit's own launcher runs it: it stops when that launcher dies,
    gives each process its share of the cores (torchrun would give each one thread), and leaves out its
    warnings, tracebacks and failure report: each vaekit process says in one line what went wrong.
    Returns the exit code of the first process that failed (or 128 + the signal that stopped torchrun)."""
    follow_parent()
    nproc = next((int(a.split("=", 1)[1]) for a in args if a.startswith("--nproc-per-node=")), 1)
    if "OMP_NUM_THREADS" not in os.environ:
        from .budget import usable_cpus

        os.environ["OMP_NUM_THREADS"] = str(max(1, usable_cpus() // nproc))
    theirs = os.environ.get("LOGLEVEL")
    os.environ["LOGLEVEL"] = "CRITICAL"  # read once, by the launcher's loggers, as they are made on import
    from torch.distributed import run
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError

    if theirs is None:  # the training processes keep the user's own
        del os.environ["LOGLEVEL"]
    else:
        os.environ["LOGLEVEL"] = theirs
    logging.getLogger("torch.distributed").setLevel(logging.CRITICAL)
    stopped = _note_stop_signals()
    try:
        run.run(run.parse_args(args))
        return 0
    except ChildFailedError as e:
        first = min(e.failures.values(), key=lambda f: f.timestamp)
        return first.exitcode if first.exitcode >= 0 else 128 - first.exitcode
    except SignalException as e:
        return 128 + int(e.sigval)
    except Exception as e:  # torchrun itself failed (a rendezvous, say), or its shutdown did after a stop
        if stopped:
            return 128 + stopped[0]
        print(f"vaekit: error: torchrun: {one_line(str(e) or type(e).__name__)}", file=sys.stderr)
        return 2


def _note_stop_signals() -> list[int]:
    """The signals torchrun is stopped by, as they come (its handler is wrapped; where this torch names it
    otherwise, nothing is noted)."""
    from torch.distributed.elastic.multiprocessing import api

    noted: list[int] = []
    handler = getattr(api, "_terminate_process_handler", None)
    if callable(handler):
        def noting(signum: int, frame: Any) -> None:
            noted.append(int(signum))
            handler(signum, frame)

        api._terminate_process_handler = noting
    return noted


if __name__ == "__main__":
    sys.exit(torchrun(sys.argv[1:]))
