"""Small weightless ONNX graphs: every initializer a tensor record fills is a name, a type and
dims without data, as the exporter leaves it. One opset and IR version for every test file."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import onnx
from onnx import TensorProto, helper

OPSET = 20
IR_VERSION = 10
PRODUCER = "eprpipe-vectors"


def weightless(name: str, dims: Sequence[int], dtype: int = TensorProto.FLOAT) -> TensorProto:
    """An initializer without data: the container's TENS record of that name fills it."""
    return TensorProto(name=name, data_type=dtype, dims=list(dims))


def value_info(name: str, dims: Sequence, dtype: int = TensorProto.FLOAT) -> onnx.ValueInfoProto:
    """A graph input or output; dims may be names (symbolic) or sizes."""
    return helper.make_tensor_value_info(name, dtype, list(dims))


def model_bytes(graph: onnx.GraphProto, producer: str = PRODUCER) -> bytes:
    """`graph` as a serialized model of the default domain at OPSET, IR_VERSION."""
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name=producer
    )
    model.ir_version = IR_VERSION
    return model.SerializeToString()


def dense_graph(inputs: int, outputs: int, weight: str, bias: str) -> bytes:
    """Y = X W^T + b with W and b as data-less initializers the TENS records fill."""
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["x", weight, bias], ["y"], transB=1)],
        "dense",
        [value_info("x", ["n", inputs])],
        [value_info("y", ["n", outputs])],
        initializer=[weightless(weight, (outputs, inputs)), weightless(bias, (outputs,))],
    )
    return model_bytes(graph)


def conv_graph(weight: str, shape: tuple[int, int, int, int]) -> bytes:
    """Y = conv(X, W), 'same' padding, on 8 x 8 images; W a data-less initializer."""
    out, inp, kh, kw = shape
    node = helper.make_node("Conv", ["x", weight], ["y"], pads=[kh // 2, kw // 2] * 2)
    graph = helper.make_graph(
        [node],
        "conv",
        [value_info("x", ["n", inp, 8, 8])],
        [value_info("y", ["n", out, 8, 8])],
        initializer=[weightless(weight, shape)],
    )
    return model_bytes(graph)


def identity_graph(tensors: Mapping[str, tuple[int, Sequence[int]]]) -> bytes:
    """Every named initializer (ONNX type, dims) copied to an output: uses raw tensors of any
    type."""
    names = sorted(tensors)
    graph = helper.make_graph(
        [helper.make_node("Identity", [name], [f"out_{name}"]) for name in names],
        "identity",
        [],
        [value_info(f"out_{n}", tensors[n][1], tensors[n][0]) for n in names],
        initializer=[weightless(n, tensors[n][1], tensors[n][0]) for n in names],
    )
    return model_bytes(graph)
