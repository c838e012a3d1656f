"""The one exception type users see: a one-line message naming the thing at fault and the fix,
and the helpers that keep every message to one short line."""

from __future__ import annotations

import difflib
import numbers
import re
from typing import Any, Callable, Iterable

MESSAGE_LIMIT = 600  # characters of one error line (values inside it are shortened first)


class VaekitError(Exception):
    """A problem with the user's input, files or settings; the CLI prints it as one line, exit code 2."""


class DataError(VaekitError):
    """A data set that cannot be found, read or used as configured."""


class ConfigError(VaekitError):
    """A configuration value or preset that is unknown or out of range."""


class InputError(VaekitError, ValueError):
    """A tensor handed to a model's method that does not fit the model (not a tensor, another shape,
    integers where the model reads floats), said before torch's own error from deep inside a layer."""


class RunFolderError(VaekitError):
    """A run folder that is missing, incomplete, inconsistent or in use."""


class BudgetError(VaekitError):
    """A file or a flag asks for more memory than the budget allows."""


class PeerStopped(VaekitError):
    """This process of a data-parallel job stopped because another one did (refused the run, failed or
    was killed); that one's own message says why. ``then``: what the run folder kept, and how to go on."""

    def __init__(self, cause: str, then: str = "") -> None:
        super().__init__(f"{cause}; {then}" if then else cause)
        self.then = then


class TrainingInterrupted(Exception):
    """Training stopped on SIGINT/SIGTERM after saving a checkpoint; the message says how to resume."""

    def __init__(self, message: str, signal_name: str) -> None:
        super().__init__(message)
        self.signal_name = signal_name


# The range of each counted flag, in one place: the CLI's converters and the Python functions'
# checks both read it, so a value the command refuses is refused by its function too.
RANGES: dict[str, tuple[int, int]] = {
    "-n": (1, 10**7),  # samples: past this is a typo (the budget checks memory)
    "reconstruct -n": (1, 10**5),
    "-k": (1, 10**4),
    "--iwae-k": (0, 10**6),
    "--generation-n": (10, 10**6),
    "--components": (1, 1000),
    "--jobs": (1, 64),
    "--nproc": (1, 1024),
    "--port": (0, 65535),
    "--grid-dims": (0, 65535),
    "--seed": (0, 2**63 - 1),
}
MAX_MINUTES = 10**7


def integer(value: Any) -> int | None:
    """``value`` as a Python int when it is a whole number of any integer type (numpy's too), else
    None; a bool is not a count."""
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return int(value)
    return None


def real(value: Any) -> float | None:
    """``value`` as a Python float when it is a real number of any type (numpy's too, not a bool), else
    None. A narrower float keeps its shortest decimal (numpy's float32 0.001 is 0.001, not 0.0010000000474974513)."""
    if not isinstance(value, numbers.Real) or isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    try:
        return float(str(value))
    except ValueError:  # a Fraction's '1/3'
        return float(value)


def whole_number(value: Any, name: str, lo: int | None = None, hi: int | None = None) -> int:
    """A count given to a Python function, checked as the CLI checks its flag ``name``: a whole
    number in [lo, hi] (by default the flag's range in RANGES), else a one-line error naming it.
    Returns it as a Python int (a numpy integer becomes one, so it can be written to JSON)."""
    known_lo, known_hi = RANGES.get(name, (1, None))
    lo, hi = known_lo if lo is None else lo, known_hi if hi is None else hi
    n = integer(value)
    if n is None or n < lo or (hi is not None and n > hi):
        within = f"{lo} to {hi}" if hi is not None else f"at least {lo}"
        raise VaekitError(f"{name.rpartition(' ')[2]} {show(value)}: give a whole number, {within}")
    return n


def line_sink(log: Any, name: str = "log") -> Callable[[str], Any]:
    """Where a function's progress lines go, as given from Python: a callable (print, logging.info), or
    None for silence; anything else is refused by name before any work (it failed at the first line)."""
    if log is None:
        return lambda line: None
    if not callable(log):
        raise VaekitError(f"{name}: a {type(log).__name__}; give a function taking one line of text (print, "
                          "logging.info) or None")
    return log


def minutes(value: Any, name: str = "--max-minutes") -> float | None:
    """A time limit given to a Python function (None: no limit), checked as the CLI checks it."""
    if value is None:
        return None
    m = real(value)
    if m is None or not 0 < m <= MAX_MINUTES:
        raise VaekitError(f"{name} {show(value)}: give a number of minutes above 0, at most {MAX_MINUTES:g}")
    return m


def _escape(text: str) -> str:
    """Control characters (newlines, escapes, NUL ...) as visible escapes: one line, no terminal tricks."""
    return "".join(c if c.isprintable() or c == " " else c.encode("unicode_escape").decode("ascii") for c in text)


def counted(n: int, noun: str) -> str:
    """'1 test example', '2 test examples': a count with its noun in the right number."""
    return f"{n:,} {noun}{'' if n == 1 else 's'}"


def show(value: Any, limit: int = 80) -> str:
    """A value as it may appear in a message: repr for non-strings, escaped, at most ``limit`` characters."""
    text = _escape(value if isinstance(value, str) else repr(value))
    return text if len(text) <= limit else f"{text[: limit - 24]}...({len(text)} characters)"


_UNPAIRED = re.compile("[\ud800-\udc7f\udd00-\udfff]")  # lone surrogates other than escaped bytes


def as_text(text: str) -> str:
    """Text that can be shown, drawn and saved as UTF-8: the bytes of a file name that were not UTF-8
    (which Python keeps as lone surrogates, refused by encoders and fonts alike) become U+FFFD, as do
    the unpaired surrogates JSON text may spell (``"\\ud800"``)."""
    return _UNPAIRED.sub("\ufffd", text).encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def one_line(text: str, limit: int = MESSAGE_LIMIT) -> str:
    """A message fit for one terminal line: escaped, and its middle elided when it is too long."""
    text = _escape(text.strip())
    if len(text) <= limit:
        return text
    head, tail = (limit * 2) // 3, limit // 3 - 5
    return f"{text[:head]} ... {text[-tail:]}"


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """The text ``(did you mean 'x'?)``, with a leading space, for the choice closest to a mistyped
    ``word`` (case, '_' for '-', a letter or two), or "" when none is close: for every message about
    an unknown name."""
    choices = [str(c) for c in choices]
    key = lambda s: s.lower().replace("_", "-")  # noqa: E731
    by_key = {key(c): c for c in choices}
    close = difflib.get_close_matches(key(str(word)), list(by_key), n=1, cutoff=0.75)
    return f" (did you mean '{show(by_key[close[0]])}'?)" if close else ""


def figure(v: int | float) -> str:
    """A number for a table or a message: a count as it is, else four decimals, or four significant
    digits where four decimals would take more than 12 characters (squared errors of raw data reach 1e60)."""
    if isinstance(v, int) and not isinstance(v, bool):
        return str(v)
    return f"{v:.4f}" if abs(v) < 1e7 else f"{v:.4g}"


def brief(e: BaseException) -> str:
    """The first line of an exception from a dependency, shortened: what went wrong, for a message."""
    text = (str(e).strip().splitlines() or [""])[0]
    text = re.sub(r"\s*<[A-Za-z_][\w.]* [^<>]*>", "", text).strip()  # an object's repr: <_io.BufferedReader name=3>
    return show(text or type(e).__name__, 100)
