"""One writer per run folder: an exclusive lock held by every command that writes into it.

The lock is ``RUN_DIR/.vaekit.lock``, taken with ``flock`` so the operating system releases it
when the holder exits in any way (kill -9 included); the file holds the holder's pid and
command for the message a second writer gets. The file itself is never removed (removing a
lock file while another process waits on it would let two writers in).
"""

from __future__ import annotations

import contextlib
import errno
import os
import threading
import warnings
from pathlib import Path
from typing import Iterator

from .errors import RunFolderError

LOCK = ".vaekit.lock"
NO_LOCKS = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL}  # flock's "this file system has none"
_held = threading.local()  # the run folders this thread holds: a command that calls another (report
# calls plot) takes each folder's lock once

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; runs are not protected against a second writer
    fcntl = None  # type: ignore[assignment]


def _holder(fd: int) -> str:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        text = os.read(fd, 200).decode("utf-8", "replace").strip()
    except OSError:
        text = ""
    pid, _, command = text.partition(" ")
    return f"pid {pid}" + (f", {command}" if command else "") if pid.isdigit() else "another process"


@contextlib.contextmanager
def run_lock(run_dir: str | Path, command: str, elsewhere: str = "") -> Iterator[None]:
    """Hold the run folder's write lock for the ``with`` block; a second writer gets a one-line error.
    Within one thread the lock is re-entrant. ``elsewhere``: the flag that writes outside the run
    folder instead, offered when the folder cannot be written."""
    run_dir = Path(run_dir)
    held: set[str] = _held.__dict__.setdefault("folders", set())
    key = os.path.realpath(run_dir)
    if key in held:
        yield
        return
    try:
        fd = os.open(run_dir / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        instead = f", or write elsewhere with {elsewhere}" if elsewhere else ""
        raise RunFolderError(f"{run_dir}: cannot write here ({e.strerror or e}); check the folder's "
                             f"permissions{instead}") from None
    try:
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise RunFolderError(
                    f"{run_dir}: in use by another vaekit process ({_holder(fd)}); wait for it to finish "
                    "or stop it, then try again"
                ) from None
            except OSError as e:  # a file system without locks (some NFS mounts, FUSE): work on, unguarded
                if e.errno not in NO_LOCKS:
                    raise RunFolderError(f"{run_dir}: cannot lock this folder ({e.strerror or e})") from None
                warnings.warn(f"{run_dir}: this file system cannot lock files ({e.strerror or e}); nothing keeps "
                              "a second vaekit process from writing into this run at the same time", stacklevel=3)
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
            os.lseek(fd, 0, os.SEEK_SET)
            os.write(fd, f"{os.getpid()} vaekit {command}".encode())
        held.add(key)
        try:
            yield
        finally:
            held.discard(key)
    finally:
        os.close(fd)  # releases the flock


@contextlib.contextmanager
def writing_into(run_dir: str | Path, outputs: list[str | Path], command: str, elsewhere: str = "",
                 data_dir: str | None = None) -> Iterator[None]:
    """Guard what a command writes for a run: no output outside the run folder may lie in the image
    folder the run's data are read from (it would become part of the data; ``data_dir``: where they
    are now, as the command was told), and the run folder's lock is taken when any output lies inside
    it. ``elsewhere``: the flag that writes elsewhere ("-o FILE")."""
    root = Path(run_dir).resolve()
    inside = [Path(p).resolve().is_relative_to(root) for p in outputs]
    outside_the_data(root, [p for p, i in zip(outputs, inside) if not i], (elsewhere or "-o").split()[0], data_dir)
    if any(inside) and root.is_dir():
        with run_lock(root, command, elsewhere):
            yield
    else:
        yield


def outside_the_data(run_dir: str | Path, outputs: list[str | Path], flag: str, data_dir: str | None = None) -> None:
    """Refuse ``outputs`` inside the image folder that the run in ``run_dir`` reads its data from: where
    it was trained, and where ``data_dir`` says the data are now. A run whose config (or data folder)
    cannot be read is left to the command's own reading, which says what is wrong."""
    from .checkpoint import load_config
    from .data import check_outside, relocate
    from .errors import VaekitError

    if not outputs:
        return
    try:
        recorded = load_config(run_dir).data
        places = [recorded] + ([relocate(recorded, data_dir)] if data_dir else [])
    except (VaekitError, OSError):
        return
    for data in places:
        for out in outputs:
            check_outside(data, out, flag)
