"""Vectors in a text table (.csv, .tsv, .txt; separated by commas, semicolons, tabs or spaces):
numbers, an optional header row naming the columns, and an optional label column (a header named
label, labels, class, target or targets). A nameless first column under a header is a row index
(what pandas' ``to_csv`` writes) and is left out.

Numbers are parsed by numpy's C reader straight from the file; the one memory cost beyond the
result is bounded before reading (a value takes at least two bytes of text, e.g. ``1,``). A bad
line is found and named by its line number in the file, with what is wrong in it. Tables of
16 MiB or more are parsed once and kept in $VAEKIT_CACHE/tables (keyed by the file's path, size
and modification time), since every command that reads the data would parse them again.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import math
import os
import re
import warnings
from array import array
from pathlib import Path
from typing import Any, BinaryIO, Iterator

import numpy as np

from .. import budget
from ..config import MAX_CLASSES
from ..errors import BudgetError, DataError, VaekitError, brief, show
from ..files import cache_dir, cache_used, file_size, open_regular, write_cache

TEXT_SUFFIXES = (".csv", ".tsv", ".txt")
LABEL_COLUMNS = ("label", "labels", "class", "target", "targets")  # not "y": often a coordinate
_INTEGER = re.compile(r"[+-]?\d+(?:\.0*)?")  # 3.0: a class number a float column wrote (pandas, with gaps)
_DECIMAL_COMMA = re.compile(r"[+-]?\d+,\d+")
CACHE_MIN_BYTES = 16 << 20  # smaller tables parse in about half a second or less
CACHE_VERSION = 1
Table = tuple[np.ndarray, "np.ndarray | None", "list[str] | None"]


def is_text_table(path: Path) -> bool:
    return path.suffix.lower() in TEXT_SUFFIXES


@contextlib.contextmanager
def _text(raw: BinaryIO) -> Iterator[io.TextIOWrapper]:
    """The file from its start as text: UTF-8, or UTF-16/32 where a byte-order mark says so (Excel's
    "Unicode text" export); the binary file stays open for the next pass."""
    raw.seek(0)
    head = raw.read(4)
    raw.seek(0)
    encoding = ("utf-32" if head in (b"\xff\xfe\x00\x00", b"\x00\x00\xfe\xff") else
                "utf-16" if head[:2] in (b"\xff\xfe", b"\xfe\xff") else "utf-8-sig")
    f = io.TextIOWrapper(raw, encoding=encoding, newline="")
    try:
        yield f
    finally:
        f.detach()


def _content(lines: Iterator[str]) -> Iterator[tuple[int, str]]:
    """(1-based line number, line) of the lines that hold data: no blank or ``#`` comment lines."""
    for number, line in enumerate(lines, 1):
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            yield number, stripped


def _rows(f: io.TextIOWrapper, delimiter: str | None) -> Iterator[tuple[int, list[str]]]:
    """(line number, fields) of every line that holds data, read in one pass by the csv module."""
    if delimiter is None:
        for number, line in enumerate(f, 1):
            fields = line.split()
            if fields and not fields[0].startswith("#"):
                yield number, fields
        return
    reader = csv.reader(f, delimiter=delimiter)
    for fields in reader:
        first = fields[0].strip() if fields else ""
        if (first or len(fields) > 1) and not first.startswith("#"):
            yield reader.line_num, fields


def _full_rows(f: io.TextIOWrapper, path: Path, delimiter: str | None, skip: int, width: int) -> Iterator[list[str]]:
    """The fields of every data row after the header, each checked to have the header's width."""
    for number, fields in _rows(f, delimiter):
        if number <= skip:
            continue
        if len(fields) != width:
            raise DataError(f"{path}: line {number} has {len(fields)} columns, the header {width}")
        yield fields


def _empty_at_the_end(rows: Iterator[list[str]], path: Path) -> Iterator[list[str]]:
    """Rows whose last field, under a nameless last column, must be empty: a delimiter ending every line
    is an export's habit, a value there would be a column left out without a word."""
    for n, fields in enumerate(rows, 1):
        if fields[-1].strip().strip('"'):
            raise DataError(f"{path}: the last column has no name in the first line but row {n} holds "
                            f"{show(fields[-1].strip(), 20)} in it; name the column, or end no line with a delimiter")
        yield fields


def _fields(line: str, delimiter: str | None) -> list[str]:
    if delimiter is None:
        return line.split()
    return [f.strip().strip('"').strip() for f in next(csv.reader([line], delimiter=delimiter))]


def _is_number(text: str) -> bool:
    """What numpy reads as a number: Python's float() also takes ``1_000``, which numpy refuses."""
    try:
        float(text)
        return "_" not in text
    except ValueError:
        return False


F32_MAX = float(np.finfo(np.float32).max)


def _first_non_finite(f: io.TextIOWrapper, delimiter: str | None, skip: int, numeric: list[int]) -> str:
    """Where the first value that is NaN, infinite or beyond float32's range stands, by line and column."""
    for number, line in _content(f):
        if number > skip:
            fields = _fields(line, delimiter)
            for j in (j for j in numeric if j < len(fields)):
                v = float(fields[j])
                if not (math.isfinite(v) and abs(v) <= F32_MAX):
                    return f"line {number}, column {j + 1}: {show(fields[j], 40)}"
    return "a value"


def _delimiter(path: Path, first: str) -> str | None:
    suffix = path.suffix.lower()
    if suffix == ".tsv":
        return "\t"
    if ";" in first:  # what spreadsheets write where the comma is the decimal mark
        return ";"
    if suffix == ".csv" or "," in first:
        return ","
    return "\t" if "\t" in first else None  # else runs of spaces


def _bad_line(f: io.TextIOWrapper, delimiter: str | None, skip: int, width: int, numeric: list[int]) -> str | None:
    """What is wrong with the first line numpy could not read, named by its line number."""
    for number, line in _content(f):
        if number <= skip:
            continue
        fields = _fields(line, delimiter)
        if len(fields) != width:
            return f"line {number} has {len(fields)} columns, the first row has {width}"
        for column, text in ((j + 1, fields[j]) for j in numeric):
            if not text:
                return f"line {number}, column {column} is empty"
            if not _is_number(text):
                decimal_comma = " (decimal commas are not read: write 1.5, not 1,5)" if _DECIMAL_COMMA.fullmatch(text) else ""
                return f"line {number}, column {column}: {show(text, 40)} is not a number{decimal_comma}"
    return None


class _Labels:
    """Labels gathered row by row at 8 bytes each (the index of each distinct text), so a table of
    many short rows cannot turn into as many Python strings."""

    def __init__(self, path: Path, name: str) -> None:
        self.path, self.name = path, name
        self.ids = array("q")
        self.index: dict[str, int] = {}

    def extend(self, texts: Iterator[str]) -> None:
        index, ids, limit = self.index, self.ids, MAX_CLASSES
        for text in texts:
            ids.append(index.setdefault(text, len(index)))
            if len(index) > limit:
                raise DataError(f"{self.path}: column {show(self.name)} has over {limit} distinct values; class "
                                f"labels are at most {limit} classes")

    def classes(self) -> tuple[np.ndarray, list[str] | None]:
        """Integer labels (also written as 3.0) as they are; any other labels become classes 0, 1, ... in
        sorted order."""
        texts = list(self.index)
        ids = np.frombuffer(self.ids, dtype=np.int64) if len(self.ids) else np.zeros(0, np.int64)
        if all(_INTEGER.fullmatch(t) for t in texts):
            values = np.array([int(t.partition(".")[0]) for t in texts], dtype=object)
            if len(values) and (min(values) < 0 or max(values) >= 2**31):
                raise DataError(f"{self.path}: column {show(self.name)} must hold class numbers 0, 1, 2, ... or "
                                f"class names, got {min(values)} to {max(values)}")
            return values.astype(np.int64)[ids], None
        names = sorted(texts)
        where = {n: i for i, n in enumerate(names)}
        return np.array([where[t] for t in texts], dtype=np.int64)[ids], names


class _Counted(io.BufferedIOBase):
    """A binary file whose reads move a progress bar (a pass over the file from its start restarts it)."""

    def __init__(self, raw: BinaryIO, bar: Any) -> None:
        super().__init__()
        self.raw, self.bar = raw, bar

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        at = self.raw.seek(offset, whence)
        self.bar.reset(total=self.bar.total)
        self.bar.update(at)
        return at

    def tell(self) -> int:
        return self.raw.tell()

    def read(self, size: int | None = -1) -> bytes:
        return self._count(self.raw.read(size))

    def read1(self, size: int = -1) -> bytes:
        return self._count(self.raw.read1(size))

    def _count(self, data: bytes) -> bytes:
        self.bar.update(len(data))
        return data


@contextlib.contextmanager
def _watched(raw: BinaryIO, path: Path, size: int, shown: bool) -> Iterator[BinaryIO]:
    """``raw``, with a progress bar over its bytes where ``shown`` (and the output is a terminal)."""
    if not shown:
        yield raw
        return
    from tqdm import tqdm

    with tqdm(total=size, desc=f"parsing {show(path.name, 40)}", unit="B", unit_scale=True, leave=False, disable=None) as bar:
        yield _Counted(raw, bar)


def read_table(path: Path, progress: bool = True) -> Table:
    """(values (N, D) float32, labels (N,) int64 or None, class names or None) from a text table;
    ``progress`` shows the parse of one large enough to be cached (seconds per 100 MB)."""
    with open_regular(path, "text table (.csv, .tsv or .txt)") as raw:
        st = os.fstat(raw.fileno())
        budget.check(2 * (st.st_size + 1), f"{path} as float32 (up to one value per 2 bytes of text)")
        cached = _cache_path(path, st) if st.st_size >= CACHE_MIN_BYTES else None
        table = _read_cache(cached) if cached else None
        if table is not None:
            return table
        try:
            with _watched(raw, path, st.st_size, progress and cached is not None) as watched:
                table = _parse(path, watched)
        except VaekitError:
            raise
        except UnicodeDecodeError as e:
            raise DataError(f"{path}: not UTF-8 text (byte {e.start}; UTF-16 is read where it starts with its byte-order mark); save the table as UTF-8 or as .npy") from None
        except (ValueError, csv.Error) as e:
            raise DataError(f"{path}: not a table of numbers ({brief(e)})") from None
    if cached:
        _write_cache(cached, table)
    return table


def _cache_path(path: Path, st: os.stat_result) -> Path:
    key = f"{CACHE_VERSION}\0{path.resolve()}\0{st.st_size}\0{st.st_mtime_ns}\0{st.st_ino}"
    return cache_dir("tables") / f"{hashlib.sha256(key.encode('utf-8', 'surrogateescape')).hexdigest()[:32]}.npz"


def _read_cache(cached: Path) -> Table | None:
    """The parsed table, or None when there is none or it is damaged (then it is parsed again)."""
    if not cached.is_file():
        return None
    try:
        with open_regular(cached, "table cache") as f:
            budget.check(file_size(f), f"{cached} (parsed table cache)")
            with np.load(f, allow_pickle=False) as z:
                x = z["x"]
                y = z["y"] if "y" in z.files else None
                names = z["names"].tolist() if "names" in z.files else None
    except BudgetError:
        raise
    except Exception:  # a damaged cache is rebuilt, never trusted
        return None
    ok = x.dtype == np.float32 and x.ndim == 2 and (y is None or (y.dtype == np.int64 and y.shape == (len(x),)))
    ok = ok and (names is None or all(isinstance(n, str) for n in names))
    if ok:
        cache_used(cached)
    return (x, y, names) if ok else None


def _write_cache(cached: Path, table: Table) -> None:
    x, y, names = table
    arrays = {"x": x, **({"y": y} if y is not None else {}), **({"names": np.array(names)} if names else {})}
    write_cache(cached, lambda buf: np.savez(buf, **arrays))


def _parse(path: Path, raw: BinaryIO) -> Table:
    with _text(raw) as f:
        first = next(_content(f), None)
    if first is None:
        raise DataError(f"{path}: holds no rows of numbers")
    number, line = first
    delimiter = _delimiter(path, line)
    names = _fields(line, delimiter)
    header = any(n and not _is_number(n) for n in names)
    found = [j for j, n in enumerate(names) if header and n.lower() in LABEL_COLUMNS]
    if len(found) > 1:
        raise DataError(f"{path}: columns {found[0] + 1} and {found[1] + 1} ({show(names[found[0]])}, "
                        f"{show(names[found[1]])}) could both be the labels; rename all but one")
    label = found[0] if found else None
    skip = number if header else number - 1
    index = header and names[0] == ""  # pandas' to_csv writes its row index as a nameless first column
    trailing = len(names) > 1 and names[-1] == ""  # a delimiter ending every line (spreadsheet exports)
    columns = [j for j in range(len(names)) if j != label and not (index and j == 0)
               and not (trailing and j == len(names) - 1)]
    if not columns:
        raise DataError(f"{path}: the only column is the label column {show(names[label])}; no values to model")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            with _text(raw) as f:
                x = np.loadtxt(f, delimiter=delimiter, dtype=np.float32, ndmin=2, skiprows=skip,
                               usecols=columns if len(columns) < len(names) else None, quotechar='"', comments="#")
        except ValueError as e:
            with _text(raw) as f:
                where = _bad_line(f, delimiter, skip, len(names), columns)
            hint = "" if header else "; a header row naming the columns (label column: 'label') is also accepted"
            raise DataError(f"{path}: {where or brief(e)}{hint}") from None
    if header and not len(x):
        raise DataError(f"{path}: holds a header row but no rows of numbers")
    bad = int(np.count_nonzero(~np.isfinite(x)))
    if bad:
        with _text(raw) as f:
            where = _first_non_finite(f, delimiter, skip, columns)
        raise DataError(f"{path}: {where} is not a finite float32 number ({bad} such value{'s' if bad > 1 else ''} "
                        "in all: NaN, inf or beyond 3.4e38); clean or rescale the data")
    y, classes = None, None
    if len(columns) < len(names):  # numpy read some columns only; every row must still have them all
        labels = _Labels(path, names[label] if label is not None else "")
        with _text(raw) as f:
            rows = _full_rows(f, path, delimiter, skip, len(names))
            if trailing:
                rows = _empty_at_the_end(rows, path)
            if label is None:
                count = sum(1 for _ in rows)
            else:
                labels.extend(fields[label].strip().strip('"') for fields in rows)
                count = len(labels.ids)
        if count != len(x):
            raise DataError(f"{path}: {count} rows of labels for {len(x)} rows of values; file changed?")
        if label is not None:
            y, classes = labels.classes()
    return x, y, classes


def read_label_column(path: Path) -> tuple[np.ndarray, list[str] | None]:
    """Labels one per line (an optional first line naming the column, e.g. ``label``)."""
    labels = _Labels(path, "labels")
    with open_regular(path, "labels file (.csv, .tsv or .txt)") as raw:
        budget.check(4 * (file_size(raw) + 1), f"{path} as labels (up to 8 bytes per 2 bytes of text)")
        try:
            with _text(raw) as f:
                for row, (number, line) in enumerate(_content(f)):
                    delimiter = _delimiter(path, line)
                    fields = [line] if delimiter is None else _fields(line, delimiter)  # a name may hold spaces
                    if len(fields) != 1:
                        raise DataError(f"{path}: expected one label per line, line {number} has {len(fields)} fields")
                    if row or fields[0].lower() not in LABEL_COLUMNS:  # else a first line naming the column
                        labels.extend(iter(fields))
        except UnicodeDecodeError as e:
            raise DataError(f"{path}: not UTF-8 text (byte {e.start}); save the labels as UTF-8 or as .npy") from None
        except csv.Error as e:
            raise DataError(f"{path}: not one label per line ({brief(e)})") from None
    return labels.classes()
