"""Turn decoded container contents into a runnable ONNX model, without torch.

The container's graph is weightless; this module checks it is safe to hand to onnx and
onnxruntime, fills in the weights decoded from the latents, prepends the input normalization
the model was trained with, and records in the model's metadata how to feed it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import numpy as np
import onnx
from google.protobuf.message import DecodeError, Message
from onnx import helper, numpy_helper

from eprpipe.errors import FormatError
from eprpipe.format.container import EprContents, decode_weights
from eprpipe.format.manifest import (
    MINOR_1_1,
    TensorSpec,
    check_manifest,
    classes,
    declares_classification,
    input_normalization,
    input_shape,
    inputs,
    outputs,
    task,
    user_metadata,
)

NORMALIZED_INPUT = "input_normalized"

# The ONNX element type of each dtype a 1.1 manifest can give an input or output (spec 4.1).
ELEMENT_OF_DTYPE = {
    "float32": onnx.TensorProto.FLOAT,
    "float16": onnx.TensorProto.FLOAT16,
    "int64": onnx.TensorProto.INT64,
    "int32": onnx.TensorProto.INT32,
    "bool": onnx.TensorProto.BOOL,
}

# The versions onnxruntime 1.18, the oldest the package allows, runs (spec 4.2, rule 7): its
# default-domain opsets 7 to 21 and IR versions 3 to 10. Later opsets and IR versions pass the
# checker of a newer onnx and then fail in onnxruntime, after validate called the file valid.
OPSET_DOMAINS = frozenset({"", "ai.onnx"})  # two spellings of the default domain
OPSET_RANGE = range(7, 22)
IR_RANGE = range(3, 11)
ELEMENT_TYPES = range(1, 23)  # the TensorProto data types IR version 10 defines


def _graph_error(message: str, code: str) -> FormatError:
    return FormatError(message, section="GRPH", code=code)


def _check_messages(message: Message, path: str) -> None:
    """Walk every message of the model, before onnx does anything with it.

    Refuses tensors that point at external data (onnx and onnxruntime would open the files
    they name) and text fields that are not UTF-8 (protobuf hands them back as bytes, on which
    onnx's own code fails).
    """
    if isinstance(message, onnx.TensorProto) and (
        message.data_location == onnx.TensorProto.EXTERNAL or len(message.external_data) > 0
    ):
        raise _graph_error(
            f"ONNX tensor {message.name!r} at {path} refers to external data", "external-data"
        )
    for field, value in message.ListFields():
        if field.type == field.TYPE_STRING:
            texts = [value] if isinstance(value, str | bytes) else value
            if any(isinstance(text, bytes) for text in texts):
                raise _graph_error(f"ONNX text {path}.{field.name} is not UTF-8", "graph-parse")
        if field.type != field.TYPE_MESSAGE:
            continue
        if isinstance(value, Message):
            _check_messages(value, f"{path}.{field.name}")
        else:
            for index, item in enumerate(value):
                _check_messages(item, f"{path}.{field.name}[{index}]")


def _nodes(graph: onnx.GraphProto, path: str) -> Iterator[tuple[onnx.NodeProto, str]]:
    """Every node of `graph` and of its subgraphs, with where it sits."""
    for index, node in enumerate(graph.node):
        where = f"{path}.node[{index}]"
        yield node, where
        for attribute in node.attribute:
            subgraphs = [attribute.g] if attribute.HasField("g") else []
            for number, subgraph in enumerate([*subgraphs, *attribute.graphs]):
                yield from _nodes(subgraph, f"{where}.{attribute.name}[{number}]")


def _check_profile(model: onnx.ModelProto) -> None:
    """The subset of ONNX the spec allows: standard operators only, no functions or training.

    Opset imports may spell the default domain "ai.onnx", nodes may not: the ONNX checker
    rejects a node in domain "ai.onnx" although onnxruntime runs it.
    """
    for opset in model.opset_import:
        if opset.domain not in OPSET_DOMAINS:
            raise _graph_error(
                f"ONNX operator domain {opset.domain!r} is not allowed", "graph-domain"
            )
    for node, where in _nodes(model.graph, "graph"):
        if node.domain:
            raise _graph_error(
                f"ONNX node {node.op_type!r} at {where} is in domain {node.domain!r}; "
                'nodes must be in the default domain ""',
                "graph-domain",
            )
    if len(model.functions):
        raise _graph_error(
            "ONNX model defines local functions, which are not allowed", "graph-domain"
        )
    if len(model.training_info):
        raise _graph_error(
            "ONNX model holds training information, which is not allowed", "graph-domain"
        )


def _check_versions(model: onnx.ModelProto) -> None:
    """IR and opset versions that onnxruntime 1.18 runs, with one default-domain opset."""
    if model.ir_version not in IR_RANGE:
        raise _graph_error(
            f"ONNX IR version {model.ir_version} is outside {IR_RANGE.start}..{IR_RANGE.stop - 1}",
            "graph-invalid",
        )
    versions = [opset.version for opset in model.opset_import]
    if len(versions) != 1:
        raise _graph_error(
            f"ONNX model imports the default-domain opset {len(versions)} times, not once",
            "graph-invalid",
        )
    if versions[0] not in OPSET_RANGE:
        raise _graph_error(
            f"ONNX opset version {versions[0]} is outside "
            f"{OPSET_RANGE.start}..{OPSET_RANGE.stop - 1}",
            "graph-invalid",
        )


def _check_interface(graph: onnx.GraphProto) -> None:
    """At least one output, and inputs and outputs that are tensors of a known element type
    (spec 4.2, rule 8): a model consumer can then describe, feed and read every one."""
    if not graph.output:
        raise _graph_error("ONNX graph has no output", "graph-invalid")
    for kind, values in (("input", graph.input), ("output", graph.output)):
        for value in values:
            is_tensor = value.type.WhichOneof("value") == "tensor_type"
            if not is_tensor or value.type.tensor_type.elem_type not in ELEMENT_TYPES:
                raise _graph_error(
                    f"ONNX graph {kind} {value.name!r} is not a tensor of a known element type",
                    "graph-invalid",
                )


def parse_graph(graph: bytes) -> onnx.ModelProto:
    """Parse the container's graph bytes without touching the filesystem, and check the
    rules that need no manifest and no weights (spec 4.2, rules 1 to 3, 7 and 8). The one
    opset import is named "" afterwards, whichever spelling the file used."""
    model = onnx.ModelProto()
    try:
        model.ParseFromString(graph)
    except (DecodeError, RecursionError) as error:
        raise _graph_error(f"ONNX graph does not parse: {error}", "graph-parse") from None
    _check_messages(model, "model")
    _check_profile(model)
    _check_versions(model)
    _check_interface(model.graph)
    model.opset_import[0].domain = ""  # onnx 1.16's checker knows no "ai.onnx" spelling
    return model


def _fill_weights(model: onnx.ModelProto, contents: EprContents) -> None:
    records = {record.name: record for record in contents.tensors}
    for initializer in model.graph.initializer:
        record = records.get(initializer.name)
        if record is None:
            continue
        weights = decode_weights(record)
        if tuple(initializer.dims) != weights.shape:
            raise _graph_error(
                f"tensor {record.name!r} has shape {weights.shape} in TENS but "
                f"{tuple(initializer.dims)} in the graph",
                "graph-mismatch",
            )
        try:
            expected = helper.tensor_dtype_to_np_dtype(initializer.data_type)
        except KeyError:
            raise _graph_error(
                f"graph initializer {record.name!r} has unknown data type {initializer.data_type}",
                "graph-mismatch",
            ) from None
        if weights.dtype != expected:
            raise _graph_error(
                f"tensor {record.name!r} decodes to {weights.dtype} but the graph wants {expected}",
                "graph-mismatch",
            )
        if _stores_data(initializer):
            raise _graph_error(
                f"graph initializer {record.name!r} carries data as well as a TENS record",
                "graph-mismatch",
            )
        initializer.CopyFrom(numpy_helper.from_array(weights, initializer.name))


_DATA_FIELDS = (
    "raw_data", "float_data", "int32_data", "int64_data", "double_data", "uint64_data",
    "string_data",
)  # fmt: skip


def _stores_data(tensor: onnx.TensorProto) -> bool:
    return any(len(getattr(tensor, field)) for field in _DATA_FIELDS)


def _has_data(tensor: onnx.TensorProto) -> bool:
    """Holds its values: stored ones, or none needed (an empty tensor)."""
    return _stores_data(tensor) or 0 in tensor.dims


def runtime_inputs(graph: onnx.GraphProto) -> list[onnx.ValueInfoProto]:
    """The graph inputs a caller feeds: those no initializer names (IR < 4 lists both)."""
    constant = {initializer.name for initializer in graph.initializer}
    return [value for value in graph.input if value.name not in constant]


def dims_of(value: onnx.ValueInfoProto) -> tuple[int | None, ...] | None:
    """A tensor's declared dims (None where not a fixed size), or None if it declares no shape."""
    tensor = value.type.tensor_type
    if not tensor.HasField("shape"):
        return None
    return tuple(dim.dim_value if dim.HasField("dim_value") else None for dim in tensor.shape.dim)


def _describe(value: onnx.ValueInfoProto) -> str:
    """A tensor's type and shape as messages show them, e.g. `INT64 [batch]`."""
    element = onnx.TensorProto.DataType.Name(value.type.tensor_type.elem_type)
    dims = dims_of(value)
    shown = "of unknown rank" if dims is None else str([d if d is not None else "?" for d in dims])
    return f"{value.name!r} ({element} {shown})"


def _mismatch(message: str) -> FormatError:
    return _graph_error(message, "graph-mismatch")


def _check_classifier(graph: onnx.GraphProto, manifest: dict) -> None:
    """A manifest that declares logits promises a graph eval can score (spec 4.2, rule 9):
    one float input shaped as input.shape says, and a float [batch, classes] first output."""
    output = graph.output[0]
    dims = dims_of(output)
    names = classes(manifest)
    if (
        output.type.tensor_type.elem_type != onnx.TensorProto.FLOAT
        or dims is None
        or len(dims) != 2
    ):
        raise _mismatch(
            f"the manifest declares logits but the first graph output is {_describe(output)}, "
            "not a FLOAT tensor [batch, classes]"
        )
    if names is not None and dims[1] is not None and dims[1] != len(names):
        raise _mismatch(
            f"the first graph output has {dims[1]} classes, the manifest names {len(names)}"
        )
    inputs = runtime_inputs(graph)
    if len(inputs) != 1 or inputs[0].type.tensor_type.elem_type != onnx.TensorProto.FLOAT:
        raise _mismatch(
            "the manifest declares logits, so the graph must take one FLOAT input, not "
            + (", ".join(_describe(value) for value in inputs) or "none")
        )
    declared, dims = input_shape(manifest), dims_of(inputs[0])
    if declared is None:
        return
    if (
        dims is None
        or len(dims) != len(declared)
        or any(
            d is not None and m is not None and d != m for d, m in zip(dims, declared, strict=True)
        )
    ):
        shown = [m if m is not None else "?" for m in declared]
        raise _mismatch(
            f"the graph input is {_describe(inputs[0])}, the manifest's input.shape is {shown}"
        )


def _check_declared(kind: str, values: list[onnx.ValueInfoProto], specs: tuple[TensorSpec, ...]):
    """The graph's runtime inputs (or outputs) are the manifest's, in order (spec 4.2, rule
    11): names, element types, ranks, and a fixed dim wherever the manifest gives a size."""
    if len(values) != len(specs):
        names = [value.name for value in values]
        raise _mismatch(
            f"the manifest declares {len(specs)} {kind}s, the graph has {len(values)}: {names}"
        )
    for index, (value, spec) in enumerate(zip(values, specs, strict=True)):
        dims = dims_of(value)
        fits = (
            value.name == spec.name
            and value.type.tensor_type.elem_type == ELEMENT_OF_DTYPE[spec.dtype]
            and dims is not None
            and len(dims) == len(spec.shape)
            and all(
                isinstance(size, str) or dim == size
                for dim, size in zip(dims, spec.shape, strict=True)
            )
        )
        if not fits:
            raise _mismatch(
                f"graph {kind} {index} is {_describe(value)}, the manifest's {kind}s[{index}] is "
                f"{spec.name!r} ({spec.dtype} {list(spec.shape)})"
            )


def _check_interface_1_1(graph: onnx.GraphProto, contents: EprContents) -> None:
    """Rules 11 and 12 of spec 4.2, for files of minor version 1 or later."""
    declared = inputs(contents.manifest, contents.minor)
    if declared is not None:
        _check_declared("input", runtime_inputs(graph), declared)
    declared = outputs(contents.manifest, contents.minor)
    if declared is not None:
        _check_declared("output", list(graph.output), declared)
    kind = task(contents.manifest, contents.minor)
    if kind is None or kind.kind != "classification" or kind.classes is None:
        return
    first, dims = graph.output[0], dims_of(graph.output[0])
    if first.type.tensor_type.elem_type != onnx.TensorProto.FLOAT:
        raise _mismatch(f"the task is classification, but the first output is {_describe(first)}")
    if dims and dims[-1] is not None and dims[-1] != len(kind.classes):
        raise _mismatch(
            f"the first graph output has {dims[-1]} classes, the task names {len(kind.classes)}"
        )


def _check_normalized_input(graph: onnx.GraphProto, channels: int) -> onnx.ValueInfoProto:
    """The input normalization applies to (spec 4.2, rule 10): rank 4 (NCHW) with `channels`
    channels where that dim is fixed, so that a (1, C, 1, 1) mean broadcasts per channel."""
    inputs = runtime_inputs(graph)
    if not inputs:
        raise _mismatch("the graph has no input to normalize")
    dims = dims_of(inputs[0])
    if dims is None or len(dims) != 4 or dims[1] not in (None, channels):
        raise _mismatch(
            f"input.normalization has {channels} channels, so the graph input must be "
            f"[batch, {channels}, height, width], not {_describe(inputs[0])}"
        )
    return inputs[0]


def _prepend_normalization(
    graph: onnx.GraphProto, original: str, mean: list[float], std: list[float]
) -> None:
    """Make the model take [0, 1] pixels: input → (input − mean) / std → the trained graph."""
    for node in graph.node:
        for index, name in enumerate(node.input):
            if name == original:
                node.input[index] = NORMALIZED_INPUT
    shape = (1, len(mean), 1, 1)
    graph.initializer.extend(
        [
            numpy_helper.from_array(np.asarray(mean, np.float32).reshape(shape), "input_mean"),
            numpy_helper.from_array(np.asarray(std, np.float32).reshape(shape), "input_std"),
        ]
    )
    centered = f"{NORMALIZED_INPUT}_centered"
    nodes = [
        helper.make_node("Sub", [original, "input_mean"], [centered], name="normalize_sub"),
        helper.make_node("Div", [centered, "input_std"], [NORMALIZED_INPUT], name="normalize_div"),
    ]
    existing = list(graph.node)
    del graph.node[:]
    graph.node.extend([*nodes, *existing])


def _metadata(contents: EprContents) -> dict[str, str]:
    """The model's metadata_props: how to feed it and what it is; in a 1.1 file also the
    declared inputs, outputs and task, and every entry of the user's metadata."""
    manifest = contents.manifest
    entries = {
        "eprpipe.input": json.dumps(manifest.get("input", {}), sort_keys=True),
        "eprpipe.output": json.dumps(manifest.get("output", {}), sort_keys=True),
    }
    for key in ("architecture", "dataset", "producer"):
        if key in manifest:
            entries[f"eprpipe.{key}"] = str(manifest[key])
    if "metrics" in manifest:
        entries["eprpipe.metrics"] = json.dumps(manifest["metrics"], sort_keys=True)
    if contents.minor >= MINOR_1_1:
        for key in ("inputs", "outputs", "task"):
            if key in manifest:
                entries[f"eprpipe.{key}"] = json.dumps(manifest[key], sort_keys=True)
        entries.update(user_metadata(manifest, contents.minor))  # no key starts "eprpipe."
    return entries


def _check_model(model: onnx.ModelProto) -> None:
    """The ONNX checker with strict shape and type inference: a declared output shape the
    operators cannot produce, or a type they do not take, is refused here, not in eval."""
    try:
        onnx.checker.check_model(model, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as err:
        message = str(err).strip().splitlines()[0][:300]
        raise _graph_error(f"ONNX checker: {message}", "graph-invalid") from None


def build_onnx(contents: EprContents) -> onnx.ModelProto:
    """Decoded container → a self-contained ONNX model (one file, no external data)."""
    problem = check_manifest(contents.manifest, contents.minor)
    if problem:
        raise FormatError(f"manifest {problem}", section="META", code="bad-manifest")
    model = parse_graph(contents.graph)
    _fill_weights(model, contents)
    empty = [init.name for init in model.graph.initializer if not _has_data(init)]
    if empty:
        raise _graph_error(f"graph initializers without data in TENS: {empty}", "graph-mismatch")
    if declares_classification(contents.manifest):
        _check_classifier(model.graph, contents.manifest)
    if contents.minor >= MINOR_1_1:
        _check_interface_1_1(model.graph, contents)
    normalization = input_normalization(contents.manifest)
    if normalization:
        original = _check_normalized_input(model.graph, len(normalization[0]))
        _prepend_normalization(model.graph, original.name, *normalization)
    for key, value in _metadata(contents).items():
        model.metadata_props.append(onnx.StringStringEntryProto(key=key, value=value))
    _check_model(model)
    return model
