"""Opt-in downloads of public datasets: bounded, checksummed, never on by default.

Tests and offline machines must never wait on the network, so nothing is fetched unless
EPRPIPE_DOWNLOAD=1; a download is refused past its size bound and kept only if its md5 is the
published one.
"""

from __future__ import annotations

import hashlib
import os
import urllib.request

from eprpipe.errors import DataError

TIMEOUT_S = 15


def downloads_enabled() -> bool:
    return os.environ.get("EPRPIPE_DOWNLOAD", "0") not in ("", "0")


def fetch_verified(url: str, md5: str, max_bytes: int, dataset: str, missing: str) -> bytes:
    """The bytes at `url` if they are at most `max_bytes` and have `md5`; else a DataError.

    `missing` says what was looked for and where, for the message when the network fails.
    """
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_S) as response:
            data = response.read(max_bytes + 1)
    except (OSError, ValueError) as exc:
        raise DataError(f"{missing} (download from {url} failed: {exc})") from exc
    if len(data) > max_bytes:
        raise DataError(f"{dataset}: {url} is larger than {max_bytes} bytes")
    digest = hashlib.md5(data, usedforsecurity=False).hexdigest()
    if digest != md5:
        raise DataError(f"{dataset}: {url} has md5 {digest}, expected {md5}; not saved")
    return data
