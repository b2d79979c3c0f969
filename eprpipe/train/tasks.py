"""What a model is trained for: its loss, its metric, and when its output has changed.

The built-in loop (`eprpipe.train.loop`), the held-out criterion for untrained float tensors
(`eprpipe.train.buffers`) and the reports all ask the task, so that `compress_module` trains,
scores and describes a regression model or a user's own objective as it does a classifier.

A metric comes back as a (sum, count) pair: batches and processes then add up to the exact
mean over the whole split, however it was cut. Built-in tasks read a multi-output model's first
output; a task made from the user's own functions sees every output.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F

from eprpipe.errors import EprError

Outputs = torch.Tensor | Sequence[torch.Tensor] | Mapping[str, torch.Tensor]
Arrays = np.ndarray | Sequence[np.ndarray]
KINDS = ("classification", "regression", "none")  # the manifest's task.kind

# A regression output counts as changed when it moved by more than this share of its size
# (`relative_change`). Measured on three BatchNorm regression MLPs (8 or 16 features, widths 32
# and 64, 1,000 held-out examples): with 0.2 % of examples allowed past it, 1e-3 picks the
# 12-bit grid for all three, which moved the test MSE by at most 0.04 %; 3e-3 would pick 10 bits
# (up to 0.13 %), 1.5e-2 8 bits (up to 0.7 %).
RELATIVE_TOLERANCE = 1e-3


class Task(Protocol):
    """What the loop optimizes, what evaluation and reports print, what counts as a change."""

    kind: str  # "classification", "regression" or "none" (the manifest's task.kind)
    metric_name: str  # what reports print: "error", "mse", …
    higher_is_better: bool

    def loss(self, outputs: Outputs, targets: torch.Tensor) -> torch.Tensor:
        """A scalar: the mean over the batch, differentiable."""

    def metric(self, outputs: Outputs, targets: torch.Tensor) -> tuple[float, int]:
        """(sum, count) over the batch: sums and counts of batches and processes add up."""

    def changed(self, exact: Arrays, trial: Arrays) -> np.ndarray:
        """One bool per example: whether `trial` outputs differ materially from `exact` ones."""


def first(outputs: Outputs | Arrays) -> torch.Tensor | np.ndarray:
    """A model's first output: itself if it returns one tensor."""
    if isinstance(outputs, (torch.Tensor, np.ndarray)):
        return outputs
    if isinstance(outputs, Mapping):
        return next(iter(outputs.values()))
    return outputs[0]


def as_float(outputs: Outputs) -> Outputs:
    """Floating outputs in float32 (bfloat16 under autocast), others as they are."""
    if isinstance(outputs, torch.Tensor):
        return outputs.float() if outputs.is_floating_point() else outputs
    if isinstance(outputs, Mapping):
        return {name: as_float(value) for name, value in outputs.items()}
    return tuple(as_float(value) for value in outputs)


@dataclass(frozen=True)
class Classification:
    """Cross-entropy on the first output's logits (classes along axis 1), top-1 error."""

    classes: tuple[str, ...] | None = None
    kind: str = "classification"
    metric_name: str = "error"
    higher_is_better: bool = False

    def loss(self, outputs: Outputs, targets: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(first(outputs), targets)

    def metric(self, outputs: Outputs, targets: torch.Tensor) -> tuple[float, int]:
        wrong = first(outputs).argmax(1) != targets
        return float(wrong.sum()), wrong.numel()

    def changed(self, exact: Arrays, trial: Arrays) -> np.ndarray:
        """The predicted class differs (anywhere, for outputs with more than one position)."""
        differs = first(exact).argmax(1) != first(trial).argmax(1)
        return differs.reshape(len(differs), -1).any(1)


@dataclass(frozen=True)
class Regression:
    """Mean squared error on the first output, as loss and as metric (mean per element)."""

    kind: str = "regression"
    metric_name: str = "mse"
    higher_is_better: bool = False
    tolerance: float = RELATIVE_TOLERANCE

    def loss(self, outputs: Outputs, targets: torch.Tensor) -> torch.Tensor:
        output = first(outputs)
        return F.mse_loss(output, aligned(targets, output))

    def metric(self, outputs: Outputs, targets: torch.Tensor) -> tuple[float, int]:
        output = first(outputs)
        squared = (output - aligned(targets, output)).double().square()
        return float(squared.sum()), squared.numel()

    def changed(self, exact: Arrays, trial: Arrays) -> np.ndarray:
        return relative_change(exact, trial) > self.tolerance


def aligned(targets: torch.Tensor, output: torch.Tensor) -> torch.Tensor:
    """`targets` in `output`'s shape and dtype: (N,) targets for an (N, 1) output are reshaped
    (broadcasting them would silently compare every pair); other mismatches are errors."""
    if targets.shape != output.shape:
        if targets.numel() != output.numel() or len(targets) != len(output):
            raise EprError(
                f"targets of shape {tuple(targets.shape)} do not match the model's output of "
                f"shape {tuple(output.shape)}"
            )
        targets = targets.reshape(output.shape)
    return targets.to(output.dtype)


def relative_change(exact: Arrays, trial: Arrays) -> np.ndarray:
    """Per example, the L2 norm of the change over all outputs, relative to the exact outputs'
    norm: that example's, or the examples' root mean square if larger (outputs near zero would
    make any change look large)."""
    before, after = _per_example(exact), _per_example(trial)
    size = np.linalg.norm(before, axis=1)
    floor = float(np.sqrt(np.mean(size**2))) if len(size) else 0.0
    change = np.linalg.norm(after - before, axis=1)
    return change / np.maximum(np.maximum(size, floor), np.finfo(np.float64).tiny)


def _per_example(outputs: Arrays) -> np.ndarray:
    """Every output, flattened per example and side by side: (examples, values) in float64."""
    parts = [outputs] if isinstance(outputs, np.ndarray) else list(outputs)
    return np.concatenate(
        [np.asarray(part, np.float64).reshape(len(part), -1) for part in parts], axis=1
    )


@dataclass(frozen=True)
class UserTask:
    """A task from the user's functions, completed by a built-in one (`task_from`)."""

    kind: str
    metric_name: str
    higher_is_better: bool
    loss_fn: Callable[[Outputs, torch.Tensor], torch.Tensor]
    metric_fn: Callable[[Outputs, torch.Tensor], object]
    changed_fn: Callable[[Arrays, Arrays], np.ndarray]
    classes: tuple[str, ...] | None = None

    def loss(self, outputs: Outputs, targets: torch.Tensor) -> torch.Tensor:
        value = self.loss_fn(outputs, targets)
        if not isinstance(value, torch.Tensor) or value.ndim != 0:
            got = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
            raise EprError(f"loss_fn must return a scalar tensor (mean over the batch), got {got}")
        return value

    def metric(self, outputs: Outputs, targets: torch.Tensor) -> tuple[float, int]:
        value = self.metric_fn(outputs, targets)
        if isinstance(value, tuple) and len(value) == 2:
            total, count = value
            return _number(total, "metric_fn's sum"), int(_number(count, "metric_fn's count"))
        count = len(targets)
        return _number(value, "metric_fn") * count, count

    def changed(self, exact: Arrays, trial: Arrays) -> np.ndarray:
        return self.changed_fn(exact, trial)


def _number(value: object, what: str) -> float:
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return float(value.detach())
    if isinstance(value, (numbers.Real, np.number)):
        return float(value)  # type: ignore[arg-type]
    raise EprError(
        f"{what} must be a number or a one-element tensor (the batch mean), or a (sum, count) "
        f"pair; got {type(value).__name__}"
    )


def task_from(
    task: Task | str | None = None,
    loss_fn: Callable[[Outputs, torch.Tensor], torch.Tensor] | None = None,
    metric_fn: Callable[[Outputs, torch.Tensor], object] | None = None,
    *,
    metric_name: str | None = None,
    higher_is_better: bool = False,
    classes: Sequence[str] | None = None,
) -> Task:
    """The task that `task`, the user's functions and `classes` describe.

    `task` is a Task or a kind ("classification", "regression", "none"); nothing at all is
    classification, as the loop always was. `loss_fn(outputs, targets)` returns the batch's mean
    loss as a scalar tensor; `metric_fn(outputs, targets)` the batch's mean (a number) or a
    (sum, count) pair, named `metric_name` (default: the function's name); lower is better
    unless `higher_is_better`. A `loss_fn` alone is a task of kind "none" whose metric is that
    loss; with a task, the functions replace its loss or its metric.
    """
    if task is None and loss_fn is not None and classes is None:
        task = "none"
    base = _built_in(task, classes)
    if loss_fn is None and metric_fn is None:
        if base is None:
            raise EprError("a task of kind 'none' needs a loss_fn")
        return base
    if base is None:
        base = Regression(kind="none")
        if metric_fn is None:
            metric_fn, metric_name = loss_fn, metric_name or "loss"
    if metric_fn is None:
        metric_fn, metric_name, higher_is_better = (
            base.metric,
            base.metric_name,
            base.higher_is_better,
        )
    name = metric_name or getattr(metric_fn, "__name__", "metric")
    return UserTask(
        kind=base.kind,
        metric_name="metric" if name == "<lambda>" else name,
        higher_is_better=higher_is_better,
        loss_fn=loss_fn or base.loss,
        metric_fn=metric_fn,
        changed_fn=base.changed,
        classes=getattr(base, "classes", None),
    )


def _built_in(task: Task | str | None, classes: Sequence[str] | None) -> Task | None:
    """The task `task` names (None: kind "none", which only the user's functions define)."""
    names = tuple(classes) if classes is not None else None
    if task is None or task == "classification":
        return Classification(names)
    if names is not None and task != "classification":
        raise EprError("classes= goes with a classification task only")
    if task == "regression":
        return Regression()
    if task == "none":
        return None
    if isinstance(task, str):
        raise EprError(f"unknown task {task!r}: say 'classification', 'regression' or 'none'")
    if task.kind not in KINDS:
        raise EprError(f"task kind {task.kind!r} is none of {', '.join(KINDS)}")
    return task


def manifest_of(task: Task) -> dict:
    """The manifest's `task` field: the kind, and a classifier's class names if it has them."""
    entry: dict = {"kind": task.kind}
    classes = getattr(task, "classes", None)
    if task.kind == "classification" and classes is not None:
        entry["classes"] = list(classes)
    return entry
