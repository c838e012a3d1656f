"""Every file vaekit reads or writes goes through here.

Reads open regular files only (a FIFO, a device or a socket is refused before a byte is read,
so nothing can hang or stream forever) and check the size against the memory budget. Writes
are atomic: the bytes go to a hidden temporary name in the same folder, are fsynced and
renamed over the target, so a crash, a signal or a full disk leaves the old complete file or
the new complete file, never a half-written one. JSON output is strict (no NaN/Infinity).
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import stat
from pathlib import Path
from typing import Any, BinaryIO, Iterator

from . import budget
from .errors import VaekitError, as_text, show


class OutputError(VaekitError):
    """A file vaekit was asked to write could not be written; the previous version is kept."""


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"), (stat.S_ISDIR, "a folder")):
        if test(mode):
            return name
    return "not a regular file"


def open_regular(path: str | Path, what: str = "file") -> BinaryIO:
    """Open ``path`` for binary reading, refusing anything but a regular file (checked on the open
    descriptor, with O_NONBLOCK so that opening a FIFO cannot wait for a writer)."""
    path = Path(path)
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise VaekitError(f"{path}: no such {what}") from None
    except IsADirectoryError:
        raise VaekitError(f"{path}: is a folder, expected a {what}") from None
    except OSError as e:
        raise VaekitError(f"{path}: cannot open this {what} ({e.strerror or e})") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise VaekitError(f"{path}: is {_kind(st.st_mode)}, not a regular file; pass a real {what}")
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def expand_home(text: str) -> str:
    """A path with a leading ``~`` (or ``~user``) made the home folder; a one-line error where no home
    folder is known (HOME unset and no entry in the password database: a container run as an
    arbitrary user id) or no such user exists, never a folder named ``~`` nor a traceback."""
    if not text.startswith("~"):
        return text
    expanded = os.path.expanduser(text)
    if expanded.startswith("~"):
        user = text[1:].split("/", 1)[0]
        why = (f"no user named {show(user)}" if user else
               f"no home folder is known (HOME is unset and user id {os.getuid()} has no entry in the password database)")
        raise VaekitError(f"{show(text)}: '~' cannot be expanded: {why}; give the full path, or set HOME")
    return expanded


_PRIVATE_CACHE: list[Path] = []


def cache_dir(kind: str) -> Path:
    """Where vaekit keeps what it can recompute (decoded folders, parsed tables, feature nets) and
    what it downloads: $VAEKIT_CACHE, else $XDG_CACHE_HOME/vaekit, else ~/.cache/vaekit; one
    sub-folder per kind. Where no home folder is known, a private temporary folder of this process
    (said once, removed at exit), so that a cache never stops a command."""
    if os.environ.get("VAEKIT_CACHE"):
        return Path(expand_home(os.environ["VAEKIT_CACHE"])) / kind
    if os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"]) / "vaekit" / kind
    try:
        return Path(expand_home("~")) / ".cache" / "vaekit" / kind
    except VaekitError:
        pass
    if not _PRIVATE_CACHE:
        import atexit
        import shutil
        import tempfile
        import warnings

        try:
            _PRIVATE_CACHE.append(Path(tempfile.mkdtemp(prefix="vaekit-cache-")))  # made 0700, ours alone
        except OSError:  # nowhere to write: caching then fails quietly, a download with its own message
            _PRIVATE_CACHE.append(Path(os.devnull))
        atexit.register(shutil.rmtree, _PRIVATE_CACHE[0], ignore_errors=True)
        warnings.warn(f"no home folder is known (HOME is unset): this command caches in {_PRIVATE_CACHE[0]}; "
                      "set VAEKIT_CACHE=DIR to keep the cache (and downloads) between commands", stacklevel=2)
    return _PRIVATE_CACHE[0] / kind


def read_json_if_there(path: str | Path, what: str = "JSON file", max_bytes: int = 16 << 20) -> Any:
    """A small JSON file vaekit wrote beside a run (metrics, a record), or None when it is missing,
    unreadable, not a regular file or not JSON: such files inform, and never stop a command."""
    try:
        return json.loads(read_regular(path, what, max_bytes))
    except (VaekitError, ValueError, RecursionError):
        return None


def file_size(f: BinaryIO) -> int:
    return os.fstat(f.fileno()).st_size


def read_regular(path: str | Path, what: str = "file", max_bytes: int | None = None) -> bytes:
    """The whole content of a regular file, after checking its size against the budget
    (and ``max_bytes`` where the format has a natural limit, e.g. a config)."""
    path = Path(path)
    with open_regular(path, what) as f:
        size = file_size(f)
        if max_bytes is not None and size > max_bytes:
            raise VaekitError(f"{path}: {budget.human(size)} is far larger than a {what} can be "
                              f"(limit {budget.human(max_bytes)}); is it the right file?")
        budget.check(size, f"reading {path}")
        data = f.read(size + 1)
    if len(data) != size:
        raise VaekitError(f"{path}: changed size while it was read; try again")
    return data


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _temp_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def _remove_stale_temps(path: Path) -> None:
    """Temporary files that a killed vaekit process left beside ``path``."""
    for tmp in path.parent.glob(f".{path.name}.*.tmp"):
        pid = tmp.name[len(path.name) + 2 : -4]
        if pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
            with contextlib.suppress(OSError):
                tmp.unlink()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


@contextlib.contextmanager
def atomic_output(path: str | Path) -> Iterator[BinaryIO]:
    """Write a file atomically: ``with atomic_output(p) as f: f.write(...)``. On any error or
    signal the temporary file is removed and ``p`` keeps its previous content (or stays absent)."""
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"{path}: is a folder; give a file name to write")
    make_folder(path.parent)
    _remove_stale_temps(path)
    tmp = _temp_name(path)
    try:
        with open(tmp, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if isinstance(e, OSError):
            kept = "its previous version is kept" if path.exists() else "nothing was written"
            raise OutputError(f"{path}: could not be written ({e.strerror or e}); {kept}") from None
        raise
    _fsync_dir(path.parent)


def user_path(value: Any, what: str) -> Path:
    """A path a caller gave (a run folder, an output, a data folder): a str or path-like, not empty
    (never read as the current folder), ``~`` expanded. Anything else is a one-line error naming
    ``what`` (the argument or flag)."""
    if not isinstance(value, (str, os.PathLike)) or isinstance(text := os.fspath(value), bytes):
        raise VaekitError(f"{what} {show(value)}: give a path (a str or pathlib.Path)")
    if not text.strip():
        raise VaekitError(f"{what}: an empty path; give a file or folder name")
    return Path(expand_home(text))


def output_file(path: str | Path, suffixes: tuple[str, ...], flag: str = "") -> Path:
    """An output file's name, checked before any work: its suffix says the format, it is no folder,
    and its folder can be written. ``flag`` names the argument in the message (argparse names it itself)."""
    out = user_path(path, flag or "output")
    where = f"{flag} {show(os.fspath(path))}" if flag else show(os.fspath(path))
    try:
        folder = out.is_dir()
    except OSError as e:  # a name too long for the filesystem, say
        raise OutputError(f"{where}: {e.strerror or e}") from None
    if folder:
        raise OutputError(f"{where} is a folder; give a file name")
    if out.suffix.lower() not in suffixes:
        raise OutputError(f"{where}: write {' or '.join(suffixes)} (the file name says which)")
    check_can_write(out, where)
    return out


def output_folder(path: str | Path, flag: str) -> Path:
    """A folder to write outputs into, checked before any work: no file, and it can be made and written."""
    out = user_path(path, flag)
    where = f"{flag} {show(os.fspath(path))}"
    if out.exists() and not out.is_dir():
        raise OutputError(f"{where}: exists and is not a folder; choose another place")
    check_can_write(out / "probe", where)
    return out


def make_folder(path: Path, instead: str = "", error: type[VaekitError] = OutputError) -> None:
    """``mkdir -p path``, or one ``error`` line saying why not: a file standing where one of the
    folders must be (the OS says only 'File exists' or 'Not a directory'), else the OS's reason;
    ``instead``: what the user can do, appended."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        blocker = next((p for p in (path, *path.parents) if p.exists() and not p.is_dir()), None)
        then = f"; {instead}" if instead else ""
        if blocker == path:
            raise error(f"{path}: a file, where vaekit needs a folder of this name; move it away{then}") from None
        why = f"{show(str(blocker))} is a file, not a folder" if blocker is not None else e.strerror or str(e)
        raise error(f"{path}: cannot create this folder ({why}){then}") from None


def existing_ancestor(path: str | Path) -> Path:
    """``path`` made absolute, or its nearest ancestor that exists (where a folder to be made would go).
    A broken link on the way is an error naming it (making the folder would fail with 'File exists')."""
    found = Path(os.path.abspath(path))
    while not found.exists() and found != found.parent:
        if found.is_symlink():
            raise OutputError(f"{show(str(found))}: a broken link (to {show(os.readlink(found))}); remove it or "
                              "restore what it points to")
        found = found.parent
    return found


def check_can_write(path: Path, where: str, fix: str = "choose another place") -> None:
    """Before any work, that ``path`` (a file or folder still to be made, or replaced) can be written:
    a nameless file is made and dropped in the nearest folder that exists, so the message carries the
    system's own reason (a read-only file system, no permission) and nothing is left behind."""
    import tempfile

    folder = existing_ancestor(Path(path).parent)
    if not folder.is_dir():
        raise OutputError(f"{where}: {show(str(folder))} is not a folder; {fix}")
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as e:
        raise OutputError(f"{where}: cannot write in {show(str(folder))} ({e.strerror or e}); {fix}") from None


def atomic_write(path: str | Path, data: bytes | str) -> Path:
    """Write ``data`` (str as UTF-8, where a file name's stray bytes become U+FFFD) to ``path``
    atomically; returns the path."""
    with atomic_output(path) as f:
        f.write(as_text(data).encode("utf-8") if isinstance(data, str) else data)
    return Path(path)


def write_via_buffer(path: str | Path, writer: Any) -> Path:
    """For libraries that write to a file object themselves (Pillow, matplotlib, numpy):
    ``writer(buffer)`` fills memory first, then the bytes are written atomically."""
    buf = io.BytesIO()
    writer(buf)
    return atomic_write(path, buf.getvalue())


CACHE_KINDS = ("folders", "tables", "featurenets")  # what write_cache keeps, and removes again to make room
DEFAULT_CACHE_MAX = 20 << 30
CACHE_RESERVE = 1 << 30  # free space on its disk that a cache entry never takes (5 % of a smaller disk)


def cache_limit() -> int | None:
    """The most bytes the cached entries may take together: $VAEKIT_CACHE_MAX (e.g. 50G), default 20 GiB;
    0 to cache nothing; None (cache nothing) where the variable cannot be read, said in a warning."""
    import warnings

    text = os.environ.get("VAEKIT_CACHE_MAX")
    if not text:
        return DEFAULT_CACHE_MAX
    if text.strip() == "0":
        return 0
    try:
        return budget.parse_size(text)
    except VaekitError as e:
        warnings.warn(f"$VAEKIT_CACHE_MAX: {e}; nothing is cached", stacklevel=3)
        return None


def write_cache(path: str | Path, writer: Any) -> bool:
    """Best-effort write of something vaekit can recompute (``writer(buffer)`` fills it) as
    ``cache_dir(kind) / name``: an unwritable or full cache folder costs time later, never the command.
    The entries of all kinds stay within ``cache_limit()`` together, the least recently used removed
    first, and an entry is not kept where it would leave its disk nearly full (the run's checkpoints
    need the space more). Returns whether it was kept; where it was not, a warning says why (unless
    the cache was switched off with VAEKIT_CACHE_MAX=0), since every later command then pays the time."""
    import shutil
    import warnings

    path = Path(path)
    again = "it is computed again by the next command that needs it"
    try:
        buf = io.BytesIO()
        writer(buf)
        size, limit = buf.tell(), cache_limit()
        if limit is None or size > limit:
            if limit:
                warnings.warn(f"not cached: {budget.human(size)} is more than the cache may hold "
                              f"($VAEKIT_CACHE_MAX={budget.human(limit)}); {again}", stacklevel=2)
            return False
        path.parent.mkdir(parents=True, exist_ok=True)
        disk = shutil.disk_usage(path.parent)
        if disk.free - size < min(CACHE_RESERVE, disk.total // 20):
            warnings.warn(f"not cached: the disk of {show(str(path.parent), 300)} has {budget.human(disk.free)} free, "
                          f"kept for the runs' own files; {again}", stacklevel=2)
            return False
        _make_room(path.parent.parent, limit - size)
        atomic_write(path, buf.getvalue())
        return True
    except (OSError, OutputError) as e:
        where = f"{show(str(path.parent), 300)} cannot be written ({e.strerror or e})" if isinstance(e, OSError) else str(e)
        warnings.warn(f"not cached: {where}; {again}; set VAEKIT_CACHE to a folder you can write", stacklevel=2)
        return False


def _make_room(root: Path, room: int) -> None:
    """Remove the least recently used cache entries under ``root`` until they take at most ``room`` bytes."""
    entries = []
    for kind in CACHE_KINDS:
        with contextlib.suppress(OSError):
            for entry in os.scandir(root / kind):
                with contextlib.suppress(OSError):
                    st = entry.stat(follow_symlinks=False)
                    if stat.S_ISREG(st.st_mode) and not entry.name.startswith("."):
                        entries.append((st.st_mtime, entry.path, st.st_size))
    total = sum(size for _, _, size in entries)
    for _, name, size in sorted(entries):
        if total <= room:
            break
        with contextlib.suppress(OSError):
            os.unlink(name)
        total -= size


def cache_used(path: str | Path) -> None:
    """Mark a cache entry as just used (its modification time), so that it is removed last."""
    with contextlib.suppress(OSError):
        os.utime(path)


def finite_or_none(obj: Any, path: str = "", bad: list[str] | None = None) -> Any:
    """A copy of ``obj`` with every non-finite float replaced by None; ``bad`` collects their keys."""
    if isinstance(obj, float) and not math.isfinite(obj):
        if bad is not None:
            bad.append(path or "value")
        return None
    if isinstance(obj, dict):
        return {k: finite_or_none(v, f"{path}.{k}" if path else str(k), bad) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite_or_none(v, f"{path}[{i}]", bad) for i, v in enumerate(obj)]
    return obj


def strict_json(obj: Any, indent: int | None = None) -> str:
    """JSON that every parser accepts: non-finite numbers become null, and a top-level object
    gains ``"non_finite"`` listing which keys were NaN/inf (so a null is never unexplained)."""
    bad: list[str] = []
    clean = finite_or_none(obj, "", bad)
    if bad and isinstance(clean, dict):
        clean["non_finite"] = bad
    return json.dumps(clean, indent=indent, allow_nan=False)


__all__ = ["OutputError", "atomic_output", "atomic_write", "file_size", "open_regular", "read_regular",
           "show", "strict_json", "user_path", "write_via_buffer"]
