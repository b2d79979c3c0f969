"""Export the weightless ONNX graph that goes into the container (torch side).

The graph keeps each state_dict tensor as an initializer with its name, dims and data type but
no data; the torch-free decoder fills the data back in from the coded latents. `export_graph`
takes any module (several inputs of any supported dtype, keyword arguments, outputs that are
tensors, tuples or dicts); eprpipe.train.interface checks its arguments and names the graph's
inputs and outputs, and eprpipe.train.graph_edit rewrites what torch.onnx exported.
"""

from __future__ import annotations

import contextlib
import logging
import re
import warnings
from collections.abc import Iterator, Mapping, Sequence, Set

import torch
from torch import nn

from eprpipe.errors import EprError
from eprpipe.train.graph_edit import (
    cast_float16,
    check_constants,
    check_interface,
    fix_output_shapes,
    prepend_preprocessing,
    remove_weights,
    shorten_names,
    specs,
    strip_metadata,
    tie,
)
from eprpipe.train.interface import (
    ALLOWED_DTYPES,
    DTYPES,
    BoundInputs,
    ExportedGraph,
    Normalization,
    TensorSpec,
    bind_inputs,
    check_names,
    check_preprocessing,
    check_representable,
    checked_axes,
    describe,
    flatten_outputs,
    tied_tensors,
)

__all__ = [
    "INPUT_NAME", "OUTPUT_NAME", "ExportedGraph", "Normalization", "TensorSpec",
    "check_representable", "export_graph", "tied_tensors", "weightless_graph",
]  # fmt: skip

INPUT_NAME = "input"
OUTPUT_NAME = "logits"


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """The exporter logs one warning per missing torchvision op and warns on every export."""
    loggers = [logging.getLogger(name) for name in ("torch", "torch.onnx")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    _forget_rnn_kernels()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        _forget_rnn_kernels()
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def _forget_rnn_kernels() -> None:
    """Empty the Python dispatch caches of aten.gru and aten.lstm.

    torch.onnx exports them with a while-loop decomposition (a dynamic sequence length) that it
    installs into `py_kernels` for the export only, without clearing the ops' dispatch cache
    (torch 2.13, torch/export/_patches.py). Whichever kernel was cached first stays: the second
    GRU export of a process fixes the sequence length, and a later export or compile in the
    user's process would get the while-loop kernel, which has no autograd.
    """
    for op in (torch.ops.aten.gru.input, torch.ops.aten.lstm.input):
        cache = getattr(op, "_dispatch_cache", None)
        if isinstance(cache, dict):
            cache.clear()


def _reason(error: Exception) -> str:
    """The exporter's message in one line: its exception summary (naming the operator it could
    not translate) and the forward's line that raised it, when it says."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(error))
    summary = [line.strip() for line in text.partition("## Exception summary")[2].splitlines()
               if line.strip().startswith("<class ")]  # fmt: skip
    first = summary[0] if summary else (text.strip().splitlines() or [type(error).__name__])[0]
    first = re.sub(r"^<class '(?:[\w.]*\.)?(\w+)'>: ", r"\1: ", first)
    call = [
        line.strip()
        for line in text.partition("The following call raised this error:")[2].splitlines()
        if line.strip()
    ]
    if len(call) >= 2:
        first += f" (at {call[0]}: {call[1]})"
    return first[:600]


def _dynamic_shapes(
    bound: BoundInputs, input_names: Sequence[str], axes: Mapping[str, Mapping[int, str]]
) -> tuple:
    """torch.export's dynamic_shapes: one entry per example argument, one Dim per name."""
    dims = {name: torch.export.Dim(name) for spec in axes.values() for name in spec.values()}
    per_tensor = iter(
        {axis: dims[name] for axis, name in axes.get(input_name, {}).items()} or None
        for input_name in input_names
    )
    return tuple(next(per_tensor) if isinstance(value, torch.Tensor) else None
                 for value in (*bound.args, *bound.kwargs.values()))  # fmt: skip


def _example_outputs(module: nn.Module, bound: BoundInputs) -> list[tuple[str, torch.Tensor]]:
    """Run the forward once on the examples: a mismatch is clearer here than in the exporter."""
    try:
        with torch.no_grad():
            outputs = module(*bound.args, **bound.kwargs)
    except Exception as error:  # any error of the user's forward
        raise EprError(
            f"the example inputs do not match {type(module).__name__}.forward "
            f"({describe(bound.tensors, bound.names)}): {type(error).__name__}: {error}"
        ) from None
    flat = flatten_outputs(outputs)
    for name, value in flat:
        if value.dtype not in DTYPES:
            raise EprError(
                f"output {name!r} is {value.dtype}; graph outputs may be {ALLOWED_DTYPES}"
            )
    return flat


def export_graph(
    module: nn.Module,
    example_inputs: tuple | torch.Tensor,
    tensor_names: Set[str],
    *,
    example_kwargs: dict | None = None,
    input_names: Sequence[str] | None = None,
    output_names: Sequence[str] | None = None,
    dynamic_axes: Mapping[str, Mapping[int, str]] | None = None,
    preprocessing: Mapping[str, Normalization] | None = None,
    float16_tensors: Set[str] = frozenset(),
) -> ExportedGraph:
    """Export `module` (plain, holding its weights) to a weightless ONNX graph.

    Every initializer named in `tensor_names` (state_dict names the container stores as
    records; a tied tensor under its canonical name) keeps its name, type and dims but no data.
    The graph's inputs are the example's tensor arguments in signature order, named after the
    forward's parameters unless `input_names` says; `preprocessing` runs inside the graph;
    `float16_tensors` are FLOAT16 initializers cast to FLOAT. Raises EprError, naming the
    argument, name, parameter or operator, for anything it cannot export faithfully.

    >>> exported = export_graph(nn.Linear(3, 2), torch.zeros(2, 3), {"weight", "bias"})
    >>> exported.inputs[0].manifest()
    {'name': 'input', 'dtype': 'float32', 'shape': ['batch', 3]}
    """
    check_representable(module)
    bound = bind_inputs(module, example_inputs, example_kwargs)
    aliases = tied_tensors(module)
    records = {aliases.get(name, name) for name in tensor_names}
    half = {aliases.get(name, name) for name in float16_tensors}
    if half - records:
        raise EprError(f"float16 tensors {sorted(half - records)} are not in tensor_names")
    was_training = module.training
    module.eval()
    try:
        flat = _example_outputs(module, bound)
        state = module.state_dict()
        taken = {name: "a state_dict tensor" for name in state}
        inputs = list(bound.names if input_names is None else input_names)
        check_names("input", inputs, len(bound.tensors), taken)
        outputs = [name for name, _ in flat] if output_names is None else list(output_names)
        check_names("output", outputs, len(flat), {**taken, **dict.fromkeys(inputs, "an input")})
        axes = checked_axes(dynamic_axes, inputs, bound.tensors)
        check_preprocessing(preprocessing or {}, inputs, bound.tensors)
        with _quiet():
            try:
                program = torch.onnx.export(
                    module, bound.args, kwargs=bound.kwargs, dynamo=True, optimize=False,
                    external_data=False, input_names=inputs, output_names=outputs,
                    dynamic_shapes=_dynamic_shapes(bound, inputs, axes), verbose=False,
                )  # fmt: skip
            except Exception as error:  # the exporter raises many types; all mean the same
                raise EprError(
                    f"torch.onnx cannot export {type(module).__name__}: {_reason(error)}"
                ) from None
    finally:
        module.train(was_training)
    if program is None:  # torch.onnx returns None only for the TorchScript exporter
        raise EprError(f"torch.onnx returned no program for {type(module).__name__}")
    model = program.model_proto
    if [value.name for value in model.graph.input] != inputs:
        raise EprError(
            f"torch.onnx exported the inputs {[v.name for v in model.graph.input]}, "
            f"not the {inputs} of the examples"
        )
    tie(model, aliases)
    check_interface(model, axes, {*inputs, *outputs})
    strip_metadata(model)
    remove_weights(model, records)
    fix_output_shapes(model, {name for spec in axes.values() for name in spec.values()})
    cast_float16(model, half)
    constants = prepend_preprocessing(model, preprocessing or {})
    buffers = {name for name, _ in module.named_buffers()} - set(state)
    canonical = {aliases.get(name, name) for name in state}
    check_constants(model, records, canonical, constants, buffers)
    shorten_names(model)
    model.producer_name = "eprpipe"
    return ExportedGraph(
        graph=model.SerializeToString(),
        inputs=specs(model.graph.input),
        outputs=specs(model.graph.output),
        tied_tensors={alias: name for alias, name in aliases.items() if name in records},
    )


def weightless_graph(
    module: nn.Module, input_shape: tuple[int, ...], tensor_names: set[str]
) -> bytes:
    """Export an image classifier: one float32 input "input" with a dynamic batch axis, one
    output "logits" (export_graph with those names)."""
    exported = export_graph(
        module, (torch.zeros((1, *input_shape)),), tensor_names,
        input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
    )  # fmt: skip
    return exported.graph
