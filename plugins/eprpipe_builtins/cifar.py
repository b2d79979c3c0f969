"""CIFAR-10, read from the official "binary version" (a directory of .bin batches or the archive).

The data directory (see `eprpipe.data.datasets.resolve_data_dir`) may hold
``cifar-10-batches-bin/``, the .bin files themselves, or ``cifar-10-binary.tar.gz``;
``--data-dir`` may also name the archive. The archive is read in one streaming pass straight
into memory: nothing is extracted to disk, only the expected member names are read, links and
other non-files under those names are refused, and every size is checked before reading, so a
hostile archive ends in a DataError.
Downloading is opt-in (EPRPIPE_DOWNLOAD=1), checked against the official md5 and written
atomically; archives and directories a user puts in place are not checksummed (the shared copy
has a shortened test batch, so its checksum differs from the official one).

No torch here: evaluating decoded models loads test data through this module.
"""

from __future__ import annotations

import tarfile
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np

from eprpipe import hookimpl
from eprpipe.data.datasets import DatasetSpec, ImageSplit, Split, resolve_data_dir
from eprpipe.errors import DataError, EprError
from eprpipe.format.atomic import write_atomically

from .download import downloads_enabled, fetch_verified

NAME = "cifar10"
CLASSES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)
# Per channel (R, G, B) on the [0, 1] scale, over all 50,000 × 1,024 pixels of the real training
# batches (../shared/datasets/cifar10/cifar-10-binary.tar.gz), in float64, std with ddof=0:
#   images = cifar.load("train", Path("../shared/datasets/cifar10")).images / 255.0
#   images.mean(axis=(0, 2, 3)), images.std(axis=(0, 2, 3))
MEAN = (0.4914, 0.4822, 0.4465)
STD = (0.2470, 0.2435, 0.2616)

URL = "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"
MD5 = "c32a1d4ab5d03f1284b67883e8d87530"
ARCHIVE = "cifar-10-binary.tar.gz"
FOLDER = "cifar-10-batches-bin"
BATCHES: dict[Split, tuple[str, ...]] = {
    "train": tuple(f"data_batch_{i}.bin" for i in range(1, 6)),
    "test": ("test_batch.bin",),
}
IMAGE_SHAPE = (3, 32, 32)
RECORD_BYTES = 1 + 3 * 32 * 32  # one label byte, then 1,024 red, green and blue bytes each
MAX_RECORDS = 10_000
# The official archive is 170,052,171 bytes and holds 9 members of 184 MB in all. The member
# bounds stop a hostile archive from making the streaming pass over members it does not need
# run or grow (tarfile keeps every header) without limit.
MAX_DOWNLOAD_BYTES = 256 << 20
MAX_MEMBERS = 1_000
MAX_SKIPPED_BYTES = 1 << 30


def load(split: Split, data_dir: Path | None) -> ImageSplit:
    """Load a split as uint8 (N, 3, 32, 32) images and int64 labels."""
    location = resolve_data_dir(NAME, data_dir)
    names = BATCHES[split]
    if location.is_file():
        batches = _read_archive(location, names)
    else:
        folder = next(
            (d for d in (location / FOLDER, location) if all((d / n).is_file() for n in names)),
            None,
        )
        if folder is not None:
            batches = [_read_batch_file(folder / name) for name in names]
        else:
            batches = _read_archive(_archive(location, names), names)
    labels = np.concatenate([batch[:, 0] for batch in batches]).astype(np.int64)
    images = np.concatenate([batch[:, 1:] for batch in batches]).reshape(-1, *IMAGE_SHAPE)
    return ImageSplit(images, labels)


def _archive(directory: Path, names: tuple[str, ...]) -> Path:
    """The archive in ``directory``; downloaded there if allowed, else a DataError."""
    path = directory / ARCHIVE
    if path.is_file():
        return path
    if not downloads_enabled():
        raise DataError(f"{_missing(directory, names)} (or set EPRPIPE_DOWNLOAD=1 to download it)")
    data = fetch_verified(URL, MD5, MAX_DOWNLOAD_BYTES, NAME, _missing(directory, names))
    try:
        directory.mkdir(parents=True, exist_ok=True)
        write_atomically(path, data)
    except (OSError, EprError) as exc:
        raise DataError(f"{NAME}: cannot save {path}: {exc}") from exc
    return path


def _missing(directory: Path, names: tuple[str, ...]) -> str:
    """Name the first missing batch file of the likelier folder, and the missing archive."""
    folder = directory / FOLDER if (directory / FOLDER).is_dir() else directory
    missing = next(name for name in names if not (folder / name).is_file())
    where = f"in {folder} and {ARCHIVE}" if folder != directory else f"and {ARCHIVE}"
    return (
        f"{NAME}: missing {missing} {where} in {directory}; put the CIFAR-10 binary version "
        f"(the archive or {FOLDER}/) there or pass --data-dir"
    )


def _records(size: int, where: str) -> int:
    """The number of records a batch of ``size`` bytes holds; checked before anything is read."""
    count, remainder = divmod(size, RECORD_BYTES)
    if remainder or not 1 <= count <= MAX_RECORDS:
        raise DataError(
            f"{where}: {size} bytes is not 1..{MAX_RECORDS} records of {RECORD_BYTES} bytes"
        )
    return count


def _parse(data: bytes, where: str) -> np.ndarray:
    """A batch's bytes as (N, 3073) uint8 rows: the label, then the pixels."""
    rows = np.frombuffer(data, np.uint8).reshape(-1, RECORD_BYTES)
    if rows[:, 0].max() >= len(CLASSES):
        raise DataError(f"{where}: label {rows[:, 0].max()} >= {len(CLASSES)} classes")
    return rows


def _read_batch_file(path: Path) -> np.ndarray:
    try:
        size = _records(path.stat().st_size, str(path)) * RECORD_BYTES
        with open(path, "rb") as stream:
            data = stream.read(size + 1)
    except OSError as exc:
        raise DataError(f"{path}: cannot read: {exc}") from exc
    if len(data) != size:
        raise DataError(f"{path}: changed while being read ({len(data)} bytes, not {size})")
    return _parse(data, str(path))


def _read_archive(path: Path, names: tuple[str, ...]) -> list[np.ndarray]:
    """Read ``names`` from ``FOLDER/`` in a (compressed) tar archive, in one streaming pass.

    The whole archive is passed over, so a name that appears twice is refused rather than
    silently resolved (the official archive ends with the test batch anyway).
    """
    wanted = {f"{FOLDER}/{name}": name for name in names}
    found: dict[str, np.ndarray] = {}
    try:
        # Stream mode ("r|*") reads forward only and never touches the file system beyond `path`.
        with tarfile.open(path, "r|*") as archive:
            skipped = 0
            for count, member in enumerate(archive, 1):
                name = wanted.get(member.name)
                if name is None:
                    skipped += member.size
                    if count > MAX_MEMBERS or skipped > MAX_SKIPPED_BYTES:
                        raise DataError(
                            f"more than {MAX_MEMBERS} members or {MAX_SKIPPED_BYTES} bytes in "
                            f"members other than {', '.join(names)}"
                        )
                    continue
                if name in found:
                    raise DataError(f"{member.name} appears twice")
                # Never extractfile() a link: it would resolve the target inside the archive.
                stream = archive.extractfile(member) if member.isreg() else None
                if stream is None:
                    raise DataError(f"{member.name} is not a regular file")
                # A short read raises tarfile.ReadError: the size is exactly what is returned.
                data = stream.read(_records(member.size, member.name) * RECORD_BYTES)
                found[name] = _parse(data, member.name)
    except DataError as exc:
        raise DataError(f"{path}: {exc}") from None
    except (OSError, EOFError, zlib.error, tarfile.TarError) as exc:
        raise DataError(f"{path}: cannot read archive: {exc}") from exc
    missing = [name for name in names if name not in found]
    if missing:
        raise DataError(f"{path}: no {FOLDER}/{missing[0]} in the archive")
    return [found[name] for name in names]


@hookimpl
def register_datasets(register: Callable[[DatasetSpec], None]) -> None:
    register(
        DatasetSpec(
            name=NAME,
            classes=CLASSES,
            image_shape=IMAGE_SHAPE,
            mean=MEAN,
            std=STD,
            load=load,
            description="CIFAR-10 colour images in 10 classes, 50,000 train / 10,000 test, 32x32",
            augmentation="crop4-flip",
        )
    )
