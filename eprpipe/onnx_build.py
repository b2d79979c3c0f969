"""Turn decoded container contents into a runnable ONNX model, without torch.

The container's graph is weightless; this module checks it is safe to hand to onnx and
onnxruntime, fills in the weights decoded from the latents, prepends the input normalization
the model was trained with, and records in the model's metadata how to feed it.
"""

from __future__ import annotations

import json

import numpy as np
import onnx
from google.protobuf.message import DecodeError, Message
from onnx import helper, numpy_helper

from eprpipe.container import EprContents, decode_weights
from eprpipe.errors import FormatError

NORMALIZED_INPUT = "input_normalized"


def _reject_external_data(message: Message, path: str) -> None:
    """Refuse any tensor that points at external data, anywhere, before onnx can open a file."""
    if isinstance(message, onnx.TensorProto) and (
        message.data_location == onnx.TensorProto.EXTERNAL or len(message.external_data) > 0
    ):
        raise FormatError(
            f"ONNX tensor {message.name!r} at {path} refers to external data", section="GRPH"
        )
    for field, value in message.ListFields():
        if field.type != field.TYPE_MESSAGE:
            continue
        if isinstance(value, Message):
            _reject_external_data(value, f"{path}.{field.name}")
        else:
            for index, item in enumerate(value):
                _reject_external_data(item, f"{path}.{field.name}[{index}]")


def parse_graph(graph: bytes) -> onnx.ModelProto:
    """Parse the container's graph bytes without touching the filesystem."""
    model = onnx.ModelProto()
    try:
        model.ParseFromString(graph)
    except DecodeError as error:
        raise FormatError(f"ONNX graph does not parse: {error}", section="GRPH") from None
    _reject_external_data(model, "model")
    allowed = {"", "ai.onnx"}
    for opset in model.opset_import:
        if opset.domain not in allowed:
            raise FormatError(
                f"ONNX operator domain {opset.domain!r} is not allowed", section="GRPH"
            )
    return model


def _fill_weights(model: onnx.ModelProto, contents: EprContents) -> None:
    records = {record.name: record for record in contents.tensors}
    for initializer in model.graph.initializer:
        record = records.get(initializer.name)
        if record is None:
            continue
        weights = decode_weights(record)
        if tuple(initializer.dims) != weights.shape:
            raise FormatError(
                f"tensor {record.name!r} has shape {weights.shape} in TENS but "
                f"{tuple(initializer.dims)} in the graph",
                section="GRPH",
            )
        expected = helper.tensor_dtype_to_np_dtype(initializer.data_type)
        if weights.dtype != expected:
            raise FormatError(
                f"tensor {record.name!r} decodes to {weights.dtype} but the graph wants {expected}",
                section="GRPH",
            )
        initializer.CopyFrom(numpy_helper.from_array(weights, initializer.name))


def _has_data(tensor: onnx.TensorProto) -> bool:
    fields = ("raw_data", "float_data", "int32_data", "int64_data", "double_data", "uint64_data")
    return any(len(getattr(tensor, field)) for field in fields) or 0 in tensor.dims


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
        raise FormatError(f"graph initializers without data in TENS: {empty}", section="GRPH")
    normalization = contents.manifest.get("input", {}).get("normalization")
    if normalization:
        _prepend_normalization(model, normalization["mean"], normalization["std"])
    for key, value in _metadata(contents).items():
        model.metadata_props.append(onnx.StringStringEntryProto(key=key, value=value))
    return model
