"""Atomic file output: a reader sees the old file or the complete new one, never a part.

An output path names a regular file to create or replace, nothing else: a device, FIFO, socket
or directory there is refused (replacing `/dev/null` as root would destroy the device), and so
is the file being read (`-o` equal to the input would overwrite it). A symlink is followed: the
link stays and the file it names is replaced, as `cp` and shell redirection do.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
from collections.abc import Iterable
from pathlib import Path

from eprpipe.errors import EprError
from eprpipe.format.sources import special_kind


def write_atomically(
    path: str | os.PathLike, data: bytes, *, inputs: Iterable[str | os.PathLike] = ()
) -> None:
    """Write `data` to a temporary file beside `path`, fsync it, rename it over `path`.

    Refused before anything is created: a `path` that exists and is not a regular file, and a
    `path` that is the same file as one of `inputs` (by device and inode, so links count).
    A symlink at `path` is kept and the file it names is replaced. On any failure the temporary
    file is removed and an existing `path` is left untouched; an existing file's permission bits
    are kept. OS errors become one-line EprErrors naming the path.
    """
    target = Path(os.path.realpath(path))
    existing = check_output_path(path, inputs=inputs)
    temporary = target.with_name(f".{target.name}.{secrets.token_hex(6)}.tmp")
    try:
        # O_EXCL: never clobber a file we did not create; 0o666 lets the umask decide the mode
        # of a new file, 0o600 keeps a replaced one private until it gets the old mode.
        mode = 0o666 if existing is None else 0o600
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    except OSError as err:
        raise EprError(f"cannot write {path}: {err.strerror or err}") from err
    try:
        with os.fdopen(fd, "wb") as handle:
            if existing is not None:
                os.fchmod(fd, existing.st_mode & 0o777)  # no setuid, setgid or sticky bits
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


def check_output_path(
    path: str | os.PathLike, *, inputs: Iterable[str | os.PathLike] = ()
) -> os.stat_result | None:
    """What write_atomically checks before it creates anything, for callers that want to fail
    before hours of work: the stat of the regular file `path` resolves to, None if nothing is
    there; an EprError for a device, FIFO, socket, directory or one of `inputs`."""
    existing = _existing_regular_file(path, Path(os.path.realpath(path)))
    if existing is not None:
        _refuse_inputs(path, existing, inputs)
    return existing


def _existing_regular_file(path: str | os.PathLike, target: Path) -> os.stat_result | None:
    """The stat of the regular file `path` resolves to, None if nothing is there; else refuse.

    lstat, never open: opening a FIFO for writing blocks until a reader comes.
    """
    try:
        status = os.lstat(target)
    except FileNotFoundError:
        return None
    except OSError as err:
        raise EprError(f"cannot write {path}: {err.strerror or err}") from err
    if stat.S_ISREG(status.st_mode):
        return status
    kind = special_kind(status.st_mode)
    if kind is None:  # still a link after realpath: a loop
        raise EprError(f"refusing to write {path}: its symlinks do not end in a file")
    where = f"it links to {target}," if os.path.islink(path) else "it is"
    raise EprError(f"refusing to write {path}: {where} {kind}, not a regular file")


def _refuse_inputs(
    path: str | os.PathLike, existing: os.stat_result, inputs: Iterable[str | os.PathLike]
) -> None:
    """Refuse if the file at `path` is one of `inputs`, under any name (hard or symbolic link)."""
    for source in inputs:
        try:
            status = os.stat(source)
        except OSError:
            continue  # an input that is gone cannot be overwritten
        if (status.st_dev, status.st_ino) == (existing.st_dev, existing.st_ino):
            same = "" if Path(path) == Path(source) else f" ({path} is the same file)"
            raise EprError(f"refusing to overwrite the input {source}{same}")


def _fsync_directory(directory: Path) -> None:
    """Make the rename durable; some filesystems cannot open directories, which is harmless."""
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
