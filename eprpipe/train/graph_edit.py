"""Rewrite the graph torch.onnx exported into the weightless graph the container holds.

Pure ONNX edits, no torch: one initializer per tied tensor under its canonical name, weights
without data, float16 storage behind a Cast, the preprocessing as the first nodes, output
shapes that name their symbolic dimensions, short names, and a refusal of sizeable constants
that would ship uncompressed.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence

import numpy as np
import onnx
from onnx import helper, numpy_helper

from eprpipe.errors import EprError
from eprpipe.train.interface import ONNX_DTYPES, Normalization, TensorSpec

_MAX_GRAPH_CONSTANT = 64


def strip_metadata(model: onnx.ModelProto) -> None:
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


def _numel(tensor: onnx.TensorProto) -> int:
    return int(np.prod(tensor.dims, dtype=np.int64))


def _has_subgraphs(graph: onnx.GraphProto) -> bool:
    return any(attr.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)
               for node in graph.node for attr in node.attribute)  # fmt: skip


def shorten_names(model: onnx.ModelProto) -> None:
    """Drop node names and give intermediate values short hex names: ~13 % of a small graph.

    Graph inputs, outputs and initializers keep their names (they are the interface and the
    keys of the tensor records). Graphs with subgraphs are left alone: their scoping rules make
    renaming riskier than the bytes are worth.
    """
    graph = model.graph
    if _has_subgraphs(graph):
        return
    keep = {v.name for v in (*graph.input, *graph.output)} | {i.name for i in graph.initializer}
    renamed: dict[str, str] = {}
    counter = iter(range(1 << 62))

    def short(name: str) -> str:
        if name in keep or not name:
            return name
        if name not in renamed:
            renamed[name] = next(hex_name for hex_name in map("{:x}".format, counter)
                                 if hex_name not in keep)  # fmt: skip
        return renamed[name]

    for node in graph.node:
        node.name = ""
        node.input[:] = [short(name) for name in node.input]
        node.output[:] = [short(name) for name in node.output]
    model.producer_version = ""


def remove_weights(model: onnx.ModelProto, tensor_names: set[str]) -> None:
    """Clear the data of every initializer named in `tensor_names`, keeping name, type, dims."""
    for initializer in model.graph.initializer:
        if initializer.name in tensor_names:
            name, data_type, dims = initializer.name, initializer.data_type, list(initializer.dims)
            initializer.Clear()
            initializer.name = name
            initializer.data_type = data_type
            initializer.dims.extend(dims)


def _all_nodes(graph: onnx.GraphProto) -> Iterator[onnx.NodeProto]:
    """Every node of `graph` and of its subgraphs (which may read the outer graph's values)."""
    for node in graph.node:
        yield node
        for attribute in node.attribute:
            for subgraph in [attribute.g] if attribute.HasField("g") else attribute.graphs:
                yield from _all_nodes(subgraph)


def _redirect(graph: onnx.GraphProto, old: str, new: str) -> None:
    """Make every node that reads `old` read `new` instead."""
    for node in _all_nodes(graph):
        node.input[:] = [new if name == old else name for name in node.input]


def _value_names(graph: onnx.GraphProto) -> set[str]:
    names = {value.name for value in (*graph.input, *graph.output, *graph.initializer)}
    for node in _all_nodes(graph):
        names.update(node.input)
        names.update(node.output)
    return names


def _fresh(taken: set[str], base: str) -> str:
    """`base`, or `base` with underscores appended until no value of the graph has the name."""
    while base in taken:
        base += "_"
    taken.add(base)
    return base


def _prepend(graph: onnx.GraphProto, nodes: list[onnx.NodeProto]) -> None:
    existing = list(graph.node)
    del graph.node[:]
    graph.node.extend([*nodes, *existing])


def tie(model: onnx.ModelProto, aliases: Mapping[str, str]) -> None:
    """One initializer per tied tensor, named with its canonical name: the exporter names the
    one it keeps after whichever module used it, or keeps one per name."""
    graph = model.graph
    present = {initializer.name for initializer in graph.initializer}
    kept = []
    for initializer in graph.initializer:
        canonical = aliases.get(initializer.name)
        if canonical is None:
            kept.append(initializer)
            continue
        _redirect(graph, initializer.name, canonical)
        if canonical not in present:
            initializer.name = canonical
            present.add(canonical)
            kept.append(initializer)
    del graph.initializer[:]
    graph.initializer.extend(kept)


def cast_float16(model: onnx.ModelProto, names: set[str]) -> None:
    """Tensors stored as float16: a FLOAT16 initializer and a Cast to FLOAT that the nodes read."""
    graph = model.graph
    taken = _value_names(graph)
    casts = []
    for initializer in graph.initializer:
        if initializer.name not in names or initializer.data_type == onnx.TensorProto.FLOAT16:
            continue
        if initializer.data_type != onnx.TensorProto.FLOAT:
            raise EprError(f"float16 tensor {initializer.name!r} is not a float tensor")
        initializer.data_type = onnx.TensorProto.FLOAT16
        widened = _fresh(taken, f"{initializer.name}_float32")
        _redirect(graph, initializer.name, widened)
        casts.append(
            helper.make_node("Cast", [initializer.name], [widened], to=onnx.TensorProto.FLOAT)
        )
    _prepend(graph, casts)


def prepend_preprocessing(
    model: onnx.ModelProto, preprocessing: Mapping[str, Normalization]
) -> set[str]:
    """(x - mean) / std as the first nodes for each input named in `preprocessing`, constants
    shaped to broadcast along the axis; returns the constants' names."""
    graph = model.graph
    taken = _value_names(graph)
    inputs = {value.name: value for value in graph.input}
    nodes, constants = [], set()
    for name, norm in preprocessing.items():
        tensor_type = inputs[name].type.tensor_type
        rank = len(tensor_type.shape.dim)
        axis = norm.axis + rank if norm.axis < 0 else norm.axis
        shape = [1] * rank
        shape[axis] = len(norm.mean)
        dtype = helper.tensor_dtype_to_np_dtype(tensor_type.elem_type)
        mean, std = (_fresh(taken, f"{name}_{part}") for part in ("mean", "std"))
        graph.initializer.extend([
            numpy_helper.from_array(np.asarray(norm.mean, dtype).reshape(shape), mean),
            numpy_helper.from_array(np.asarray(norm.std, dtype).reshape(shape), std),
        ])  # fmt: skip
        constants |= {mean, std}
        centered, normalized = (
            _fresh(taken, f"{name}_{part}") for part in ("centered", "normalized")
        )
        _redirect(graph, name, normalized)
        nodes.append(helper.make_node("Sub", [name, mean], [centered]))
        nodes.append(helper.make_node("Div", [centered, std], [normalized]))
    _prepend(graph, nodes)
    return constants


def check_constants(
    model: onnx.ModelProto, records: set[str], state: set[str], allowed: set[str],
    buffers: set[str],
) -> None:  # fmt: skip
    """Refuse state_dict tensors (`state`) that are no `records` and sizeable constants other
    than the `allowed` ones: they would ship in the graph, uncompressed."""
    unstored = sorted(init.name for init in model.graph.initializer
                      if init.name in state and init.name not in records)  # fmt: skip
    if unstored:
        raise EprError(
            f"the graph reads the state_dict tensors {unstored}, which are not in tensor_names"
        )
    leftover = []
    for initializer in model.graph.initializer:
        name = initializer.name
        if name in records or name in allowed or _numel(initializer) <= _MAX_GRAPH_CONSTANT:
            continue
        if name in buffers:
            raise EprError(
                f"non-persistent buffer {name!r} has {_numel(initializer)} elements; a graph "
                f"constant holds at most {_MAX_GRAPH_CONSTANT}: register it as persistent so "
                "that the container stores it"
            )
        leftover.append(name)
    for node in _all_nodes(model.graph):
        for attribute in node.attribute:
            if attribute.HasField("t") and _numel(attribute.t) > _MAX_GRAPH_CONSTANT:
                leftover.append(f"{node.op_type} -> {node.output[0]}")
    if leftover:
        raise EprError(f"the exported graph holds weights outside the state_dict: {leftover}")


def _dims(value: onnx.ValueInfoProto) -> list:
    return list(value.type.tensor_type.shape.dim)


def fix_output_shapes(model: onnx.ModelProto, symbols: set[str]) -> None:
    """Give every output dimension a value or a name, and name the symbolic ones right.

    The exporter declares some outputs with a dimension fixed at the example's size although
    it varies (GRU and LSTM outputs keep the example's sequence length), or with no shape; ONNX
    shape inference, propagating the inputs' dims through the graph, knows better. Run it on
    the weightless graph: it copies the model.
    """
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    for output in probe.graph.output:
        output.type.tensor_type.ClearField("shape")
    try:
        inferred = onnx.shape_inference.infer_shapes(probe, data_prop=True).graph.output
    except onnx.shape_inference.InferenceError:
        inferred = probe.graph.output
    for declared, found in zip(model.graph.output, inferred, strict=True):
        tensor_type = declared.type.tensor_type
        if not tensor_type.HasField("shape") and found.type.tensor_type.HasField("shape"):
            tensor_type.shape.CopyFrom(found.type.tensor_type.shape)
        found_dims = _dims(found)
        for axis, dim in enumerate(_dims(declared)):
            better = found_dims[axis] if len(found_dims) == len(_dims(declared)) else None
            if better is not None and better.dim_param in symbols:
                dim.dim_param = better.dim_param
            elif not dim.HasField("dim_value") and (
                not dim.dim_param or dim.dim_param.startswith("unk__")
            ):
                dim.dim_param = f"{declared.name}_dim{axis}"


def specs(values: Sequence[onnx.ValueInfoProto]) -> tuple[TensorSpec, ...]:
    """The graph's inputs or outputs as the manifest describes them."""
    result = []
    for value in values:
        dtype = ONNX_DTYPES.get(value.type.tensor_type.elem_type)
        if dtype is None:
            raise EprError(
                f"graph value {value.name!r} has an element type the manifest cannot hold"
            )
        shape = tuple(dim.dim_value if dim.HasField("dim_value") else dim.dim_param
                      for dim in _dims(value))  # fmt: skip
        result.append(TensorSpec(value.name, dtype, shape))
    return tuple(result)


def check_interface(
    model: onnx.ModelProto, axes: Mapping[str, Mapping[int, str]], interface: set[str]
) -> None:
    """Inputs whose dynamic axes stayed dynamic, under the names given, and no initializer with
    an interface name.

    When torch.export cannot take the dynamic shapes as given, torch.onnx falls back to other
    ways of capturing the graph (MultiheadAttention's fast path needs one) that name the dims
    after torch's own symbols ("s4"): they are renamed here, in the outputs' dims too.
    """
    renames: dict[str, str] = {}
    for value in model.graph.input:
        dims = _dims(value)
        for axis, name in axes.get(value.name, {}).items():
            if not dims[axis].dim_param:
                raise EprError(
                    f"torch.export fixed axis {axis} of input {value.name!r} at "
                    f"{dims[axis].dim_value}: the forward needs that size, so the dynamic axis "
                    f"{name!r} cannot vary"
                )
            known = renames.setdefault(dims[axis].dim_param, name)
            if known != name:
                raise EprError(
                    f"torch.export found the dynamic axes {known!r} and {name!r} always equal "
                    "in this forward: give them one name"
                )
    renames = {old: new for old, new in renames.items() if old != new}
    if renames:
        symbols = re.compile(r"\b(" + "|".join(map(re.escape, renames)) + r")\b")
        for value in (*model.graph.input, *model.graph.output):
            for dim in _dims(value):
                if dim.dim_param:
                    dim.dim_param = symbols.sub(lambda m: renames[m.group(0)], dim.dim_param)
    clash = sorted(interface & {initializer.name for initializer in model.graph.initializer})
    if clash:
        raise EprError(f"input or output names {clash} are also names of graph constants")
