"""The interface of an exported graph, seen from torch: which tensors go in and come out.

`export_graph` (eprpipe.train.export) exports any module; this module checks what the user
hands it before torch.onnx runs (parameters eprpipe can store, example inputs that fit the
forward, names that do not collide) and names the graph's inputs and outputs, so that every
problem is an EprError naming the argument, name or parameter, raised before anything is
written.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from onnx import TensorProto
from torch import nn

from eprpipe.errors import EprError

# The dtypes a graph input or output may have (the 1.1 manifest's), as torch and ONNX name them.
DTYPES: dict[torch.dtype, str] = {
    torch.float32: "float32",
    torch.float16: "float16",
    torch.int64: "int64",
    torch.int32: "int32",
    torch.bool: "bool",
}
ONNX_DTYPES: dict[int, str] = {
    TensorProto.FLOAT: "float32",
    TensorProto.FLOAT16: "float16",
    TensorProto.INT64: "int64",
    TensorProto.INT32: "int32",
    TensorProto.BOOL: "bool",
}
ALLOWED_DTYPES = ", ".join(DTYPES.values())


@dataclass(frozen=True)
class TensorSpec:
    """One graph input or output, as the 1.1 manifest describes it."""

    name: str
    dtype: str  # one of DTYPES' values
    shape: tuple[int | str, ...]  # a str is a symbolic dimension, e.g. "batch"

    def manifest(self) -> dict:
        return {"name": self.name, "dtype": self.dtype, "shape": list(self.shape)}


@dataclass(frozen=True)
class Normalization:
    """Preprocessing the graph applies first: (x - mean) / std along `axis`."""

    mean: tuple[float, ...]
    std: tuple[float, ...]
    axis: int = 1


@dataclass(frozen=True)
class ExportedGraph:
    """A weightless graph and its interface, read back from the graph itself."""

    graph: bytes  # weightless ModelProto bytes
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    tied_tensors: Mapping[str, str] = field(default_factory=dict)  # alias -> canonical name


@dataclass(frozen=True)
class BoundInputs:
    """The example arguments, bound to the forward's parameters."""

    args: tuple
    kwargs: dict
    names: tuple[str, ...]  # one per tensor argument, in the graph's input order
    tensors: tuple[torch.Tensor, ...]


def _unsupported(value: object) -> bool:
    """A tensor is fine, a plain constant too (torch.export bakes it in); a container of
    tensors would become several graph inputs with made-up names."""
    if isinstance(value, list | tuple):
        return any(isinstance(item, torch.Tensor) or _unsupported(item) for item in value)
    if isinstance(value, dict):
        return _unsupported(list(value.values()))
    return False


def bind_inputs(
    module: nn.Module, example_inputs: object, example_kwargs: dict | None
) -> BoundInputs:
    """Bind the examples to `module.forward` in signature order, the order the graph's inputs
    take; refuse a count that does not fit, a nested container and an unsupported dtype."""
    args = (example_inputs,) if isinstance(example_inputs, torch.Tensor) else example_inputs
    if not isinstance(args, tuple | list):
        raise EprError(f"example_inputs must be a tensor or a tuple, not {type(args).__name__}")
    signature = inspect.signature(module.forward)
    forward = f"{type(module).__name__}.forward{signature}"
    try:
        bound = signature.bind(*args, **(example_kwargs or {}))
    except TypeError as error:
        raise EprError(f"the example inputs do not match {forward}: {error}") from None
    named: list[tuple[str, object]] = []
    for name, value in bound.arguments.items():
        kind = signature.parameters[name].kind
        if kind is inspect.Parameter.VAR_POSITIONAL:
            named.extend((f"{name}_{index}", item) for index, item in enumerate(value))
        elif kind is inspect.Parameter.VAR_KEYWORD:
            named.extend(value.items())
        else:
            named.append((name, value))
    for name, value in named:
        if isinstance(value, torch.Tensor) and value.dtype not in DTYPES:
            raise EprError(
                f"example input {name!r} of {forward} is {value.dtype}; "
                f"graph inputs may be {ALLOWED_DTYPES}"
            )
        if _unsupported(value):
            raise EprError(
                f"example input {name!r} of {forward} is a {type(value).__name__} holding "
                "tensors; pass each tensor as an argument of its own"
            )
    tensors = [(name, value) for name, value in named if isinstance(value, torch.Tensor)]
    if not tensors:
        raise EprError(f"the example inputs of {forward} hold no tensor")
    return BoundInputs(
        args=tuple(bound.args),
        kwargs=dict(bound.kwargs),
        names=tuple(name for name, _ in tensors),
        tensors=tuple(value for _, value in tensors),
    )


def describe(tensors: Sequence[torch.Tensor], names: Sequence[str]) -> str:
    """`x float32 [2, 3], mask bool [2, 5]`: what an error message says the examples were."""
    return ", ".join(
        f"{name} {str(value.dtype).removeprefix('torch.')} {list(value.shape)}"
        for name, value in zip(names, tensors, strict=True)
    )


def flatten_outputs(outputs: object, where: str = "") -> list[tuple[str, torch.Tensor]]:
    """The output tensors in the exporter's order with default names: `output` for one tensor,
    `output_0`, `output_1`, ... for a tuple or list, the keys for a dict (nested: joined by _).
    None is no output (MultiheadAttention's weights when not asked for), as for the exporter."""
    if outputs is None:
        return []
    if isinstance(outputs, torch.Tensor):
        return [(where or "output", outputs)]
    if isinstance(outputs, tuple | list):
        prefix = where or "output"
        return [
            pair
            for index, item in enumerate(outputs)
            for pair in flatten_outputs(item, f"{prefix}_{index}")
        ]
    if isinstance(outputs, dict):
        return [
            pair
            for key, item in outputs.items()
            for pair in flatten_outputs(item, f"{where}_{key}" if where else str(key))
        ]
    raise EprError(
        f"the forward returns {type(outputs).__name__} at {where or 'the top'}; outputs must be "
        "tensors, or tuples, lists or dicts of tensors"
    )


def check_names(kind: str, names: Sequence[str], count: int, taken: Mapping[str, str]) -> None:
    """`names` for `count` tensors: as many, non-empty, distinct and none of the `taken` names
    (name -> what holds it)."""
    if len(names) != count:
        raise EprError(f"{kind} names {list(names)} are {len(names)}; the graph has {count}")
    seen: set[str] = set()
    for name in names:
        if not isinstance(name, str) or not name:
            raise EprError(f"{kind} name {name!r} must be a non-empty string")
        if name in seen:
            raise EprError(f"{kind} name {name!r} is given twice")
        if name in taken:
            raise EprError(f"{kind} name {name!r} is already the name of {taken[name]}")
        seen.add(name)


def check_representable(module: nn.Module) -> None:
    """Refuse parameters and buffers eprpipe cannot store (complex, sparse, quantized, on the
    meta device), naming the first one: training would fail later, or the file would be wrong."""
    tensors = [
        *(("parameter", name, value) for name, value in module.named_parameters()),
        *(("buffer", name, value) for name, value in module.named_buffers()),
    ]
    for kind, name, value in tensors:
        problem = None
        if value.is_meta:
            problem = "is on the meta device (it holds no values; load its weights first)"
        elif value.layout != torch.strided:
            problem = f"is sparse ({value.layout}); make it dense first"
        elif value.is_quantized:
            problem = f"is quantized ({value.dtype}); compress the float model instead"
        elif value.is_complex():
            problem = f"is complex ({value.dtype}); store real and imaginary parts as two tensors"
        if problem:
            raise EprError(f"{kind} {name!r} of {type(module).__name__} {problem}")
    for name, value in module.state_dict().items():  # e.g. quantized modules' packed weights
        if isinstance(value, torch.Tensor) and (value.is_quantized or value.is_meta):
            raise EprError(
                f"state_dict tensor {name!r} of {type(module).__name__} is {value.dtype}"
                f"{' on the meta device' if value.is_meta else ''}; eprpipe cannot store it"
            )


def tied_tensors(module: nn.Module) -> dict[str, str]:
    """alias -> canonical name for every parameter or buffer held under two names (tied
    weights); the canonical name is the first that `named_parameters` (or `named_buffers`)
    yields, the one the container stores."""
    aliases: dict[str, str] = {}
    for named in (module.named_parameters, module.named_buffers):
        first: dict[int, str] = {}
        for name, value in named(remove_duplicate=False):
            canonical = first.setdefault(id(value), name)
            if canonical != name:
                aliases[name] = canonical
    return aliases


def checked_axes(
    dynamic_axes: Mapping[str, Mapping[int, str]] | None,
    input_names: Sequence[str],
    tensors: Sequence[torch.Tensor],
) -> dict[str, dict[int, str]]:
    """Dynamic axes by input name with non-negative axes; default: axis 0 of each is "batch"."""
    shapes = dict(zip(input_names, (tuple(t.shape) for t in tensors), strict=True))
    if dynamic_axes is None:
        return {name: {0: "batch"} for name, shape in shapes.items() if shape}
    checked: dict[str, dict[int, str]] = {}
    sizes: dict[str, tuple[int, str]] = {}
    for name, spec in dynamic_axes.items():
        if name not in shapes:
            raise EprError(
                f"dynamic_axes names {name!r}, which is no input; inputs: {list(shapes)}"
            )
        shape = shapes[name]
        checked[name] = {}
        for axis, dim in spec.items():
            if not -len(shape) <= axis < len(shape):
                raise EprError(
                    f"dynamic axis {axis} of input {name!r} is outside its shape {list(shape)}"
                )
            if not isinstance(dim, str) or not dim.isidentifier():
                raise EprError(f"dynamic axis name {dim!r} of input {name!r} must be an identifier")
            axis %= len(shape)
            size, first = sizes.setdefault(dim, (shape[axis], name))
            if size != shape[axis]:
                raise EprError(
                    f"inputs {first!r} and {name!r} share the dynamic axis {dim!r} but their "
                    f"examples have sizes {size} and {shape[axis]} there"
                )
            checked[name][axis] = dim
    return checked


def check_preprocessing(
    preprocessing: Mapping[str, Normalization], input_names: Sequence[str],
    tensors: Sequence[torch.Tensor],
) -> None:  # fmt: skip
    examples = dict(zip(input_names, tensors, strict=True))
    for name, norm in preprocessing.items():
        if name not in examples:
            raise EprError(f"preprocessing names {name!r}, which is no input: {list(examples)}")
        example = examples[name]
        if not example.is_floating_point():
            raise EprError(
                f"preprocessing of input {name!r} needs a float input, not {example.dtype}"
            )
        if not -example.ndim <= norm.axis < example.ndim:
            raise EprError(
                f"preprocessing axis {norm.axis} of input {name!r} is outside its "
                f"{example.ndim} dimensions"
            )
        channels = example.shape[norm.axis]
        if len(norm.mean) != len(norm.std) or len(norm.mean) not in (1, channels):
            raise EprError(
                f"preprocessing of input {name!r} has {len(norm.mean)} means and {len(norm.std)} "
                f"stds; axis {norm.axis} has {channels} entries (give 1 or {channels} of each)"
            )
        values = np.asarray([*norm.mean, *norm.std], np.float64)
        if not np.isfinite(values).all() or min(norm.std) <= 0:
            raise EprError(f"preprocessing of input {name!r} needs finite means and positive stds")
