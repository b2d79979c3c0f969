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

    The factory contract, as ``eprpipe compress ARCH --dataset DATA`` (and
    `eprpipe.train.compress_registered`) uses it:

    - Classes: eprpipe calls ``spec.factory(num_classes=n)`` and passes nothing else; ``n`` is
      the *dataset's* class count (its ``DatasetSpec.classes``, or the class folders a
      folder dataset finds). The factory returns a fresh module whose output is ``(batch, n)``
      logits. ``ArchitectureSpec.num_classes`` does not build the model: it records the count
      the architecture is meant for (tools/bench_step.py draws random labels from it).
    - Input: the module receives float32 ``(batch, *input_shape)``. The factory is not told
      ``input_shape``; bind what the module needs from it yourself, e.g.
      ``factory=functools.partial(MyNet, in_channels=input_shape[0])``. eprpipe fits the
      dataset to ``input_shape``: images are resized bilinearly to its height and width, and a
      dataset with another channel count is refused with a DataError. The weightless ONNX
      graph is exported for ``input_shape`` and the file declares ``[batch, *input_shape]``.
    - Normalization: the module receives ``(pixels - mean) / std`` per channel, pixels in
      [0, 1], with the *dataset's* ``DatasetSpec.mean`` and ``std``. eprpipe normalizes the
      training batches and writes the same normalization into the decoded ONNX graph (which
      then takes [0, 1] pixels), so the module must not normalize again.
    - Weights: the module starts as the factory builds it, or from ``--init-from`` weights
      whose names and shapes match its ``state_dict``. Every floating-point parameter is
      reparameterized; buffers (BatchNorm statistics) are stored beside them. It must export
      with ``torch.onnx.export(dynamo=True)`` and a dynamic batch axis, holding no sizeable
      tensor outside its ``state_dict``.

    - Recipe: ``ArchitectureSpec.recipe`` (`eprpipe.plugins.registry.Recipe`) may give the λ
      and epochs that ``eprpipe compress ARCH`` uses when the user sets neither, with a line
      saying what they measured; without one, TrainConfig's defaults apply.

    With the Python API (`eprpipe.train.compress_module`) you build the module yourself and
    `eprpipe.train.InputSpec` gives the shape, mean and std instead.

    :param register: call ``register(ArchitectureSpec(...))`` once per architecture; a name
        another plugin already took raises `eprpipe.errors.PluginError`.
    """


@hookspec
def register_datasets(register: Callable[[DatasetSpec], None]) -> None:
    """Register image classification datasets for training and evaluation.

    This hook and the loaders it registers must not import torch: evaluating a decoded model
    loads its test data through them on machines that have only numpy. The hook runs whenever
    eprpipe looks a dataset up, so it only builds specs: pixels load when ``load`` is called.

    ``classes`` name the labels in order (label i is ``classes[i]``) and give the class count
    that builds the model; ``mean`` and ``std`` (per channel, [0, 1] pixel scale, measured on
    the train split at the native ``image_shape``) are what eprpipe normalizes with, in
    training and inside every file's graph (see `register_architectures`).

    :param register: call ``register(DatasetSpec(...))`` once per dataset; a name another
        plugin already took raises `eprpipe.errors.PluginError`.
    """
