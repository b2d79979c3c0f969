"""ImageNet-style class folders of small JPEG files, one colour per class."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

WNIDS = ("n01440764", "n01443537", "n01484850")


COLOURS = np.array([[200, 40, 40], [40, 200, 40], [40, 40, 200]])


def write_class_folders(root: Path, split: str, per_class: int, seed: int) -> None:
    """Noisy images of one colour per class, of assorted sizes, as JPEG files."""
    rng = np.random.default_rng(seed)
    for label, wnid in enumerate(WNIDS):
        folder = root / split / wnid
        folder.mkdir(parents=True)
        for index in range(per_class):
            height, width = rng.integers(24, 80, 2)
            noise = rng.normal(0, 30, (height, width, 3))
            pixels = np.clip(COLOURS[label] + noise, 0, 255).astype(np.uint8)
            Image.fromarray(pixels, "RGB").save(folder / f"{wnid}_{index}.JPEG", quality=90)
