"""Export the weightless ONNX graph that goes into the container (torch side).

The graph keeps each state_dict tensor as an initializer with its name, dims and data type but
no data; the torch-free decoder fills the data back in from the coded latents.
"""

from __future__ import annotations

import logging
import warnings

import onnx
import torch
from torch import nn

from eprpipe.errors import EprError

INPUT_NAME = "input"
OUTPUT_NAME = "logits"


def _strip_metadata(model: onnx.ModelProto) -> None:
    """Drop stack traces, doc strings and inferred shapes: most of a small graph's bytes."""
    model.doc_string = ""
    model.graph.doc_string = ""
    del model.metadata_props[:]
    del model.graph.value_info[:]
    for node in model.graph.node:
        node.doc_string = ""
        del node.metadata_props[:]
    for value in (*model.graph.input, *model.graph.output):
        value.doc_string = ""
        del value.metadata_props[:]
    for initializer in model.graph.initializer:
        initializer.doc_string = ""
        del initializer.metadata_props[:]


_MAX_GRAPH_CONSTANT = 64


def _numel(tensor: onnx.TensorProto) -> int:
    count = 1
    for dim in tensor.dims:
        count *= dim
    return count


def _shorten_names(model: onnx.ModelProto) -> None:
    """Drop node names and give intermediate values short hex names: ~13 % of a small graph.

    Graph inputs, outputs and initializers keep their names (they are the interface and the
    keys of the tensor records). Graphs with subgraphs are left alone: their scoping rules make
    renaming riskier than the bytes are worth.
    """
    graph = model.graph
    if any(attr.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)
           for node in graph.node for attr in node.attribute):  # fmt: skip
        return
    keep = {v.name for v in (*graph.input, *graph.output)} | {i.name for i in graph.initializer}
    renamed: dict[str, str] = {}

    def short(name: str) -> str:
        if name in keep or not name:
            return name
        return renamed.setdefault(name, format(len(renamed), "x"))

    for node in graph.node:
        node.name = ""
        node.input[:] = [short(name) for name in node.input]
        node.output[:] = [short(name) for name in node.output]
    model.producer_version = ""


def _remove_weights(model: onnx.ModelProto, tensor_names: set[str]) -> None:
    """Clear the data of every initializer named in `tensor_names`, keeping name, type, dims."""
    for initializer in model.graph.initializer:
        if initializer.name in tensor_names:
            name, data_type, dims = initializer.name, initializer.data_type, list(initializer.dims)
            initializer.Clear()
            initializer.name = name
            initializer.data_type = data_type
            initializer.dims.extend(dims)


def weightless_graph(
    module: nn.Module, input_shape: tuple[int, ...], tensor_names: set[str]
) -> bytes:
    """Export `module` (plain, not parametrized) to ONNX with a dynamic batch axis, weights removed.

    Raises EprError when the graph holds sizeable constants that are not state_dict tensors
    (e.g. a renamed weight): they would ship uncompressed.
    """
    module = module.eval()
    example = torch.zeros((1, *input_shape))
    # The exporter logs one warning per missing torchvision op and warns on every export.
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            module,
            (example,),
            dynamo=True,
            optimize=False,
            external_data=False,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_shapes=({0: torch.export.Dim("batch")},),
            verbose=False,
        )
    model = program.model_proto
    _strip_metadata(model)
    _shorten_names(model)
    _remove_weights(model, tensor_names)
    leftover = [
        init.name
        for init in model.graph.initializer
        if init.name not in tensor_names and _numel(init) > _MAX_GRAPH_CONSTANT
    ]
    if leftover:
        raise EprError(f"the exported graph holds weights outside the state_dict: {leftover}")
    model.producer_name = "eprpipe"
    return model.SerializeToString()
