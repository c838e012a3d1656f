"""Fetching a file over HTTP(S) with a progress bar, written atomically (files.atomic_output)."""

from __future__ import annotations

import urllib.error
import urllib.request
from pathlib import Path

from tqdm.auto import tqdm

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
                with tqdm(total=total, unit="B", unit_scale=True, desc=dest.name, disable=not progress,
                          leave=False) as bar:
                    while chunk := resp.read(1 << 16):
                        out.write(chunk)
                        bar.update(len(chunk))
        except (urllib.error.URLError, TimeoutError, ConnectionError, ValueError) as e:
            reason = getattr(e, "reason", None) or e
            raise DataError(f"{url}: {brief(reason) if isinstance(reason, BaseException) else reason}") from None
