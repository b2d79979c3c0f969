"""export_graph's interface: several inputs and outputs of every dtype, keyword arguments,
preprocessing inside the graph, float16 storage, and a clear error for each bad input."""

from __future__ import annotations

import re
import warnings

import numpy as np
import onnx
import pytest
import torch
from export_checks import assert_matches, filled, run
from torch import nn

from eprpipe.errors import EprError
from eprpipe.train.export import Normalization, check_representable, export_graph


class TwoHeads(nn.Module):
    """Token ids (int64), a padding mask (bool) and a keyword-only float scale in; a dict of a
    pooled vector and per-token logits out."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(30, 8)
        self.head = nn.Linear(8, 5)

    def forward(self, tokens, mask, *, scale=None):
        hidden = self.embed(tokens) * scale.unsqueeze(-1)
        keep = (~mask).unsqueeze(-1).float()
        pooled = (hidden * keep).sum(1) / keep.sum(1).clamp(min=1)
        return {"pooled": pooled, "per_token": self.head(hidden)}


def _two_heads_inputs(batch: int, seq: int) -> tuple[tuple, dict]:
    tokens = torch.randint(0, 30, (batch, seq))
    mask = torch.rand(batch, seq) < 0.3
    return (tokens, mask), {"scale": torch.rand(batch, seq)}


def test_several_inputs_of_each_dtype_keywords_and_dict_outputs() -> None:
    module = TwoHeads().eval()
    args, kwargs = _two_heads_inputs(2, 5)
    axes = {name: {0: "batch", 1: "seq"} for name in ("tokens", "mask", "scale")}
    exported = export_graph(module, args, set(module.state_dict()), example_kwargs=kwargs,
                            dynamic_axes=axes)  # fmt: skip
    assert [spec.manifest() for spec in exported.inputs] == [
        {"name": "tokens", "dtype": "int64", "shape": ["batch", "seq"]},
        {"name": "mask", "dtype": "bool", "shape": ["batch", "seq"]},
        {"name": "scale", "dtype": "float32", "shape": ["batch", "seq"]},
    ]
    assert [(s.name, s.shape) for s in exported.outputs] == [
        ("pooled", ("batch", 8)), ("per_token", ("batch", "seq", 5))
    ]  # fmt: skip
    assert_matches(exported, module, *_two_heads_inputs(3, 9))


def test_given_names_tuple_outputs_and_int32_float16_inputs() -> None:
    class Mixed(nn.Module):
        def forward(self, index, half):
            return index * 2, half.float() + index.float()

    index, half = torch.arange(6, dtype=torch.int32).reshape(2, 3), torch.rand(2, 3).half()
    exported = export_graph(Mixed(), (index, half), set(), input_names=["i", "h"],
                            output_names=["twice", "sum"])  # fmt: skip
    assert [(s.name, s.dtype) for s in exported.inputs] == [("i", "int32"), ("h", "float16")]
    assert [(s.name, s.dtype) for s in exported.outputs] == [("twice", "int32"), ("sum", "float32")]
    assert_matches(exported, Mixed(), (index[:1], half[:1]))


def test_default_output_names() -> None:
    class Three(nn.Module):
        def forward(self, x):
            return x + 1, (x * 2, x - 1)

    exported = export_graph(Three(), torch.zeros(2, 3), set())
    assert [spec.name for spec in exported.outputs] == ["output_0", "output_1_0", "output_1_1"]
    assert exported.inputs[0].name == "x"


def _normalized(module: nn.Module, norm: Normalization, rank: int) -> nn.Module:
    """`module` applied to (x - mean) / std: what the graph with the preprocessing computes."""
    shape = [1] * rank
    shape[norm.axis] = -1
    mean, std = (torch.tensor(v, dtype=torch.float32).reshape(shape) for v in (norm.mean, norm.std))

    class Normalized(nn.Module):
        def forward(self, x):
            return module((x - mean) / std)

    return Normalized()


@pytest.mark.parametrize("rank", [2, 4])
def test_preprocessing_is_inside_the_graph_for_any_rank(rank: int) -> None:
    torch.manual_seed(0)
    if rank == 2:  # 100 features: the constants exceed the 64-element limit of graph constants
        module, example = nn.Linear(100, 3), torch.rand(2, 100)
        norm = Normalization(tuple(np.linspace(0, 1, 100)), tuple(np.linspace(0.5, 2, 100)))
    else:
        module, example = nn.Conv2d(3, 4, 3), torch.rand(2, 3, 6, 6)
        norm = Normalization((0.4, 0.5, 0.6), (0.2, 0.25, 0.3), axis=-3)
    exported = export_graph(module, example, set(module.state_dict()),
                            preprocessing={"input": norm})  # fmt: skip
    graph = onnx.load_from_string(exported.graph).graph
    assert [node.op_type for node in graph.node[:2]] == ["Sub", "Div"]
    assert graph.node[0].input[0] == "input"
    x = torch.rand(5, *example.shape[1:])
    (got,) = run(filled(exported, module), {"input": x.numpy()})
    with torch.no_grad():
        expected = _normalized(module, norm, rank)(x).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_float16_tensors_are_float16_initializers_cast_to_float() -> None:
    module = nn.Linear(6, 4)
    with torch.no_grad():  # the values float16 storage keeps, so that torch computes the same
        module.weight.copy_(module.weight.half().float())
    exported = export_graph(module, torch.rand(2, 6), {"weight", "bias"},
                            float16_tensors={"weight"})  # fmt: skip
    graph = onnx.load_from_string(exported.graph).graph
    types = {init.name: init.data_type for init in graph.initializer}
    assert types == {"weight": onnx.TensorProto.FLOAT16, "bias": onnx.TensorProto.FLOAT}
    cast = graph.node[0]
    assert cast.op_type == "Cast" and list(cast.input) == ["weight"]
    assert all("weight" not in node.input for node in graph.node[1:])
    assert_matches(exported, module, (torch.rand(3, 6),))


def test_non_persistent_buffers_stay_small_constants() -> None:
    class Shifted(nn.Module):
        def __init__(self, size: int) -> None:
            super().__init__()
            self.linear = nn.Linear(size, 2)
            self.register_buffer("shift", torch.rand(size), persistent=False)

        def forward(self, x):
            return self.linear(x + self.shift)

    small = Shifted(8)
    exported = export_graph(small, torch.rand(2, 8), set(small.state_dict()))
    assert_matches(exported, small, (torch.rand(3, 8),))
    large = Shifted(100)
    with pytest.raises(EprError, match="non-persistent buffer 'shift' has 100 elements"):
        export_graph(large, torch.rand(2, 100), set(large.state_dict()))


class _Pair(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(3))

    def forward(self, a, b):
        return a * self.weight + b


class _Unsupported(nn.Module):
    def forward(self, x):
        return torch.linalg.eigh(x)[0]


class _DataDependent(nn.Module):
    def forward(self, x):
        if x.sum() > 0:
            return x + 1
        return x - 1


class _FixedBatch(nn.Module):
    def forward(self, x):
        return x.view(2, 3) + 1


PAIR = (torch.rand(2, 3), torch.rand(2, 3))
BAD_EXPORTS = {  # name: (module, example inputs, options, words of the error)
    "an-operator-onnx-lacks": (_Unsupported(), torch.rand(2, 3, 3), {},
                               "torch.onnx cannot export _Unsupported: DispatchError: No ONNX "
                               "function found for <OpOverload(op='aten._linalg_eigh'"),
    "data-dependent-control-flow": (_DataDependent(), torch.rand(2, 3), {},
                                    "in forward: if x.sum() > 0:"),
    "a-batch-the-forward-fixes": (_FixedBatch(), torch.rand(2, 3), {},
                                  "torch.export fixed axis 0 of input 'x' at 2"),
    "two-names-for-one-axis": (_Pair(), PAIR, {"dynamic_axes": {"a": {0: "n"}, "b": {0: "m"}}},
                               "found the dynamic axes 'n' and 'm' always equal"),
    "one-argument-missing": (_Pair(), PAIR[:1], {}, "missing a required argument: 'b'"),
    "one-argument-too-many": (_Pair(), (*PAIR, PAIR[0]), {}, "too many positional arguments"),
    "an-unknown-keyword": (_Pair(), PAIR, {"example_kwargs": {"c": PAIR[0]}},
                           "unexpected keyword argument 'c'"),
    "a-float64-input": (_Pair(), (PAIR[0].double(), PAIR[1]), {},
                        "example input 'a' of _Pair.forward(a, b) is torch.float64"),
    "an-input-the-forward-cannot-take": (nn.Linear(3, 2), torch.ones(2, 3, dtype=torch.int64), {},
                                         "do not match Linear.forward (input int64 [2, 3]): "),
    "a-list-of-tensors": (_Pair(), ([PAIR[0]], PAIR[1]), {},
                          "'a' of _Pair.forward(a, b) is a list"),
    "too-few-input-names": (_Pair(), PAIR, {"input_names": ["a"]},
                            "input names ['a'] are 1; the graph has 2"),
    "too-many-output-names": (_Pair(), PAIR, {"output_names": ["y", "z"]},
                              "output names ['y', 'z'] are 2; the graph has 1"),
    "input-names-twice": (_Pair(), PAIR, {"input_names": ["a", "a"]},
                          "input name 'a' is given twice"),
    "an-input-named-as-a-weight": (_Pair(), PAIR, {"input_names": ["a", "weight"]},
                                   "input name 'weight' is already the name of a state_dict"),
    "an-output-named-as-an-input": (_Pair(), PAIR, {"output_names": ["b"]},
                                    "output name 'b' is already the name of an input"),
    "dynamic-axes-of-no-input": (_Pair(), PAIR, {"dynamic_axes": {"x": {0: "batch"}}},
                                 "dynamic_axes names 'x', which is no input; inputs: ['a', 'b']"),
    "a-dynamic-axis-outside-the-shape": (_Pair(), PAIR, {"dynamic_axes": {"a": {2: "n"}}},
                                         "dynamic axis 2 of input 'a' is outside"),
    "a-dynamic-axis-named-oddly": (_Pair(), PAIR, {"dynamic_axes": {"a": {0: "my batch"}}},
                                   "'my batch' of input 'a' must be an identifier"),
    "preprocessing-an-int-input": (nn.Embedding(4, 2), torch.zeros(2, 3, dtype=torch.int64),
                                   {"preprocessing": {"input": Normalization((0.0,), (1.0,))}},
                                   "preprocessing of input 'input' needs a float input"),
    "preprocessing-of-the-wrong-width": (
        _Pair(), PAIR, {"preprocessing": {"a": Normalization((0.0, 1.0), (1.0, 1.0))}},
        "has 2 means and 2 stds; axis 1 has 3 entries"),
    "a-weight-not-stored": (nn.Linear(3, 2), PAIR[0], {"tensor_names": {"weight"}},
                            "reads the state_dict tensors ['bias'], which are not in tensor_names"),
    "a-float16-tensor-not-stored": (_Pair(), PAIR, {"float16_tensors": {"bias"}},
                                    "float16 tensors ['bias'] are not in tensor_names"),
}  # fmt: skip


@pytest.mark.parametrize("name", BAD_EXPORTS)
def test_bad_input_is_an_error_naming_the_problem(name: str) -> None:
    module, inputs, options, words = BAD_EXPORTS[name]
    options = {"tensor_names": set(module.state_dict()), **options}
    with pytest.raises(EprError) as error:
        export_graph(module, inputs, **options)
    assert words in str(error.value), str(error.value)
    assert "\n" not in str(error.value)


def _quantized() -> torch.Tensor:
    with warnings.catch_warnings():  # torch deprecates creating quantized tensors; users have them
        warnings.simplefilter("ignore")
        return torch.quantize_per_tensor(torch.ones(2), 0.1, 0, torch.qint8)


def _with(kind: str, value: torch.Tensor) -> nn.Module:
    module = nn.Linear(2, 2)
    if kind == "parameter":
        module.extra = nn.Parameter(value, requires_grad=False)
    else:
        module.register_buffer("extra", value)
    return module


@pytest.mark.parametrize(
    "module, words",
    [
        (_with("parameter", torch.ones(2, dtype=torch.complex64)), "parameter 'extra' of Linear "
         "is complex (torch.complex64)"),
        (_with("parameter", torch.eye(2).to_sparse()), "parameter 'extra' of Linear is sparse"),
        (_with("buffer", _quantized()),
         "buffer 'extra' of Linear is quantized (torch.qint8)"),
        (nn.Linear(2, 2, device="meta"), "parameter 'weight' of Linear is on the meta device"),
    ],
    ids=["complex", "sparse", "quantized", "meta"],
)  # fmt: skip
def test_parameters_eprpipe_cannot_store_are_named(module: nn.Module, words: str) -> None:
    with pytest.raises(EprError, match=re.escape(words)):
        check_representable(module)
    with pytest.raises(EprError, match=re.escape(words)):
        export_graph(module, torch.zeros(2, 2), set())


def test_the_module_keeps_its_training_mode() -> None:
    module = nn.Sequential(nn.Linear(3, 3), nn.Dropout(0.5)).train()
    export_graph(module, torch.zeros(2, 3), set(module.state_dict()))
    assert module.training
