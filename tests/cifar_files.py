"""Fake CIFAR-10 batches in the official binary encoding."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from eprpipe_builtins import cifar

Batches = dict[str, tuple[np.ndarray, np.ndarray]]  # file name -> (labels, images)


def record_bytes(labels: np.ndarray, images: np.ndarray) -> bytes:
    """The binary-version encoding: per record a label byte, then the R, G and B planes."""
    rows = np.concatenate([labels[:, None], images.reshape(len(labels), -1)], axis=1)
    return rows.astype(np.uint8).tobytes()


def fake_batches(per_batch: int = 3, n_test: int = 4, seed: int = 0) -> Batches:
    rng = np.random.default_rng(seed)
    sizes = {name: per_batch for name in cifar.BATCHES["train"]} | {"test_batch.bin": n_test}
    return {
        name: (
            rng.integers(0, 10, n, dtype=np.uint8),
            rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8),
        )
        for name, n in sizes.items()
    }


def write_folder(folder: Path, batches: Batches) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, (labels, images) in batches.items():
        (folder / name).write_bytes(record_bytes(labels, images))
    return folder
