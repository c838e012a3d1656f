"""Fetching a file over HTTP(S) with a progress bar, written atomically (temp file + rename)."""

from __future__ import annotations

import os
import urllib.error
import urllib.request
from pathlib import Path

from tqdm.auto import tqdm

TIMEOUT_S = 30.0


def fetch(url: str, dest: Path, progress: bool = True) -> None:
    """Download ``url`` to ``dest``; on any failure nothing is left at ``dest``. Raises OSError."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + ".part")
    try:
        req = urllib.request.Request(url, headers={"User-Agent": "vaekit"})
        with urllib.request.urlopen(req, timeout=TIMEOUT_S) as resp, open(tmp, "wb") as out:
            total = int(resp.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=dest.name, disable=not progress,
                      leave=False) as bar:
                while chunk := resp.read(1 << 16):
                    out.write(chunk)
                    bar.update(len(chunk))
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, dest)
    except (urllib.error.URLError, OSError, ValueError) as e:
        tmp.unlink(missing_ok=True)
        reason = getattr(e, "reason", None) or e
        raise OSError(f"{url}: {reason}") from None
