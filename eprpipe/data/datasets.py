"""Dataset specs and the numpy-only image helpers shared by training and evaluation.

This module must never import torch: evaluation of decoded models runs on machines that only
have numpy, and it loads its test data through the same dataset plugins as training does.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from eprpipe.errors import DataError

Split = Literal["train", "test"]
Shape3 = tuple[int, int, int]


@dataclass(frozen=True)
class ImageSplit:
    """One split of an image classification dataset, as a plugin's loader returns it.

    ``images`` is (N, C, H, W), either uint8 (0..255) or float32 in [0, 1]; ``labels`` is int64
    (N,). The shapes are checked here so a faulty plugin fails at load, not deep in training.
    """

    images: np.ndarray
    labels: np.ndarray

    def __post_init__(self) -> None:
        if self.images.ndim != 4 or self.images.dtype not in (np.uint8, np.float32):
            raise DataError(
                f"images must be (N, C, H, W) uint8 or float32, got {self.images.dtype} "
                f"{self.images.shape}"
            )
        if self.labels.dtype != np.int64 or self.labels.shape != (len(self.images),):
            raise DataError(
                f"labels must be int64 ({len(self.images)},), got {self.labels.dtype} "
                f"{self.labels.shape}"
            )


@dataclass(frozen=True)
class ImageFiles:
    """A split kept on disk and decoded a batch at a time: datasets too large for memory.

    ``paths[i]`` is an image file whose class is ``labels[i]`` (int64), an index into
    ``classes``. ``read(path, size, rng)`` returns that image as uint8 (C, H, W) of ``size`` =
    (H, W): with ``rng=None`` the evaluation view (e.g. resize and centre crop), with a numpy
    Generator the random training view named ``view`` (None: the reader has none). ``size``
    is None until `prepare_files` fits the split to an architecture's input.
    """

    paths: tuple[str, ...]
    labels: np.ndarray
    classes: tuple[str, ...]
    read: Callable[[str, tuple[int, int], np.random.Generator | None], np.ndarray]
    channels: int = 3
    view: str | None = None
    size: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        if self.labels.dtype != np.int64 or self.labels.shape != (len(self.paths),):
            raise DataError(
                f"labels must be int64 ({len(self.paths)},), got {self.labels.dtype} "
                f"{self.labels.shape}"
            )
        if len(self.labels) and not 0 <= self.labels.min() <= self.labels.max() < len(self.classes):
            raise DataError(f"labels must lie in 0..{len(self.classes) - 1}")

    def __len__(self) -> int:
        return len(self.paths)

    def read_batch(
        self, indices: np.ndarray, rngs: list[np.random.Generator] | None = None
    ) -> np.ndarray:
        """Images ``indices`` as one uint8 (N, C, H, W) array; ``rngs`` (one per image) or None."""
        if self.size is None:
            raise DataError("the split has no image size yet: pass it through fit()")
        batch = np.empty((len(indices), self.channels, *self.size), dtype=np.uint8)
        for slot, index in enumerate(indices):
            image = self.read(self.paths[index], self.size, rngs[slot] if rngs else None)
            if image.shape != batch.shape[1:] or image.dtype != np.uint8:
                raise DataError(
                    f"{self.paths[index]}: the reader returned {image.dtype} {image.shape}, "
                    f"expected uint8 {batch.shape[1:]}"
                )
            batch[slot] = image
        return batch


@dataclass(frozen=True)
class DatasetSpec:
    """What a dataset plugin registers: metadata up front, pixels only when ``load`` is called.

    ``mean`` and ``std`` are per channel on the [0, 1] pixel scale, measured on the train split
    at the native ``image_shape``. ``load(split, data_dir)`` takes "train" or "test" and the
    user's ``--data-dir`` (None when not given; see `resolve_data_dir`) and returns an
    `ImageSplit` (in memory) or `ImageFiles` (on disk). ``classes`` may be empty when the data
    names them (class folders); the loaded `ImageFiles` then carries them. ``augmentation`` names
    the random transform training applies to each train batch (a key of
    ``eprpipe.train.augment.AUGMENTATIONS``, e.g. "crop4-flip"; for `ImageFiles`, the random view
    its reader makes, e.g. "random-resized-crop-flip"), or None for none; it is a name, not a
    function, so that registering a dataset needs no torch. Test data is never augmented.
    """

    name: str
    classes: tuple[str, ...]
    image_shape: Shape3
    mean: tuple[float, ...]
    std: tuple[float, ...]
    load: Callable[[Split, Path | None], ImageSplit | ImageFiles]
    description: str
    augmentation: str | None = None


def as_float(images: np.ndarray) -> np.ndarray:
    """Return float32 pixels in [0, 1], converting uint8 and passing float32 through."""
    if images.dtype == np.uint8:
        return images.astype(np.float32) / np.float32(255)
    if images.dtype == np.float32:
        return images
    raise DataError(f"images must be uint8 or float32, got {images.dtype}")


def _taps(size_in: int, size_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Source indices and weights of 1-D linear interpolation with half-pixel centres.

    Same sampling as torch's ``interpolate(mode="bilinear", align_corners=False)``.
    """
    src = (np.arange(size_out, dtype=np.float64) + 0.5) * (size_in / size_out) - 0.5
    src = np.clip(src, 0.0, size_in - 1)
    lo = np.floor(src).astype(np.intp)
    hi = np.minimum(lo + 1, size_in - 1)
    return lo, hi, (src - lo).astype(np.float32)


def resize_images(images: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinearly resize float32 (N, C, H, W) images to ``size`` = (H2, W2).

    Used to fit small images (8x8 digits) to an architecture's input (28x28). Written as
    elementwise lerps rather than a matrix product so every machine computes the same bits.
    Downscaling does not antialias.
    """
    if images.ndim != 4 or images.dtype != np.float32:
        raise DataError(
            f"resize_images needs float32 (N, C, H, W), got {images.dtype} {images.shape}"
        )
    lo, hi, w = _taps(images.shape[2], size[0])
    a, b = images[:, :, lo, :], images[:, :, hi, :]
    rows = a + w[:, None] * (b - a)
    lo, hi, w = _taps(images.shape[3], size[1])
    a, b = rows[..., lo], rows[..., hi]
    return a + w * (b - a)


def prepare_files(split: ImageFiles, input_shape: Shape3) -> ImageFiles:
    """Fit an on-disk split to an architecture's (C, H, W) input: its reader makes that size."""
    channels, height, width = input_shape
    if split.channels != channels:
        raise DataError(
            f"the architecture takes {channels}-channel input, the dataset has "
            f"{split.channels} channels"
        )
    return dataclasses.replace(split, size=(height, width))


def prepare(split: ImageSplit, input_shape: Shape3) -> tuple[np.ndarray, np.ndarray]:
    """Fit a split to an architecture's (C, H, W) input: float32 in [0, 1], resized if needed."""
    channels, height, width = input_shape
    if split.images.shape[1] != channels:
        raise DataError(
            f"the architecture takes {channels}-channel input, the dataset has "
            f"{split.images.shape[1]} channels"
        )
    images = as_float(split.images)
    if images.shape[2:] != (height, width):
        # Clipping undoes rounding of the lerps, which may step an ulp outside [0, 1].
        images = np.clip(resize_images(images, (height, width)), 0.0, 1.0)
    return images, split.labels


def resolve_data_dir(dataset_name: str, data_dir: Path | None) -> Path:
    """Where a dataset's files live: ``data_dir``, else $EPRPIPE_DATA_DIR/<name>, else the cache.

    A ``data_dir`` that holds a ``<name>`` subdirectory means that subdirectory, so one
    ``--data-dir`` can point at a root with several datasets. The cache is
    $XDG_CACHE_HOME/eprpipe/<name>, by default ~/.cache/eprpipe/<name>.
    """
    if data_dir is not None:
        data_dir = Path(data_dir).expanduser()
        nested = data_dir / dataset_name
        return nested if nested.is_dir() else data_dir
    root = os.environ.get("EPRPIPE_DATA_DIR")
    if root:
        return Path(root).expanduser() / dataset_name
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache).expanduser() / "eprpipe" / dataset_name


Prepared = tuple[np.ndarray, np.ndarray] | ImageFiles


def part_of(split: Prepared, items: slice) -> Prepared:
    """The examples `items` of a split, in memory or on disk (nothing is read)."""
    if isinstance(split, ImageFiles):
        return dataclasses.replace(split, paths=split.paths[items], labels=split.labels[items])
    images, labels = split
    return images[items], labels[items]


def fit(split: ImageSplit | ImageFiles, input_shape: Shape3) -> Prepared:
    """`prepare` for in-memory splits, `prepare_files` for on-disk ones."""
    if isinstance(split, ImageFiles):
        return prepare_files(split, input_shape)
    return prepare(split, input_shape)


def classes_of(spec: DatasetSpec, split: ImageSplit | ImageFiles | Prepared) -> tuple[str, ...]:
    """Class names: the spec's, else (class-folder datasets) the loaded split's."""
    if spec.classes:
        return spec.classes
    if isinstance(split, ImageFiles):
        return split.classes
    raise DataError(f"dataset {spec.name!r} registers no class names and its data names none")
