"""The Python API: compress any torch.nn.Module into an .epr file and report what it costs.

`compress_module` trains a module with the built-in loop on arrays, for any task (a classifier,
a regression, the user's own loss and metric; `eprpipe.train.tasks`), with any inputs and
targets; `compress_registered` resolves an architecture and a dataset through the plugins
first. An image classifier described by an `InputSpec` gets today's format 1.0 file; any other
model the general format 1.1 file (`eprpipe.train.face.contents_for`). The reported metric is
always that of the ONNX model decoded, without torch, from the bytes that are written.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from eprpipe.data.datasets import ImageFiles, Prepared, classes_of, fit
from eprpipe.errors import EprError
from eprpipe.plugins.manager import get_architecture, get_dataset
from eprpipe.train.checkpoint import CheckpointPolicy
from eprpipe.train.config import TrainConfig
from eprpipe.train.general import compress_any
from eprpipe.train.images import compress_images
from eprpipe.train.interface import Normalization
from eprpipe.train.paths import check_writable
from eprpipe.train.runs import CompressResult, InputSpec, TaskScore
from eprpipe.train.tasks import Classification, Task, task_from
from eprpipe.train.weights import load_into

__all__ = ["CompressResult", "InputSpec", "TaskScore", "compress_module", "compress_registered"]

MOVED_TO_CONFIG = ("decoder", "prior", "init_step")  # keywords of 0.1, TrainConfig fields now


def _refuse_moved(function: str, keywords: dict[str, object]) -> None:
    """A TypeError that says where a keyword of 0.1 went, before any work is done."""
    for name in MOVED_TO_CONFIG:
        if name in keywords:
            raise TypeError(
                f"{name}= is no longer a keyword of {function}(): it is a TrainConfig field, "
                f"so pass config=TrainConfig({name}=...)"
            )


def compress_module(
    net: nn.Module,
    train: Prepared | tuple[Any, Any],
    test: Prepared | tuple[Any, Any],
    output: Path,
    *,
    config: TrainConfig,
    input_spec: InputSpec | None = None,
    classes: Sequence[str] | None = None,
    task: Task | str | None = None,
    loss_fn: Callable[[Any, torch.Tensor], torch.Tensor] | None = None,
    metric_fn: Callable[[Any, torch.Tensor], object] | None = None,
    metric_name: str | None = None,
    higher_is_better: bool = False,
    input_names: Sequence[str] | None = None,
    output_names: Sequence[str] | None = None,
    dynamic_axes: Mapping[str, Mapping[int, str]] | None = None,
    preprocessing: Mapping[str, Normalization] | None = None,
    metadata: Mapping[str, str] | None = None,
    baseline: bool = True,
    architecture: str = "custom",
    dataset: str = "custom",
    checkpoint: CheckpointPolicy | None = None,
    compact: bool = True,
    workers: int | None = None,
    **unknown: object,
) -> CompressResult:
    """Train `net` with EPR on `train` for its task, write `output`, score the decoded file.

    `train` and `test` are (inputs, targets): inputs one array or tensor, or a tuple of them
    (the module's positional arguments: float features, int64 token ids, images, any rank,
    examples along axis 0), targets what the task's loss takes (int64 labels, float regression
    targets, any shape). The task is `task` (a `Task`, or "classification", "regression",
    "none"), or the user's `loss_fn(outputs, targets)` (a scalar batch mean) and
    `metric_fn(outputs, targets)` (a batch mean or a (sum, count) pair, named `metric_name`,
    lower is better unless `higher_is_better`); nothing at all is classification over
    `classes`. `preprocessing` ({input name: Normalization}) normalizes inputs for training and
    goes into the graph, so the file's model takes raw inputs; uint8 inputs are pixels, scaled
    to [0, 1] first. `input_names`, `output_names`, `dynamic_axes` and `metadata` are those of
    `eprpipe.train.save`.

    An image classifier given with `input_spec` and `classes` ((images, labels) arrays: uint8
    or float32 in [0, 1], NCHW, int labels; or `ImageFiles` fitted to the input, streamed from
    disk through `workers` decoding processes) is written as a format 1.0 file, as always;
    every other model as a format 1.1 file with its inputs, outputs and task.

    The module is modified in place (its parameters become latent parametrizations). With a
    `checkpoint` policy the run saves itself as it goes and, with `resume`, continues a run
    that was stopped; the checkpoint is removed once `output` is written. With `compact`,
    float tensors EPR does not train (BatchNorm statistics) are quantized where that keeps the
    outputs on the last HELD_OUT_EXAMPLES training examples (the task's `changed`; see
    eprpipe.train.buffers). Every training choice (decoder, prior, initial step, …) is a field
    of `config`.
    """
    _refuse_moved("compress_module", unknown)
    for name in unknown:
        raise TypeError(f"compress_module() got an unexpected keyword argument {name!r}")
    resolved = task_from(
        task, loss_fn, metric_fn, metric_name=metric_name, higher_is_better=higher_is_better,
        classes=classes,
    )  # fmt: skip
    general = {
        "input_names": input_names, "output_names": output_names, "dynamic_axes": dynamic_axes,
        "preprocessing": preprocessing, "metadata": metadata,
    }  # fmt: skip
    common = {
        "config": config, "baseline": baseline, "architecture": architecture, "dataset": dataset,
        "checkpoint": checkpoint, "compact": compact,
    }  # fmt: skip
    if (
        input_spec is not None
        and classes is not None
        and _image_classifier(train, resolved, general)
    ):
        return compress_images(
            net, train, test, Path(output), input_spec=input_spec, classes=tuple(classes),
            workers=workers, **common,
        )  # fmt: skip
    if isinstance(train, ImageFiles) or isinstance(test, ImageFiles):
        raise EprError(
            "image files stream only for an image classifier given with input_spec= and "
            "classes= and no loss_fn, metric_fn or general options; pass arrays otherwise"
        )
    return compress_any(
        net, train, test, Path(output), task=resolved, input_spec=input_spec, **general, **common
    )


def _image_classifier(train: object, task: Task, general: Mapping[str, object]) -> bool:
    """Whether a model given with an InputSpec and classes is the image classifier format 1.0
    describes and eprpipe always wrote: the built-in classification task, one batch of images,
    none of the general path's options."""
    if type(task) is not Classification or any(v is not None for v in general.values()):
        return False
    if isinstance(train, ImageFiles):
        return True
    images = train[0] if isinstance(train, tuple) and len(train) == 2 else None
    return isinstance(images, np.ndarray) and images.ndim == 4


def compress_registered(
    architecture: str,
    dataset: str,
    output: Path,
    *,
    data_dir: Path | None = None,
    config: TrainConfig,
    init_from: Path | None = None,
    augment: bool = True,
    **options,
) -> CompressResult:
    """Compress a registered architecture on a registered dataset (what the CLI runs).

    `init_from` names weights the architecture already has (safetensors or a torch state
    dict): EPR then starts from them, which is how a trained model is compressed. The
    dataset's train-time augmentation is used unless `augment` is False. `options` are
    `compress_module`'s.
    """
    _refuse_moved("compress_registered", options)
    arch = get_architecture(architecture)
    spec = get_dataset(dataset)
    check_writable(Path(output), inputs=(init_from,) if init_from else ())
    train = fit(spec.load("train", data_dir), arch.input_shape)
    test = fit(spec.load("test", data_dir), arch.input_shape)
    classes = classes_of(spec, train)
    if augment and config.augmentation is None and spec.augmentation:
        config = dataclasses.replace(config, augmentation=spec.augmentation)
    torch.manual_seed(config.seed)
    net = arch.factory(num_classes=len(classes))
    if init_from is not None:
        load_into(net, init_from)
    input_spec = InputSpec(shape=tuple(arch.input_shape), mean=spec.mean, std=spec.std)
    return compress_module(
        net,
        train,
        test,
        Path(output),
        input_spec=input_spec,
        classes=classes,
        config=config,
        architecture=architecture,
        dataset=dataset,
        **options,
    )
