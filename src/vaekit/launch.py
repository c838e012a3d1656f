"""``vaekit train --nproc N``: the same training started through PyTorch's launcher (torchrun) with N
processes on this machine, so that a single-node data-parallel run needs no second command.
``python -m vaekit.launch TORCHRUN-ARGS`` is torchrun as this launcher runs it (see ``torchrun``)."""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

from .children import child_environment, follow_parent
from .errors import ConfigError, VaekitError, one_line
from .signals import stop_signals_to

INTERRUPTED = "interrupted; files being written were left as they were"  # a command stopped with nothing to save

JOB_ERRORS = "VAEKIT_JOB_ERRORS"  # the folder where the processes of a --nproc job leave their errors and warnings
KILLED = "launcher"  # the record torchrun leaves for a process that a signal killed


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
    try:
        said: str | None = tempfile.mkdtemp(prefix="vaekit-job-")
    except OSError:  # no writable temporary folder: each process says its own errors
        said = None
    try:
        code, stopping = _run_job(torchrun_command(argv, nproc, out),
                                  {**child_environment(), **({JOB_ERRORS: said} if said else {})})
        for who, text in job_warnings(Path(said)) if said else []:
            print(f"vaekit{who}: warning: {one_line(text)}", file=sys.stderr)
        lines = job_errors(Path(said)) if said else []
        stopped = job_stop(Path(said)) if said else None
        if said and code and not stopping and not lines and not stopped:
            lines = [("", f"the job failed (exit code {code}) and none of its processes said why")]
        for who, message in lines:
            print(f"vaekit{who}: error: {one_line(message)}", file=sys.stderr)
        if said and code == 130 and not lines:  # stopped before any process could say so: the launcher does
            if stopped and stopping and stopped.startswith("SIGTERM: "):  # the processes got it as SIGTERM from torchrun
                stopped = f"{stopping}: {stopped[len('SIGTERM: '):]}"
            print(f"vaekit: {one_line(stopped or INTERRUPTED)}", file=sys.stderr)
        return code
    finally:
        if said:
            shutil.rmtree(said, ignore_errors=True)


def _run_job(cmd: list[str], env: dict[str, str]) -> tuple[int, str | None]:
    """torchrun's exit code as vaekit's, and the signal the launcher was asked to stop by (None if none)."""
    proc = subprocess.Popen(cmd, env=env, start_new_session=True)
    stopping: list[str] = []

    def stop(signum: int, frame: Any) -> None:
        stopping.append(signal.Signals(signum).name)
        proc.send_signal(signal.SIGTERM)

    with stop_signals_to(stop):
        while True:
            try:
                code = _code(proc.wait())
                return (130 if stopping and code else code), (stopping or [None])[0]  # asked to stop: however they ended
            except KeyboardInterrupt:  # a signal that arrived before the handlers were in place
                stop(signal.SIGINT, None)
                time.sleep(0.1)


def leave_error(message: str, echo: bool = False, then: str = "") -> bool:
    """In a process of a ``vaekit train --nproc`` job: leave this process's error for the launcher,
    which says each cause once for the whole job, and return True. Elsewhere (torchrun started by
    hand, one process) or when it cannot be left, return False: the process prints it itself.
    ``echo``: the message only says that another process stopped; ``then``: what the run kept."""
    return _leave("error", {"message": message, "echo": echo, "then": then})


def leave_stop(line: str) -> bool:
    """As ``leave_error``, for the line of a process stopped by a signal (where the run stopped, or that
    the command was interrupted): the launcher says it, or says the job was interrupted when the processes
    were stopped before any of them could leave one."""
    return _leave("stop", {"message": line})


def leave_warnings(lines: list[str]) -> bool:
    """As ``leave_error``, for the warnings a process of the job gives: the launcher says each once."""
    return _leave("warnings", {"warnings": lines})


def _leave(kind: str, record: dict[str, Any]) -> bool:
    rank = os.environ.get("RANK")
    return bool(rank) and "WORLD_SIZE" in os.environ and _write_record(f"{kind}-{rank}", {"rank": rank, **record})


def _write_record(name: str, record: dict[str, Any]) -> bool:
    """``record`` as NAME.json in the job's folder; False where there is none or it cannot be written."""
    from .files import atomic_write

    folder = os.environ.get(JOB_ERRORS)
    if not folder:
        return False
    try:
        atomic_write(Path(folder) / f"{name}.json", json.dumps(record))
    except (OSError, VaekitError):
        return False
    return True


def _records(folder: Path, kind: str) -> list[dict[str, Any]]:
    """The records of one kind that the job's processes left (any that cannot be read passed over)."""
    from .files import read_regular

    records = []
    for path in folder.glob(f"{kind}-*.json"):
        try:
            records.append(json.loads(read_regular(path, max_bytes=1 << 20)))
        except (OSError, VaekitError, ValueError):
            continue
    return [r for r in records if isinstance(r, dict)]


def job_warnings(folder: Path) -> list[tuple[str, str]]:
    """The job's warnings as (who, line): each once, rank 0's first; one that rank 0 did not give is
    labelled with the first rank that did."""
    lines: list[tuple[str, str]] = []
    said = sorted((r for r in _records(folder, "warnings") if str(r.get("rank")).isdigit()), key=lambda r: int(r["rank"]))
    for r in said:
        for text in r.get("warnings", []) if isinstance(r.get("warnings"), list) else []:
            if isinstance(text, str) and text not in (t for _, t in lines):
                lines.append(("" if r["rank"] == "0" else f" (rank {r['rank']})", text))
    return lines


def job_stop(folder: Path) -> str | None:
    """The stop line rank 0 left (the processes that say where a run stopped are rank 0 alone), if any."""
    return next((r["message"] for r in _records(folder, "stop") if r.get("rank") == "0" and isinstance(r.get("message"), str)),
                None)


def job_errors(folder: Path) -> list[tuple[str, str]]:
    """What the processes of a job left, as (who, message) lines to print: each cause once, rank 0's
    first; a process killed by a signal named; messages that only echo another's failure dropped
    (one is said where no cause is known; what the run kept is added to the cause's line)."""
    records = [r for r in _records(folder, "error") if isinstance(r.get("message"), str)]
    killed = [r for r in records if r.get("rank") == KILLED]
    said = sorted((r for r in records if str(r.get("rank")).isdigit()), key=lambda r: int(r["rank"]))
    then = next((r["then"] for r in said if isinstance(r.get("then"), str) and r["then"]), "")
    label = lambda r: "" if r["rank"] in ("0", KILLED) else f" (rank {r['rank']})"  # noqa: E731
    causes = [(label(r), r["message"]) for r in killed + [r for r in said if not r.get("echo")]]
    if not causes and said:  # each process saw another stop and none said why: one says so, with the advice
        r = next((r for r in said if r.get("then")), said[0])
        causes = [(label(r), r["message"])]
    elif then:
        causes[0] = (causes[0][0], f"{causes[0][1]}; {then}")
    lines: list[tuple[str, str]] = []
    for who, message in causes:
        if message not in (m for _, m in lines):
            lines.append((who, message))
    return lines


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
        first = min(e.failures.items(), key=lambda item: item[1].timestamp)
        if first[1].exitcode < 0 and not stopped:
            _leave_killed(first[0], -first[1].exitcode)
        return first[1].exitcode if first[1].exitcode >= 0 else 128 - first[1].exitcode
    except SignalException as e:
        return 128 + int(e.sigval)
    except Exception as e:  # torchrun itself failed (a rendezvous, say), or its shutdown did after a stop
        if stopped:
            return 128 + stopped[0]
        print(f"vaekit: error: torchrun: {one_line(str(e) or type(e).__name__)}", file=sys.stderr)
        return 2


def _leave_killed(rank: int, signum: int) -> None:
    """For the launcher: which process a signal killed (kill -9, or the kernel's out-of-memory killer)."""
    name = signal.Signals(signum).name if signum in signal.valid_signals() else f"signal {signum}"
    why = " (kill -9, or the system's out-of-memory killer)" if signum == signal.SIGKILL else ""
    _write_record(f"error-{KILLED}", {"rank": KILLED, "message": f"process {rank} of the job was killed by {name}{why}"})


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
