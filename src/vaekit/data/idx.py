"""Reading IDX files (the MNIST format), plain or gzipped, checking the header against the size.

Sizes are checked before anything is allocated, so a truncated or lying file is an error,
never a hang or a huge allocation.
"""

from __future__ import annotations

import gzip
import hashlib
import math
import struct
import zlib
from pathlib import Path

import numpy as np

from .. import budget
from ..errors import DataError, brief, show
from ..files import file_size, open_regular

_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx_bytes(path: Path) -> bytes:
    """The uncompressed bytes of an IDX file (gunzipped when the name ends in .gz). The header is
    read first and its declared size checked (against the real file size, the memory budget and,
    for gzip, the compression ratio) before the data are read."""
    with open_regular(path, "IDX file") as raw:
        stored = file_size(raw)
        if path.suffix != ".gz":
            head = raw.read(4)
            dims_raw = raw.read(4 * (head[3] if len(head) == 4 else 0))
            expected = _expected_size(path, head, dims_raw)
            if stored != expected:
                what = "truncated" if stored < expected else "longer than its header says"
                raise DataError(f"{path}: IDX file is {what} ({stored} bytes, header implies {expected}); "
                                "delete it and download it again")
            return head + dims_raw + raw.read(expected - len(head) - len(dims_raw))
        try:
            with gzip.open(raw, "rb") as f:
                head = f.read(4)
                ndim = head[3] if len(head) == 4 else 0
                dims_raw = f.read(4 * ndim)
                expected = _expected_size(path, head, dims_raw)
                budget.check_ratio(expected, stored, f"{path} (gzip)")
                rest = f.read(expected - len(head) - len(dims_raw) + 1)  # +1 detects trailing bytes
                if len(head) + len(dims_raw) + len(rest) == expected:
                    f.read(1)  # reading at the end makes gzip check its CRC and length trailer
                return head + dims_raw + rest
        except (OSError, EOFError, zlib.error) as e:
            raise DataError(f"{path}: not a readable gzip file ({brief(e)}); delete it and download it again") from None


def _expected_size(path: Path, head: bytes, dims_raw: bytes) -> int:
    if len(head) < 4 or head[0] != 0 or head[1] != 0 or head[2] not in _DTYPES or head[3] == 0:
        raise DataError(f"{path}: not an IDX file (bad magic number {head.hex() or 'empty'})")
    ndim = head[3]
    if len(dims_raw) < 4 * ndim:
        raise DataError(f"{path}: truncated IDX header")
    dims = struct.unpack(f">{ndim}I", dims_raw[: 4 * ndim])
    itemsize = np.dtype(_DTYPES[head[2]]).itemsize
    size = 4 + 4 * ndim + math.prod(dims) * itemsize
    budget.check(size, f"{path} (IDX header declares {show(dims)})")
    return size


def parse_idx(data: bytes, path: Path) -> np.ndarray:
    """Decode IDX bytes into an array, checking magic number and that the header matches the size."""
    ndim = data[3] if len(data) >= 4 else 0
    expected = _expected_size(path, data[:4], data[4 : 4 + 4 * ndim])
    if len(data) != expected:
        what = "truncated" if len(data) < expected else "longer than its header says"
        raise DataError(
            f"{path}: IDX file is {what} ({len(data)} bytes, header implies {expected}); "
            "delete it and download it again"
        )
    dims = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
    arr = np.frombuffer(data, dtype=_DTYPES[data[2]], offset=4 + 4 * ndim)
    return arr.reshape(dims)


def md5(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()
