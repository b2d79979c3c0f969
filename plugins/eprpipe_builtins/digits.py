"""scikit-learn's bundled 8x8 digits: a real dataset that needs no download, for tests and demos.

1,797 images, values 0..16 scaled to [0, 1], split 1,437 train / 360 test by a seeded
permutation. `eprpipe.data.datasets.prepare` resizes them to an architecture's input (e.g. 28x28).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from pathlib import Path

import numpy as np

from eprpipe import hookimpl
from eprpipe.data.datasets import DatasetSpec, ImageSplit, Split

TRAIN_SIZE = 1437
SEED = 0
# Mean and std of the train split's pixels on the [0, 1] scale, at 8x8 (tests recompute them).
# Stored rather than computed at registration so that listing datasets does not import sklearn.
MEAN = 0.3054
STD = 0.3759


@cache
def _all() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Images (N, 1, 8, 8) float32, labels int64, and the split permutation."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = (digits.images / 16.0).astype(np.float32)[:, None]
    # RandomState, not default_rng: its stream is frozen across numpy versions (NEP 19),
    # so the split is the same everywhere.
    order = np.random.RandomState(SEED).permutation(len(images))
    return images, digits.target.astype(np.int64), order


def load(split: Split, data_dir: Path | None = None) -> ImageSplit:
    """Load a split; ``data_dir`` is ignored because the data ships with scikit-learn."""
    images, labels, order = _all()
    chosen = order[:TRAIN_SIZE] if split == "train" else order[TRAIN_SIZE:]
    return ImageSplit(images[chosen], labels[chosen])


@hookimpl
def register_datasets(register: Callable[[DatasetSpec], None]) -> None:
    register(
        DatasetSpec(
            name="digits",
            classes=tuple(str(digit) for digit in range(10)),
            image_shape=(1, 8, 8),
            mean=(MEAN,),
            std=(STD,),
            load=load,
            description="scikit-learn's 8x8 digits, 1,437 train / 360 test, offline",
        )
    )
