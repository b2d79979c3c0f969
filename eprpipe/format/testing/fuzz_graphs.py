"""Fuzz case families aimed at the ONNX graph: hostile models in GRPH (7: external data,
foreign domains, garbage protobuf, mismatched initializers, deep nesting), and graphs whose
inputs and outputs lie or cannot be used (11), each behind a correct frame and checksums."""

from __future__ import annotations

import json
import random
from collections.abc import Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper

from eprpipe.format.bitio import uvarint
from eprpipe.format.testing.fuzz_bytes import VARINT_EDGES
from eprpipe.format.testing.fuzz_manifests import set_path
from eprpipe.format.testing.fuzz_seeds import Seed, fast_zstd
from eprpipe.format.testing.graphs import value_info
from eprpipe.format.testing.sections import canonical_json

# --- strategy 7: hostile ONNX graphs --------------------------------------------------------

PASSWD = "../../etc/passwd"
EXTERNAL_PLACES = (
    "initializer", "record-initializer", "constant", "attribute-tensors", "subgraph-initializer",
    "loop-body", "sparse-initializer", "sparse-attribute", "function", "training", "nested",
)  # fmt: skip


def external_tensor(name: str, mode: str = "both", location: str = PASSWD) -> TensorProto:
    """A tensor whose data onnx would read from `location`: the spec forbids it anywhere."""
    tensor = TensorProto(name=name, data_type=TensorProto.FLOAT, dims=[4])
    if mode in ("both", "location"):
        tensor.data_location = TensorProto.EXTERNAL
    if mode in ("both", "entries"):
        for key, value in (("location", location), ("offset", "0"), ("length", "16")):
            tensor.external_data.add(key=key, value=value)
    return tensor


def _ld(number: int, payload: bytes) -> bytes:
    """A length-delimited protobuf field, for messages too deep for the protobuf library."""
    return uvarint(number << 3 | 2) + uvarint(len(payload)) + payload


def nested_graph(model: bytes, depth: int, leaf: onnx.GraphProto) -> bytes:
    """`model` with an If nested `depth` deep appended to its graph (3 messages per level)."""
    graph = leaf.SerializeToString()
    for level in range(depth):
        attribute = _ld(1, b"then_branch") + uvarint(20 << 3) + uvarint(5) + _ld(6, graph)
        node = _ld(1, b"cond") + _ld(2, f"n{level}".encode()) + _ld(4, b"If") + _ld(5, attribute)
        graph = _ld(1, node) + _ld(2, f"g{level}".encode())
    return model + _ld(7, graph)  # a second graph field merges into the first


def _subgraph(name: str, initializers: Sequence[TensorProto] = ()) -> onnx.GraphProto:
    nodes = [helper.make_node("Identity", ["input"], [f"{name}_out"])]
    return helper.make_graph(nodes, name, [], [value_info(f"{name}_out", [1])], list(initializers))


def _sparse(values: TensorProto) -> onnx.SparseTensorProto:
    indices = helper.make_tensor("idx", TensorProto.INT64, [4], [0, 1, 2, 3])
    return helper.make_sparse_tensor(values, indices, [8])


def place_external(model: onnx.ModelProto, place: str, tensor: TensorProto) -> bytes:
    """`model` with `tensor` (external data) put at `place`, serialized."""
    graph = model.graph
    if place == "initializer":
        graph.initializer.append(tensor)
    elif place == "record-initializer":  # one TENS fills: external fields added on top
        target = graph.initializer[0] if graph.initializer else graph.initializer.add()
        target.data_location = tensor.data_location
        target.external_data.extend(tensor.external_data)
    elif place == "constant":
        graph.node.append(helper.make_node("Constant", [], ["leak"], value=tensor))
    elif place == "attribute-tensors":
        node = helper.make_node("Identity", ["input"], ["leak"])
        node.attribute.append(helper.make_attribute("tensors", [tensor]))
        graph.node.append(node)
    elif place == "subgraph-initializer":
        branches = {"then_branch": _subgraph("t", [tensor]), "else_branch": _subgraph("e")}
        graph.node.append(helper.make_node("If", ["cond"], ["leak"], **branches))
    elif place == "loop-body":
        graph.node.append(helper.make_node("Loop", ["", ""], [], body=_subgraph("b", [tensor])))
    elif place == "sparse-initializer":
        graph.sparse_initializer.append(_sparse(tensor))
    elif place == "sparse-attribute":
        graph.node.append(helper.make_node("Constant", [], ["leak"], sparse_value=_sparse(tensor)))
    elif place == "function":
        body = [helper.make_node("Constant", [], ["y"], value=tensor)]
        model.functions.append(helper.make_function("local", "leak", [], ["y"], body, []))
    elif place == "training":
        model.training_info.add().initialization.CopyFrom(_subgraph("init", [tensor]))
    elif place == "nested":
        return nested_graph(model.SerializeToString(), 12, _subgraph("leaf", [tensor]))
    else:
        raise ValueError(f"unknown place {place!r}")
    return model.SerializeToString()


def external_graph(rng: random.Random, seed: Seed) -> bytes:
    """External data in any of its forms, at any place, pointing at a system file."""
    mode = rng.choice(("both", "location", "entries"))
    location = rng.choice((PASSWD, "/etc/passwd", "..\\..\\boot.ini", "file:///etc/shadow", ""))
    tensor = external_tensor(rng.choice(("leak", "w")), mode, location)
    return place_external(seed.model(), rng.choice(EXTERNAL_PLACES), tensor)


def foreign_domain(rng: random.Random, seed: Seed) -> bytes:
    """Operators outside the standard domains, local functions, training information."""
    model = seed.model()
    domain = rng.choice(("com.microsoft", "ai.onnx.ml", "custom", "ai.onnx.preview.training"))
    variant = rng.choice(("opset", "node", "function", "training"))
    if variant == "opset":
        model.opset_import.append(helper.make_opsetid(domain, 1))
    elif variant == "node" and model.graph.node:
        rng.choice(model.graph.node).domain = domain
    elif variant in ("node", "function"):
        body = [helper.make_node("Identity", ["x"], ["y"])]
        model.functions.append(helper.make_function("local", "f", ["x"], ["y"], body, []))
    else:
        model.training_info.add().algorithm.CopyFrom(_subgraph("step"))
    return model.SerializeToString()


def random_wire(rng: random.Random, depth: int = 0) -> bytes:
    """Syntactically plausible protobuf: known and unknown field numbers, any wire type."""
    out = b""
    for _ in range(rng.randint(1, 6)):
        number = rng.choice(
            (1, 2, 4, 5, 6, 7, 8, 11, 12, 14, 15, 20, 25, rng.randrange(1, 1 << 29))
        )
        wire = rng.choice((0, 1, 2, 5))
        key = uvarint(number << 3 | wire)
        if wire == 0:
            out += key + uvarint(rng.choice(VARINT_EDGES))
        elif wire in (1, 5):
            out += key + rng.randbytes(8 if wire == 1 else 4)
        else:
            inner = depth < 4 and rng.random() < 0.5
            payload = random_wire(rng, depth + 1) if inner else rng.randbytes(rng.randrange(16))
            out += key + uvarint(len(payload)) + payload
    return out


def garbage_graph(rng: random.Random, seed: Seed) -> bytes:
    """Bytes that are no ModelProto, or are one with random fields merged in."""
    variant = rng.choice(("random", "suffix", "truncated", "wire", "wire-graph"))
    if variant == "random":
        return rng.randbytes(rng.randint(1, 256))
    if variant == "suffix":
        return seed.graph + rng.randbytes(rng.randint(1, 32))
    if variant == "truncated":
        return seed.graph[: rng.randrange(len(seed.graph))]
    if variant == "wire":
        return random_wire(rng)
    return seed.graph + _ld(7, random_wire(rng))


MISMATCHES = (
    "dims", "dtype", "data", "rename", "duplicate", "drop", "no-inputs", "no-nodes",
    "huge-dims", "negative-dims", "ir", "opset",
)  # fmt: skip


def mismatched_graph(rng: random.Random, seed: Seed) -> bytes:
    """Initializers that disagree with the records; missing inputs, nodes; odd versions."""
    model = seed.model()
    graph = model.graph
    target = rng.choice(graph.initializer) if graph.initializer else graph.initializer.add()
    variant = rng.choice(MISMATCHES)
    if variant == "dims" and target.dims and rng.random() < 0.5:
        target.dims.pop()
    elif variant == "dims":
        target.dims.append(1)
    elif variant == "dtype":
        target.data_type = rng.choice((0, 2, 7, 9, 10, 11, 16, 8, 23, 9999))
    elif variant == "data":
        target.raw_data = bytes(4 * max(1, int(np.prod(target.dims))))
    elif variant == "rename":
        target.name += "_"
    elif variant == "duplicate":
        graph.initializer.add().CopyFrom(target)
    elif variant == "drop":
        graph.initializer.remove(target)
    elif variant == "no-inputs":
        del graph.input[:]
    elif variant == "no-nodes":
        del graph.node[:]
    elif variant in ("huge-dims", "negative-dims"):
        target.dims[:] = [1 << 62, 1 << 62] if variant == "huge-dims" else [-1]
    elif variant == "ir":
        model.ir_version = rng.choice((0, 1, 3, 11, 1 << 40, -1))
    else:
        model.opset_import[0].version = rng.choice((0, 1, 7, 25, 1000, 1 << 40, -1))
    return model.SerializeToString()


def _strings(model: onnx.ModelProto) -> set[str]:
    """Names, operator types and domains of the main graph: where invalid UTF-8 can hide."""
    graph = model.graph
    found = {graph.name, *(v.name for v in (*graph.input, *graph.output, *graph.initializer))}
    for node in graph.node:
        found.update((*node.input, *node.output, node.op_type, node.name, node.domain))
        found.update(attribute.name for attribute in node.attribute)
    return {text for text in found if text}


def invalid_utf8_graph(rng: random.Random, seed: Seed) -> bytes:
    """One byte of a name or operator type made invalid UTF-8 (protobuf parses it anyway)."""
    text = rng.choice(sorted(_strings(seed.model()))).encode()
    starts = [i for i in range(len(seed.graph)) if seed.graph.startswith(text, i)]
    at = rng.choice(starts) + rng.randrange(len(text))
    return seed.graph[:at] + bytes([rng.choice((0xFF, 0xC3, 0x80, 0xED))]) + seed.graph[at + 1 :]


def benign_graph(rng: random.Random, seed: Seed) -> bytes:
    """Edits a valid file survives: doc strings, metadata, names of the model."""
    model = seed.model()
    model.doc_string = rng.choice(("", "doc", "é" * 40))
    model.metadata_props.add(key="k", value=rng.choice(("v", PASSWD)))
    model.graph.doc_string = "graph"
    return model.SerializeToString()


def deep_graph(rng: random.Random, seed: Seed) -> bytes:
    """Subgraphs nested around protobuf's depth limit (about 33 If levels) and past it."""
    depth = rng.choice((2, 8, 20, 32, 33, 34, 40, 64, 200))
    return nested_graph(seed.graph, depth, _subgraph("leaf"))


GRAPH_MAKERS = {
    external_graph: 5,
    foreign_domain: 2,
    garbage_graph: 3,
    mismatched_graph: 4,
    invalid_utf8_graph: 2,
    benign_graph: 1,
    deep_graph: 1,
}  # weights


def onnx_graphs(rng: random.Random, seed: Seed, seeds: Sequence[Seed]) -> bytes:
    """Strategy 7: hostile ONNX models in GRPH, the frame and CRCs correct."""
    make = rng.choices(list(GRAPH_MAKERS), weights=list(GRAPH_MAKERS.values()))[0]
    return seed.container.with_body(b"GRPH", fast_zstd(make(rng, seed))).to_bytes()


# --- strategy 11: graphs whose inputs and outputs lie ---------------------------------------

GRAPH_LIES = (
    "empty", "input-as-output", "argmax-declared-float", "argmax-int", "argmax-flat",
    "rank3", "rank1", "rank0", "slice-classes", "declared-dim", "manifest-classes",
    "opset", "ir", "domain", "constant-of-shape", "shape-of-input", "not-classifier",
    "initializer-output", "input-declared-int", "input-mismatch", "no-inputs",
)  # fmt: skip
IO_LIES = frozenset(
    {"empty", "input-as-output", "not-classifier", "initializer-output", "input-declared-int",
     "no-inputs"}
)  # fmt: skip
BIG_SHAPES = ((32768, 32768), (16384, 16384), (4096, 4096), (1 << 40, 1 << 40), (2, 3))


def _const(name: str, values: Sequence[int]) -> onnx.NodeProto:
    tensor = helper.make_tensor(f"{name}_value", TensorProto.INT64, [len(values)], list(values))
    return helper.make_node("Constant", [], [name], value=tensor)


def _retarget(graph: onnx.GraphProto, name: str, dtype: int, dims: list) -> None:
    """Make `name` the only graph output, declared with `dtype` and `dims`."""
    del graph.output[:]
    graph.output.append(helper.make_tensor_value_info(name, dtype, dims))


def _summed_into(graph: onnx.GraphProto, out: str, big: str) -> None:
    """out := out + ReduceSum(big): `big` lies on the path to the output, so it is computed."""
    graph.node.extend(
        [
            helper.make_node("ReduceSum", [big], ["big_sum"], keepdims=0),
            helper.make_node("Add", [out, "big_sum"], ["lied"]),
        ]
    )
    _retarget(graph, "lied", TensorProto.FLOAT, ["N", 10])


def _shape_lie(rng: random.Random, model: onnx.ModelProto, lie: str, out: str, inp: str) -> None:
    """Output shape and type lies: ArgMax outputs, ranks 0, 1, 3, sliced or mislabeled dims."""
    graph = model.graph
    if lie == "argmax-declared-float":
        graph.node.append(helper.make_node("ArgMax", [out], ["am"], axis=1, keepdims=1))
        _retarget(graph, "am", TensorProto.FLOAT, ["N", 10])
    elif lie in ("argmax-int", "argmax-flat"):
        keep = int(lie == "argmax-int")
        graph.node.append(helper.make_node("ArgMax", [out], ["am"], axis=1, keepdims=keep))
        _retarget(graph, "am", TensorProto.INT64, ["N", 1] if keep else ["N"])
    elif lie == "rank3":
        graph.node.extend(
            [_const("axes", [1]), helper.make_node("Unsqueeze", [out, "axes"], ["u"])]
        )
        _retarget(graph, "u", TensorProto.FLOAT, ["N", 1, 10])
    elif lie == "rank1":
        graph.node.extend(
            [
                helper.make_node("ArgMax", [out], ["am"], axis=1, keepdims=0),
                helper.make_node("Cast", ["am"], ["flat"], to=TensorProto.FLOAT),
            ]
        )
        _retarget(graph, "flat", TensorProto.FLOAT, ["N"])
    elif lie == "rank0":
        graph.node.append(helper.make_node("ReduceMax", [out], ["m"], keepdims=0))
        _retarget(graph, "m", TensorProto.FLOAT, [])
    elif lie == "slice-classes":
        ends = rng.choice((1, 3, 7))
        graph.node.extend(
            [
                _const("s0", [0]),
                _const("s1", [ends]),
                _const("ax", [1]),
                helper.make_node("Slice", [out, "s0", "s1", "ax"], ["sliced"]),
            ]
        )
        _retarget(graph, "sliced", TensorProto.FLOAT, ["N", ends])
    else:  # declared-dim: the graph says 7 classes, computes 10
        _retarget(graph, out, TensorProto.FLOAT, ["N", rng.choice((1, 7, 11))])


def _size_lie(rng: random.Random, model: onnx.ModelProto, lie: str, out: str, inp: str) -> None:
    """Activations far larger than the file: ConstantOfShape from constants or from Shape."""
    graph = model.graph
    if lie == "constant-of-shape" or not inp:
        graph.node.append(_const("big_shape", rng.choice(BIG_SHAPES)))
    else:  # [N, k, H, W] from Shape(input) * [1, k, 1, 1]
        factor = rng.choice((64, 1024, 16384, 1 << 20))
        graph.node.extend(
            [
                helper.make_node("Shape", [inp], ["in_shape"]),
                _const("factor", [1, factor, 1, 1]),
                helper.make_node("Mul", ["in_shape", "factor"], ["big_shape"]),
            ]
        )
    zero = helper.make_tensor("zero", TensorProto.FLOAT, [1], [0.0])
    graph.node.append(helper.make_node("ConstantOfShape", ["big_shape"], ["big"], value=zero))
    _summed_into(graph, out, "big")


def _io_lie(rng: random.Random, model: onnx.ModelProto, lie: str, out: str, inp: str) -> None:
    """Graphs that do not classify, or whose input cannot be fed."""
    graph = model.graph
    if lie == "empty":
        del graph.node[:]
        del graph.output[:]
    elif lie == "input-as-output" and inp:
        del graph.node[:]
        del graph.output[:]
        graph.output.add().CopyFrom(graph.input[0])
    elif lie == "not-classifier" and inp:
        graph.node.append(helper.make_node("Flatten", [inp], ["pixels"]))
        _retarget(graph, "pixels", TensorProto.FLOAT, ["N", 64])
    elif lie == "initializer-output" and graph.initializer:
        last = graph.initializer[-1]
        _retarget(graph, last.name, last.data_type, list(last.dims))
    elif lie == "input-declared-int" and inp:
        graph.input[0].type.tensor_type.elem_type = rng.choice(
            (TensorProto.INT64, TensorProto.DOUBLE)
        )
    elif lie == "no-inputs" and inp:
        pixels = helper.make_tensor("pixels", TensorProto.FLOAT, [1, 1, 8, 8], [0.5] * 64)
        graph.node.insert(0, helper.make_node("Constant", [], [inp], value=pixels))
        del graph.input[:]


def _version_lie(rng: random.Random, model: onnx.ModelProto, lie: str) -> None:
    """Versions onnxruntime cannot run, and the `ai.onnx` spelling of the default domain."""
    if lie == "opset":
        model.opset_import[0].version = rng.choice((999, 30, 26, 25, 24, 23, 22, 1))
    elif lie == "ir":
        model.ir_version = rng.choice((99, 13, 12, 11, 3))
    else:
        where = rng.choice(("node", "opset", "both"))
        if where != "opset" and model.graph.node:
            rng.choice(model.graph.node).domain = "ai.onnx"
        if where != "node":
            model.opset_import.append(helper.make_opsetid("ai.onnx", model.opset_import[0].version))


def graph_lies(rng: random.Random, seed: Seed, seeds: Sequence[Seed]) -> bytes:
    """Strategy 11: graphs whose inputs or outputs lie or cannot be used (no outputs, an int64
    ArgMax declared float, ranks 0/1/3, fewer classes than the manifest, opset 999, IR 99,
    domain "ai.onnx", ConstantOfShape [32768, 32768] or from Shape(input), not a classifier),
    built with onnx.helper on the seed's graph; `output.kind` is "logits" in the manifest."""
    model = seed.model()
    graph = model.graph
    out = graph.output[0].name if graph.output else ""
    inp = graph.input[0].name if graph.input else ""
    lie = rng.choice(GRAPH_LIES)
    manifest = json.loads(seed.manifest_json)
    set_path(manifest, ("output", "kind"), "logits")
    if lie in ("opset", "ir", "domain"):
        _version_lie(rng, model, lie)
    elif lie in ("constant-of-shape", "shape-of-input") and out:
        _size_lie(rng, model, lie, out, inp)
    elif lie == "manifest-classes":
        set_path(manifest, ("output", "classes"), [str(c) for c in range(rng.choice((1, 3, 11)))])
    elif lie == "input-mismatch":
        set_path(manifest, ("input", "shape"), [None, 1, rng.choice((4, 16, 28)), 8])
    elif lie in IO_LIES or not out:
        _io_lie(rng, model, lie, out, inp)
    else:
        _shape_lie(rng, model, lie, out, inp)
    box = seed.container.with_body(b"GRPH", fast_zstd(model.SerializeToString()))
    return box.with_body(b"META", fast_zstd(canonical_json(manifest))).to_bytes()
