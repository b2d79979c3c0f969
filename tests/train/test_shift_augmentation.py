"""The digits augmentation "shift2": a random shift of up to two pixels, never a mirror."""

from __future__ import annotations

import numpy as np
import torch

from eprpipe.data.datasets import ImageSplit, prepare
from eprpipe.train.augment import augment
from eprpipe.train.loop import TensorData

MEAN, STD = (0.1307,), (0.3081,)


def _normalized(n: int) -> torch.Tensor:
    raw = np.random.default_rng(0).integers(0, 256, (n, 1, 28, 28), dtype=np.uint8)
    floats, labels = prepare(ImageSplit(raw, np.zeros(n, np.int64)), (1, 28, 28))
    return TensorData.from_numpy(floats, labels, MEAN, STD, "cpu").images


def _shift(images: torch.Tensor, seed: int) -> torch.Tensor:
    return augment("shift2", images, torch.Generator().manual_seed(seed), mean=MEAN, std=STD)


def test_each_image_is_shifted_by_at_most_two_pixels_with_black_borders() -> None:
    images = _normalized(300)
    out = _shift(images, seed=0)
    assert torch.equal(out, _shift(images, seed=0)) and not torch.equal(out, _shift(images, 1))
    black = (torch.zeros(1) - torch.tensor(MEAN)) / torch.tensor(STD)  # as training computes it
    padded = black.reshape(1, 1, 1, 1).expand(len(images), 1, 32, 32).clone()
    padded[:, :, 2:30, 2:30] = images
    found = torch.full((len(images), 2), -1)
    for top in range(5):
        for left in range(5):
            match = (out == padded[:, :, top : top + 28, left : left + 28]).flatten(1).all(1)
            assert (found[match] == -1).all()  # random pixels: one candidate at most
            found[match] = torch.tensor([top, left])
    assert (found >= 0).all()  # no image is mirrored: each is one of the 25 shifts
    assert len({tuple(offset) for offset in found.tolist()}) == 25
