"""A bounded reader for IDX files (the MNIST file format), plain or gzip-compressed.

Layout: two zero bytes, a type code, the number of dimensions, then each dimension as a
big-endian u32, then the data in row-major order, big-endian. The reader checks every field
and reads no more than the header promises, so a corrupt or hostile file ends in a DataError
naming the file, not in a huge allocation.
"""

from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path
from typing import BinaryIO

import numpy as np

from eprpipe.errors import DataError

# IDX type code -> numpy dtype (big-endian, as stored).
_DTYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
MAX_DIMS = 4
MAX_BYTES = 1 << 30


def read_idx(path: Path, max_bytes: int = MAX_BYTES) -> np.ndarray:
    """Read an IDX file (gzip if its name ends in .gz) into an array in native byte order."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as stream:
            return _parse(stream, max_bytes)
    except DataError as exc:
        raise DataError(f"{path}: {exc}") from None
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"{path}: cannot read: {exc}") from exc


def _read_exactly(stream: BinaryIO, size: int, what: str) -> bytes:
    data = stream.read(size)
    if len(data) != size:
        raise DataError(f"truncated {what}: expected {size} bytes, found {len(data)}")
    return data


def _parse(stream: BinaryIO, max_bytes: int) -> np.ndarray:
    zero, code, ndims = struct.unpack(">HBB", _read_exactly(stream, 4, "IDX magic"))
    if zero != 0 or code not in _DTYPES or not 1 <= ndims <= MAX_DIMS:
        raise DataError(
            f"not an IDX file: magic {zero:04x} {code:02x} {ndims:02x} "
            f"(expected 0000, a type code in {sorted(_DTYPES)}, 1..{MAX_DIMS} dimensions)"
        )
    shape = struct.unpack(f">{ndims}I", _read_exactly(stream, 4 * ndims, "IDX dimensions"))
    dtype = _DTYPES[code]
    size = dtype.itemsize
    for dim in shape:  # Python ints: no overflow, and the bound is checked as the product grows.
        size *= dim
        if size > max_bytes:
            raise DataError(f"IDX shape {shape} holds more than {max_bytes} bytes")
    data = _read_exactly(stream, size, f"IDX data of shape {shape}")
    if stream.read(1):
        raise DataError(f"trailing bytes after IDX data of shape {shape}")
    return np.frombuffer(data, dtype=dtype).reshape(shape).astype(dtype.newbyteorder("="))
