"""The format's golden test vectors (spec/FORMAT.md, "Test vectors"; spec/vectors/).

Valid vectors are small files that exercise every part of the format; `vectors.json` lists the
tensors each must decode to. Each invalid vector breaks exactly one rule of a valid file (with
every checksum fixed, so the defect reaches the rule) and names the error code, section and
offset a consumer must report. Everything is built from integer formulas and onnx.helper, so
the vectors need no torch and no random numbers. Old vectors must keep decoding with every
later version: rewrite them only for a deliberate format change, and say so in the spec.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import zstandard
from onnx import TensorProto, helper, numpy_helper

from eprpipe.format.bitio import svarint, uvarint
from eprpipe.format.coding import CodedGroup, GroupKind, encode_stream, stream_bytes
from eprpipe.format.container import (
    EprContents,
    SizeBreakdown,
    TensorRecord,
    decode_container,
    decode_weights,
    encode_container,
)
from eprpipe.format.layout import Layout
from eprpipe.format.manifest import tied_tensors
from eprpipe.format.structures import FLAG_REQUIRED
from eprpipe.format.tables import QTable
from eprpipe.format.testing.graphs import (
    conv_graph,
    dense_graph,
    identity_graph,
    model_bytes,
    value_info,
    weightless,
)
from eprpipe.format.testing.records import (
    coded_rdft_record,
    raw,
    rdft,
    rdft_head,
    record_head,
    scalar,
    scalar_head,
)
from eprpipe.format.testing.sections import (
    Section,
    assemble,
    canonical_json,
    replace_section,
    section_offset,
    split,
    with_header_byte,
    zstd,
)
from eprpipe.format.validate import validate_bytes

MAX_LISTED_VALUES = 64
INDEX = "vectors.json"


# --- deterministic content ------------------------------------------------------------------


def mixed(count: int, salt: int) -> np.ndarray:
    """`count` well-mixed uint64 values (the splitmix64 finalizer): reproducible anywhere."""
    x = np.arange(count, dtype=np.uint64) + np.uint64(salt * 0x9E3779B97F4A7C15 % (1 << 64))
    x ^= x >> np.uint64(30)
    x *= np.uint64(0xBF58476D1CE4E5B9)
    x ^= x >> np.uint64(27)
    x *= np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def spike_slab(shape: tuple[int, ...], salt: int, spread: int = 4) -> np.ndarray:
    """Integer latents: half zero, half spread over -spread..spread, more often near 0."""
    x = mixed(int(np.prod(shape)), salt)
    a = (x >> np.uint64(8)) % np.uint64(spread + 1)
    b = (x >> np.uint64(24)) % np.uint64(spread + 1)
    magnitude = np.minimum(a, b).astype(np.int64)  # triangular: small values are likelier
    sign = np.where((x >> np.uint64(40)) % np.uint64(2) == 0, 1, -1)
    return np.where(x % np.uint64(2) == 0, sign * magnitude, 0).reshape(shape)


# --- valid vectors --------------------------------------------------------------------------


def dense_masks() -> bytes:
    """Scalar record with row and column masks and a QTABLE; raw float32 bias."""
    latents = np.zeros((24, 24), dtype=np.int64)
    rows, cols = [1, 4, 5, 9, 13, 17, 20, 22], [0, 3, 7, 8, 12, 15, 19, 23]
    x = mixed(64, 1)
    sign = np.where(x % np.uint64(2) == 0, 1, -1)
    dead_zone = sign * (3 + (x >> np.uint64(8)) % np.uint64(3)).astype(np.int64)
    latents[np.ix_(rows, cols)] = dead_zone.reshape(8, 8)  # +-3..5: GEOMETRIC cannot fit it
    bias = (np.arange(24, dtype=np.float32) - 12) / 8
    contents = EprContents(
        {"architecture": "dense-masks", "producer": "eprpipe test vectors"},
        dense_graph(24, 24, "fc.weight", "fc.bias"),
        [scalar("fc.weight", latents, 0.0625), raw("fc.bias", bias)],
    )
    return _expect(encode_container(contents), "fc.weight", "row mask", "column mask", "qtable")


def _expect(encoded: tuple[bytes, SizeBreakdown], name: str, *features: str) -> bytes:
    """The file, after checking the writer chose the layout and tables the vector is for."""
    data, sizes = encoded
    label = next(t.table_kinds for t in sizes.tensors if t.name == name)
    missing = [feature for feature in features if feature not in label]
    if missing:
        raise RuntimeError(f"{name} is coded as {label!r}, lacks {missing}")
    return data


def conv_rdft() -> bytes:
    """RDFT record (3x3 kernels), one group per frequency: wide at low, narrow at high ones."""
    shape = (16, 8, 3, 3)
    spreads = np.array([[30, 8, 8], [8, 1, 1], [8, 1, 0]])  # the last frequency is all zero
    latents = np.stack(
        [spike_slab(shape[:2], 2 + f, int(spreads.flat[f])) for f in range(9)], axis=-1
    ).reshape(shape)
    steps = np.array([[0.5, 0.25, 0.25], [0.25, 0.125, 0.125], [0.25, 0.125, 0.0625]])
    record = rdft("conv.weight", latents, steps)
    contents = EprContents(
        {"architecture": "conv-rdft"}, conv_graph("conv.weight", shape), [record]
    )
    return encode_container(contents)[0]


RAW_VALUES: dict[str, np.ndarray] = {
    "t_float32": np.array([1.5, -0.0, 3.0e-39], np.float32),
    "t_float16": np.array([[0.5, -2.0]], np.float16),
    "t_float64": np.array([np.pi], np.float64),
    "t_int64": np.array([-(2**62), 7], np.int64),
    "t_int32": np.array([-5, 2**31 - 1], np.int32),
    "t_int8": np.array([-128, 127], np.int8),
    "t_uint8": np.array([0, 255], np.uint8),
    "t_bool": np.array([True, False, True]),
    "t_int16": np.array([-300, 300], np.int16),
}


def raw_dtypes() -> bytes:
    """One raw record of every dtype code, plus a 0-d and an empty coded record."""
    onnx_types = {
        name: helper.np_dtype_to_tensor_dtype(values.dtype) for name, values in RAW_VALUES.items()
    }
    tensors = {name: (onnx_types[name], values.shape) for name, values in RAW_VALUES.items()}
    tensors["scalar0d"] = (TensorProto.FLOAT, ())
    tensors["empty"] = (TensorProto.FLOAT, (0, 5))
    records = [raw(name, values) for name, values in RAW_VALUES.items()]
    records += [
        scalar("scalar0d", np.array(-3), 0.5),
        scalar("empty", np.zeros((0, 5)), 0.03125),
    ]
    contents = EprContents({"architecture": "raw-dtypes"}, identity_graph(tensors), records)
    return encode_container(contents)[0]


def aligned_future_minor() -> bytes:
    """Sections aligned to 16 bytes, minor version 7 and an unknown optional section."""
    base = decode_container(dense_masks())[0]
    data = encode_container(base, alignment=4)[0]
    sections = split(data)
    sections.insert(1, Section(b"XTRA", 0, b"a section a 1.0 reader skips"))
    return assemble(sections, alignment=4, minor=7)


# --- format 1.1: the general manifest -------------------------------------------------------

V11_METADATA = {"author": "eprpipe test vectors", "licence": "CC0-1.0", "note": "ünïcode ✓"}


def pooled_embedding() -> bytes:
    """Format 1.1: int64 tokens and a bool mask in, both [batch, seq] (symbolic), a regression
    out; the output projection shares the embedding's values (tied_tensors)."""
    graph = helper.make_graph(
        [
            helper.make_node("Gather", ["embed.weight", "tokens"], ["embedded"]),
            helper.make_node("Cast", ["mask"], ["weights"], to=TensorProto.FLOAT),
            helper.make_node("Einsum", ["weights", "embedded"], ["pooled"], equation="bs,bsd->bd"),
            helper.make_node("MatMul", ["pooled", "fc.weight"], ["value"]),
        ],
        "pooled-embedding",
        [
            value_info("tokens", ["batch", "seq"], TensorProto.INT64),
            value_info("mask", ["batch", "seq"], TensorProto.BOOL),
        ],
        [value_info("value", ["batch", 1])],
        initializer=[weightless("embed.weight", (16, 4)), weightless("fc.weight", (4, 1))],
    )
    manifest = {
        "architecture": "pooled-embedding",
        "producer": "eprpipe test vectors",
        "inputs": [
            {"name": "tokens", "dtype": "int64", "shape": ["batch", "seq"]},
            {"name": "mask", "dtype": "bool", "shape": ["batch", "seq"]},
        ],
        "outputs": [{"name": "value", "dtype": "float32", "shape": ["batch", 1]}],
        "task": {"kind": "regression"},
        "metadata": V11_METADATA,
        "tied_tensors": {"head.weight": "embed.weight"},
        "metrics": {
            "task_metric": {
                "name": "mse",
                "value": 0.125,
                "baseline": 0.0625,
                "higher_is_better": False,
                "examples": 100,
            }
        },
    }
    records = [
        scalar("embed.weight", spike_slab((16, 4), 11), 0.125),
        raw("fc.weight", (np.arange(4, dtype=np.float32) - 1.5).reshape(4, 1) / 4),
    ]
    return encode_container(EprContents(manifest, model_bytes(graph), records))[0]


def normalized_classifier() -> bytes:
    """Format 1.1: a float32 image [batch, 1, 4, 4] classified into 3 named classes; the
    declared normalization is the graph's first nodes (Sub, Div), as 1.1 producers export it."""
    mean = numpy_helper.from_array(np.full((1, 1, 1, 1), 0.5, np.float32), "pre_mean")
    std = numpy_helper.from_array(np.full((1, 1, 1, 1), 0.25, np.float32), "pre_std")
    graph = helper.make_graph(
        [
            helper.make_node("Sub", ["image", "pre_mean"], ["centered"]),
            helper.make_node("Div", ["centered", "pre_std"], ["normalized"]),
            helper.make_node("Flatten", ["normalized"], ["flat"]),
            helper.make_node("Gemm", ["flat", "fc.weight", "fc.bias"], ["logits"], transB=1),
        ],
        "normalized-classifier",
        [value_info("image", ["batch", 1, 4, 4])],
        [value_info("logits", ["batch", 3])],
        initializer=[mean, std, weightless("fc.weight", (3, 16)), weightless("fc.bias", (3,))],
    )
    normalization = {"mean": [0.5], "std": [0.25], "axis": 1}
    manifest = {
        "architecture": "normalized-classifier",
        "inputs": [
            {
                "name": "image",
                "dtype": "float32",
                "shape": ["batch", 1, 4, 4],
                "preprocessing": {"normalization": normalization, "applied": "in the graph"},
            }
        ],
        "outputs": [{"name": "logits", "dtype": "float32", "shape": ["batch", 3]}],
        "task": {"kind": "classification", "classes": ["circle", "square", "triangle"]},
        "metadata": {"source": "formula"},
    }
    records = [
        scalar("fc.weight", spike_slab((3, 16), 12), 0.0625),
        raw("fc.bias", np.array([0.25, -0.5, 0.0], np.float32)),
    ]
    return encode_container(EprContents(manifest, model_bytes(graph), records))[0]


CONV_1D, CONV_3D = (4, 2, 5), (3, 2, 3, 3, 3)  # 1.1 rdft records of rank 3 and 5


def _conv_node(x: str, weight: str, y: str, shape: tuple[int, ...]) -> onnx.NodeProto:
    """Conv with 'same' padding over every kernel axis."""
    pads = [side // 2 for side in shape[2:]] * 2
    return helper.make_node("Conv", [x, weight], [y], pads=pads)


def _kernel_latents(shape: tuple[int, ...], salt: int, dead_rows: list, dead_cols: list):
    """Latents whose spread falls with frequency (the highest frequencies all zero), with
    dead rows and columns: every group kind and both masks have something to do."""
    kernel = shape[2:]
    spreads = [12 >> sum(index) for index in np.ndindex(*kernel)]
    latents = np.stack(
        [spike_slab(shape[:2], salt + tap, spread) for tap, spread in enumerate(spreads)],
        axis=-1,
    ).reshape(shape)
    latents[dead_rows] = 0
    latents[:, dead_cols] = 0
    return latents


def conv1d_conv3d_rdft() -> bytes:
    """Format 1.1 by its records alone (the manifest has no 1.1 key): an rdft record of rank 3
    (Conv1d, 5 taps) and one of rank 5 (Conv3d, 3x3x3), each coded with both masks and one
    group per frequency (layout 7, a valid choice that eprpipe's writer, keeping the
    smallest layout, would not make at this size)."""
    one = rdft(
        "conv1d.weight",
        _kernel_latents(CONV_1D, 30, [1], []),
        np.array([0.5, 0.25, 0.25, 0.125, 0.0625]),
    )
    three = rdft(
        "conv3d.weight",
        _kernel_latents(CONV_3D, 40, [2], [1]),
        np.array([2.0 ** -(1 + sum(index)) for index in np.ndindex(3, 3, 3)]).reshape(3, 3, 3),
    )
    graph = helper.make_graph(
        [
            _conv_node("signal", "conv1d.weight", "features", CONV_1D),
            _conv_node("volume", "conv3d.weight", "voxels", CONV_3D),
        ],
        "conv1d-conv3d",
        [value_info("signal", ["batch", 2, 8]), value_info("volume", ["batch", 2, 4, 4, 4])],
        [value_info("features", ["batch", 4, 8]), value_info("voxels", ["batch", 3, 4, 4, 4])],
        initializer=[weightless("conv1d.weight", CONV_1D), weightless("conv3d.weight", CONV_3D)],
    )
    records = [one, three]
    contents = EprContents({"architecture": "conv1d-conv3d"}, model_bytes(graph), records)
    data = encode_container(contents)[0]
    all_layouts = Layout.PER_FREQUENCY | Layout.ROW_MASK | Layout.COLUMN_MASK
    tens = uvarint(len(records)) + b"".join(
        coded_rdft_record(record, all_layouts) for record in records
    )
    data = replace_section(data, b"TENS", tens)
    _, sizes = decode_container(data)
    for record, size in zip(records, sizes.tensors, strict=True):
        taps = int(np.prod(record.shape[2:]))
        if size.groups != 2 + taps or "row mask" not in size.table_kinds:
            raise RuntimeError(f"{record.name} is coded as {size.table_kinds!r}")
    return data


VALID: dict[str, tuple[Callable[[], bytes], str]] = {
    "dense-masks": (dense_masks, "scalar record with row and column masks, raw float32 bias"),
    "conv-rdft": (conv_rdft, "rdft record of 3x3 kernels"),
    "raw-dtypes": (raw_dtypes, "every raw dtype; a 0-d and an empty coded record"),
    "aligned-future-minor": (
        aligned_future_minor,
        "alignment 4 (16 bytes), version 1.7, an unknown optional section XTRA",
    ),
    "v11-pooled-embedding": (
        pooled_embedding,
        "version 1.1: int64 and bool inputs with symbolic dims, a regression task and its "
        "metric, user metadata, an alias head.weight tied to embed.weight (listed as "
        "tied_aliases, not among the tensors)",
    ),
    "v11-normalized-classifier": (
        normalized_classifier,
        "version 1.1: a float32 image input whose declared normalization is inside the "
        "graph, a classification task with 3 class names",
    ),
    "v11-conv1d-conv3d-rdft": (
        conv1d_conv3d_rdft,
        "version 1.1 by its records: rdft records of rank 3 (4, 2, 5) and rank 5 "
        "(3, 2, 3, 3, 3), each with row and column masks and one group per frequency",
    ),
}


# --- invalid vectors ------------------------------------------------------------------------


@dataclass(frozen=True)
class Invalid:
    name: str
    description: str
    code: str
    section: str | None
    offset: int | None
    data: bytes


@functools.cache
def base_file() -> bytes:
    """The valid file the invalid vectors break: dense-masks."""
    return dense_masks()


def with_records(records: bytes, count: int = 1) -> tuple[bytes, int]:
    """The base file with TENS replaced; returns the file and where the first record starts."""
    base = base_file()
    data = replace_section(base, b"TENS", uvarint(count) + records)
    return data, section_offset(data, b"TENS") + len(uvarint(count))


def _qtable(lo: int, levels: list[int], resolution: int = 1) -> CodedGroup:
    return CodedGroup(GroupKind.QTABLE, table=QTable(lo, resolution, np.array(levels, np.uint8)))


def header_invalids() -> list[Invalid]:
    base = base_file()
    sections = split(base)
    meta_at = section_offset(base, b"META")
    crc_broken = bytearray(base)
    crc_broken[meta_at] ^= 0x01
    header_crc_broken = bytearray(base)
    header_crc_broken[20 + 16 * 3 - 1] ^= 0x80
    padded_file = bytearray(assemble(sections, alignment=3))
    padded_file[68] = 1
    dup = assemble([*sections, (b"TENS", 1, b"\x00")])
    return [
        Invalid("bad-magic", "magic byte 3 changed", "bad-magic", None, 0,
                b"\x89EPX" + base[4:]),
        Invalid("major-version-2", "version 2.0", "unsupported-version", None, 8,
                assemble(sections, major=2)),
        Invalid("header-checksum", "one bit of header_crc flipped", "bad-checksum", None, 64,
                bytes(header_crc_broken)),
        Invalid("section-checksum", "one bit of the META body flipped", "bad-checksum", "META",
                meta_at, bytes(crc_broken)),
        Invalid("header-flags", "reserved header flag bit 0 set", "reserved-bits", None, 15,
                assemble(sections, flags=1)),
        Invalid("alignment-13", "alignment 13 > 12", "bad-alignment", None, 14,
                with_header_byte(base, 14, 13)),
        Invalid("nonzero-padding", "a padding byte of an 8-byte-aligned file is 1",
                "bad-padding", None, 68, bytes(padded_file)),
        Invalid("trailing-byte", "one byte after the last section", "trailing-bytes", None,
                len(base), base + b"\x00"),
        Invalid("missing-graph", "no GRPH section", "missing-section", None, None,
                assemble([s for s in sections if s[0] != b"GRPH"])),
        Invalid("unknown-required", "an unknown section with the required flag",
                "unknown-required-section", "XREQ", len(base) + 16,
                assemble([*sections, (b"XREQ", FLAG_REQUIRED, b"")])),
        Invalid("duplicate-section", "TENS twice", "duplicate-section", None, 16 + 16 * 3, dup),
        Invalid("section-flag-bit", "reserved section flag bit 1", "reserved-bits", None, 20,
                assemble([(t, f | 2 if t == b"META" else f, b) for t, f, b in sections])),
        Invalid("tag-not-printable", "an optional section tagged 'X', 0x00, 'Y', 'Z'", "bad-tag",
                None, 16 + 16 * 3, assemble([*sections, (b"X\x00YZ", 0, b"")])),
        Invalid("truncated", "the last byte removed", "truncated", "TENS",
                section_offset(base, b"TENS"), base[:-1]),
    ]  # fmt: skip


def section_invalids() -> list[Invalid]:
    base = base_file()
    bomb = zstandard.ZstdCompressor(level=3).compress(bytes(64 << 20))
    meta_at = section_offset(base, b"META")

    def meta(body: bytes) -> bytes:
        return replace_section(base, b"META", body)

    graph = onnx.load_from_string(decode_container(base)[0].graph)
    external = onnx.ModelProto()
    external.CopyFrom(graph)
    weight = external.graph.initializer[0]
    weight.data_location = TensorProto.EXTERNAL
    weight.external_data.add(key="location", value="../../etc/passwd")
    domain = onnx.ModelProto()
    domain.CopyFrom(graph)
    domain.graph.node[0].domain = "com.example"
    unknown_op = onnx.ModelProto()
    unknown_op.CopyFrom(graph)
    unknown_op.graph.node[0].op_type = "NotAnOperator"
    mismatch = onnx.ModelProto()
    mismatch.CopyFrom(graph)
    mismatch.graph.initializer[0].dims[0] = 13

    opset_999 = onnx.ModelProto()
    opset_999.CopyFrom(graph)
    opset_999.opset_import[0].version = 999
    ai_onnx_node = onnx.ModelProto()
    ai_onnx_node.CopyFrom(graph)
    ai_onnx_node.graph.node[0].domain = "ai.onnx"
    no_output = onnx.ModelProto()
    no_output.CopyFrom(graph)
    del no_output.graph.output[:]

    def grph(model: onnx.ModelProto) -> bytes:
        return replace_section(base, b"GRPH", zstd(model.SerializeToString()))

    return [
        Invalid("meta-not-zstd", "META holds raw JSON", "bad-zstd", "META", meta_at,
                meta(b'{"a":1}')),
        Invalid("zstd-bomb", "META frame declares 64 MiB", "limit-exceeded", "META", meta_at,
                meta(bomb)),
        Invalid("meta-duplicate-key", "manifest repeats a key", "bad-manifest", "META",
                meta_at, meta(zstd(b'{"a":1,"a":2}'))),
        Invalid("meta-not-canonical", "manifest with spaces", "non-canonical-manifest", "META",
                None, meta(zstd(b'{"a": 1}'))),
        Invalid("meta-shape-negative", "manifest input.shape holds -28", "bad-manifest",
                "META", meta_at, meta(zstd(b'{"input":{"shape":[null,1,-28,0]}}'))),
        Invalid("graph-external-data", "fc.weight points at ../../etc/passwd", "external-data",
                "GRPH", None, grph(external)),
        Invalid("graph-domain", "a node in domain com.example", "graph-domain", "GRPH", None,
                grph(domain)),
        Invalid("graph-unknown-operator", "an operator ONNX does not define", "graph-invalid",
                "GRPH", None, grph(unknown_op)),
        Invalid("graph-shape-mismatch", "fc.weight is 13 x 16 in the graph", "graph-mismatch",
                "GRPH", None, grph(mismatch)),
        Invalid("graph-opset-999", "default-domain opset 999", "graph-invalid", "GRPH", None,
                grph(opset_999)),
        Invalid("graph-node-ai-onnx", "a node in domain ai.onnx", "graph-domain", "GRPH",
                None, grph(ai_onnx_node)),
        Invalid("graph-no-output", "a main graph without outputs", "graph-invalid", "GRPH",
                None, grph(no_output)),
        Invalid("graph-text-not-utf8", "the model's producer_name ends in byte 0xff",
                "graph-parse", "GRPH", None,
                replace_section(base, b"GRPH", zstd(graph.SerializeToString().replace(
                    b"eprpipe-vectors", b"eprpipe-vector\xff")))),
        Invalid("graph-not-protobuf", "GRPH inflates to bytes that are not a ModelProto",
                "graph-parse", "GRPH", None,
                replace_section(base, b"GRPH", zstd(b"\xff\xff\xff\xff"))),
    ]  # fmt: skip


def record_invalids() -> list[Invalid]:
    """Defects inside one tensor record; offsets point at the offending field."""
    cases: list[Invalid] = []

    def add(name: str, description: str, code: str, records: bytes, at: int, count: int = 1):
        data, start = with_records(records, count)
        cases.append(Invalid(name, description, code, "TENS", start + at, data))

    const0 = b"\x00" + svarint(0)
    head = scalar_head(b"w", (4,))
    add("name-length-0", "name_length 0", "bad-name", uvarint(0), 0)
    twice = head + const0
    add("duplicate-name", "two records named w", "duplicate-name", twice + twice, len(twice), 2)
    add(
        "words-no-encoder-makes",
        "stream words FFFFFFFF FFFFFFFF: q >= 2^24",
        "invalid-words",
        head + _qtable(0, [1, 1]).encode() + stream_bytes(np.array([2**32 - 1] * 2, np.uint32)),
        len(head),
    )
    add(
        "name-not-utf8",
        "name byte 0xff",
        "bad-name",
        record_head(b"\xff", 0, ()) + b"\x01" + bytes(4),
        1,
    )
    add("record-kind-3", "record kind 3", "unknown-record-kind", record_head(b"w", 3, ()), 2)
    add("ndim-9", "ndim 9", "bad-shape", b"\x01w\x01\x09", 3)
    add(
        "rdft-1x1",
        "rdft record with 1x1 kernels",
        "bad-shape",
        record_head(b"w", 2, (2, 2, 1, 1)),
        4,
    )
    add("dtype-10", "raw dtype code 10", "unknown-dtype", record_head(b"w", 0, (2,)) + b"\x0a", 5)
    add("bool-2", "bool byte 2", "bad-bool", record_head(b"w", 0, (2,)) + b"\x08\x01\x02", 6)
    add(
        "step-infinite",
        "step +inf",
        "non-finite-step",
        record_head(b"w", 1, (2,)) + b"\x00\x7c\x00" + const0,
        5,
    )
    add(
        "layout-bit-3",
        "reserved layout bit 3",
        "bad-layout",
        record_head(b"w", 1, (2,)) + b"\x00\x34\x08" + const0,
        7,
    )
    add(
        "per-frequency-scalar",
        "layout bit 0 in a scalar record",
        "bad-layout",
        record_head(b"w", 1, (2,)) + b"\x00\x34\x01" + const0,
        7,
    )
    add("group-kind-3", "group kind 3", "unknown-group-kind", head + b"\x03", len(head))
    add(
        "constant-2-40",
        "constant 2^40",
        "latent-bound",
        head + b"\x00" + svarint(2**40),
        len(head) + 1,
    )
    add(
        "varint-overlong",
        "constant 0 written as 80 00",
        "bad-varint",
        head + b"\x00\x80\x00",
        len(head) + 1,
    )
    add(
        "alphabet-1",
        "QTABLE alphabet 1",
        "bad-alphabet",
        head + b"\x01" + svarint(0) + uvarint(1) + b"\x01" + uvarint(1) + b"\x80",
        len(head) + 2,
    )
    add(
        "resolution-5",
        "QTABLE resolution 5",
        "bad-resolution",
        head + b"\x01" + svarint(0) + uvarint(2) + b"\x05",
        len(head) + 3,
    )
    add(
        "levels-all-zero",
        "QTABLE whose levels are all 0",
        "bad-levels",
        head + b"\x01" + svarint(0) + uvarint(2) + b"\x01" + uvarint(1) + b"\xc0",
        len(head) + 1,
    )
    add(
        "geometric-zero-level-81",
        "GEOMETRIC zero level 81",
        "bad-geometric",
        head + b"\x02" + svarint(-3) + uvarint(7) + bytes([81, 5, 5]),
        len(head) + 3,
    )
    add(
        "geometric-filler",
        "GEOMETRIC decay not in use is not 0x80",
        "bad-geometric",
        head + b"\x02" + svarint(-1) + uvarint(3) + bytes([0, 5, 0x80]),
        len(head) + 4,
    )
    mask_head = scalar_head(b"k", (3, 2), layout=2)
    add(
        "mask-symbol-2", "row mask symbol 2", "bad-mask", mask_head + _mask_record(), len(mask_head)
    )
    add(
        "inactive-row",
        "row marked active holds only zeros",
        "bad-mask",
        mask_head + b"\x00" + svarint(1) + b"\x00" + svarint(0),
        len(mask_head),
    )
    empty = scalar_head(b"e", (0,))
    add(
        "empty-group-table",
        "a group of zero symbols that is not CONSTANT 0",
        "empty-group",
        empty + b"\x00" + svarint(5),
        len(empty),
    )
    group = _qtable(0, [1, 1])
    words = encode_stream([group], [np.array([0, 1, 1, 0])])
    add(
        "extra-word",
        "one word more than the canonical stream",
        "non-canonical-words",
        head + group.encode() + stream_bytes(np.append(words, 0)),
        len(head) + len(group.encode()),
    )
    weightless = _qtable(0, [1, 0])
    stream = encode_stream([weightless], [np.array([0, 1, 0, 0])])  # the coder is leaky
    add(
        "zero-weight-symbol",
        "the stream decodes to a symbol of weight 0",
        "zero-weight-symbol",
        head + weightless.encode() + stream_bytes(stream),
        len(head),
    )
    huge = scalar_head(b"h", (1 << 16, 1 << 15))
    add(
        "too-many-elements",
        "a CONSTANT tensor of 2^31 elements in a small file",
        "limit-exceeded",
        huge + const0,
        0,
    )
    return cases  # fmt: skip


def _mask_record() -> bytes:
    """Row mask coded as a QTABLE over {0, 1, 2} holding a 2, then one latent group."""
    mask = _qtable(0, [1, 1, 1])
    latents = _qtable(0, [1, 1])
    values = [np.array([1, 2, 0]), np.array([1, 0, 1, 1])]
    return mask.encode() + latents.encode() + stream_bytes(encode_stream([mask, latents], values))


def v11_invalids() -> list[Invalid]:
    """Format 1.1 manifests, one defect each, in the pooled-embedding file (minor 1)."""
    base = pooled_embedding()
    meta_at = section_offset(base, b"META")
    good = json.loads(zstandard.ZstdDecompressor().decompress(split(base)[0].body))

    def edited(edit: Callable[[dict], None]) -> bytes:
        manifest = json.loads(json.dumps(good))
        edit(manifest)
        return replace_section(base, b"META", zstd(canonical_json(manifest)))

    def set_item(path: tuple, value: object) -> Callable[[dict], None]:
        def edit(manifest: dict) -> None:
            node = manifest
            for key in path[:-1]:
                node = node[key]
            node[path[-1]] = value

        return edit

    too_large = {"blob": "x" * 65536}
    return [
        Invalid("v11-bad-dtype", "inputs[0].dtype is float64", "bad-manifest", "META", meta_at,
                edited(set_item(("inputs", 0, "dtype"), "float64"))),
        Invalid("v11-duplicate-input", "inputs[1] is named tokens too", "bad-manifest", "META",
                meta_at, edited(set_item(("inputs", 1, "name"), "tokens"))),
        Invalid("v11-metadata-reserved-key", "metadata key eprpipe.task", "bad-manifest",
                "META", meta_at, edited(set_item(("metadata",), {"eprpipe.task": "x"}))),
        Invalid("v11-metadata-too-large", "metadata of 65,540 bytes", "bad-manifest", "META",
                meta_at, edited(set_item(("metadata",), too_large))),
        Invalid("v11-tied-missing", "tied alias head.weight names no record", "bad-manifest",
                "META", meta_at,
                edited(set_item(("tied_tensors",), {"head.weight": "no.such.weight"}))),
        Invalid("v11-graph-input-mismatch", "inputs[0].shape fixes seq to 7, the graph does not",
                "graph-mismatch", "GRPH", None,
                edited(set_item(("inputs", 0, "shape"), ["batch", 7]))),
    ]  # fmt: skip


def v11_rdft_invalids() -> list[Invalid]:
    """rdft records of format 1.1, one defect each: a rank-3 record under a 1.0 header, and
    in a 1.1 file a record of rank 6 and one whose kernel has a single tap."""
    base = conv1d_conv3d_rdft()
    tens_at = section_offset(base, b"TENS")
    dims_at = tens_at + len(uvarint(2)) + 1 + len(b"conv1d.weight") + 2  # the first record's

    def alone(dims: tuple[int, ...]) -> bytes:
        return replace_section(base, b"TENS", uvarint(1) + rdft_head(b"w", dims) + b"\x00\x00")

    return [
        Invalid("v11-rdft-rank3-minor0", "the rank-3 rdft file under a header of version 1.0",
                "bad-shape", "TENS", dims_at, with_header_byte(base, 10, 0)),
        Invalid("v11-rdft-rank6", "an rdft record of rank 6, (2, 1, 2, 1, 1, 1)", "bad-shape",
                "TENS", tens_at + 5, alone((2, 1, 2, 1, 1, 1))),
        Invalid("v11-rdft-one-tap", "an rdft record of rank 3 whose kernel has one tap, "
                "(4, 2, 1)", "bad-shape", "TENS", tens_at + 5, alone((4, 2, 1))),
    ]  # fmt: skip


def invalid_vectors() -> list[Invalid]:
    return (
        header_invalids()
        + section_invalids()
        + record_invalids()
        + v11_invalids()
        + v11_rdft_invalids()
    )


# --- index, check and write -----------------------------------------------------------------


def tensor_entry(record: TensorRecord) -> dict:
    values = np.ascontiguousarray(decode_weights(record))
    little = values.astype(values.dtype.newbyteorder("<"))
    entry = {
        "name": record.name,
        "shape": list(values.shape),
        "dtype": values.dtype.name,
        "sha256": hashlib.sha256(little.tobytes()).hexdigest(),
    }
    if values.size <= MAX_LISTED_VALUES:
        flat = values.reshape(-1).tolist()
        entry["values"] = [float(v).hex() if values.dtype.kind == "f" else v for v in flat]
    return entry


def build() -> tuple[dict[str, bytes], dict]:
    """Every vector file (path relative to spec/vectors) and the index."""
    files: dict[str, bytes] = {}
    index: dict[str, Any] = {
        "format_version": "1.1",  # the latest minor version among the vectors
        "generator": "tools/make_vectors.py",
        "zstandard": zstandard.__version__,  # byte-identical regeneration needs the same zstd
        "valid": [],
        "invalid": [],
    }
    for name, (make, description) in VALID.items():
        data = make()
        report = validate_bytes(data)
        if not report.valid:
            raise RuntimeError(f"valid vector {name} does not validate: {report.violations}")
        contents, _ = decode_container(data)
        files[f"valid/{name}.epr"] = data
        entry: dict[str, Any] = {
            "file": f"valid/{name}.epr",
            "description": description,
            "tensors": [tensor_entry(record) for record in contents.tensors],
        }
        aliases = tied_tensors(contents.manifest, contents.minor)
        if aliases:
            entry["tied_aliases"] = aliases
        index["valid"].append(entry)
    for case in invalid_vectors():
        report = validate_bytes(case.data)
        got = [(v.code, v.section, v.offset) for v in report.violations]
        if got != [(case.code, case.section, case.offset)]:
            raise RuntimeError(f"invalid vector {case.name}: expected one "
                             f"{(case.code, case.section, case.offset)}, got {got}")  # fmt: skip
        files[f"invalid/{case.name}.epr"] = case.data
        index["invalid"].append(
            {
                "file": f"invalid/{case.name}.epr",
                "description": case.description,
                "code": case.code,
                "section": case.section,
                "offset": case.offset,
            }
        )
    return files, index


def index_text(index: dict) -> str:
    return json.dumps(index, indent=1, sort_keys=True) + "\n"


def differing(folder: Path) -> tuple[list[str], int]:
    """The files under `folder` (spec/vectors) that differ from a fresh build, and how many
    files the build has."""
    files, index = build()
    stale = [name for name, data in files.items() if _read(folder / name) != data]
    if _read(folder / INDEX) != index_text(index).encode():
        stale.append(INDEX)
    return stale, len(files)


def write(folder: Path) -> int:
    """Rewrite every vector and the index under `folder`; returns the vector count."""
    files, index = build()
    for name, data in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    (folder / INDEX).write_text(index_text(index))
    return len(files)


def _read(path: Path) -> bytes | None:
    return path.read_bytes() if path.is_file() else None
