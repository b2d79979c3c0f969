"""The training wing: everything that needs torch, and the training face of eprpipe.

Reparameterization, densities, the training loop, export of the weightless graph, checkpoints,
distributed training, loaders, augmentation, allocator and memory-format tuning, step timing,
weight loading and BatchNorm-statistics compaction. It may import every other wing; nothing
outside `eprpipe.cli` imports it. Names are loaded on first use, so importing one module of
this wing (say `eprpipe.train.priors`) does not pull in the whole training stack.

    >>> from eprpipe.train import wrap, save, load_into  # doctest: +SKIP
    >>> from eprpipe.train import InputSpec, TrainConfig, compress_module  # doctest: +SKIP
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from eprpipe.train.api import (
        CompressResult,
        InputSpec,
        compress_module,
        compress_registered,
    )
    from eprpipe.train.config import DEFAULTS, Decoder, Prior, RateEstimator, Schedule, TrainConfig
    from eprpipe.train.export import Normalization
    from eprpipe.train.face import save, wrap
    from eprpipe.train.loop import History, TensorData
    from eprpipe.train.reparam import EPRModel
    from eprpipe.train.tasks import Classification, Regression, Task, task_from
    from eprpipe.train.weights import load_into

_EXPORTS = {
    "CompressResult": "eprpipe.train.api",
    "InputSpec": "eprpipe.train.api",
    "compress_module": "eprpipe.train.api",
    "compress_registered": "eprpipe.train.api",
    "History": "eprpipe.train.loop",
    "TensorData": "eprpipe.train.loop",
    "DEFAULTS": "eprpipe.train.config",
    "Decoder": "eprpipe.train.config",
    "Prior": "eprpipe.train.config",
    "RateEstimator": "eprpipe.train.config",
    "Schedule": "eprpipe.train.config",
    "TrainConfig": "eprpipe.train.config",
    "EPRModel": "eprpipe.train.reparam",
    "Classification": "eprpipe.train.tasks",
    "Regression": "eprpipe.train.tasks",
    "Task": "eprpipe.train.tasks",
    "task_from": "eprpipe.train.tasks",
    "Normalization": "eprpipe.train.export",
    "load_into": "eprpipe.train.weights",
    "save": "eprpipe.train.face",
    "wrap": "eprpipe.train.face",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'eprpipe.train' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
