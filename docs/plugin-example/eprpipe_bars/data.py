"""The 'bars' dataset: 12x12 RGB images of one horizontal or vertical, red or green bar.

Generated with numpy from a fixed seed, so it needs no files and no torch.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

import numpy as np

from eprpipe.data.datasets import ImageSplit

CLASSES = ("red horizontal", "red vertical", "green horizontal", "green vertical")
IMAGE_SHAPE = (3, 12, 12)
SIZES = {"train": 2048, "test": 256}


@cache
def _split(split: str) -> ImageSplit:
    rng = np.random.RandomState(0 if split == "train" else 1)
    count = SIZES[split]
    labels = rng.randint(0, len(CLASSES), count)
    images = rng.uniform(0.0, 0.3, (count, *IMAGE_SHAPE))
    rows = rng.randint(0, IMAGE_SHAPE[1] - 2, count)
    for image, label, row in zip(images, labels, rows, strict=True):
        channel, vertical = divmod(label, 2)
        if vertical:
            image[channel, :, row : row + 2] = 1.0
        else:
            image[channel, row : row + 2, :] = 1.0
    return ImageSplit((255 * images).astype(np.uint8), labels.astype(np.int64))


def load(split: str, data_dir: Path | None = None) -> ImageSplit:
    """One split as uint8 (N, 3, 12, 12) images; `data_dir` is unused: the data is generated."""
    return _split(split)


@cache
def train_statistics() -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of the train split on the [0, 1] scale, at 12x12."""
    pixels = load("train").images.astype(np.float64) / 255
    return tuple(pixels.mean((0, 2, 3)).tolist()), tuple(pixels.std((0, 2, 3)).tolist())
