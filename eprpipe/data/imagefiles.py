"""Class-folder image datasets on disk (the torchvision ImageFolder layout) and their views.

`class_folder_split` turns ``root/<class>/**/<image>`` into an `eprpipe.data.datasets.ImageFiles`
whose reader decodes one file with Pillow and makes the standard ImageNet view of it: resize
and centre crop for evaluation, random resized crop and flip for training. The arithmetic is
torchvision's (``Resize``, ``CenterCrop``, ``RandomResizedCrop``, ``RandomHorizontalFlip`` on
PIL images), so accuracies compare with published ones; the randomness comes from a numpy
Generator instead of torch's, so a seed gives the same view on every machine.

No torch here: evaluating decoded models reads its test images through this module.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
from PIL import Image

from eprpipe.data.datasets import ImageFiles
from eprpipe.errors import DataError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".webp")
# Pillow's own default limit (2**30 // 4 // 3, a 256 MiB RGB image), applied here whatever the
# global Image.MAX_IMAGE_PIXELS is; ImageNet's largest images are far below it. The decoded
# image is refused before its pixels are read, and so is an extreme aspect ratio whose
# evaluation resize would exceed it (a 1×100,000 strip resizes to 256×25,600,000). Pillow's
# DecompressionBombWarning for such a file is left alone rather than escalated: catch_warnings
# changes the process-wide filters and is not thread-safe, and evaluation reads from threads.
MAX_PIXELS = 2**28 // 3
TRAIN_VIEW = "random-resized-crop-flip"
CROP_FRACTION = 0.875  # evaluation resizes the shorter side to size / 0.875 (224 → 256)
SCALE = (0.08, 1.0)  # RandomResizedCrop's range of crop area, as a fraction of the image
RATIO = (3 / 4, 4 / 3)  # and of crop aspect ratio (width / height)
ATTEMPTS = 10


def find_classes(root: Path) -> tuple[str, ...]:
    """The class names under ``root``: its non-hidden subdirectories, sorted by code point.

    Symlinked class folders count (a subset of a dataset is often made of links to folders);
    below them, symlinked directories are not followed, so a link loop cannot recurse.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: {'not a directory' if root.exists() else 'no such directory'}")
    try:
        with os.scandir(root) as entries:
            names = sorted(e.name for e in entries if not e.name.startswith(".") and e.is_dir())
    except OSError as exc:
        raise DataError(f"{root}: cannot list class folders: {exc}") from exc
    if not names:
        raise DataError(f"{root}: no class folders (expected one subdirectory per class)")
    return tuple(names)


def _images_in(folder: str) -> list[str]:
    """Image files anywhere below ``folder``, in torchvision's order: by directory, then name."""
    found: list[tuple[str, str]] = []
    pending = [folder]
    while pending:
        directory = pending.pop()
        try:
            with os.scandir(directory) as entries:
                for entry in entries:
                    if entry.name.startswith("."):
                        continue
                    if entry.is_dir(follow_symlinks=False):
                        pending.append(entry.path)
                    elif entry.name.lower().endswith(IMAGE_EXTENSIONS) and entry.is_file():
                        found.append((directory, entry.name))
        except OSError as exc:
            raise DataError(f"{directory}: cannot list: {exc}") from exc
    found.sort()
    return [os.path.join(directory, name) for directory, name in found]


def scan_class_folders(
    root: Path, classes: tuple[str, ...] | None = None
) -> tuple[tuple[str, ...], tuple[str, ...], np.ndarray]:
    """(classes, image paths, int64 labels) of a class-folder tree.

    With ``classes`` (the train split's), labels index into them, so both splits agree even
    where one lacks a class; a folder that is not one of them is an error.
    """
    found = find_classes(root)
    if classes is None:
        classes = found
    index = {name: label for label, name in enumerate(classes)}
    unknown = [name for name in found if name not in index]
    if unknown:
        raise DataError(
            f"{root}: class folder {unknown[0]!r} is not one of the {len(classes)} classes of "
            "the train split"
        )
    paths: list[str] = []
    counts = []
    for name in found:
        images = _images_in(os.path.join(root, name))
        paths.extend(images)
        counts.append(len(images))
    if not paths:
        raise DataError(
            f"no images under {root} (files ending in {', '.join(IMAGE_EXTENSIONS)}, any case)"
        )
    labels = np.repeat(np.array([index[name] for name in found], dtype=np.int64), counts)
    return classes, tuple(paths), labels


def open_rgb(path: str) -> Image.Image:
    """The image at ``path`` as a fully decoded RGB image; any failure is a DataError."""
    try:
        with Image.open(path) as image:
            width, height = image.size
            if width * height > MAX_PIXELS:
                raise DataError(f"{width}x{height} is more than {MAX_PIXELS} pixels")
            return image.convert("RGB")
    except DataError as exc:
        raise DataError(f"{path}: {exc}") from None
    # Pillow's decoders fail on damaged files in many ways (OSError, SyntaxError, ValueError,
    # zlib and struct errors, DecompressionBombError): each is the file's fault.
    except Exception as exc:
        raise DataError(f"{path}: cannot read image: {type(exc).__name__}: {exc}") from exc


def _chw(image: Image.Image) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(image, dtype=np.uint8).transpose(2, 0, 1))


def eval_view(image: Image.Image, size: tuple[int, int]) -> np.ndarray:
    """torchvision's ``Resize(round(s / 0.875))`` then ``CenterCrop(size)``, s = max(size).

    Bilinear with antialiasing (Pillow's), shorter side to the resize, longer side
    ``int(short * long / short_in)``; uint8 (3, H, W).
    """
    height, width = size
    side = round(max(size) / CROP_FRACTION)
    old_width, old_height = image.size
    short, long = sorted(image.size)
    resized = (side, int(side * long / short))
    new_width, new_height = resized if old_width <= old_height else resized[::-1]
    if new_width * new_height > MAX_PIXELS:
        raise DataError(
            f"a {old_width}x{old_height} image resizes to more than {MAX_PIXELS} pixels"
        )
    # Pillow returns a copy when the size is unchanged, as torchvision returns the image.
    image = image.resize((new_width, new_height), Image.Resampling.BILINEAR)
    top = round((new_height - height) / 2.0)
    left = round((new_width - width) / 2.0)
    return _chw(image.crop((left, top, left + width, top + height)))


def random_crop_box(width: int, height: int, rng: np.random.Generator) -> tuple[int, int, int, int]:
    """``RandomResizedCrop.get_params``: (top, left, height, width) of a random crop.

    Draws in torchvision's order (area, log-ratio per attempt; then top, left) from ``rng``.
    """
    area = width * height
    log_ratio = (math.log(RATIO[0]), math.log(RATIO[1]))
    for _ in range(ATTEMPTS):
        target_area = area * rng.uniform(*SCALE)
        aspect_ratio = math.exp(rng.uniform(*log_ratio))
        w = round(math.sqrt(target_area * aspect_ratio))
        h = round(math.sqrt(target_area / aspect_ratio))
        if 0 < w <= width and 0 < h <= height:
            top = int(rng.integers(0, height - h + 1))
            left = int(rng.integers(0, width - w + 1))
            return top, left, h, w
    # No attempt fitted: the central crop at the nearest allowed aspect ratio.
    in_ratio = width / height
    w, h = width, height
    if in_ratio < RATIO[0]:
        h = round(w / RATIO[0])
    elif in_ratio > RATIO[1]:
        w = round(h * RATIO[1])
    return (height - h) // 2, (width - w) // 2, h, w


def train_view(image: Image.Image, size: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """``RandomResizedCrop(size)`` then ``RandomHorizontalFlip()``, all randomness from ``rng``.

    The crop is cut out before it is resized (as torchvision does), so the bilinear filter
    never reaches pixels outside it; uint8 (3, H, W).
    """
    top, left, h, w = random_crop_box(image.width, image.height, rng)
    crop = image.crop((left, top, left + w, top + h))
    view = _chw(crop.resize((size[1], size[0]), Image.Resampling.BILINEAR))
    if rng.random() < 0.5:
        view = np.ascontiguousarray(view[:, :, ::-1])
    return view


def read_image(path: str, size: tuple[int, int], rng: np.random.Generator | None) -> np.ndarray:
    """An `ImageFiles` reader: the evaluation view of ``path``, or with ``rng`` a training view."""
    image = open_rgb(path)
    try:
        return eval_view(image, size) if rng is None else train_view(image, size, rng)
    except DataError as exc:
        raise DataError(f"{path}: {exc}") from None


def class_folder_split(
    root: Path, split_name: str, classes: tuple[str, ...] | None = None
) -> ImageFiles:
    """The split in class folders under ``root``; ``split_name`` prefixes its errors."""
    try:
        classes, paths, labels = scan_class_folders(root, classes)
    except DataError as exc:
        raise DataError(f"{split_name}: {exc}") from None
    return ImageFiles(
        paths=paths, labels=labels, classes=classes, read=read_image, channels=3, view=TRAIN_VIEW
    )
