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

from eprpipe.container import EprContents, decode_weights
from eprpipe.errors import FormatError

NORMALIZED_INPUT = "input_normalized"


ALLOWED_DOMAINS = frozenset({"", "ai.onnx"})


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
    """The subset of ONNX the spec allows: standard operators only, no functions or training."""
    for opset in model.opset_import:
        if opset.domain not in ALLOWED_DOMAINS:
            raise _graph_error(
                f"ONNX operator domain {opset.domain!r} is not allowed", "graph-domain"
            )
    for node, where in _nodes(model.graph, "graph"):
        if node.domain not in ALLOWED_DOMAINS:
            raise _graph_error(
                f"ONNX node {node.op_type!r} at {where} is in domain {node.domain!r}, "
                "which is not allowed",
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


def parse_graph(graph: bytes) -> onnx.ModelProto:
    """Parse the container's graph bytes without touching the filesystem."""
    model = onnx.ModelProto()
    try:
        model.ParseFromString(graph)
    except (DecodeError, RecursionError) as error:
        raise _graph_error(f"ONNX graph does not parse: {error}", "graph-parse") from None
    _check_messages(model, "model")
    _check_profile(model)
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


def _prepend_normalization(model: onnx.ModelProto, mean: list[float], std: list[float]) -> None:
    """Make the model take [0, 1] pixels: input → (input − mean) / std → the trained graph."""
    graph = model.graph
    original = graph.input[0].name
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


def _normalization(manifest: dict) -> tuple[list[float], list[float]] | None:
    """The input normalization eprpipe's manifest asks for: per-channel mean and std, or None."""
    spec = manifest.get("input")
    normalization = spec.get("normalization") if isinstance(spec, dict) else None
    if normalization is None:
        return None
    mean = normalization.get("mean") if isinstance(normalization, dict) else None
    std = normalization.get("std") if isinstance(normalization, dict) else None
    numbers = (int, float)
    if not (
        isinstance(mean, list)
        and isinstance(std, list)
        and 1 <= len(mean) == len(std) <= 4096
        and all(isinstance(v, numbers) and not isinstance(v, bool) for v in mean + std)
        and np.isfinite(np.asarray(mean + std, np.float64).astype(np.float32)).all()
        and np.asarray(std, np.float64).astype(np.float32).all()
    ):
        raise FormatError(
            "manifest input.normalization needs equal-length lists mean and std of float32 "
            "numbers, std nonzero",
            section="META",
            code="bad-manifest",
        )
    return mean, std


def _metadata(contents: EprContents) -> dict[str, str]:
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
    return entries


def build_onnx(contents: EprContents) -> onnx.ModelProto:
    """Decoded container → a self-contained ONNX model (one file, no external data)."""
    model = parse_graph(contents.graph)
    _fill_weights(model, contents)
    empty = [init.name for init in model.graph.initializer if not _has_data(init)]
    if empty:
        raise _graph_error(f"graph initializers without data in TENS: {empty}", "graph-mismatch")
    normalization = _normalization(contents.manifest)
    if normalization:
        if not model.graph.input:
            raise _graph_error("the graph has no input to normalize", "graph-mismatch")
        _prepend_normalization(model, *normalization)
    for key, value in _metadata(contents).items():
        model.metadata_props.append(onnx.StringStringEntryProto(key=key, value=value))
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as err:
        message = str(err).strip().splitlines()[0][:300]
        raise _graph_error(f"ONNX checker: {message}", "graph-invalid") from None
    return model
