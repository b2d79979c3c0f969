"""The general path: any module, inputs, targets and task, written as a format 1.1 file.

Inputs of any dtype and rank with normalization only where declared (it goes into the graph),
the task's loss in training, untrained float tensors judged by the task's change criterion on
held-out training examples, and the task's metric of the decoded model on the test data.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from eprpipe import __version__
from eprpipe.deploy.evaluate import EvalResult
from eprpipe.errors import EprError
from eprpipe.format import container
from eprpipe.format.graph import build_onnx
from eprpipe.train.buffers import BufferChoice, compact_buffers
from eprpipe.train.checkpoint import Checkpointer, CheckpointPolicy, identity_of
from eprpipe.train.config import RateEstimator, TrainConfig
from eprpipe.train.distributed import init_world, own_range
from eprpipe.train.face import contents_for, wrap
from eprpipe.train.interface import Normalization, bind_inputs
from eprpipe.train.loop import TensorData, sum_floats, train_epr
from eprpipe.train.paths import check_writable
from eprpipe.train.runs import (
    HELD_OUT_EXAMPLES,
    CompressResult,
    InputSpec,
    TaskScore,
    baseline_metric,
    evaluation_threads,
    publish,
    training_manifest,
)
from eprpipe.train.scoring import metric_of, model_arrays, outputs_of, per_example
from eprpipe.train.tasks import Task, manifest_of

HELD_OUT_BYTES = 256 << 20  # outputs of the held-out examples kept at once


def compress_any(
    net: nn.Module,
    train: tuple[Any, Any],
    test: tuple[Any, Any],
    output: Path,
    *,
    task: Task,
    config: TrainConfig,
    input_spec: InputSpec | None,
    input_names: Sequence[str] | None,
    output_names: Sequence[str] | None,
    dynamic_axes: Mapping[str, Mapping[int, str]] | None,
    preprocessing: Mapping[str, Normalization] | None,
    metadata: Mapping[str, str] | None,
    baseline: bool,
    architecture: str,
    dataset: str,
    checkpoint: CheckpointPolicy | None,
    compact: bool,
) -> CompressResult:
    """Any module, inputs, targets and task: a format 1.1 file scored by the task's metric."""
    started = time.perf_counter()
    check_writable(output)
    config.validate()
    train_inputs, train_targets = _arrays(train, "train")
    test_inputs, test_targets = _arrays(test, "test")
    _check_alike(train_inputs, test_inputs)
    names = list(input_names) if input_names is not None else default_input_names(net, train_inputs)
    declared = _declared(names, preprocessing, input_spec)
    world, device = init_world(config.device)
    config = dataclasses.replace(config, device=device)
    torch.manual_seed(config.seed)
    net = net.to(config.device)
    positions = {names.index(name): norm for name, norm in declared.items()}
    train_data = TensorData.from_arrays(train_inputs, train_targets, config.device, positions)
    test_data = TensorData.from_arrays(test_inputs, test_targets, config.device, positions)

    run = Checkpointer(checkpoint, identity_of(
        config, architecture=architecture, dataset=dataset, baseline=baseline,
        train_examples=len(train_targets), task=task.kind, metric=task.metric_name,
    )) if checkpoint else None  # fmt: skip
    baseline_value = (
        baseline_metric(net, train_data, test_data, config, run, task) if baseline else None
    )
    model = wrap(net, decoder=config.decoder, prior=config.prior, init_step=config.init_step)
    history = train_epr(model, train_data, test_data, config, run, task)
    with torch.no_grad():
        rate_estimate = float(model.rate_bits(RateEstimator.ROUND))
    examples = tuple(torch.from_numpy(x[:2]) for x in train_inputs)  # raw: the graph normalizes
    contents = contents_for(
        model, examples, input_names=names, output_names=output_names,
        dynamic_axes=dynamic_axes, preprocessing=declared, task=manifest_of(task),
        metadata=metadata, extra={
            "producer": f"eprpipe {__version__}", "architecture": architecture,
            "dataset": dataset, "training": training_manifest(config),
        },
    )  # fmt: skip
    threads = evaluation_threads(world)
    buffer_choice = None
    if compact:
        contents, buffer_choice = _compact(contents, train_inputs, task, threads, str(output))
    data, sizes = container.encode_container(contents)
    decoded, _ = container.decode_container(data, source=str(output))
    own = own_range(len(test_targets), world)
    part = metric_of(
        build_onnx(decoded), tuple(x[own] for x in test_inputs), test_targets[own], task,
        threads, str(output),
    )  # fmt: skip
    total, count = sum_floats(list(part), world, config.device)
    score = TaskScore(
        task.metric_name, total / count, baseline_value, task.higher_is_better, len(test_targets)
    )
    metrics: dict[str, Any] = {"task_metric": score.manifest(), "dataset": dataset}
    evaluation = None
    if task.metric_name == "error" and task.kind == "classification":
        evaluation = EvalResult(correct=round(count - total), total=round(count))
        metrics.update(test_error=score.value, test_examples=len(test_targets))
        metrics["baseline_test_error"] = baseline_value
    data, sizes = container.with_manifest(data, sizes, {**contents.manifest, "metrics": metrics})
    publish(output, data, world, run)
    num_parameters = model.num_parameters()
    return CompressResult(
        path=output,
        sizes=sizes,
        evaluation=evaluation,
        baseline_error=baseline_value if evaluation is not None else None,
        num_parameters=num_parameters,
        float32_bytes=4 * num_parameters,
        wall_seconds=time.perf_counter() - started,
        history=history,
        rate_estimate_bits=rate_estimate,
        histogram_bits=model.histogram_bits(),
        buffers=buffer_choice,
        metric=score,
    )


def _compact(
    contents: container.EprContents,
    train_inputs: tuple[np.ndarray, ...],
    task: Task,
    threads: int | None,
    source: str,
) -> tuple[container.EprContents, BufferChoice]:
    """`contents` with the untrained float tensors on the coarsest grid that keeps the decoded
    model's outputs on the last training examples (the task's `changed`).

    As many of HELD_OUT_EXAMPLES as keep their outputs within HELD_OUT_BYTES (a language
    model's logits are large). Every process runs all of them: the same choice everywhere
    without gathering float outputs, for a cost small next to training.
    """

    def outputs(records: list[container.TensorRecord], count: int) -> tuple[np.ndarray, ...]:
        model = build_onnx(dataclasses.replace(contents, tensors=records))
        return outputs_of(model, tuple(x[-count:] for x in train_inputs), threads, source)

    one = sum(output.nbytes for output in outputs(contents.tensors, 1))
    count = max(1, min(HELD_OUT_EXAMPLES, len(train_inputs[0]), HELD_OUT_BYTES // max(one, 1)))
    records, choice = compact_buffers(
        contents.tensors, lambda records: per_example(outputs(records, count)), task.changed
    )
    return dataclasses.replace(contents, tensors=records), choice


def _arrays(split: object, which: str) -> tuple[tuple[np.ndarray, ...], np.ndarray]:
    """(inputs, targets) as numpy arrays the model takes (`scoring.model_arrays`): integer
    targets int64, float ones float32."""
    if not isinstance(split, (tuple, list)) or len(split) != 2:
        raise EprError(f"{which} must be (inputs, targets), got {type(split).__name__}")
    inputs, targets = split
    several = isinstance(inputs, (tuple, list))
    arrays = tuple(
        model_arrays(x, f"{which} input {i}") for i, x in enumerate(inputs if several else [inputs])
    )
    labels = model_arrays(targets, f"{which} targets")
    if labels.dtype.kind in "iub" and labels.dtype != np.bool_:
        labels = labels.astype(np.int64)
    elif labels.dtype.kind == "f":
        labels = labels.astype(np.float32)
    if not arrays or any(len(x) != len(labels) for x in arrays):
        sizes = [len(x) for x in arrays]
        raise EprError(
            f"{which}: inputs hold {sizes} examples and targets {len(labels)}: every input "
            "and the targets need the examples along axis 0"
        )
    if not len(labels):
        raise EprError(f"{which} holds no examples")
    return arrays, labels


def default_input_names(net: nn.Module, inputs: tuple[np.ndarray, ...]) -> list[str]:
    """The names `eprpipe.train.save` gives the inputs by default: the forward's arguments."""
    return list(bind_inputs(net, tuple(torch.from_numpy(x[:1]) for x in inputs), None).names)


def _check_alike(train: tuple[np.ndarray, ...], test: tuple[np.ndarray, ...]) -> None:
    """Train and test inputs are the same arguments: count, dtypes, ranks."""
    if len(train) != len(test):
        raise EprError(f"train has {len(train)} inputs, test {len(test)}")
    for index, (a, b) in enumerate(zip(train, test, strict=True)):
        if a.dtype != b.dtype or a.ndim != b.ndim:
            raise EprError(
                f"input {index} is {a.dtype} of rank {a.ndim} in train but {b.dtype} of rank "
                f"{b.ndim} in test"
            )


def _declared(
    names: Sequence[str],
    preprocessing: Mapping[str, Normalization] | None,
    input_spec: InputSpec | None,
) -> dict[str, Normalization]:
    """The normalization of each input that declares one, by input name; an InputSpec's is
    that of the one input."""
    declared = dict(preprocessing or {})
    if input_spec is not None:
        if declared or len(names) != 1:
            raise EprError(
                "input_spec= describes one image input; give the normalization of several "
                "inputs (or of any other input) by preprocessing={name: Normalization}"
            )
        declared = {names[0]: Normalization(tuple(input_spec.mean), tuple(input_spec.std), 1)}
    unknown = sorted(set(declared) - set(names))
    if unknown:
        raise EprError(
            f"preprocessing names {unknown}, which are no inputs; the inputs are {list(names)}"
        )
    return declared
