"""eprpipe: compress neural networks with Entropy Penalized Reparameterization.

`import eprpipe` is cheap and torch-free: names load on first use, so a machine that only
decodes and runs .epr files never imports torch or onnxruntime until it asks for them.
Training lives in `eprpipe.train`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

import pluggy

__version__ = "0.1.0"

hookimpl = pluggy.HookimplMarker("eprpipe")

if TYPE_CHECKING:
    from eprpipe.data.datasets import DatasetSpec
    from eprpipe.errors import (
        DataError,
        EprError,
        FormatError,
        PluginError,
    )
    from eprpipe.plugins.registry import ArchitectureSpec

_EXPORTS = {
    "ArchitectureSpec": "eprpipe.plugins.registry",
    "DatasetSpec": "eprpipe.data.datasets",
    "DataError": "eprpipe.errors",
    "EprError": "eprpipe.errors",
    "FormatError": "eprpipe.errors",
    "PluginError": "eprpipe.errors",
}

__all__ = sorted([*_EXPORTS, "__version__", "hookimpl"])


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'eprpipe' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
