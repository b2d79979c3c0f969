"""Test helper: write small IDX files and MNIST-layout directories, so no test needs real data."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np

_CODES = {np.dtype(np.uint8): 0x08, np.dtype(np.int32): 0x0C, np.dtype(np.float32): 0x0D}


def idx_bytes(array: np.ndarray) -> bytes:
    """The IDX encoding of ``array`` (uint8, int32 or float32)."""
    header = struct.pack(f">HBB{array.ndim}I", 0, _CODES[array.dtype], array.ndim, *array.shape)
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


def write_idx(array: np.ndarray, path: Path) -> Path:
    """Write ``array`` as IDX, gzipped when the name ends in .gz."""
    data = idx_bytes(array)
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)
    return path


def write_mnist_like(directory: Path, n_train: int = 6, n_test: int = 4, seed: int = 0) -> Path:
    """Write the four MNIST files (train images gzipped, the rest mixed) with random pixels."""
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)
    for prefix, n, suffix in (("train", n_train, ".gz"), ("t10k", n_test, "")):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, n, dtype=np.uint8)
        write_idx(images, directory / f"{prefix}-images-idx3-ubyte{suffix}")
        write_idx(labels, directory / f"{prefix}-labels-idx1-ubyte.gz")
    return directory
