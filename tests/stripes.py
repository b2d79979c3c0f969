"""Stripes: a two-class image task a small convolutional net learns in a few steps."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from eprpipe.data.datasets import ImageFiles, prepare_files
from eprpipe.train.api import InputSpec


class SmallConvNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4 * 6 * 6, 2)

    def forward(self, x):
        return self.fc(torch.relu(self.bn(self.conv(x))).flatten(1))


def stripes(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Horizontal against vertical stripes with noise: learnable in a few steps."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n)
    base = np.zeros((2, 6, 6), np.float32)
    base[0, ::2, :] = 1.0
    base[1, :, ::2] = 1.0
    images = base[labels] + rng.normal(0, 0.2, (n, 6, 6)).astype(np.float32)
    return np.clip(images, 0, 1)[:, None].astype(np.float32), labels.astype(np.int64)


SPEC = InputSpec(shape=(1, 6, 6), mean=(0.5,), std=(0.25,))


CLASSES = ("horizontal", "vertical")


FLIP = "test-flip"


def read_npy(path: str, size: tuple[int, int], rng: np.random.Generator | None) -> np.ndarray:
    """A reader as a dataset plugin supplies: the stored image, mirrored at random in training."""
    image = np.load(path, allow_pickle=False)
    if rng is not None and rng.random() < 0.5:
        image = np.ascontiguousarray(image[:, :, ::-1])
    return image


def as_uint8(split: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    images, labels = split
    return np.round(images * 255).astype(np.uint8), labels


def as_files(split: tuple[np.ndarray, np.ndarray], folder: Path) -> ImageFiles:
    folder.mkdir()
    paths = []
    for index, image in enumerate(split[0]):
        paths.append(str(folder / f"{index:05d}.npy"))
        np.save(paths[-1], image)
    files = ImageFiles(tuple(paths), split[1], CLASSES, read_npy, channels=1, view=FLIP)
    return prepare_files(files, SPEC.shape)
