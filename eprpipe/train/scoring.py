"""A decoded ONNX model run on any arrays under onnxruntime, scored with a task's metric.

`compress_module` reports what the written file computes, not what torch computed: the model
decoded from the file's bytes runs in a bounded onnxruntime session (deploy/evaluate.py's
`session`), its outputs become torch tensors and the task scores them as training did. The
inputs are fed raw: a declared normalization is inside the graph.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import numpy as np
import onnx
import torch

from eprpipe.deploy.evaluate import EVAL_BATCH, MAX_BATCH_BYTES, ORT_ERRORS, session
from eprpipe.errors import EprError
from eprpipe.train.tasks import Task

Arrays = tuple[np.ndarray, ...]


def model_arrays(value: object, what: str) -> np.ndarray:
    """A numpy array or torch tensor as the model takes it: uint8 pixels as float32 in [0, 1],
    float64 as float32, everything else as it is."""
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    if not isinstance(value, np.ndarray):
        raise EprError(
            f"{what} must be a numpy array or a torch tensor, got {type(value).__name__}"
        )
    if value.dtype == np.uint8:
        return value.astype(np.float32) / np.float32(255.0)
    if value.dtype == np.float64:
        return value.astype(np.float32)
    return np.ascontiguousarray(value)


def batch_size(inputs: Arrays) -> int:
    """Examples per onnxruntime run: at most EVAL_BATCH and MAX_BATCH_BYTES of inputs."""
    per_example = sum(x.itemsize * math.prod(x.shape[1:]) for x in inputs)
    return max(1, min(EVAL_BATCH, MAX_BATCH_BYTES // max(per_example, 1)))


class Runner:
    """One session for a decoded model, fed the inputs in order, batch by batch."""

    def __init__(self, model: onnx.ModelProto, threads: int | None, source: str) -> None:
        self.runner = session(model, threads, source=source)
        self.names = [value.name for value in self.runner.get_inputs()]
        self.source = source

    def batches(self, inputs: Arrays) -> Iterator[tuple[slice, list[np.ndarray]]]:
        """(rows, every output for them) for consecutive batches of `inputs`."""
        if len(inputs) != len(self.names):
            raise EprError(
                f"{self.source} takes {len(self.names)} inputs ({', '.join(self.names)}); "
                f"{len(inputs)} were given"
            )
        count = len(inputs[0]) if inputs else 0
        step = batch_size(inputs)
        for start in range(0, count, step):
            rows = slice(start, min(start + step, count))
            feeds = {name: x[rows] for name, x in zip(self.names, inputs, strict=True)}
            try:
                yield rows, self.runner.run(None, feeds)
            except ORT_ERRORS as error:
                raise EprError(f"onnxruntime cannot run {self.source}: {error}") from None


def outputs_of(
    model: onnx.ModelProto, inputs: Arrays, threads: int | None = None, source: str = "the model"
) -> Arrays:
    """Every output of `model` for `inputs`, whole: one array per output."""
    parts: list[list[np.ndarray]] = []
    for _, outputs in Runner(model, threads, source).batches(inputs):
        parts = parts or [[] for _ in outputs]
        for part, output in zip(parts, outputs, strict=True):
            part.append(np.asarray(output))
    return tuple(np.concatenate(part) for part in parts)


def metric_of(
    model: onnx.ModelProto,
    inputs: Arrays,
    targets: np.ndarray,
    task: Task,
    threads: int | None = None,
    source: str = "the model",
) -> tuple[float, int]:
    """The task's (sum, count) over the examples: each batch's outputs as torch tensors (one
    tensor for a model of one output, else a tuple) against its targets."""
    total, count = 0.0, 0
    expected = torch.from_numpy(np.ascontiguousarray(targets))
    for rows, outputs in Runner(model, threads, source).batches(inputs):
        tensors = tuple(torch.from_numpy(np.asarray(output)) for output in outputs)
        part, examples = task.metric(tensors[0] if len(tensors) == 1 else tensors, expected[rows])
        total, count = total + part, count + examples
    return total, count


def per_example(outputs: Sequence[np.ndarray]) -> np.ndarray | Arrays:
    """A model's outputs as a task's `changed` takes them: the array of a lone output."""
    return outputs[0] if len(outputs) == 1 else tuple(outputs)
