"""Test helper: a third-party eprpipe plugin, written as an installed distribution at test time.

`write_toy_plugin(dir)` creates the package ``eprpipe_toy`` and its ``eprpipe_toy-0.1.dist-info``
in ``dir``; with ``dir`` on PYTHONPATH, eprpipe finds it through its entry point like any
plugin installed by pip. It registers the architecture ``toy-mlp`` and the dataset
``toy-blobs`` (numpy-generated, 3 well-separated classes of 1x4x4 images), small enough to
train and compress end to end in seconds. It imports from the 0.1 paths (`eprpipe.datasets`,
`eprpipe.registry`), so every test that uses it also shows that plugins written against them
keep working.
"""

from __future__ import annotations

from pathlib import Path

_INIT = '''
"""A tiny third-party eprpipe plugin, for tests."""

import numpy as np

from eprpipe import hookimpl
from eprpipe.datasets import DatasetSpec, ImageSplit
from eprpipe.registry import ArchitectureSpec

SHAPE = (1, 4, 4)
CLASSES = ("left", "middle", "right")


def load(split, data_dir=None):
    rng = np.random.RandomState(0 if split == "train" else 1)
    n = 300 if split == "train" else 90
    centres = np.random.RandomState(42).uniform(0.1, 0.9, (len(CLASSES), *SHAPE))
    labels = rng.randint(0, len(CLASSES), n)
    images = centres[labels] + rng.normal(0.0, 0.08, (n, *SHAPE))
    return ImageSplit(np.clip(images, 0.0, 1.0).astype(np.float32), labels.astype(np.int64))


@hookimpl
def register_architectures(register):
    from .models import ToyMLP, ToyRGBMLP

    register(ArchitectureSpec("toy-mlp", ToyMLP, SHAPE, len(CLASSES), "16-32-3 MLP"))
    register(
        ArchitectureSpec(
            "toy-rgb-mlp", ToyRGBMLP, (3, 8, 8), len(CLASSES), "192-16-3 MLP for RGB images"
        )
    )


@hookimpl
def register_datasets(register):
    train = load("train").images
    register(
        DatasetSpec(
            "toy-blobs", CLASSES, SHAPE, (float(train.mean()),), (float(train.std()),), load,
            "three Gaussian blobs of 4x4 images",
        )
    )
'''

_MODELS = '''
"""The toy plugin's torch side, imported only inside its architecture hook."""

import torch.nn.functional as F
from torch import nn


class ToyMLP(nn.Module):
    def __init__(self, num_classes=3):
        super().__init__()
        self.fc1 = nn.Linear(16, 32)
        self.fc2 = nn.Linear(32, num_classes)

    def forward(self, x):
        return self.fc2(F.relu(self.fc1(x.flatten(1))))


class ToyRGBMLP(nn.Module):
    """No batch norm: its steps do not depend on how a batch is split over processes."""

    def __init__(self, num_classes=3):
        super().__init__()
        self.fc1 = nn.Linear(3 * 8 * 8, 16)
        self.fc2 = nn.Linear(16, num_classes)

    def forward(self, x):
        return self.fc2(F.relu(self.fc1(x.flatten(1))))
'''

_METADATA = "Metadata-Version: 2.1\nName: eprpipe_toy\nVersion: 0.1\n"
_ENTRY_POINTS = "[eprpipe]\ntoy = eprpipe_toy\n"


def write_toy_plugin(directory: Path) -> Path:
    """Write the toy distribution into ``directory`` and return the path to put on sys.path."""
    package = directory / "eprpipe_toy"
    dist_info = directory / "eprpipe_toy-0.1.dist-info"
    package.mkdir(parents=True)
    dist_info.mkdir()
    (package / "__init__.py").write_text(_INIT.lstrip())
    (package / "models.py").write_text(_MODELS.lstrip())
    (dist_info / "METADATA").write_text(_METADATA)
    (dist_info / "entry_points.txt").write_text(_ENTRY_POINTS)
    return directory
