"""The fuzzer's seeds: small valid files made with the public API (torch-free), and what the
case families need of each (its sections, inflated manifest and graph, the varints of TENS).

Every case is one seed plus one mutation; `Mutator` is the shape of a case family.
"""

from __future__ import annotations

import math
import random
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import zstandard
from onnx import TensorProto, helper, numpy_helper

from eprpipe.format.bitio import ByteReader
from eprpipe.format.container import EprContents, decode_container, encode_container
from eprpipe.format.layout import Layout, read_latents
from eprpipe.format.limits import DEFAULT_LIMITS, ReadBudget
from eprpipe.format.structures import RAW_BODY, RDFT_BODY, RECORD_HEAD, SCALAR_BODY
from eprpipe.format.testing.graphs import model_bytes, value_info, weightless
from eprpipe.format.testing.records import raw, rdft, scalar
from eprpipe.format.testing.sections import Container, zstd
from eprpipe.format.validate import validate_bytes

PRODUCER = "fuzz"
SCALAR_STEP = 0.125  # the builtin seeds' scalar records, unless they say otherwise
RDFT_STEP = 0.0625
FRAME_LEVEL = 3  # the fuzzer's zstd frames: fast, and any level is valid


@dataclass(frozen=True)
class TensField:
    """A varint inside TENS (start, end, which field) or a whole record (what = "record")."""

    start: int
    end: int
    what: str


class _RecordingReader(ByteReader):
    """A ByteReader that notes where each varint lies, so size edits hit real fields."""

    def __init__(self, data: bytes) -> None:
        super().__init__(data, section="TENS")
        self.fields: list[TensField] = []

    def read_uvarint(self, what: str = "varint") -> int:
        start = self.pos
        value = super().read_uvarint(what)
        self.fields.append(TensField(start, self.pos, what))
        return value


def tens_fields(tens: bytes, file_bytes: int, minor: int) -> list[TensField]:
    """Varints and record spans of a valid TENS section of a file of minor version `minor`,
    found by eprpipe's own structures."""
    reader = _RecordingReader(tens)
    budget = ReadBudget(DEFAULT_LIMITS, file_bytes)
    records = []
    for _ in range(reader.read_uvarint("record count")):
        start = reader.pos
        head = RECORD_HEAD.read(reader, {"minor": minor})
        shape = tuple(head["dims"])
        if head["kind"] == 0:
            RAW_BODY.read(reader, head)
        else:
            rdft = head["kind"] == 2
            body = (RDFT_BODY if rdft else SCALAR_BODY).read(reader, head)
            read_latents(reader, shape, rdft, "seed", Layout(body["layout"]), budget)
        records.append(TensField(start, reader.pos, "record"))
    return reader.fields + records


@dataclass
class Seed:
    """A valid file and what strategies need of it, computed once per process."""

    name: str
    data: bytes
    container: Container
    manifest_json: bytes
    graph: bytes
    fields: list[TensField]
    elements: int  # tensor elements its records declare, charged to the file's allowance
    takes_images: bool  # its graph takes [N, 1, H, W]: `eval --dataset digits` reaches onnxruntime

    @classmethod
    def of(cls, name: str, data: bytes) -> Seed:
        container = Container.of(data)
        inflate = zstandard.ZstdDecompressor().decompress
        tens = container.body(b"TENS")
        contents, _ = decode_container(data)
        graph = inflate(container.body(b"GRPH"))
        return cls(
            name=name,
            data=data,
            container=container,
            manifest_json=inflate(container.body(b"META")),
            graph=graph,
            fields=tens_fields(tens, len(data), container.minor),
            elements=sum(math.prod(record.shape) for record in contents.tensors),
            takes_images=_takes_images(graph),
        )

    def model(self) -> onnx.ModelProto:
        model = onnx.ModelProto()
        model.ParseFromString(self.graph)
        return model


def _takes_images(graph: bytes) -> bool:
    """Whether the first graph input is [N, 1, H, W] with H and W fixed, as digits needs."""
    model = onnx.ModelProto()
    model.ParseFromString(graph)
    if not model.graph.input:
        return False
    dims = model.graph.input[0].type.tensor_type.shape.dim
    return (
        len(dims) == 4
        and [d.dim_value for d in dims[1:2]] == [1]
        and all(d.dim_value > 0 for d in dims[2:])
    )


def _mlp_seed(rng: np.random.Generator) -> bytes:
    """Gemm with a scalar-coded weight and a raw bias; a manifest without normalization."""
    nodes = [helper.make_node("Gemm", ["input", "w", "b"], ["logits"], transB=1)]
    inits = [weightless("w", [3, 4]), weightless("b", [3])]
    graph = helper.make_graph(
        nodes,
        "mlp",
        [value_info("input", ["batch", 4])],
        [value_info("logits", ["batch", 3])],
        inits,
    )
    records = [
        scalar("w", np.rint(rng.laplace(0, 2, (3, 4))), SCALAR_STEP),
        raw("b", rng.random(3).astype(np.float32)),
    ]
    manifest = {"architecture": "mlp", "output": {"classes": ["a", "b", "c"]}, "producer": "fuzz"}
    return encode_container(EprContents(manifest, model_bytes(graph, PRODUCER), records))[0]


def _conv_classifier(
    inp: str, conv: tuple[int, ...], fc: tuple[int, int], **conv_attributes: Any
) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]]:
    """Conv, Relu, Flatten and Gemm from `inp` to "logits", and their data-less weights."""
    nodes = [
        helper.make_node("Conv", [inp, "conv.weight", "conv.bias"], ["c"], **conv_attributes),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("Flatten", ["r"], ["f"]),
        helper.make_node("Gemm", ["f", "fc.weight", "fc.bias"], ["logits"], transB=1),
    ]
    inits = [
        weightless("conv.weight", conv),
        weightless("conv.bias", conv[:1]),
        weightless("fc.weight", fc),
        weightless("fc.bias", fc[:1]),
    ]
    return nodes, inits


def _conv_seed(rng: np.random.Generator) -> bytes:
    """Conv (rdft) + masked Gemm, raw int64/bool extras, and an input normalization."""
    fc = np.rint(rng.laplace(0, 6, (6, 64))).astype(np.int64)
    fc[[1, 4]] = 0
    fc[:, ::3] = 0
    nodes, inits = _conv_classifier("input_x", (4, 2, 3, 3), (6, 64))
    inits += [
        weightless("bn.num_batches_tracked", [], TensorProto.INT64),
        weightless("keep", [2], TensorProto.BOOL),
    ]
    graph = helper.make_graph(
        nodes,
        "conv",
        [value_info("input_x", ["batch", 2, 6, 6])],
        [value_info("logits", ["batch", 6])],
        inits,
    )
    records = [
        rdft("conv.weight", np.rint(rng.laplace(0, 3, (4, 2, 3, 3))), RDFT_STEP),
        scalar("conv.bias", np.zeros(4), SCALAR_STEP),
        scalar("fc.weight", fc, 0.0185546875),
        raw("fc.bias", rng.random(6).astype(np.float32)),
        raw("bn.num_batches_tracked", np.array(17, dtype=np.int64)),
        raw("keep", np.array([True, False])),
    ]
    manifest = {
        "architecture": "tiny-conv",
        "input": {
            "name": "input_x",
            "shape": [None, 2, 6, 6],
            "normalization": {"mean": [0.5, 0.25], "std": [0.2, 0.3]},
        },
        "output": {"classes": ["zéro", "un", "deux", "trois", "quatre", "cinq"]},
        "metrics": {"test_error": 0.125, "test_examples": 360, "dataset": "custom"},
    }
    return encode_container(EprContents(manifest, model_bytes(graph, PRODUCER), records))[0]


def _branch_seed(rng: np.random.Generator) -> bytes:
    """An If with subgraphs (one with its own initializer), written with 8-byte alignment."""
    then_graph = helper.make_graph(
        [helper.make_node("MatMul", ["input", "w"], ["t"])],
        "then",
        [],
        [value_info("t", ["batch", 2])],
    )
    local = helper.make_tensor("w2", TensorProto.FLOAT, [4, 2], [0.5] * 8)
    else_graph = helper.make_graph(
        [helper.make_node("MatMul", ["input", "w2"], ["e"])],
        "else",
        [],
        [value_info("e", ["batch", 2])],
        [local],
    )
    node = helper.make_node(
        "If", ["cond"], ["logits"], then_branch=then_graph, else_branch=else_graph
    )
    inits = [weightless("cond", [], TensorProto.BOOL), weightless("w", [4, 2])]
    graph = helper.make_graph(
        [node],
        "branch",
        [value_info("input", ["batch", 4])],
        [value_info("logits", ["batch", 2])],
        inits,
    )
    records = [raw("cond", np.array(True)), scalar("w", rng.integers(-40, 40, (4, 2)), SCALAR_STEP)]
    manifest = {"architecture": "branch", "producer": "fuzz", "training": {"note": "if/else"}}
    return encode_container(
        EprContents(manifest, model_bytes(graph, PRODUCER), records), alignment=3
    )[0]


def _digits_seed(rng: np.random.Generator) -> bytes:
    """What eprpipe's writer makes for the digits data, every manifest key a tool reads set:
    [N, 1, 8, 8] in, [N, 10] logits out, so `eval --dataset digits` runs it in onnxruntime."""
    nodes, inits = _conv_classifier("input", (4, 1, 3, 3), (10, 256), pads=[1, 1, 1, 1])
    graph = helper.make_graph(
        nodes,
        "digits",
        [value_info("input", ["N", 1, 8, 8])],
        [value_info("logits", ["N", 10])],
        inits,
    )
    records = [
        rdft("conv.weight", np.rint(rng.laplace(0, 3, (4, 1, 3, 3))), RDFT_STEP),
        scalar("conv.bias", rng.integers(-3, 3, 4), SCALAR_STEP),
        scalar("fc.weight", np.rint(rng.laplace(0, 2, (10, 256))), 0.03125),
        raw("fc.bias", rng.random(10).astype(np.float32)),
    ]
    manifest = {
        "architecture": "tiny-digits",
        "dataset": "digits",
        "producer": "fuzz",
        "input": {
            "name": "input",
            "shape": [None, 1, 8, 8],
            "dtype": "float32",
            "layout": "NCHW",
            "range": [0.0, 1.0],
            "normalization": {
                "mean": [0.3054],
                "std": [0.3759],
                "applied": "inside the graph: (input - mean) / std",
            },
        },
        "output": {"name": "logits", "kind": "logits", "classes": [str(d) for d in range(10)]},
        "metrics": {
            "test_error": 0.9,
            "test_examples": 360,
            "dataset": "digits",
            "baseline_test_error": None,
        },
        "untrained_tensors": [],
    }
    return encode_container(EprContents(manifest, model_bytes(graph, PRODUCER), records))[0]


def _v11_seed(rng: np.random.Generator) -> bytes:
    """The digits model as a format 1.1 file: every 1.1 key set (inputs, outputs, a
    classification task, metadata, a tied alias, the task's metric), normalization inside the
    graph as 1.1 producers export it, so that `eval --dataset digits` runs it."""
    nodes, inits = _conv_classifier("normalized", (4, 1, 3, 3), (10, 256), pads=[1, 1, 1, 1])
    mean = numpy_helper.from_array(np.full((1, 1, 1, 1), 0.3, np.float32), "pre_mean")
    std = numpy_helper.from_array(np.full((1, 1, 1, 1), 0.4, np.float32), "pre_std")
    graph = helper.make_graph(
        [
            helper.make_node("Sub", ["input", "pre_mean"], ["centered"]),
            helper.make_node("Div", ["centered", "pre_std"], ["normalized"]),
            *nodes,
        ],
        "digits-1.1",
        [value_info("input", ["N", 1, 8, 8])],
        [value_info("logits", ["N", 10])],
        [mean, std, *inits],
    )
    records = [
        rdft("conv.weight", np.rint(rng.laplace(0, 3, (4, 1, 3, 3))), RDFT_STEP),
        scalar("conv.bias", rng.integers(-3, 3, 4), SCALAR_STEP),
        scalar("fc.weight", np.rint(rng.laplace(0, 2, (10, 256))), 0.03125),
        raw("fc.bias", rng.random(10).astype(np.float32)),
    ]
    normalization = {"mean": [0.3], "std": [0.4], "axis": 1}
    manifest = {
        "architecture": "tiny-digits",
        "dataset": "digits",
        "producer": "fuzz",
        "inputs": [
            {
                "name": "input",
                "dtype": "float32",
                "shape": ["N", 1, 8, 8],
                "preprocessing": {"normalization": normalization, "applied": "in the graph"},
            }
        ],
        "outputs": [{"name": "logits", "dtype": "float32", "shape": ["N", 10]}],
        "task": {"kind": "classification", "classes": [str(d) for d in range(10)]},
        "metadata": {"owner": "fuzz", "licence": "CC0-1.0"},
        "tied_tensors": {"head.weight": "fc.weight"},
        "metrics": {
            "task_metric": {"name": "accuracy", "value": 0.1, "higher_is_better": True},
            "test_error": 0.9,
        },
    }
    return encode_container(EprContents(manifest, model_bytes(graph, PRODUCER), records))[0]


def builtin_seeds() -> list[bytes]:
    """Five small valid files covering raw, scalar, rdft, masks, subgraphs, alignment, one
    whose every 1.0 manifest key a tool reads is set (the digits model `eval` runs) and the
    same model as a 1.1 file with every 1.1 key set."""
    rng = np.random.default_rng(20240607)
    seeds = [_mlp_seed(rng), _conv_seed(rng), _branch_seed(rng), _digits_seed(rng)]
    seeds.append(_v11_seed(rng))
    for index, seed in enumerate(seeds):
        report = validate_bytes(seed)
        if not report.valid:  # fuzzing from an invalid seed would prove nothing
            problems = [violation.describe() for violation in report.violations]
            raise RuntimeError(f"builtin seed {index} is not valid: {problems}")
    return seeds


def load_seeds(seeds_dir: Path | None, root: Path | None = None) -> list[tuple[str, bytes]]:
    """Builtin seeds, then every valid *.epr of `seeds_dir` by name (invalid ones skipped with
    a warning), each named by its path relative to `root` where it lies under it."""
    named = [(f"builtin:{index}", data) for index, data in enumerate(builtin_seeds())]
    if seeds_dir is None or not seeds_dir.is_dir():
        return named
    for path in sorted(seeds_dir.glob("*.epr")):
        data = path.read_bytes()
        report = validate_bytes(data, source=str(path))
        if not report.valid:
            warnings.warn(
                f"seed {path} is not valid, skipped: {report.violations[0].describe()}",
                stacklevel=2,
            )
            continue
        name = path.relative_to(root) if root is not None and path.is_relative_to(root) else path
        named.append((str(name), data))
    return named


def fast_zstd(content: bytes) -> bytes:
    """A well-formed frame declaring its size, as the spec wants, made fast."""
    return zstd(content, FRAME_LEVEL)


Mutator = Callable[[random.Random, Seed, Sequence[Seed]], bytes]  # a case family
