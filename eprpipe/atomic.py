"""Atomic file output: a reader sees the old file or the complete new one, never a part."""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path

from eprpipe.errors import EprError


def write_atomically(path: str | os.PathLike, data: bytes) -> None:
    """Write `data` to a temporary file beside `path`, fsync it, rename it over `path`.

    On any failure the temporary file is removed and an existing `path` is left untouched;
    OS errors become one-line EprErrors naming the path.
    """
    target = Path(path)
    temporary = target.with_name(f".{target.name}.{secrets.token_hex(6)}.tmp")
    try:
        # O_EXCL: never clobber a file we did not create; 0o666 lets the umask decide the mode.
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    except OSError as err:
        raise EprError(f"cannot write {path}: {err.strerror or err}") from err
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, target)
    except BaseException as err:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        if isinstance(err, OSError):
            raise EprError(f"cannot write {path}: {err.strerror or err}") from err
        raise
    _fsync_directory(target.parent)


def _fsync_directory(directory: Path) -> None:
    """Make the rename durable; some filesystems cannot open directories, which is harmless."""
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
