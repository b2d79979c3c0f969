"""The hooks eprpipe calls: register the 'bars-cnn' architecture and the 'bars' dataset.

eprpipe imports this module on machines without torch too, where only the dataset hook runs:
torch is imported inside the architecture hook, never at the top.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from eprpipe import ArchitectureSpec, DatasetSpec, hookimpl
from eprpipe_bars import data

INPUT_SHAPE = (3, 16, 16)  # what the model takes; eprpipe resizes the 12x12 images to it


@hookimpl
def register_architectures(register: Callable[[ArchitectureSpec], None]) -> None:
    from eprpipe_bars.models import BarsCNN

    register(
        ArchitectureSpec(
            name="bars-cnn",
            # eprpipe calls factory(num_classes=<the dataset's class count>) and passes nothing
            # else, so the input channels are bound here, from the same INPUT_SHAPE.
            factory=partial(BarsCNN, in_channels=INPUT_SHAPE[0]),
            input_shape=INPUT_SHAPE,
            num_classes=len(data.CLASSES),  # what it is meant for; the dataset's count builds it
            description="two 3x3 convolutions and a linear layer for 3x16x16 images",
        )
    )


@hookimpl
def register_datasets(register: Callable[[DatasetSpec], None]) -> None:
    mean, std = data.train_statistics()
    register(
        DatasetSpec(
            name="bars",
            classes=data.CLASSES,
            image_shape=data.IMAGE_SHAPE,
            mean=mean,  # per channel, [0, 1] scale: eprpipe normalizes with these, in training
            std=std,  # and inside the exported graph; the model itself does not normalize
            load=data.load,
            description="12x12 RGB images of red or green, horizontal or vertical bars",
        )
    )
