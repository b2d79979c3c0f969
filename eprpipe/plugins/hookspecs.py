"""The hooks an eprpipe plugin can implement (with ``from eprpipe import hookimpl``).

A plugin is a module named by an entry point in the ``eprpipe`` group. Hooks register things
through a callback, so a plugin can register any number of them and eprpipe can tell which
plugin registered which name.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from eprpipe.data.datasets import DatasetSpec
    from eprpipe.plugins.registry import ArchitectureSpec

hookspec = pluggy.HookspecMarker("eprpipe")


@hookspec
def register_architectures(register: Callable[[ArchitectureSpec], None]) -> None:
    """Register model architectures that eprpipe can train and compress.

    Import torch inside this hook's body (or inside the factories), never at the plugin
    module's top level: the module is imported on machines without torch too, where only the
    dataset hook runs.

    :param register: call ``register(ArchitectureSpec(...))`` once per architecture; a name
        another plugin already took raises `eprpipe.errors.PluginError`.
    """


@hookspec
def register_datasets(register: Callable[[DatasetSpec], None]) -> None:
    """Register image classification datasets for training and evaluation.

    This hook and the loaders it registers must not import torch: evaluating a decoded model
    loads its test data through them on machines that have only numpy.

    :param register: call ``register(DatasetSpec(...))`` once per dataset; a name another
        plugin already took raises `eprpipe.errors.PluginError`.
    """
