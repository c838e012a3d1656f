"""One memory budget for every allocation that a file or a flag controls.

Before vaekit allocates what a user's input asks for (a data set a header declares, an archive
member's decompressed size, a model's parameters and activations, a grid of samples), it asks
``check`` here. Over the limit is a one-line error naming the number, the limit and how to
raise it: ``--max-memory SIZE`` on any command, or ``$VAEKIT_MAX_MEMORY``. Compressed inputs
also face a ratio limit (``--max-ratio``, ``$VAEKIT_MAX_RATIO``): a small file that inflates
a thousandfold is a zip bomb, not a data set.

The limits live in a context variable, set for the duration of a command with ``limits(...)``.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Callable, Iterator

from .errors import BudgetError, ConfigError

DEFAULT_RATIO = 200.0  # MNIST's IDX files compress 2-8x; real float data far less
RATIO_FLOOR = 16 << 20  # small members cannot hurt, whatever their ratio
_UNITS = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


@dataclass(frozen=True)
class Limits:
    max_bytes: int
    max_ratio: float


def parse_size(text: str) -> int:
    """'512M', '8G', '1.5T', '1000000' -> bytes (binary units)."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmgtKMGT]?)(?:i?[bB])?\s*", str(text))
    if not m:
        raise ConfigError(f"'{text}' is not a size; write e.g. 512M, 8G or 1.5T")
    value = float(m.group(1)) * _UNITS[m.group(2).lower()]
    if not 1 <= value <= 1 << 60:
        raise ConfigError(f"'{text}' is not a usable size (1 byte .. 1 EiB)")
    return int(value)


def human(n: float) -> str:
    n = float(min(n, 1 << 70))
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(n) < 1024 or unit == "PiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} PiB"


def physical_memory() -> int:
    """The memory this process may use: the machine's, or less where a container's (cgroup's) limit
    says so, since the kernel kills a process that passes its cgroup's limit whatever the machine has."""
    try:
        machine = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        machine = 8 << 30
    return min(machine, cgroup_memory_limit() or machine)


CGROUP_ROOT = "/sys/fs/cgroup"


def _cgroup_values(v1_controller: str, v1_file: str, v2_file: str, root: str = CGROUP_ROOT) -> list[str]:
    """The contents of a control-group setting for this process's group and every group above it
    (a container's limits are set at one of them), from cgroup v2 or v1, whichever is mounted; an
    empty name skips that version. Values of two names asked for alike come in the same order."""
    from .errors import VaekitError
    from .files import open_regular

    def read(path: str, n: int) -> str:
        try:
            with open_regular(path, "cgroup file") as f:  # kernel files: their stat size says nothing
                return f.read(n).decode("utf-8", "replace").strip()
        except (VaekitError, OSError):
            return ""

    files = []
    for line in read("/proc/self/cgroup", 1 << 16).splitlines():
        _, controllers, group = (line.split(":", 2) + ["", ""])[:3]
        if controllers == "" or v1_controller in controllers.split(","):
            base, name = (root, v2_file) if controllers == "" else (f"{root}/{controllers}", v1_file)
            parts = [p for p in group.split("/") if p]
            files += [os.path.join(base, *parts[:i], name) for i in range(len(parts), -1, -1)] if name else []
    return [read(f, 64) for f in files]  # "" where a file is missing


def cgroup_memory_limit() -> int | None:
    """The smallest memory limit of this process's control group and the groups above it (v2
    ``memory.max``, v1 ``memory.limit_in_bytes``), or None where there is none."""
    limits = [int(v) for v in _cgroup_values("memory", "memory.limit_in_bytes", "memory.max") if v.isdigit()]
    return min(limits) if limits else None


def usable_cpus() -> int:
    """The cores this process may use: its CPU affinity, capped by a container's CPU quota (v2
    ``cpu.max``, v1 ``cpu.cfs_quota_us`` over ``cpu.cfs_period_us``), rounded up."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    quotas = []
    for v2 in _cgroup_values("cpu", "", "cpu.max"):  # "max 100000" or "50000 100000"
        quota, _, period = v2.partition(" ")
        if quota.isdigit() and period.isdigit() and int(period):
            quotas.append(int(quota) / int(period))
    v1_quotas, v1_periods = (_cgroup_values("cpu", name, "") for name in ("cpu.cfs_quota_us", "cpu.cfs_period_us"))
    for quota, period in zip(v1_quotas, v1_periods):
        if quota.isdigit() and period.isdigit() and int(period):  # -1: no quota
            quotas.append(int(quota) / int(period))
    return max(1, min([cores] + [math.ceil(q) for q in quotas]))


def default_limits() -> Limits:
    """Half the machine's (or the container's) memory and a 200x ratio, unless the environment says
    otherwise."""
    return Limits(_from_environment("VAEKIT_MAX_MEMORY", parse_size, physical_memory() // 2),
                  _from_environment("VAEKIT_MAX_RATIO", parse_ratio, DEFAULT_RATIO))


def _from_environment(name: str, parse: Callable[[str], Any], default: Any) -> Any:
    """The variable's value as ``parse`` reads it (a bad one is an error naming the variable), or ``default``."""
    text = os.environ.get(name)
    if not text:
        return default
    try:
        return parse(text)
    except ConfigError as e:
        raise ConfigError(f"${name}: {e}") from None


def parse_ratio(text: str) -> float:
    try:
        ratio = float(text)
    except ValueError:
        ratio = 0.0
    if not 1 <= ratio <= 1e9:
        raise ConfigError(f"'{text}' is not a usable compression ratio limit (a number from 1 up)")
    return ratio


_current: ContextVar[Limits | None] = ContextVar("vaekit_budget", default=None)


def current() -> Limits:
    return _current.get() or default_limits()


@contextlib.contextmanager
def limits(max_bytes: int | None = None, max_ratio: float | None = None) -> Iterator[Limits]:
    """Use these limits (None keeps the default) for everything inside the ``with`` block."""
    base = current()
    lim = Limits(base.max_bytes if max_bytes is None else max_bytes,
                 base.max_ratio if max_ratio is None else max_ratio)
    token = _current.set(lim)
    try:
        yield lim
    finally:
        _current.reset(token)


def check(nbytes: float, what: str) -> None:
    """Refuse an allocation of ``nbytes`` for ``what`` above the budget."""
    lim = current()
    if not nbytes <= lim.max_bytes:
        raise BudgetError(
            f"{what} needs about {human(nbytes)}, over the memory budget of {human(lim.max_bytes)}; "
            "if that is really meant, raise it with --max-memory SIZE (or VAEKIT_MAX_MEMORY)"
        )


def check_ratio(decompressed: int, compressed: int, what: str) -> None:
    """Refuse a compressed member that inflates beyond the ratio limit (and check its size)."""
    check(decompressed, what)
    ratio = decompressed / max(compressed, 1)
    lim = current()
    if decompressed > RATIO_FLOOR and ratio > lim.max_ratio:
        raise BudgetError(
            f"{what} inflates {ratio:.0f}-fold ({human(compressed)} -> {human(decompressed)}), over the "
            f"limit of {lim.max_ratio:g}x for compressed input (a zip bomb?); if it is genuine, "
            "raise it with --max-ratio R (or VAEKIT_MAX_RATIO)"
        )
