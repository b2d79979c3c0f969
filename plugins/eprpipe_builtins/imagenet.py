"""ImageNet (ILSVRC-2012), read from class folders on disk: ``train/<wnid>/`` and ``val/<wnid>/``.

The data directory (see `eprpipe.data.datasets.resolve_data_dir`) must hold the usual layout, with
the validation images sorted into class folders as the train images are. The 1.28 M training
images stay on disk and are decoded a batch at a time (`eprpipe.data.imagefiles`). There is no
download: ImageNet's licence requires registration at image-net.org.

No torch here: evaluating decoded models loads test data through this module.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from eprpipe import hookimpl
from eprpipe.data.datasets import DatasetSpec, ImageFiles, Split, resolve_data_dir
from eprpipe.data.imagefiles import TRAIN_VIEW, class_folder_split, find_classes
from eprpipe.errors import DataError

NAME = "imagenet"
IMAGE_SHAPE = (3, 224, 224)
# The standard ImageNet statistics (R, G, B on the [0, 1] scale) that torchvision's pretrained
# models are normalized with. Not measured here (no copy of ImageNet on this machine), unlike
# the other built-in datasets' statistics.
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
FOLDERS: dict[Split, str] = {"train": "train", "test": "val"}


def load(split: Split, data_dir: Path | None) -> ImageFiles:
    """The split's image files; labels index the train split's class folders in both splits."""
    root = resolve_data_dir(NAME, data_dir)
    folder = root / FOLDERS[split]
    if not folder.is_dir():
        raise DataError(
            f"{NAME}: no {folder}; expected {root}/train/<wnid>/*.JPEG and "
            f"{root}/val/<wnid>/*.JPEG, the validation images sorted into class folders (e.g. "
            "with the usual valprep.sh). ImageNet cannot be downloaded automatically (its "
            "licence requires registration at image-net.org): put it there or pass --data-dir"
        )
    train = root / FOLDERS["train"]
    classes = find_classes(train) if split == "test" and train.is_dir() else None
    return class_folder_split(folder, f"{NAME} {split}", classes)


@hookimpl
def register_datasets(register: Callable[[DatasetSpec], None]) -> None:
    register(
        DatasetSpec(
            name=NAME,
            classes=(),
            image_shape=IMAGE_SHAPE,
            mean=MEAN,
            std=STD,
            load=load,
            description="ImageNet ILSVRC-2012 from class folders on disk, 1,000 classes, "
            "1.28 M train / 50,000 val, evaluated at 224x224 (resize 256, centre crop)",
            augmentation=TRAIN_VIEW,
        )
    )
