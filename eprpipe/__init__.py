"""eprpipe: compress neural networks with Entropy Penalized Reparameterization.

`import eprpipe` is cheap and torch-free: names load on first use, so a machine that only
reads, decodes and runs .epr files never imports torch, and imports onnxruntime only for
`session` and `evaluate`. Training lives in `eprpipe.train`.

    >>> import eprpipe
    >>> eprpipe.validate("spec/vectors/valid/conv-rdft.epr").valid
    True
    >>> weights = eprpipe.load_weights("spec/vectors/valid/conv-rdft.epr")
    >>> weights["conv.weight"].shape
    (16, 8, 3, 3)
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

import pluggy

__version__ = "0.1.0"

hookimpl = pluggy.HookimplMarker("eprpipe")

if TYPE_CHECKING:
    from eprpipe.data.datasets import DatasetSpec
    from eprpipe.deploy.api import evaluate, session
    from eprpipe.errors import (
        DataError,
        EprError,
        FormatError,
        PluginError,
    )
    from eprpipe.format.api import (
        EprInfo,
        TensorInfo,
        decode,
        info,
        load_weights,
        validate,
        write_onnx,
    )
    from eprpipe.format.limits import ReadLimits
    from eprpipe.plugins.registry import ArchitectureSpec, Recipe

# name -> module that defines it; `session` and `evaluate` are the only ones needing onnxruntime
_EXPORTS = {
    "info": "eprpipe.format.api",
    "validate": "eprpipe.format.api",
    "decode": "eprpipe.format.api",
    "write_onnx": "eprpipe.format.api",
    "load_weights": "eprpipe.format.api",
    "EprInfo": "eprpipe.format.api",
    "TensorInfo": "eprpipe.format.api",
    "ReadLimits": "eprpipe.format.limits",
    "session": "eprpipe.deploy.api",
    "evaluate": "eprpipe.deploy.api",
    "ArchitectureSpec": "eprpipe.plugins.registry",
    "Recipe": "eprpipe.plugins.registry",
    "DatasetSpec": "eprpipe.data.datasets",
    "DataError": "eprpipe.errors",
    "EprError": "eprpipe.errors",
    "FormatError": "eprpipe.errors",
    "PluginError": "eprpipe.errors",
}

__all__ = [
    "ArchitectureSpec",
    "DataError",
    "DatasetSpec",
    "EprError",
    "EprInfo",
    "FormatError",
    "PluginError",
    "ReadLimits",
    "Recipe",
    "TensorInfo",
    "__version__",
    "decode",
    "evaluate",
    "hookimpl",
    "info",
    "load_weights",
    "session",
    "validate",
    "write_onnx",
]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'eprpipe' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
