"""Where a container's bytes come from: memory, or a regular file read only as far as needed.

A reader that slurps a file before looking at it lets a 1 GiB file of zeros cost 1 GiB before
"bad magic", lets /dev/zero stream forever and lets a FIFO block `open()`. Reading through a
source instead, the container reader takes the header first, then exactly the bytes each
section entry declares, and checksums sections it does not use in bounded chunks.
"""

from __future__ import annotations

import os
import stat
import zlib
from typing import Protocol

from eprpipe.errors import EprError, FormatError

CRC_CHUNK = 1 << 20  # bytes checksummed at a time in sections nobody keeps


class ByteSource(Protocol):
    """Random access to a fixed number of bytes."""

    size: int

    def read(self, offset: int, count: int) -> bytes:
        """Exactly `count` bytes at `offset`; the caller has checked they lie within `size`."""
        ...


class MemorySource:
    """Bytes already in memory (a file a producer just wrote, a test case)."""

    def __init__(self, data: bytes) -> None:
        self._data = memoryview(data)
        self.size = len(data)

    def read(self, offset: int, count: int) -> bytes:
        return bytes(self._data[offset : offset + count])


class FileSource:
    """A regular file opened for reading; reads never go past the size it had when opened."""

    def __init__(self, fd: int, size: int, name: str) -> None:
        self._fd = fd
        self.size = size
        self.name = name

    def read(self, offset: int, count: int) -> bytes:
        chunks, done = [], 0
        while done < count:
            try:
                chunk = os.pread(self._fd, count - done, offset + done)
            except OSError as err:  # e.g. EIO: an I/O error names the file, it is no traceback
                raise EprError(f"cannot read {self.name}: {err.strerror or err}") from err
            if not chunk:  # the file shrank since it was opened
                raise FormatError(
                    f"{self.name}: file ended at {offset + done} bytes while reading; it was "
                    f"{self.size} bytes when opened",
                    offset=offset + done,
                    code="truncated",
                )
            chunks.append(chunk)
            done += len(chunk)
        return b"".join(chunks)

    def close(self) -> None:
        os.close(self._fd)

    def __enter__(self) -> FileSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def crc32_of(source: ByteSource, offset: int, count: int) -> int:
    """CRC-32 of `count` bytes at `offset`, read CRC_CHUNK bytes at a time."""
    crc = 0
    for start in range(offset, offset + count, CRC_CHUNK):
        crc = zlib.crc32(source.read(start, min(CRC_CHUNK, offset + count - start)), crc)
    return crc


def open_regular(path: str | os.PathLike) -> FileSource:
    """Open `path` for reading if it is a regular file; anything else is an EprError.

    O_NONBLOCK keeps `open()` from waiting for a FIFO's writer; the type is checked on the open
    descriptor, so a path swapped after a check cannot slip a device in.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as err:
        raise EprError(f"cannot read {path}: {err.strerror or err}") from err
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            kind = special_kind(info.st_mode) or "not a regular file"
            raise EprError(f"cannot read {path}: it is {kind}, not a regular file")
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return FileSource(fd, info.st_size, str(path))


_KINDS = (
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISDIR, "a directory"),
)


def special_kind(mode: int) -> str | None:
    """What a file that is not regular is, in words ("a FIFO"); None for anything else."""
    return next((name for test, name in _KINDS if test(mode)), None)
