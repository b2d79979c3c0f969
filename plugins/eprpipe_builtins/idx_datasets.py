"""MNIST and Fashion-MNIST, read from the four IDX files both datasets ship as.

Files are looked for in the data directory (see `eprpipe.data.datasets.resolve_data_dir`), gzipped
or not. Downloading is opt-in (EPRPIPE_DOWNLOAD=1) so that tests and offline machines never
wait on the network; downloads are checked against the published md5 sums and written
atomically. Files a user puts in place are not checksummed (Debian re-compresses Fashion-MNIST),
only validated as IDX.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from eprpipe import hookimpl
from eprpipe.data.datasets import DatasetSpec, ImageSplit, Split, resolve_data_dir
from eprpipe.errors import DataError
from eprpipe.format.atomic import write_atomically

from .download import downloads_enabled, fetch_verified
from .idx import read_idx

_STEMS = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
MAX_DOWNLOAD_BYTES = 64 << 20


def _locate(stem: str, directory: Path) -> Path | None:
    for name in (f"{stem}.gz", stem):
        if (directory / name).is_file():
            return directory / name
    return None


@dataclass(frozen=True)
class IdxSource:
    """Where one MNIST-layout dataset is looked for, and where it may be downloaded from."""

    name: str
    title: str
    mirror: str
    md5: Mapping[str, str]  # .gz file name -> md5 of the published download
    fallback_dirs: tuple[Path, ...] = ()
    num_classes: int = 10
    image_size: tuple[int, int] = (28, 28)

    def load(self, split: Split, data_dir: Path | None) -> ImageSplit:
        images_file, labels_file = self._files(split, resolve_data_dir(self.name, data_dir))
        images, labels = read_idx(images_file), read_idx(labels_file)
        if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != self.image_size:
            raise DataError(
                f"{images_file}: expected uint8 images of shape (N, {self.image_size[0]}, "
                f"{self.image_size[1]}), found {images.dtype} {images.shape}"
            )
        if labels.dtype != np.uint8 or labels.shape != images.shape[:1]:
            raise DataError(
                f"{labels_file}: expected {len(images)} uint8 labels, found {labels.dtype} "
                f"{labels.shape}"
            )
        if labels.size and labels.max() >= self.num_classes:
            raise DataError(f"{labels_file}: label {labels.max()} >= {self.num_classes} classes")
        return ImageSplit(images[:, None], labels.astype(np.int64))

    def _files(self, split: Split, directory: Path) -> list[Path]:
        """The split's image and label files, from one directory; downloads them if allowed."""
        stems = _STEMS[split]
        for candidate in (directory, *self.fallback_dirs):
            found = [_locate(stem, candidate) for stem in stems]
            if all(found):
                return found  # type: ignore[return-value]
        if not downloads_enabled():
            missing = next(stem for stem in stems if _locate(stem, directory) is None)
            raise DataError(
                f"{self._missing(missing, directory)} (or set EPRPIPE_DOWNLOAD=1 to download them)"
            )
        return [_locate(stem, directory) or self._download(stem, directory) for stem in stems]

    def _missing(self, stem: str, directory: Path) -> str:
        return (
            f"{self.name}: missing {stem}.gz in {directory}; put the four {self.title} IDX "
            f"files there or pass --data-dir"
        )

    def _download(self, stem: str, directory: Path) -> Path:
        filename = f"{stem}.gz"
        data = fetch_verified(
            self.mirror + filename,
            self.md5[filename],
            MAX_DOWNLOAD_BYTES,
            self.name,
            self._missing(stem, directory),
        )
        try:
            directory.mkdir(parents=True, exist_ok=True)
            write_atomically(directory / filename, data)
        except OSError as exc:
            raise DataError(f"{self.name}: cannot save {directory / filename}: {exc}") from exc
        return directory / filename


MNIST = IdxSource(
    name="mnist",
    title="MNIST",
    mirror="https://ossci-datasets.s3.amazonaws.com/mnist/",
    md5={
        "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
        "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
        "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
        "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
    },
)

FASHION_MNIST = IdxSource(
    name="fashion-mnist",
    title="Fashion-MNIST",
    mirror="http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
    md5={
        "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
        "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
        "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
        "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
    },
    # Where Debian's dataset-fashion-mnist package puts the files.
    fallback_dirs=(Path("/usr/share/datasets/fashion-mnist"),),
)

FASHION_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)


@hookimpl
def register_datasets(register: Callable[[DatasetSpec], None]) -> None:
    register(
        DatasetSpec(
            name="mnist",
            classes=tuple(str(digit) for digit in range(10)),
            image_shape=(1, 28, 28),
            mean=(0.1307,),
            std=(0.3081,),
            load=MNIST.load,
            description="MNIST handwritten digits, 60,000 train / 10,000 test, 28x28 grey",
            augmentation="shift2",
        )
    )
    register(
        DatasetSpec(
            name="fashion-mnist",
            classes=FASHION_CLASSES,
            image_shape=(1, 28, 28),
            mean=(0.2860,),
            std=(0.3530,),
            load=FASHION_MNIST.load,
            description="Fashion-MNIST clothing images, 60,000 train / 10,000 test, 28x28 grey",
        )
    )
