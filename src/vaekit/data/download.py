"""Fetching a file over HTTP(S) with a progress bar, written atomically (files.atomic_output)."""

from __future__ import annotations

import http.client
import urllib.error
import urllib.request
from pathlib import Path

from tqdm.auto import tqdm

from .. import budget
from ..errors import DataError, brief
from ..files import atomic_output

TIMEOUT_S = 30.0


def fetch(url: str, dest: Path, progress: bool = True) -> None:
    """Download ``url`` to ``dest``; on any failure nothing is left at ``dest``. Raises VaekitError."""
    with atomic_output(dest) as out:
        try:
            req = urllib.request.Request(url, headers={"User-Agent": "vaekit"})
            with urllib.request.urlopen(req, timeout=TIMEOUT_S) as resp:
                total = int(resp.headers.get("Content-Length") or 0) or None
                budget.check(total or 0, f"{url}: the download")  # it is read into memory next
                with tqdm(total=total, unit="B", unit_scale=True, desc=dest.name, disable=not progress,
                          leave=False) as bar:
                    received = 0
                    while chunk := resp.read(1 << 16):
                        out.write(chunk)
                        received += len(chunk)
                        budget.check(received, f"{url}: the download")  # a stream without end stops here
                        bar.update(len(chunk))
            if total is not None and received != total:  # urllib ends a read cut short without a word
                raise ConnectionError(f"the connection closed after {received:,} of {total:,} bytes")
        except (urllib.error.URLError, http.client.HTTPException, TimeoutError, ConnectionError, ValueError) as e:
            reason = getattr(e, "reason", None) or e
            raise DataError(f"{url}: {brief(reason) if isinstance(reason, BaseException) else reason}") from None
