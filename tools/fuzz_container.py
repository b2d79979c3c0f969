"""Fuzz the .epr readers: for any bytes, `validate_bytes` must return a Report, never raise,
and no `eprpipe` command may crash, hang or destroy a file, on any file validate accepts.

Every case is one seed file plus one mutation strategy, both drawn from an RNG seeded with
"K:I" (run seed K, case index I), so a case is reproduced from those two numbers and the seed
list alone (and this tool's version, and --strategies if given). The seeds are the builtin
files made here with the public API (torch-free) followed by the valid files of --seeds-dir,
sorted by name; each must validate before fuzzing starts, and the summary lists them with
their SHA-256. Strategies reach past the checksums (they recompute CRCs), into the zstd frames
(hostile frames), the ONNX graph (external data, domains, nesting; outputs that lie), the
manifest (hostile JSON; typed lies in the keys the tools read) and the element allowance
(padding and unknown sections that must not buy any); one family puts the bytes behind a FIFO,
a symlink, a device node, a directory or a sparse 1 GiB file, and points `decode -o` at such
nodes or at the input.

An exception escaping `validate_bytes` is a *foreign exception*: a bug to report, never to
hide. So is, on a file validate accepts, an exception escaping `eprpipe.cli.main` for `info`,
`info --json`, `decode` or `eval --dataset digits` (run in-process, output discarded: eval on
every case of the families aimed at it and on 1 in --eval-every of the others), a traceback on
their stderr, or a nonzero exit of info or decode. Filesystem cases run validate, info, decode
and eval on their nodes and also count a hang, a node replaced or removed and a temporary file
left behind. Those commands run with the address space capped at its size plus 2 GiB, so that
reading /dev/zero fails instead of taking the machine. A case over 1 s is *slow*; a case over
10 s is stopped by a per-worker alarm and counted as slow; a worker stuck inside C code for
30 s is killed by the parent and restarted after it. The parent keeps counts, never per-case
results, so --cases 1000000 runs in bounded memory.

    python tools/fuzz_container.py --cases 20000 --jobs 2 --json fuzz.json
    python tools/fuzz_container.py --reproduce 0:1234 --dump case.epr
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import hashlib
import heapq
import io
import json
import math
import multiprocessing as mp
import os
import queue
import random
import resource
import shutil
import signal
import stat
import struct
import sys
import tempfile
import threading
import time
import traceback
import tracemalloc
import warnings
import zlib
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import NamedTuple

import numpy as np
import onnx
import zstandard
from onnx import TensorProto, helper
from tqdm import tqdm

from eprpipe import cli
from eprpipe.format.bitio import ByteReader, svarint, uvarint
from eprpipe.format.container import (
    EprContents,
    RdftDecoder,
    ScalarDecoder,
    TensorRecord,
    decode_container,
    encode_container,
)
from eprpipe.format.layout import Layout, read_latents
from eprpipe.format.limits import DEFAULT_LIMITS, ReadBudget
from eprpipe.format.structures import MAGIC, RAW_BODY, RDFT_BODY, RECORD_HEAD, SCALAR_BODY
from eprpipe.format.validate import Report, validate_bytes

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SEEDS_DIR = ROOT / "spec" / "vectors" / "valid"
SLOW_S = 1.0  # a case slower than this (plus eval's time limit where eval ran) is reported
CASE_TIMEOUT_S = 10.0  # the in-worker alarm stops a case here
HARD_TIMEOUT_S = 30.0  # the parent kills a worker whose case runs this long (stuck in C code)
MEMORY_SLACK = 64 << 20  # the RSS bound is 10 x the largest input plus this
MEMORY_FACTOR = 10
SHOW_TRACEBACKS = 3
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
SKIPPABLE_MAGIC = b"\x50\x2a\x4d\x18"
BOMB_BYTES = 60 << 20  # declares less than the 64 MiB graph limit, from a 2 KiB frame
DOC_BOMB_BYTES = 100 << 20
OUTCOMES = ("rejected", "accepted", "foreign", "timeout", "generator-error")
MAX_SLOW_KEPT = 50  # the summary keeps this many slowest cases, and counts the rest
MAX_SIGNATURES = 200  # distinct findings kept in full; more are counted together
ORACLE_COMMANDS = ("info", "info --json", "decode", "eval")  # on files validate_bytes accepts
EVAL_DATASET = "digits"  # scikit-learn's, bundled: no download, loaded once per worker
EVAL_MEMORY_MIB = 32  # eval's onnxruntime arena, which onnxruntime keeps once it has grown
EVAL_SECONDS = 2.0  # eval's time limit: a valid graph decides what it computes per image
EVAL_LIMITS = ("--max-runtime-memory", str(EVAL_MEMORY_MIB), "--time-limit", str(EVAL_SECONDS))
EVAL_EVERY = 8  # eval runs on every 8th accepted case (and on every case aimed at it)
FS_COMMANDS = ("validate", "info", "decode", "eval")  # one per way of opening the input
FS_TIMEOUT_S = 2.0  # a filesystem case's command is stopped here: a hang if it was blocked ...
BLOCKED_CPU_SHARE = 0.05  # ... using less CPU than this share of the time (e.g. in open())
ALARM = "stopped by the alarm"  # the finding of a command that worked too long
GUARD_BYTES = (
    2 << 30
)  # commands after validation may grow the address space this much: eval's 1 GiB arena and more
SPARSE_BYTES = 1 << 30


# --- container surgery ----------------------------------------------------------------------


@dataclass(frozen=True)
class Section:
    tag: bytes
    flags: int
    body: bytes


@dataclass(frozen=True)
class Container:
    """A file split into header fields and section bodies, so mutations can re-seal it."""

    major: int
    minor: int
    alignment: int
    flags: int
    sections: tuple[Section, ...]

    def body(self, tag: bytes) -> bytes:
        return next(section.body for section in self.sections if section.tag == tag)

    def with_body(self, tag: bytes, body: bytes) -> Container:
        sections = tuple(replace(s, body=body) if s.tag == tag else s for s in self.sections)
        return replace(self, sections=sections)


def split_container(data: bytes) -> Container:
    """Parse a well-formed file (a seed); raises on anything else."""
    major, minor, count, alignment, flags = struct.unpack_from("<HHHBB", data, 8)
    offset, sections = 16 + 16 * count + 4, []
    for index in range(count):
        tag, section_flags, length, _ = struct.unpack_from("<4sIII", data, 16 + 16 * index)
        offset += -offset % (1 << alignment)
        sections.append(Section(tag, section_flags, data[offset : offset + length]))
        offset += length
    return Container(major, minor, alignment, flags, tuple(sections))


def assemble(container: Container) -> bytes:
    """Serialize with correct lengths and CRC-32s, so a mutation inside reaches the parsers."""
    header = MAGIC + struct.pack(
        "<HHHBB",
        container.major,
        container.minor,
        len(container.sections),
        container.alignment,
        container.flags,
    )
    for section in container.sections:
        body = section.body
        header += struct.pack("<4sIII", section.tag, section.flags, len(body), zlib.crc32(body))
    out = bytearray(header + struct.pack("<I", zlib.crc32(header)))
    step = 1 << container.alignment if container.alignment <= 12 else 1
    for section in container.sections:
        out += bytes(-len(out) % step) + section.body
    return bytes(out)


def reseal_header(data: bytearray) -> None:
    """Recompute the header CRC in place, for the section count the header now declares."""
    count = struct.unpack_from("<H", data, 12)[0]
    end = 16 + 16 * count
    if end + 4 <= len(data):
        struct.pack_into("<I", data, end, zlib.crc32(bytes(data[:end])))


# --- seeds ----------------------------------------------------------------------------------


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


def tens_fields(tens: bytes, file_bytes: int) -> list[TensField]:
    """Varints and record spans of a valid TENS section, found by eprpipe's own structures."""
    reader = _RecordingReader(tens)
    budget = ReadBudget(DEFAULT_LIMITS, file_bytes)
    records = []
    for _ in range(reader.read_uvarint("record count")):
        start = reader.pos
        head = RECORD_HEAD.read(reader)
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
        container = split_container(data)
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
            fields=tens_fields(tens, len(data)),
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


def _weightless(name: str, dims: Sequence[int], data_type: int = TensorProto.FLOAT) -> TensorProto:
    """An initializer as the exporter leaves it: name, type and dims, the data in TENS."""
    return TensorProto(name=name, data_type=data_type, dims=list(dims))


def _scalar(name: str, latents: np.ndarray, step: float = 0.125) -> TensorRecord:
    latents = np.asarray(latents, dtype=np.int64)
    return TensorRecord(name, latents.shape, "float32", ScalarDecoder(step), latents, None)


def _rdft(name: str, latents: np.ndarray) -> TensorRecord:
    latents = np.asarray(latents, dtype=np.int64)
    steps = np.full(latents.shape[2:], 0.0625, dtype=np.float16)
    return TensorRecord(name, latents.shape, "float32", RdftDecoder(steps), latents, None)


def _raw(name: str, array: np.ndarray) -> TensorRecord:
    return TensorRecord(name, array.shape, array.dtype.name, None, None, array)


def _model(graph: onnx.GraphProto) -> bytes:
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=9, producer_name="fuzz"
    )
    return model.SerializeToString()


def _io(name: str, dims: list) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, dims)


def _mlp_seed(rng: np.random.Generator) -> bytes:
    """Gemm with a scalar-coded weight and a raw bias; a manifest without normalization."""
    nodes = [helper.make_node("Gemm", ["input", "w", "b"], ["logits"], transB=1)]
    inits = [_weightless("w", [3, 4]), _weightless("b", [3])]
    graph = helper.make_graph(
        nodes, "mlp", [_io("input", ["batch", 4])], [_io("logits", ["batch", 3])], inits
    )
    records = [
        _scalar("w", np.rint(rng.laplace(0, 2, (3, 4)))),
        _raw("b", rng.random(3).astype(np.float32)),
    ]
    manifest = {"architecture": "mlp", "output": {"classes": ["a", "b", "c"]}, "producer": "fuzz"}
    return encode_container(EprContents(manifest, _model(graph), records))[0]


def _conv_seed(rng: np.random.Generator) -> bytes:
    """Conv (rdft) + masked Gemm, raw int64/bool extras, and an input normalization."""
    fc = np.rint(rng.laplace(0, 6, (6, 64))).astype(np.int64)
    fc[[1, 4]] = 0
    fc[:, ::3] = 0
    nodes = [
        helper.make_node("Conv", ["input_x", "conv.weight", "conv.bias"], ["c"]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("Flatten", ["r"], ["f"]),
        helper.make_node("Gemm", ["f", "fc.weight", "fc.bias"], ["logits"], transB=1),
    ]
    inits = [
        _weightless("conv.weight", [4, 2, 3, 3]),
        _weightless("conv.bias", [4]),
        _weightless("fc.weight", [6, 64]),
        _weightless("fc.bias", [6]),
        _weightless("bn.num_batches_tracked", [], TensorProto.INT64),
        _weightless("keep", [2], TensorProto.BOOL),
    ]
    graph = helper.make_graph(
        nodes, "conv", [_io("input_x", ["batch", 2, 6, 6])], [_io("logits", ["batch", 6])], inits
    )
    records = [
        _rdft("conv.weight", np.rint(rng.laplace(0, 3, (4, 2, 3, 3)))),
        _scalar("conv.bias", np.zeros(4)),
        _scalar("fc.weight", fc, step=0.0185546875),
        _raw("fc.bias", rng.random(6).astype(np.float32)),
        _raw("bn.num_batches_tracked", np.array(17, dtype=np.int64)),
        _raw("keep", np.array([True, False])),
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
    return encode_container(EprContents(manifest, _model(graph), records))[0]


def _branch_seed(rng: np.random.Generator) -> bytes:
    """An If with subgraphs (one with its own initializer), written with 8-byte alignment."""
    then_graph = helper.make_graph(
        [helper.make_node("MatMul", ["input", "w"], ["t"])], "then", [], [_io("t", ["batch", 2])]
    )
    local = helper.make_tensor("w2", TensorProto.FLOAT, [4, 2], [0.5] * 8)
    else_graph = helper.make_graph(
        [helper.make_node("MatMul", ["input", "w2"], ["e"])],
        "else",
        [],
        [_io("e", ["batch", 2])],
        [local],
    )
    node = helper.make_node(
        "If", ["cond"], ["logits"], then_branch=then_graph, else_branch=else_graph
    )
    inits = [_weightless("cond", [], TensorProto.BOOL), _weightless("w", [4, 2])]
    graph = helper.make_graph(
        [node], "branch", [_io("input", ["batch", 4])], [_io("logits", ["batch", 2])], inits
    )
    records = [_raw("cond", np.array(True)), _scalar("w", rng.integers(-40, 40, (4, 2)))]
    manifest = {"architecture": "branch", "producer": "fuzz", "training": {"note": "if/else"}}
    return encode_container(EprContents(manifest, _model(graph), records), alignment=3)[0]


def _digits_seed(rng: np.random.Generator) -> bytes:
    """What eprpipe's writer makes for the digits data, every manifest key a tool reads set:
    [N, 1, 8, 8] in, [N, 10] logits out, so `eval --dataset digits` runs it in onnxruntime."""
    nodes = [
        helper.make_node("Conv", ["input", "conv.weight", "conv.bias"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("Flatten", ["r"], ["f"]),
        helper.make_node("Gemm", ["f", "fc.weight", "fc.bias"], ["logits"], transB=1),
    ]
    inits = [
        _weightless("conv.weight", [4, 1, 3, 3]),
        _weightless("conv.bias", [4]),
        _weightless("fc.weight", [10, 256]),
        _weightless("fc.bias", [10]),
    ]
    graph = helper.make_graph(
        nodes, "digits", [_io("input", ["N", 1, 8, 8])], [_io("logits", ["N", 10])], inits
    )
    records = [
        _rdft("conv.weight", np.rint(rng.laplace(0, 3, (4, 1, 3, 3)))),
        _scalar("conv.bias", rng.integers(-3, 3, 4)),
        _scalar("fc.weight", np.rint(rng.laplace(0, 2, (10, 256))), step=0.03125),
        _raw("fc.bias", rng.random(10).astype(np.float32)),
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
    return encode_container(EprContents(manifest, _model(graph), records))[0]


def builtin_seeds() -> list[bytes]:
    """Four small valid files covering raw, scalar, rdft, masks, subgraphs, alignment, and one
    whose every manifest key a tool reads is set (the digits model `eval` runs)."""
    rng = np.random.default_rng(20240607)
    seeds = [_mlp_seed(rng), _conv_seed(rng), _branch_seed(rng), _digits_seed(rng)]
    for index, seed in enumerate(seeds):
        report = validate_bytes(seed)
        if not report.valid:  # fuzzing from an invalid seed would prove nothing
            problems = [violation.describe() for violation in report.violations]
            raise RuntimeError(f"builtin seed {index} is not valid: {problems}")
    return seeds


def load_seeds(seeds_dir: Path | None) -> list[tuple[str, bytes]]:
    """Builtin seeds, then every valid *.epr of `seeds_dir` by name (invalid ones skipped)."""
    named = [(f"builtin:{index}", data) for index, data in enumerate(builtin_seeds())]
    if seeds_dir is None or not seeds_dir.is_dir():
        return named
    for path in sorted(seeds_dir.glob("*.epr")):
        data = path.read_bytes()
        report = validate_bytes(data, source=str(path))
        if not report.valid:
            print(
                f"warning: seed {path} is not valid, skipped: {report.violations[0].describe()}",
                file=sys.stderr,
            )
            continue
        named.append((str(path.relative_to(ROOT) if path.is_relative_to(ROOT) else path), data))
    return named


# --- strategies 1-3: plain byte mutations ---------------------------------------------------

Mutator = Callable[[random.Random, Seed, Sequence[Seed]], bytes]


def flip_bits(rng: random.Random, data: bytes, most: int = 8) -> bytes:
    """1..`most` random bit flips: the checksums must catch them, or the parsers."""
    out = bytearray(data)
    bits = range(8 * len(out))
    for position in rng.sample(bits, min(rng.randint(1, most), len(bits))):  # distinct bits
        out[position // 8] ^= 1 << (position % 8)
    return bytes(out)


def bit_flips(rng: random.Random, seed: Seed, seeds: Sequence[Seed]) -> bytes:
    """Strategy 1: flip 1..8 bits anywhere in the file."""
    return flip_bits(rng, seed.data)


def truncation(rng: random.Random, seed: Seed, seeds: Sequence[Seed]) -> bytes:
    """Strategy 2: the file cut at a random length (empty included)."""
    return seed.data[: rng.randrange(len(seed.data))]


def splice_bytes(rng: random.Random, data: bytes, donor: bytes) -> bytes:
    """A random slice of `donor` inserted into, or written over, `data` at a random place."""
    start = rng.randrange(len(donor))
    piece = donor[start : start + rng.choice((1, 4, 16, 64, len(donor)))]
    at = rng.randrange(len(data) + 1)
    if rng.random() < 0.5:
        return data[:at] + piece + data[at:]
    return data[:at] + piece + data[at + len(piece) :]


def splice(rng: random.Random, seed: Seed, seeds: Sequence[Seed]) -> bytes:
    """Strategy 3: copy a slice of this file or another seed into a random position."""
    return splice_bytes(rng, seed.data, rng.choice(seeds).data)


# --- strategy 4: size fields ----------------------------------------------------------------

U32_EDGES = (0, 1, 2, 0x7FFFFFFF, 1 << 31, 0xFFFFFFFF)
VARINT_EDGES = (
    0, 1, 2, 127, 128, 255, 4096, 4097, 1 << 20, (1 << 20) + 1, (1 << 31) - 1, 1 << 31,
    (1 << 32) - 1, 1 << 32, 1 << 40, (1 << 63) - 1, 1 << 63, (1 << 64) - 1,
)  # fmt: skip
HOSTILE_VARINTS = (
    b"\x80\x00",  # non-minimal zero
    b"\xff" * 9 + b"\x01",  # 2**64 - 1, the largest legal
    b"\xff" * 9 + b"\x02",  # over 64 bits
    b"\xff" * 11,  # longer than 10 bytes, unterminated
    b"\x80",  # ends inside the varint
    b"\x81\x80\x80\x80\x80\x80\x80\x80\x80\x00",  # non-minimal, 10 bytes
)


def _edge(rng: random.Random, current: int, edges: Sequence[int], top: int) -> int:
    """A boundary value, or one next to the current value, within [0, top]."""
    near = (current - 1, current + 1, 2 * current, current + 256)
    value = rng.choice((*edges, *near, rng.randrange(top + 1)))
    return min(max(value, 0), top)


def edit_section_length(rng: random.Random, seed: Seed) -> bytes:
    """A section-table length (or the section count) rewritten; the header CRC usually fixed."""
    out = bytearray(seed.data)
    count = len(seed.container.sections)
    if rng.random() < 0.15:
        value = rng.choice((0, 1, 2, count - 1, count + 1, 0xFFFF))
        struct.pack_into("<H", out, 12, value)
    else:
        at = 16 + 16 * rng.randrange(count) + 8
        current = struct.unpack_from("<I", out, at)[0]
        struct.pack_into("<I", out, at, _edge(rng, current, U32_EDGES, 0xFFFFFFFF))
    if rng.random() < 0.9:
        reseal_header(out)
    return bytes(out)


def edit_tens_varint(rng: random.Random, seed: Seed) -> bytes:
    """A TENS varint (count, name length, dim, alphabet, word count...) set to an edge value."""
    tens = seed.container.body(b"TENS")
    target = rng.choice([f for f in seed.fields if f.what != "record"])
    if rng.random() < 0.2:
        encoded = rng.choice(HOSTILE_VARINTS)
    else:
        current = ByteReader(tens[target.start : target.end]).read_uvarint()
        encoded = uvarint(_edge(rng, current, VARINT_EDGES, (1 << 64) - 1))
    body = tens[: target.start] + encoded + tens[target.end :]
    return assemble(seed.container.with_body(b"TENS", body))


def size_fields(rng: random.Random, seed: Seed, seeds: Sequence[Seed]) -> bytes:
    """Strategy 4: boundary values in section lengths and TENS varints."""
    if rng.random() < 0.3:
        return edit_section_length(rng, seed)
    return edit_tens_varint(rng, seed)


# --- strategy 5: deep mutations behind correct checksums ------------------------------------

INTERESTING_U8 = (0x00, 0x01, 0x02, 0x03, 0x07, 0x08, 0x09, 0x7F, 0x80, 0xFF)
INTERESTING_U16 = (0x0000, 0x0001, 0x3C00, 0x7BFF, 0x7C00, 0x7E00, 0xFC00, 0xFFFF)  # f16 edges
_COMPRESSOR = zstandard.ZstdCompressor(level=3, write_content_size=True)


def zstd(content: bytes) -> bytes:
    """A well-formed frame declaring its size, as the spec wants (any level will do)."""
    return _COMPRESSOR.compress(content)


def mutate_bytes(rng: random.Random, data: bytes) -> bytes:
    """One structure-blind edit: flips, an edge value, or bytes inserted, deleted, doubled."""
    op = rng.choice(("flip", "u8", "u16", "u32", "insert", "delete", "duplicate"))
    if op == "flip" or not data:
        return flip_bits(rng, data) if data else bytes([rng.randrange(256)])
    out, at = bytearray(data), rng.randrange(len(data))
    if op == "u8":
        out[at] = rng.choice(INTERESTING_U8)
    elif op in ("u16", "u32"):
        width, edges = (2, INTERESTING_U16) if op == "u16" else (4, U32_EDGES)
        at = max(0, min(at, len(out) - width))
        out[at : at + width] = rng.choice(edges).to_bytes(width, "little")[: len(out) - at]
    elif op == "insert":
        out[at:at] = rng.randbytes(rng.choice((1, 2, 4, 8, 32)))
    elif op == "delete":
        del out[at : at + rng.choice((1, 2, 4, 8, 32))]
    else:
        length = rng.choice((1, 4, 16, 64))
        out[at:at] = out[at : at + length]
    return bytes(out)


def _name_span(record: bytes) -> tuple[int, int]:
    reader = ByteReader(record)
    length = reader.read_uvarint()
    return reader.pos, reader.pos + length


def mutate_records(rng: random.Random, seed: Seed) -> bytes:
    """Whole TENS records dropped, doubled, swapped or renamed, the record count kept right."""
    tens = seed.container.body(b"TENS")
    records = [tens[f.start : f.end] for f in seed.fields if f.what == "record"]
    op = rng.choice(("drop", "duplicate", "swap", "rename"))
    index = rng.randrange(len(records))
    if op == "drop":
        del records[index]
    elif op == "duplicate":
        records.insert(rng.randrange(len(records) + 1), records[index])
    elif op == "swap":
        other = rng.randrange(len(records))
        records[index], records[other] = records[other], records[index]
    else:
        start, end = _name_span(records[index])
        other = records[rng.randrange(len(records))]
        name = other[slice(*_name_span(other))]
        name = rng.choice((name, mutate_bytes(rng, name), b"\xff\xfe", b"x" * (end - start)))
        records[index] = uvarint(len(name)) + name + records[index][end:]
    count = len(records) + (0 if rng.random() < 0.85 else rng.choice((-1, 1)))
    body = uvarint(max(count, 0)) + b"".join(records)
    return assemble(seed.container.with_body(b"TENS", body))


STRUCTURE_EDITS = (
    "order", "optional", "required", "drop", "twice", "flags", "tag", "minor", "major",
    "alignment", "header-flags", "empty",
)  # fmt: skip


def _printable_tag(rng: random.Random) -> bytes:
    return bytes(rng.randrange(0x21, 0x7F) for _ in range(4))


def mutate_structure(rng: random.Random, seed: Seed) -> bytes:
    """Container-level edits with correct CRCs; several (order, optional sections) are legal."""
    box = seed.container
    sections = list(box.sections)
    index = rng.randrange(len(sections))
    op = rng.choice(STRUCTURE_EDITS)
    if op == "order":
        rng.shuffle(sections)
    elif op in ("optional", "required"):
        extra = Section(_printable_tag(rng), int(op == "required"), rng.randbytes(rng.randrange(9)))
        sections.insert(rng.randrange(len(sections) + 1), extra)
    elif op == "drop":
        del sections[index]
    elif op == "twice":
        sections.insert(rng.randrange(len(sections) + 1), sections[index])
    elif op == "flags":
        flags = rng.choice((0, 2, 3, 0x80000001, 0xFFFFFFFF))
        sections[index] = replace(sections[index], flags=flags)
    elif op == "tag":
        tag = rng.choice((b"ME A", b"ET\x00A", b"\x7fTEN", b"GR\xffH", b"meta", b"TENS"))
        sections[index] = replace(sections[index], tag=tag)
    elif op == "empty":
        sections[index] = replace(sections[index], body=b"")
    else:
        value = {
            "minor": rng.choice((1, 7, 0xFFFF)),
            "major": rng.choice((0, 2, 0xFFFF)),
            "alignment": rng.choice((1, 2, 6, 12, 13, 255)),
            "header-flags": rng.choice((1, 0x80, 0xFF)),
        }[op]
        name = {"header-flags": "flags"}.get(op, op)
        box = replace(box, **{name: value})
    return assemble(replace(box, sections=tuple(sections)))


def mutate_inflated(rng: random.Random, seed: Seed) -> bytes:
    """Edit the manifest text or graph protobuf itself, then re-compress: reaches the parsers."""
    tag, content = rng.choice(((b"META", seed.manifest_json), (b"GRPH", seed.graph)))
    for _ in range(rng.choice((1, 1, 2, 4))):
        content = mutate_bytes(rng, content)
    return assemble(seed.container.with_body(tag, zstd(content)))


def mutate_body(rng: random.Random, seed: Seed) -> bytes:
    """Edit the stored bytes of one section (mostly TENS), then fix its CRC."""
    tag = rng.choice((b"TENS", b"TENS", b"TENS", b"META", b"GRPH"))
    body = seed.container.body(tag)
    for _ in range(rng.choice((1, 1, 2, 3))):
        body = mutate_bytes(rng, body)
    return assemble(seed.container.with_body(tag, body))


def deep(rng: random.Random, seed: Seed, seeds: Sequence[Seed]) -> bytes:
    """Strategy 5: mutations that recompute the CRCs, so they reach the section parsers."""
    mutation = rng.choices(
        (mutate_body, mutate_records, mutate_structure, mutate_inflated), weights=(5, 2, 2, 3)
    )[0]
    return mutation(rng, seed)


# --- strategy 6: hostile zstd frames --------------------------------------------------------


@dataclass(frozen=True)
class Frame:
    """A zstd frame header taken apart (RFC 8878 3.1.1), to rebuild it with other claims."""

    single_segment: bool
    checksum: bool
    window_byte: int | None
    dict_id: int | None
    content_size: int | None
    blocks: bytes  # everything after the header, checksum included

    @classmethod
    def parse(cls, frame: bytes) -> Frame:
        descriptor = frame[4]
        single = bool(descriptor & 0x20)
        at = 5
        window = None if single else frame[at]
        at += 0 if single else 1
        dict_len = (0, 1, 2, 4)[descriptor & 3]
        dict_id = int.from_bytes(frame[at : at + dict_len], "little") if dict_len else None
        at += dict_len
        fcs_len = (1 if single else 0, 2, 4, 8)[descriptor >> 6]
        size = int.from_bytes(frame[at : at + fcs_len], "little") if fcs_len else None
        if fcs_len == 2:
            size += 256
        return cls(single, bool(descriptor & 4), window, dict_id, size, frame[at + fcs_len :])

    def build(self) -> bytes:
        """The frame with 8-byte content size and 4-byte dictionary fields where present."""
        single = self.single_segment and self.content_size is not None
        descriptor = (3 << 6 if self.content_size is not None else 0) | (0x20 if single else 0)
        descriptor |= (4 if self.checksum else 0) | (3 if self.dict_id is not None else 0)
        out = ZSTD_MAGIC + bytes([descriptor])
        if not single:  # 0x58: exponent 11, a 2 MiB window
            out += bytes([self.window_byte if self.window_byte is not None else 0x58])
        if self.dict_id is not None:
            out += self.dict_id.to_bytes(4, "little")
        if self.content_size is not None:
            out += self.content_size.to_bytes(8, "little")
        return out + self.blocks


def zero_frame(size: int, prefix: bytes = b"") -> bytes:
    """`prefix` then zeros, `size` bytes in all, compressed in chunks: never held in memory."""
    compressor = zstandard.ZstdCompressor(level=1, write_content_size=True)
    stream = compressor.compressobj(size=size)
    parts, left, chunk = [stream.compress(prefix)], size - len(prefix), bytes(1 << 20)
    while left > 0:
        parts.append(stream.compress(chunk[: min(left, len(chunk))]))
        left -= len(chunk)
    return b"".join(parts) + stream.flush()


_BOMBS: dict[tuple[str, str], bytes] = {}


def bomb(kind: str, seed: Seed) -> bytes:
    """Cached small frames that inflate hugely: zeros, or a real graph with a giant doc_string."""
    key = (kind, seed.name if kind == "doc" else "")
    if key not in _BOMBS:
        if kind == "zeros":
            _BOMBS[key] = zero_frame(BOMB_BYTES)
        elif kind == "meta-limit":
            _BOMBS[key] = zero_frame(DEFAULT_LIMITS.max_manifest_bytes + 1)
        else:  # ModelProto.doc_string (field 6) appended: the model still parses
            prefix = seed.graph + b"\x32" + uvarint(DOC_BOMB_BYTES)
            _BOMBS[key] = zero_frame(len(prefix) + DOC_BOMB_BYTES, prefix)
    return _BOMBS[key]


FRAME_VARIANTS = (
    "bomb", "doc-bomb", "meta-limit", "no-size", "huge-size", "lie-low", "lie-high",
    "trailing", "concatenated", "skippable-after", "skippable-before", "garbage", "truncated",
    "dictionary", "checksum", "window", "reserved-bit", "empty",
)  # fmt: skip


def skippable(rng: random.Random) -> bytes:
    """A skippable frame (magic 0x184D2A5?): legal zstd, but not allowed in a section."""
    payload = rng.randbytes(rng.randrange(16))
    magic = bytes([0x50 + rng.randrange(16)]) + SKIPPABLE_MAGIC[1:]
    return magic + struct.pack("<I", len(payload)) + payload


def hostile_frame(
    rng: random.Random, content: bytes, limit: int, bomb_of: Callable[[str], bytes]
) -> bytes:
    """One frame the spec says a consumer must reject, or must inflate within its bounds."""
    frame = zstd(content)
    parsed = Frame.parse(frame)
    variant = rng.choice(FRAME_VARIANTS)
    if variant in ("bomb", "doc-bomb", "meta-limit"):
        return bomb_of({"bomb": "zeros", "doc-bomb": "doc"}.get(variant, variant))
    if variant == "no-size":
        return zstandard.ZstdCompressor(write_content_size=False).compress(content)
    if variant == "huge-size":
        size = rng.choice((limit + 1, 1 << 32, 1 << 63, (1 << 64) - 1))
        return replace(parsed, content_size=size).build()
    if variant in ("lie-low", "lie-high"):
        delta = rng.choice((1, 2, 100)) * (-1 if variant == "lie-low" else 1)
        return replace(parsed, content_size=max(len(content) + delta, 0)).build()
    if variant == "trailing":
        return frame + rng.randbytes(rng.randint(1, 16))
    if variant == "concatenated":
        return frame + rng.choice((frame, zstd(b""), zstd(b"{}")))
    if variant == "skippable-after":
        return frame + skippable(rng)
    if variant == "skippable-before":
        return skippable(rng) + frame
    if variant == "garbage":
        return ZSTD_MAGIC + rng.randbytes(rng.randrange(64))
    if variant == "truncated":
        return frame[: rng.randrange(len(frame))]
    if variant == "dictionary":
        return replace(parsed, dict_id=rng.choice((1, 0x8000, 0xFFFFFFFF))).build()
    if variant == "checksum":
        return zstandard.ZstdCompressor(write_checksum=True, write_content_size=True).compress(
            content
        )
    if variant == "window":  # exponent up to 31: windows of up to 2**41 bytes
        window = (rng.choice((17, 18, 20, 31)) << 3) | rng.randrange(8)
        return replace(parsed, single_segment=False, window_byte=window).build()
    if variant == "reserved-bit":
        return frame[:4] + bytes([frame[4] | 0x08]) + frame[5:]
    return zstd(b"")


def zstd_frames(rng: random.Random, seed: Seed, seeds: Sequence[Seed]) -> bytes:
    """Strategy 6: hostile frames in META or GRPH behind correct CRCs."""
    tag = rng.choice((b"META", b"GRPH"))
    content = seed.manifest_json if tag == b"META" else seed.graph
    limit = DEFAULT_LIMITS.max_manifest_bytes if tag == b"META" else DEFAULT_LIMITS.max_graph_bytes
    frame = hostile_frame(rng, content, limit, lambda kind: bomb(kind, seed))
    return assemble(seed.container.with_body(tag, frame))


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
    return helper.make_graph(nodes, name, [], [_io(f"{name}_out", [1])], list(initializers))


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
    return assemble(seed.container.with_body(b"GRPH", zstd(make(rng, seed))))


# --- strategy 8: hostile manifests ----------------------------------------------------------

NORMALIZATIONS = (
    True, None, [], {}, {"mean": "x", "std": [1]}, {"mean": [1]}, {"std": [1]},
    {"mean": [1, 2, 3], "std": [1]}, {"mean": [], "std": []}, {"mean": [[1]], "std": [[1]]},
    {"mean": [None], "std": [1]}, {"mean": [1e308], "std": [1e-308]},
    {"mean": {"a": 1}, "std": [1]}, {"mean": [0.5, 0.5], "std": [0, 0]},
)  # fmt: skip
JSON_VALUES = (
    '"\\ud800"', '"\\udc00x"', "NaN", "Infinity", "-Infinity", "1e400", "-1e400", "1e-400",
    "9" * 4300, "9" * 4301, '"\\u0000"', "[" * 100 + "]" * 100, "[" * 5000 + "]" * 5000,
    '{"a":1,"a":2}', "[1,]", "tru", '"unterminated', "01", "-0", "1.0e+2",
)  # fmt: skip
WHOLE_TEXTS = (
    b"", b"[]", b"1", b'"x"', b"null", b"\xff",
    b'{"a":"\xc3"}', b"\xef\xbb\xbf{}", b'{"\\ud800":1}', b"{} ", b"{}{}",
)  # fmt: skip


def _canonical(value: object) -> bytes:
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return text.encode()


def hostile_manifest(rng: random.Random, seed: Seed) -> bytes:
    """Manifest text: odd types where the decoder reads keys, and JSON edge cases."""
    manifest = json.loads(seed.manifest_json)
    variant = rng.choice(("input", "normalization", "types", "value", "whole", "format", "extra"))
    if variant == "input":
        manifest["input"] = rng.choice(([], "x", 1, None, True, {}, {"normalization": 1}))
    elif variant == "normalization":
        manifest.setdefault("input", {})["normalization"] = rng.choice(NORMALIZATIONS)
    elif variant == "types":
        key = rng.choice(("output", "metrics", "architecture", "dataset", "producer"))
        manifest[key] = rng.choice(([1, [2]], "x", None, {"a": {"b": []}}, 1.5, -1))
    elif variant == "value":  # "~" sorts last, so the text stays canonical around it
        return seed.manifest_json[:-1] + b',"~":' + rng.choice(JSON_VALUES).encode() + b"}"
    elif variant == "whole":
        return rng.choice(WHOLE_TEXTS)
    elif variant == "format":
        return json.dumps(manifest, indent=rng.choice((None, 1)), sort_keys=False).encode()
    else:
        manifest[rng.choice(("zz", "a", "é"))] = rng.choice((1, "v", [], {}))
    return _canonical(manifest)


def manifests(rng: random.Random, seed: Seed, seeds: Sequence[Seed]) -> bytes:
    """Strategy 8: hostile manifest JSON in META, the frame and CRCs correct."""
    return assemble(seed.container.with_body(b"META", zstd(hostile_manifest(rng, seed))))


# --- strategy 9: typed manifest lies --------------------------------------------------------

# Aimed at eprpipe/manifest.py's schema: each key's wrong types, and values on both sides of
# its bounds (shape entries 8/9 and 2**24 elements per example, 65536/65537 classes, 4096/4097
# channels, test_examples 2**53, test_error 0..1); the legal ones must survive every command.

HUGE = 10**30
TYPED_LIES: tuple[tuple[tuple[str, ...], tuple[object, ...]], ...] = (
    (("input",), (5, 0, -1, 1.5, "x", "", [], [1, 2], None, True)),
    (("input", "shape"), (
        "1x8x8", 8, None, {}, [], [None], [None] * 9, [None, 1, 8, 8, 1, 1, 1, 1, 1],
        [None, "one", "x", "y"], [None, "1", "8", "8"], [1, None, 8, 8], [None, None, 8, 8],
        [None, 1, 8, None], [None, 0, 8, 8], [None, 1, 0, 0], [None, 1, -28, 0],
        [None, -1, 8, 8], [None, 1, 100000, 100000], [None, 1, 30000, 30000],
        [None, 1, 1500, 1500], [None, 1, 8.0, 8], [None, 1.5, 8, 8], [None, 1, 8.5, 8],
        [None, True, 8, 8], [None, 1, False, 8], [None, 1, 2**63, 8], [None, 1, HUGE, 1],
        [None, [1], 8, 8], [None, {"c": 1}, 8, 8], [None, 1, 8, 8, 8], [None, 1, 8],
        [0, 1, 8, 8], [-1, 1, 8, 8], ["batch", 1, 8, 8], [None, 3, 8, 8], [None, 4096, 1, 1],
        [None, 1, 1, 1], [1, 1, 8, 8], [None, 1, 4096, 4096], [None, 1, 4097, 4096],
        [None, 1, 1, 1, 1, 1, 1, 1],
    )),
    (("input", "name"), (5, None, "", ["input"], "not-an-input")),
    (("input", "normalization"), (5, "x", [], {}, None, [0.5, 0.5], {"mean": 0.5, "std": 0.5})),
    (("input", "normalization", "mean"), (
        "x", 0.5, [], [1, 2], ["0.5"], [None], [True], [1e308], [-1e308], [[0.5]], [0.5] * 4096,
        [0.5] * 4097, [3.5e38], [HUGE],
    )),
    (("input", "normalization", "std"), (
        [0], [0.0], [-0.0], [-1], ["1"], [1e-46], [1e39], [], [1, 2], None, [True], [[1.0]],
    )),
    (("input", "dtype"), ("float64", "int8", 5, None, ["float32"])),
    (("input", "layout"), ("NHWC", 1, None, ["NCHW"])),
    (("input", "range"), ([1.0, 0.0], [0, 0], [0, 255], "0..1", [0.0], [None, 1], [0.0, 1e308])),
    (("output",), (5, "logits", [], None, True, [["a"]])),
    (("output", "classes"), (
        10, "0123456789", [], [1, 2, 3], [None], [["a"]], [True, False], {"0": "a"},
        ["a", "a"], [""], [str(d) for d in range(7)], [str(d) for d in range(11)],
        ["c"] * 65536, ["c"] * 65537,
    )),
    (("output", "kind"), ("probabilities", "embedding", 5, None, "", ["logits"])),
    (("output", "name"), (5, None, "", "not-an-output")),
    (("metrics",), ("x", 5, [], None, True, [0.1])),
    (("metrics", "test_error"), (
        "abc", "0.1", True, False, None, -0.1, 2.0, 1e308, -1e308, [0.1], {}, 5, HUGE, 0, 1,
        1.0000000000000002, 5e-324,
    )),
    (("metrics", "test_examples"), (
        "360", -1, 0, 1.5, True, None, 2**70, [360], 1e308, 2**53, 2**53 + 1,
    )),
    (("metrics", "dataset"), (5, None, [], {"a": 1}, "")),
    (("metrics", "baseline_test_error"), ("x", True, -1, 3.0, [], {}, None, 0)),
    (("untrained_tensors",), (
        "bn.running_mean", 5, [1, 2], [None], {}, [["a"]], ["no-such-tensor"], True, ["a", "a"],
    )),
    (("architecture",), (5, [], {}, None, "", "a" * 10000, "line\nbreak\u2028")),
    (("dataset",), (5, [], {}, None, "no-such-dataset")),
    (("producer",), (5, [], {}, None)),
    (("training",), ("x", 5, [], {"lambda": "x", "epochs": -1, "seed": 2**70})),
)  # fmt: skip
DELETIONS = (
    ("metrics", "test_examples"), ("metrics", "test_error"), ("metrics", "dataset"),
    ("input", "shape"), ("input", "name"), ("input", "normalization", "std"),
    ("output", "classes"), ("output", "kind"),
)  # fmt: skip


def nested(depth: int, leaf: object) -> object:
    """`leaf` inside `depth` lists: garbage that parses and is canonical."""
    for _ in range(depth):
        leaf = [leaf]
    return leaf


def set_path(manifest: dict, path: Sequence[str], value: object) -> None:
    """manifest[path[0]]...[path[-1]] = value, making (or overwriting) dicts on the way."""
    node = manifest
    for key in path[:-1]:
        if not isinstance(node.get(key), dict):
            node[key] = {}
        node = node[key]
    node[path[-1]] = value


def delete_path(manifest: dict, path: Sequence[str]) -> None:
    """Remove the key at `path`, keeping its parents (a metrics object without test_examples)."""
    node = manifest
    for key in path[:-1]:
        node = node.get(key)
        if not isinstance(node, dict):
            return
    node.pop(path[-1], None)


def typed_lie(rng: random.Random, manifest: dict) -> None:
    """One lie about a key a consumer reads: a wrong type or range, a missing member, garbage."""
    roll = rng.random()
    if roll < 0.75:
        path, values = rng.choice(TYPED_LIES)
        set_path(manifest, path, rng.choice(values))
    elif roll < 0.9:
        delete_path(manifest, rng.choice(DELETIONS))
    else:
        path = rng.choice(TYPED_LIES)[0]
        set_path(manifest, path, nested(rng.choice((2, 20, 200)), rng.choice((1, "x", None, {}))))


def typed_manifest(rng: random.Random, seed: Seed, seeds: Sequence[Seed]) -> bytes:
    """Strategy 9: 1-3 typed lies in the keys eprpipe's tools read (input, output, metrics,
    untrained_tensors...), in canonical JSON so the case reaches the typed checks."""
    manifest = json.loads(seed.manifest_json)
    for _ in range(rng.choice((1, 1, 1, 2, 3))):
        typed_lie(rng, manifest)
    return assemble(seed.container.with_body(b"META", zstd(_canonical(manifest))))


# --- strategy 10: padding-bought element allowance ------------------------------------------

# A reader that accepts these spends about 25 bytes per element (int64 latents, float64 and
# float32 weights, the ONNX copy): these caps keep one accepted case near 200 MB per command.
MAX_PADDED_ELEMENTS = 1 << 23
MAX_RDFT_ELEMENTS = 1 << 22
MAX_FILLER_BYTES = 384 << 10
RDFT_SIDES = (2, 3, 5, 7, 16, 32, 64)


def constant_record(name: bytes, dims: Sequence[int], rdft: bool, value: int) -> bytes:
    """A coded record whose one group is CONSTANT: two bytes of latents for any element count."""
    head = uvarint(len(name)) + name + bytes([2 if rdft else 1, len(dims)])
    head += b"".join(uvarint(d) for d in dims)
    context = {"dims": list(dims), "kind": 2 if rdft else 1}
    if rdft:
        steps = np.full(dims[2] * dims[3], 0.0625, dtype=np.float16)
        body = RDFT_BODY.write({"steps": steps, "layout": 0}, context)
    else:
        body = SCALAR_BODY.write({"step": np.float16(0.25), "layout": 0}, context)
    return head + body + b"\x00" + svarint(value)


def padded_dims(rng: random.Random, elements: int, rdft: bool) -> list[int]:
    """A shape of about `elements` elements (at least that many): 1-D, 2-D, or rdft kernels."""
    if rdft:
        side = rng.choice(RDFT_SIDES)
        kw = side if side > 2 else rng.choice((1, 2))
        kh = max(side, 2) if kw == 1 else side
        inner = rng.choice((1, 3, 16, 64))
        return [-(-elements // (inner * kh * kw)), inner, kh, kw]
    if rng.random() < 0.5:
        return [elements]
    columns = rng.choice((3, 64, 4096))
    return [-(-elements // columns), columns]


def filler_sections(rng: random.Random, alignment: int) -> list[Section]:
    """Unknown optional sections (required flag clear): many small ones under a large
    alignment (padding), or a few large ones of zeros or random bytes."""
    kind = rng.choice(("many", "zeros", "noise", "mixed"))
    count = rng.choice((8, 32, 64)) if kind == "many" or alignment >= 9 else rng.randint(1, 3)
    sections, budget = [], MAX_FILLER_BYTES
    for index in range(count):
        if kind == "many":
            size = rng.randint(1, 16)
        else:
            size = min(budget, rng.choice((1 << 10, 16 << 10, 64 << 10, 256 << 10)))
        noise = kind == "noise" or (kind == "mixed" and rng.random() < 0.5)
        sections.append(Section(b"P%03d" % index, 0, rng.randbytes(size) if noise else bytes(size)))
        budget -= size
    return sections


def padding_allowance(rng: random.Random, seed: Seed, seeds: Sequence[Seed]) -> bytes:
    """Strategy 10: file bytes that must not buy element allowance (alignment padding, unknown
    optional sections of zeros or noise) spent on one CONSTANT record, scalar or rdft with
    kernels up to 64x64, that declares more elements than the file's core sections allow.

    Every case declares more than the allowance of the file without its padding and unknown
    sections, so a reader that does not count them rejects it (`limit-exceeded`); one that
    does accepts it. The declared elements are capped (MAX_PADDED_ELEMENTS, MAX_RDFT_ELEMENTS:
    at most ~200 MB per command if accepted) and the filler at MAX_FILLER_BYTES per case.
    """
    rdft = rng.random() < 0.4
    name = f"pad.{rng.randrange(1000)}".encode()
    alignment = rng.choice((0, 6, 9, 12, 12))
    fillers = filler_sections(rng, alignment)
    # The core sections with the new record and initializer, and every section table entry:
    # generous, so that any reader that leaves out padding and unknown sections rejects it.
    honest_bytes = len(seed.data) + 128 + 16 * (len(fillers) + 1)
    honest = DEFAULT_LIMITS.element_allowance(honest_bytes) - seed.elements
    cap = MAX_RDFT_ELEMENTS if rdft else MAX_PADDED_ELEMENTS
    excess = rng.choice((1 << 16, 1 << 18, 1 << 20, cap))
    dims = padded_dims(rng, min(max(cap, honest + 1), honest + excess), rdft)
    record = constant_record(name, dims, rdft, rng.choice((1, -3, 1 << 30)))
    box = seed.container
    tens = box.body(b"TENS")
    count = ByteReader(tens).read_uvarint()
    box = box.with_body(b"TENS", uvarint(count + 1) + tens[len(uvarint(count)) :] + record)
    if rng.random() < 0.6:  # an initializer names it: decode and eval build it too
        model = seed.model()
        model.graph.initializer.append(_weightless(name.decode(), dims))
        box = box.with_body(b"GRPH", zstd(model.SerializeToString()))
    sections = list(box.sections)
    for extra in fillers:
        sections.insert(rng.randrange(len(sections) + 1), extra)
    needed = -(-(seed.elements + math.prod(dims)) // DEFAULT_LIMITS.elements_per_byte)
    data = assemble(replace(box, alignment=alignment, sections=tuple(sections)))
    if len(data) < needed:  # top up, so that only the filler buys what the record declares
        sections.append(Section(b"PTOP", 0, bytes(needed - len(data))))
        data = assemble(replace(box, alignment=alignment, sections=tuple(sections)))
    return data


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
    box = seed.container.with_body(b"GRPH", zstd(model.SerializeToString()))
    return assemble(box.with_body(b"META", zstd(_canonical(manifest))))


# --- strategy 12: non-regular inputs and outputs --------------------------------------------

INPUT_KINDS = (
    "regular", "fifo", "fifo-writer", "symlink", "symlink-chain", "symlink-loop",
    "dangling-symlink", "char-zero", "char-null", "directory", "sparse", "sparse-tail",
)  # fmt: skip
OUTPUT_KINDS = (
    "new", "char-null", "char-zero", "fifo", "directory", "input", "symlink-to-input",
    "hardlink-to-input", "symlink-to-device", "dangling-symlink", "symlink-loop",
)  # fmt: skip
BYTES_BEHIND = ("bit-flips", "truncation", "deep", "manifest", "typed-manifest", "graph-lies")


@dataclass(frozen=True)
class FsPlan:
    """Where a filesystem case puts its bytes (input) and where `decode -o` points (output)."""

    input: str
    output: str

    def describe(self) -> str:
        return f"input {self.input}, -o {self.output}"


def draw_fs_plan(rng: random.Random) -> FsPlan:
    """Either side hostile, or both: a third of the cases keep the input a regular file."""
    plan = FsPlan(rng.choice(INPUT_KINDS), rng.choice(OUTPUT_KINDS))
    return replace(plan, input="regular") if rng.random() < 0.3 else plan


def filesystem(rng: random.Random, seed: Seed, seeds: Sequence[Seed]) -> bytes:
    """Strategy 12: the bytes behind a non-regular input or before a hostile `-o` (FsPlan,
    drawn by make_case): mostly the seed itself, so commands reach the output; else a mutant."""
    if rng.random() < 0.6:
        return seed.data
    return STRATEGIES[rng.choice(BYTES_BEHIND)](rng, seed, seeds)


STRATEGIES: dict[str, Mutator] = {
    "bit-flips": bit_flips,
    "truncation": truncation,
    "splice": splice,
    "size-fields": size_fields,
    "deep": deep,
    "zstd": zstd_frames,
    "onnx": onnx_graphs,
    "manifest": manifests,
    "typed-manifest": typed_manifest,
    "padding-allowance": padding_allowance,
    "graph-lies": graph_lies,
    "filesystem": filesystem,
}
IMAGE_TARGETED = frozenset({"typed-manifest", "graph-lies", "filesystem"})  # aimed at eval


class Case(NamedTuple):
    """One case: its family, seed index and bytes; filesystem cases also say where they go."""

    strategy: str
    seed: int
    data: bytes
    fs: FsPlan | None = None


def make_case(
    run_seed: int, index: int, seeds: Sequence[Seed], strategies: Sequence[str] = ()
) -> Case:
    """Case `index` of run `run_seed` over `strategies` (default: all), the same everywhere."""
    rng = random.Random(f"{run_seed}:{index}")
    strategy = rng.choice(sorted(strategies or STRATEGIES))
    seed_index = rng.randrange(len(seeds))
    images = [i for i, seed in enumerate(seeds) if seed.takes_images]
    if strategy in IMAGE_TARGETED and images and rng.random() < 0.75:
        seed_index = rng.choice(images)  # a seed `eval --dataset digits` runs to the end
    data = STRATEGIES[strategy](rng, seeds[seed_index], seeds)
    return Case(strategy, seed_index, data, draw_fs_plan(rng) if strategy == "filesystem" else None)


def case_strategy(run_seed: int, index: int, strategies: Sequence[str] = ()) -> str:
    """The strategy of a case without building it (for a case whose worker had to be killed)."""
    return random.Random(f"{run_seed}:{index}").choice(sorted(strategies or STRATEGIES))


# --- running cases --------------------------------------------------------------------------


class CaseTimeout(BaseException):
    """Raised by the alarm; a BaseException so that no `except Exception` can swallow it."""


@dataclass(frozen=True)
class Finding:
    """One command's misbehaviour in a case: what the summary groups and counts by command."""

    command: str
    signature: str  # without the command: type and place, or what went wrong
    error: str = ""  # the traceback, or what the command printed

    @property
    def key(self) -> str:
        return f"{self.command}: {self.signature}"


@dataclass
class CaseResult:
    case: int
    strategy: str
    seed: int  # index into the seed list, -1 if unknown
    outcome: str  # one of OUTCOMES
    seconds: float = 0.0
    size: int = 0
    rss_growth_kib: int = 0  # how far this case raised its process's peak RSS
    traced_peak: int = 0  # tracemalloc peak during validation, with --trace-memory
    code: str = ""  # the first violation code of a rejection
    signature: str = ""  # foreign exceptions and timeouts: the first finding's key, or a note
    error: str = ""  # foreign exceptions: the first finding's traceback
    findings: tuple[Finding, ...] = ()  # foreign: every command that misbehaved
    commands: tuple[str, ...] = ()  # the commands run on the file after validate_bytes
    oracle_seconds: float = 0.0  # time in those commands


def time_bound(result: CaseResult) -> float:
    """Seconds a case may take: SLOW_S, plus eval's own time limit where eval ran on it."""
    return SLOW_S + (EVAL_SECONDS if "eval" in result.commands else 0.0)


def peak_rss_kib() -> int:
    """This process's peak resident set so far, in KiB: VmHWM on Linux, since a forked
    worker's ru_maxrss starts at its parent's peak and would hide the worker's own growth."""
    try:
        with open("/proc/self/status") as status:
            line = next(row for row in status if row.startswith("VmHWM:"))
        return int(line.split()[1])
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


@contextlib.contextmanager
def watchdog(seconds: float) -> Iterator[None]:
    """Raise CaseTimeout in the body after `seconds` (main thread only: signals need it)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def fire(signum: int, frame: object) -> None:
        raise CaseTimeout(f"case ran over {seconds} s")

    previous = signal.signal(signal.SIGALRM, fire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _address_space() -> int:
    """This process's virtual size in bytes (/proc/self/statm; 0 where there is none)."""
    try:
        return int(Path("/proc/self/statm").read_text().split()[0]) * resource.getpagesize()
    except (OSError, ValueError, IndexError):
        return 0


@contextlib.contextmanager
def memory_guard(headroom: int = GUARD_BYTES) -> Iterator[None]:
    """Cap the address space at its current size plus `headroom` while the body runs, so a
    command that reads /dev/zero or allocates a 4 GiB activation fails with MemoryError (a
    finding) instead of taking the machine's memory; not used around validate_bytes, which
    turns MemoryError into a limit-exceeded rejection."""
    size = _address_space()
    if not size:
        yield
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    limit = size + headroom if hard == resource.RLIM_INFINITY else min(hard, size + headroom)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


@contextlib.contextmanager
def quiet_stderr_fd() -> Iterator[None]:
    """Send file descriptor 2 (onnxruntime's C++ log) to /dev/null while the body runs."""
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def signature(error: BaseException) -> str:
    """What makes two foreign exceptions one bug: the type, where it was raised, and the
    innermost eprpipe frame that let it through (messages vary with the bytes, so not them)."""
    frames = traceback.extract_tb(error.__traceback__)
    ours = [f for f in frames if "eprpipe" in Path(f.filename).parts]
    places = [frames[-1], *ours[-1:]] if frames else []
    where = " via ".join(dict.fromkeys(f"{Path(f.filename).name}:{f.lineno}" for f in places))
    return f"{type(error).__name__} at {where or '?'}"


def validate_case(data: bytes) -> tuple[str, str, str, str]:
    """(outcome, first violation code, signature, traceback) of validating `data`."""
    try:
        with watchdog(CASE_TIMEOUT_S), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # numpy overflow warnings are not findings
            report = validate_bytes(data)
    except CaseTimeout:
        return "timeout", "", f"stopped by the alarm after {CASE_TIMEOUT_S:.0f} s", ""
    except Exception as error:  # the finding this tool exists for
        return "foreign", "", signature(error), traceback.format_exc()
    if not isinstance(report, Report):
        return "foreign", "", f"returned {type(report).__name__}", ""
    code = report.violations[0].code if report.violations else ""
    return ("accepted" if report.valid else "rejected"), code, "", ""


@dataclass(frozen=True)
class Ran:
    """What one in-process `eprpipe` command did: its exit code, or why it has none."""

    command: str
    code: int | None = None
    stderr: str = ""
    finding: Finding | None = None
    timed_out: bool = False
    blocked: bool = False  # timed out having used almost no CPU: waiting, not working
    stdout: str = ""


def argv_of(command: str, path: Path, out: Path) -> list[str]:
    """The `eprpipe` arguments of `command` on input `path` (decode writes to `out`)."""
    words = command.split()
    if words[0] == "decode":
        return ["decode", str(path), "-o", str(out)]
    if words[0] == "eval":
        return ["eval", str(path), "--dataset", EVAL_DATASET, *EVAL_LIMITS]
    return [*words, str(path)]


@functools.cache
def _parser() -> argparse.ArgumentParser:
    return _build_parser()


_build_parser = cli.build_parser


@contextlib.contextmanager
def parser_built_once() -> Iterator[None]:
    """cli.main with its argument parser built once per process, not per call: building it
    costs 3 ms, more than most commands on a small file; parsing and running are untouched."""
    cli.build_parser = _parser
    try:
        yield
    finally:
        cli.build_parser = _build_parser


def run_command(command: str, path: Path, out: Path, seconds: float) -> Ran:
    """Run `eprpipe COMMAND` in this process, its output captured and discarded; anything but
    an exit code 0/1/2 is a finding, and so is a traceback printed on stderr."""
    stdout, stderr = io.StringIO(), io.StringIO()
    cpu = time.process_time()
    try:
        with watchdog(max(seconds, 0.01)), quiet_stderr_fd(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with (
                contextlib.redirect_stdout(stdout),
                contextlib.redirect_stderr(stderr),
                parser_built_once(),
            ):
                code = cli.main(argv_of(command, path, out))
    except CaseTimeout:
        blocked = time.process_time() - cpu < BLOCKED_CPU_SHARE * seconds
        return Ran(command, None, stderr.getvalue(), None, True, blocked)
    except (Exception, SystemExit) as error:
        finding = Finding(command, signature(error), traceback.format_exc())
        return Ran(command, None, stderr.getvalue(), finding)
    text = stderr.getvalue()
    finding = None
    if "Traceback (most recent call last)" in text:
        finding = Finding(command, "printed a traceback", text)
    elif code not in (0, 1, 2):
        finding = Finding(command, f"returned {code!r}", text)
    return Ran(command, code, text, finding, stdout=stdout.getvalue())


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else ""


class Oracle:
    """Every other command on a file validate_bytes accepts: none may raise or print a
    traceback; info, info --json and decode must succeed (the file is valid), info --json
    printing JSON."""

    def __init__(self, workdir: Path, eval_every: int) -> None:
        self.path = workdir / "case.epr"
        self.out = workdir / "out.onnx"
        self.eval_every = eval_every

    def commands(self, index: int, strategy: str) -> tuple[str, ...]:
        """eval on every case of a family aimed at it, else on every eval_every-th case."""
        evaluate = strategy in IMAGE_TARGETED or index % self.eval_every == 0
        return ORACLE_COMMANDS if evaluate else ORACLE_COMMANDS[:-1]

    def run(self, data: bytes, commands: Sequence[str], deadline: float) -> tuple[str, list]:
        """('accepted' or 'timeout', findings) after running `commands` on `data`."""
        self.path.write_bytes(data)
        findings = []
        with memory_guard():
            for command in commands:
                ran = run_command(command, self.path, self.out, deadline - time.perf_counter())
                if ran.timed_out:
                    return "timeout", [*findings, Finding(command, ALARM)]
                finding = ran.finding or self._disagrees(ran)
                if finding is not None:
                    findings.append(finding)
        left = sorted(p.name for p in self.path.parent.iterdir() if p not in (self.path, self.out))
        if left:
            findings.append(Finding("decode", "left a file behind", ", ".join(left)))
        self.out.unlink(missing_ok=True)
        return "accepted", findings

    @staticmethod
    def _disagrees(ran: Ran) -> Finding | None:
        """info and decode fail, or info --json prints no JSON, on a file validate accepts."""
        if ran.code != 0 and ran.command != "eval":
            note = f"exit {ran.code} on a file validate accepts"
            return Finding(ran.command, note, _first_line(ran.stderr))
        if ran.command == "info --json":
            try:
                json.loads(ran.stdout)
            except ValueError as error:
                return Finding(ran.command, "printed no JSON", str(error))
        return None


class FifoWriter:
    """Serves `data` to each reader that opens the FIFO, until stopped; never blocks on open
    (O_NONBLOCK fails with ENXIO while nobody reads), so a command that refuses the FIFO
    without opening it leaves no thread stuck."""

    def __init__(self, path: Path, data: bytes) -> None:
        self.path, self.data = path, data
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.stopping.is_set():
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_NONBLOCK)
            except OSError:
                time.sleep(0.001)
                continue
            os.set_blocking(fd, True)
            with contextlib.suppress(OSError), os.fdopen(fd, "wb") as pipe:
                pipe.write(self.data)  # an OSError: the reader stopped reading, its business

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(timeout=5)


DEVICES = {"null": 3, "zero": 5}  # minor numbers of the memory devices (major 1)


def make_device(path: Path, name: str) -> None:
    """A copy of /dev/`name` at `path` (mknod: root only); else a link to the real one, which a
    process that may not mknod may not replace either (/dev is not writable to it)."""
    try:
        os.mknod(path, 0o666 | stat.S_IFCHR, os.makedev(1, DEVICES[name]))
    except PermissionError:
        path.symlink_to(f"/dev/{name}")


def make_input(root: Path, kind: str, source: Path) -> Path:
    """The input node of `kind` in `root`; `source` is a regular file holding the case's bytes."""
    path = root / "in.epr"
    if kind == "regular":
        return source
    if kind in ("fifo", "fifo-writer"):
        os.mkfifo(path)
    elif kind == "symlink":
        path.symlink_to(source.name)
    elif kind == "symlink-chain":
        for link, target in (("l1", "l2"), ("l2", "l3"), ("l3", source.name)):
            (root / link).symlink_to(target)
        path.symlink_to("l1")
    elif kind == "symlink-loop":
        (root / "loop.epr").symlink_to("in.epr")
        path.symlink_to("loop.epr")
    elif kind == "dangling-symlink":
        path.symlink_to("missing.epr")
    elif kind in ("char-zero", "char-null"):
        make_device(path, kind.removeprefix("char-"))
    elif kind == "directory":
        path.mkdir()
    else:  # 1 GiB that takes no space: zeros, or the case's bytes and then zeros
        with open(path, "wb") as handle:
            handle.write(source.read_bytes() if kind == "sparse-tail" else b"")
            handle.truncate(SPARSE_BYTES)
    return path


def make_output(root: Path, kind: str, inp: Path, source: Path) -> Path:
    """The node `decode -o` names: nothing, a device copy, a FIFO, a directory, the input..."""
    path = root / "out.onnx"
    if kind == "input":
        return inp
    if kind in ("char-null", "char-zero"):
        make_device(path, kind.removeprefix("char-"))
    elif kind == "fifo":
        os.mkfifo(path)
    elif kind == "directory":
        path.mkdir()
    elif kind == "symlink-to-input":
        path.symlink_to(inp.name)
    elif kind == "hardlink-to-input" and os.path.realpath(inp) == os.path.realpath(source):
        os.link(source, path)
    elif kind == "symlink-to-device":
        make_device(root / "null.dev", "null")
        path.symlink_to("null.dev")
    elif kind == "dangling-symlink":
        path.symlink_to("missing.onnx")
    elif kind == "symlink-loop":
        path.symlink_to("out.onnx")
    return path


Snapshot = dict[str, tuple[int, int, int]]  # name: (inode, file type, size)


def snapshot(root: Path) -> Snapshot:
    """Every node under `root`, links not followed."""
    nodes = {}
    for directory, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(directory, name)
            status = path.lstat()
            nodes[str(path.relative_to(root))] = (
                status.st_ino,
                stat.S_IFMT(status.st_mode),
                status.st_size,
            )
    return nodes


def compare_nodes(before: Snapshot, after: Snapshot, plan: FsPlan, source: str) -> list[Finding]:
    """Nodes replaced, removed or changed (the input's bytes included), and files left behind;
    the only new files allowed are decode's output and a dangling link's target."""
    findings = []
    roles = {source: "the input", "in.epr": "the input", "out.onnx": f"-o {plan.output}"}
    for name, (inode, kind, size) in before.items():
        now = after.get(name)
        what = roles.get(name, name)
        if now is None:
            findings.append(Finding("decode", f"removed {what}", name))
        elif now[:2] != (inode, kind):
            findings.append(Finding("decode", f"replaced {what} ({plan.describe()})", name))
        elif name == source and now[2] != size:
            findings.append(Finding("decode", f"changed the input ({plan.describe()})", name))
    allowed = {"out.onnx", "missing.onnx"}
    left = sorted(name for name in after if name not in before and name not in allowed)
    if left:
        findings.append(Finding("decode", f"left a file behind ({plan.describe()})", str(left)))
    return findings


class FileCases:
    """Runs filesystem cases: the bytes behind a node of some kind in a fresh directory, every
    command on it in this process, then the directory compared with what it was."""

    def __init__(self, workdir: Path) -> None:
        self.root = workdir / "fs"

    def run(self, data: bytes, plan: FsPlan) -> tuple[str, list[Finding], dict[str, int | None]]:
        """(outcome, findings, exit code of each command run): 'accepted' when validate said
        valid; a decode that says it wrote a file must have left one where -o leads."""
        if self.root.exists():
            shutil.rmtree(self.root)
        self.root.mkdir()
        source = self.root / "case.epr"
        source.write_bytes(data)
        inp = make_input(self.root, plan.input, source)
        out = make_output(self.root, plan.output, inp, source)
        writer = FifoWriter(inp, data) if plan.input == "fifo-writer" else None
        before = snapshot(self.root)
        try:
            codes, findings = self._commands(inp, out, plan)
        finally:
            if writer is not None:
                writer.stop()
        findings += compare_nodes(before, snapshot(self.root), plan, source.name)
        if source.read_bytes() != data:
            findings.append(Finding("decode", f"changed the input ({plan.describe()})"))
        if codes.get("decode") == 0 and not os.path.isfile(out):
            findings.append(Finding("decode", f"exit 0 but no file at -o ({plan.describe()})"))
        shutil.rmtree(self.root)
        outcome = "foreign" if findings else ("accepted" if codes["validate"] == 0 else "rejected")
        return outcome, findings, codes

    def _commands(self, inp: Path, out: Path, plan: FsPlan) -> tuple[dict, list[Finding]]:
        codes, findings = {}, []
        with memory_guard():
            for command in FS_COMMANDS:
                result = run_command(command, inp, out, FS_TIMEOUT_S)
                codes[command] = result.code
                if result.timed_out:  # the other commands would wait or work as long
                    note = f"hung over {FS_TIMEOUT_S:.0f} s, blocked ({plan.describe()})"
                    findings.append(Finding(command, note if result.blocked else ALARM))
                    break
                if result.finding is not None:
                    findings.append(result.finding)
        return codes, findings


class Fuzzer:
    """One process's state: the prepared seeds, a scratch directory, the memory baseline."""

    def __init__(
        self,
        seeds: Sequence[tuple[str, bytes]],
        run_seed: int,
        trace: bool,
        *,
        strategies: Sequence[str] = (),
        eval_every: int = EVAL_EVERY,
        workdir: Path | None = None,
    ) -> None:
        self.seeds = [Seed.of(name, data) for name, data in seeds]
        self.run_seed = run_seed
        self.trace = trace
        self.strategies = tuple(strategies)
        self.workdir = Path(tempfile.mkdtemp(prefix="fuzz-", dir=workdir or scratch_root()))
        self.oracle = Oracle(self.workdir, eval_every)
        self.files = FileCases(self.workdir)

    def close(self) -> None:
        shutil.rmtree(self.workdir, ignore_errors=True)

    def warm_up(self) -> int:
        """Import, build the cached bombs, validate and run every command on every seed (the
        digits data loaded once); returns the baseline peak RSS."""
        for seed in self.seeds:
            bomb("doc", seed)
            validate_bytes(seed.data)
            self.oracle.run(seed.data, ORACLE_COMMANDS, time.perf_counter() + 60)
        bomb("zeros", self.seeds[0])
        bomb("meta-limit", self.seeds[0])
        if self.trace:
            tracemalloc.start()
        return peak_rss_kib()

    def case(self, index: int) -> Case:
        return make_case(self.run_seed, index, self.seeds, self.strategies)

    def run(self, index: int) -> CaseResult:
        """Build and run case `index`; never raises (a generator bug is its own outcome)."""
        try:
            case = self.case(index)
        except Exception:
            strategy = case_strategy(self.run_seed, index, self.strategies)
            return CaseResult(index, strategy, -1, "generator-error", error=traceback.format_exc())
        before = peak_rss_kib()
        if self.trace:
            tracemalloc.reset_peak()
        traced_before = tracemalloc.get_traced_memory()[0] if self.trace else 0
        start = time.perf_counter()
        result = CaseResult(index, case.strategy, case.seed, "", size=len(case.data))
        try:
            if case.fs is not None:
                outcome, findings, codes = self.files.run(case.data, case.fs)
                result = replace(result, outcome=outcome, commands=tuple(codes))
            else:
                result = self._validated(result, case, index, start)
                findings = list(result.findings)
        except Exception:  # the runner's own bug, e.g. setting up a node: not the reader's
            return replace(result, outcome="generator-error", error=traceback.format_exc())
        if findings:  # the first finding names the case; slow commands alone make a timeout
            first = next((f for f in findings if f.signature != ALARM), findings[0])
            outcome = "timeout" if first.signature == ALARM else "foreign"
            result = replace(result, outcome=outcome, signature=first.key, error=first.error)
        result.findings = tuple(findings)
        result.seconds = time.perf_counter() - start
        result.traced_peak = tracemalloc.get_traced_memory()[1] - traced_before if self.trace else 0
        result.rss_growth_kib = peak_rss_kib() - before
        return result

    def _validated(self, result: CaseResult, case: Case, index: int, start: float) -> CaseResult:
        """validate_bytes, then, on an accepted file, the other commands (the oracle)."""
        outcome, code, sign, error = validate_case(case.data)
        result = replace(result, outcome=outcome, code=code, signature=sign, error=error)
        if outcome == "foreign":
            return replace(result, findings=(Finding("validate", sign, error),))
        if outcome != "accepted":
            return result
        commands = self.oracle.commands(index, case.strategy)
        oracle_start = time.perf_counter()
        verdict, findings = self.oracle.run(case.data, commands, start + CASE_TIMEOUT_S)
        result = replace(result, commands=commands, findings=tuple(findings))
        result.oracle_seconds = time.perf_counter() - oracle_start
        if verdict == "timeout":
            result.outcome = "timeout"
        return result


# --- the summary ----------------------------------------------------------------------------


@dataclass
class StrategyRow:
    cases: int = 0
    rejected: int = 0
    accepted: int = 0
    foreign: int = 0
    slow: int = 0
    slowest: float = 0.0
    seconds: float = 0.0  # all its cases, oracle included: what the family costs a run


@dataclass
class Summary:
    """Everything a run found, in memory bounded whatever the case count; `ok` is the exit
    criterion."""

    run_seed: int
    jobs: int
    seeds: list[dict]
    strategy_names: list[str] = field(default_factory=list)  # empty: all
    eval_every: int = EVAL_EVERY
    wall_seconds: float = 0.0
    outcomes: Counter = field(default_factory=Counter)
    strategies: dict[str, StrategyRow] = field(default_factory=dict)
    codes: Counter = field(default_factory=Counter)
    foreign: dict[str, dict] = field(default_factory=dict)  # by signature: count, first case
    by_command: Counter = field(default_factory=Counter)  # foreign findings per command
    commands_run: Counter = field(default_factory=Counter)  # commands run after validation
    oracle_cases: int = 0  # cases validate_bytes accepted, then the other commands ran on
    accepted_seconds: float = 0.0  # their validation and oracle time (timeouts left out)
    oracle_seconds: float = 0.0
    generator_errors: list[dict] = field(default_factory=list)
    slow_count: int = 0
    slow_cases: list[tuple] = field(default_factory=list)  # a heap of the slowest
    slowest: dict = field(default_factory=lambda: {"seconds": 0.0, "case": None})
    max_input_bytes: int = 0
    rss_kib: dict[int, list[int]] = field(default_factory=dict)  # pid: [baseline, peak]
    rss_raisers: list[dict] = field(default_factory=list)
    traced_peak: dict = field(default_factory=lambda: {"bytes": 0, "case": None})

    def case_id(self, index: int) -> str:
        return f"{self.run_seed}:{index}"

    def add(self, result: CaseResult) -> None:
        """Count one case."""
        case = self.case_id(result.case)
        row = self.strategies.setdefault(result.strategy, StrategyRow())
        self.outcomes[result.outcome] += 1
        row.cases += 1
        if result.outcome in ("rejected", "accepted", "foreign"):
            setattr(row, result.outcome, getattr(row, result.outcome) + 1)
        if result.code:
            self.codes[result.code] += 1
        if result.outcome == "foreign":
            self._foreign(result, case)
        if result.oracle_seconds:  # validate_bytes accepted it, and the oracle ran
            self.commands_run.update(result.commands)
        if result.oracle_seconds and result.outcome != "timeout":  # timeouts: their own line
            self.oracle_cases += 1
            self.oracle_seconds += result.oracle_seconds
            self.accepted_seconds += result.seconds
        if result.outcome == "generator-error" and len(self.generator_errors) < 20:
            self.generator_errors.append({"case": case, "traceback": result.error})
        self._timing(result, row, case)
        self._memory(result, case)

    def _foreign(self, result: CaseResult, case: str) -> None:
        """Group the case's findings by signature (at most MAX_SIGNATURES kept in full)."""
        findings = result.findings or (Finding("worker", result.signature, result.error),)
        for finding in findings:
            self.by_command[finding.command] += 1
            key = finding.key if len(self.foreign) < MAX_SIGNATURES else "(other signatures)"
            entry = self.foreign.setdefault(
                key,
                {
                    "count": 0,
                    "command": finding.command,
                    "first_case": case,
                    "strategy": result.strategy,
                    "seed": result.seed,
                    "traceback": finding.error or finding.signature,
                },
            )
            entry["count"] += 1

    def _timing(self, result: CaseResult, row: StrategyRow, case: str) -> None:
        row.seconds += result.seconds
        row.slowest = max(row.slowest, result.seconds)
        if result.seconds > self.slowest["seconds"]:
            self.slowest = {"seconds": result.seconds, "case": case, "strategy": result.strategy}
        if result.seconds > time_bound(result) or result.outcome == "timeout":
            row.slow += 1
            self.slow_count += 1
            entry = (result.seconds, case, result.strategy, result.outcome, result.signature)
            if len(self.slow_cases) < MAX_SLOW_KEPT:
                heapq.heappush(self.slow_cases, entry)
            else:
                heapq.heappushpop(self.slow_cases, entry)

    def _memory(self, result: CaseResult, case: str) -> None:
        self.max_input_bytes = max(self.max_input_bytes, result.size)
        if result.traced_peak > self.traced_peak["bytes"]:
            self.traced_peak = {"bytes": result.traced_peak, "case": case}
        if result.rss_growth_kib > 0:
            self.rss_raisers.append(
                {"case": case, "strategy": result.strategy, "rss_growth_kib": result.rss_growth_kib}
            )
            self.rss_raisers = sorted(self.rss_raisers, key=lambda r: -r["rss_growth_kib"])[:5]

    def rss(self, pid: int, baseline: int | None = None, peak: int | None = None) -> None:
        """Note a worker process's baseline (after warm-up) or its latest peak RSS."""
        entry = self.rss_kib.setdefault(pid, [0, 0])
        if baseline is not None:
            entry[0] = entry[1] = baseline
        if peak is not None:
            entry[1] = max(entry[1], peak)

    @property
    def cases(self) -> int:
        return sum(self.outcomes.values())

    @property
    def slow(self) -> int:
        return self.slow_count

    def slowest_cases(self) -> list[dict]:
        keys = ("seconds", "case", "strategy", "outcome", "note")
        return [dict(zip(keys, entry, strict=True)) for entry in sorted(self.slow_cases)[::-1]]

    @property
    def rss_increase(self) -> int:
        """The largest rise of a worker's peak RSS over its warm-up baseline, in bytes."""
        return 1024 * max((peak - base for base, peak in self.rss_kib.values()), default=0)

    @property
    def memory_bound(self) -> int:
        return MEMORY_FACTOR * self.max_input_bytes + MEMORY_SLACK + (EVAL_MEMORY_MIB << 20)

    @property
    def ok(self) -> bool:
        clean = not (self.outcomes["foreign"] or self.outcomes["generator-error"] or self.slow)
        return clean and self.rss_increase <= self.memory_bound

    def throughput(self) -> dict:
        """Cases per second overall (wall clock, all workers), and the cost of accepted ones."""
        accepted = self.oracle_cases
        per_accepted = self.accepted_seconds / accepted if accepted else 0.0
        return {
            "cases_per_second": round(self.cases / self.wall_seconds, 1)
            if self.wall_seconds
            else 0.0,
            "accepted_ms_per_case": round(1000 * per_accepted, 2),
            "accepted_per_second_per_worker": round(1 / per_accepted, 1) if per_accepted else 0.0,
            "oracle_seconds": round(self.oracle_seconds, 2),
        }

    def as_json(self) -> dict:
        return {
            "ok": self.ok,
            "run_seed": self.run_seed,
            "jobs": self.jobs,
            "strategy_selection": self.strategy_names or "all",
            "eval_every": self.eval_every,
            "wall_seconds": round(self.wall_seconds, 3),
            "cases": self.cases,
            "clean_rejections": self.outcomes["rejected"],
            "accepted": self.outcomes["accepted"],
            "foreign_exceptions": self.outcomes["foreign"],
            "foreign_by_command": dict(self.by_command.most_common()),
            "commands_run": dict(self.commands_run.most_common()),
            "throughput": self.throughput(),
            "over_1s": self.slow,
            "timeouts": self.outcomes["timeout"],
            "outcomes": {outcome: self.outcomes[outcome] for outcome in OUTCOMES},
            "generator_errors": self.outcomes["generator-error"],
            "slowest": {**self.slowest, "seconds": round(self.slowest["seconds"], 4)},
            "memory": {
                "max_input_bytes": self.max_input_bytes,
                "rss_increase_bytes": self.rss_increase,
                "bound_bytes": self.memory_bound,
                "within_bound": self.rss_increase <= self.memory_bound,
                "workers_kib": {str(pid): v for pid, v in self.rss_kib.items()},
                "rss_raisers": self.rss_raisers,
                "traced_peak": self.traced_peak,
            },
            "strategies": {name: asdict(row) for name, row in sorted(self.strategies.items())},
            "violation_codes": dict(self.codes.most_common()),
            "foreign": self.foreign,
            "slow_cases": [
                {**case, "seconds": round(case["seconds"], 3)} for case in self.slowest_cases()
            ],
            "generator_error_cases": self.generator_errors,
            "seeds": self.seeds,
        }


def _mib(count: int) -> str:
    return f"{count / (1 << 20):,.1f} MiB"


def _oracle_line(summary: Summary) -> str:
    """What ran on the accepted files, and what an accepted case costs."""
    run = summary.commands_run
    speed = summary.throughput()
    evals = f"eval {run['eval']:,} (every case of {', '.join(sorted(IMAGE_TARGETED))}"
    evals += f", 1 in {summary.eval_every} of the others)"
    return (
        f"oracle                info {run['info']:,}, info --json {run['info --json']:,}, "
        f"decode {run['decode']:,}, {evals}; accepted cases {speed['accepted_ms_per_case']} ms "
        f"each ({speed['accepted_per_second_per_worker']}/s per worker)"
    )


def render(summary: Summary, reproduce_hint: str = "") -> str:
    """The human summary printed at the end of a run."""
    rate = summary.cases / summary.wall_seconds if summary.wall_seconds else 0.0
    slowest = summary.slowest
    within = summary.rss_increase <= summary.memory_bound
    per_command = ", ".join(f"{c} {n:,}" for c, n in summary.by_command.most_common()) or "none"
    lines = [
        f"cases run             {summary.cases:,} in {summary.wall_seconds:.1f} s "
        f"({rate:,.0f}/s, {summary.jobs} worker(s), run seed {summary.run_seed}, "
        f"{len(summary.seeds)} seeds)",
        f"clean rejections      {summary.outcomes['rejected']:,}",
        f"accepted and decoded  {summary.outcomes['accepted']:,}",
        f"foreign exceptions    {summary.outcomes['foreign']:,} ({len(summary.foreign)} distinct)",
        f"foreign by command    {per_command}",
        _oracle_line(summary),
        f"slow cases            {summary.slow:,} (over {SLOW_S:g} s, {SLOW_S + EVAL_SECONDS:g} s "
        f"where eval ran; stopped by a watchdog: "
        f"{summary.outcomes['timeout']})",
        f"slowest case          {slowest['seconds']:.3f} s "
        f"({slowest.get('case')}, {slowest.get('strategy', '-')})",
        f"memory                peak RSS +{_mib(summary.rss_increase)} over warm-up (worst "
        f"worker); bound {_mib(summary.memory_bound)} = {MEMORY_FACTOR} x "
        f"{summary.max_input_bytes:,} B + {_mib(MEMORY_SLACK)} + eval's arena "
        f"{EVAL_MEMORY_MIB} MiB: "
        f"{'within' if within else 'EXCEEDED'}",
    ]
    if summary.rss_raisers:
        top = summary.rss_raisers[0]
        rise = _mib(1024 * top["rss_growth_kib"])
        lines.append(f"{'':22}largest rise +{rise} in case {top['case']} ({top['strategy']})")
    if summary.traced_peak["case"] is not None:
        lines.append(
            f"traced peak per case  {_mib(summary.traced_peak['bytes'])} "
            f"({summary.traced_peak['case']})"
        )
    if summary.outcomes["generator-error"]:
        lines.append(f"GENERATOR ERRORS      {summary.outcomes['generator-error']} (tool bugs)")
    lines += [
        "",
        f"{'strategy':<17} {'cases':>7} {'rejected':>9} {'accepted':>9} {'foreign':>8} "
        f"{'>1 s':>5} {'slowest':>9} {'mean':>8}",
    ]
    for name, row in sorted(summary.strategies.items()):
        mean = 1000 * row.seconds / row.cases if row.cases else 0.0
        lines.append(
            f"{name:<17} {row.cases:>7,} {row.rejected:>9,} {row.accepted:>9,} "
            f"{row.foreign:>8,} {row.slow:>5,} {row.slowest:>8.3f}s {mean:>6.2f}ms"
        )
    codes = ", ".join(f"{code} {n:,}" for code, n in summary.codes.most_common(12))
    lines += ["", f"top rejection codes: {codes}"]
    lines += _foreign_lines(summary, reproduce_hint)
    for case in summary.slowest_cases()[:SHOW_TRACEBACKS]:
        lines.append(
            f"SLOW: case {case['case']} ({case['strategy']}) {case['seconds']:.2f} s "
            f"{case['outcome']} {case['note']}".rstrip()
        )
    return "\n".join(lines)


def _foreign_lines(summary: Summary, reproduce_hint: str) -> list[str]:
    """Every distinct finding with its count and first case; the first few with tracebacks."""
    lines = []
    if summary.foreign:
        lines += ["", "distinct findings (count, first case):"]
    for sign, entry in summary.foreign.items():
        lines.append(f"  {entry['count']:>8,}  {entry['first_case']:<12} {sign}")
    for sign, entry in list(summary.foreign.items())[:SHOW_TRACEBACKS]:
        lines += [
            "",
            f"FOREIGN x{entry['count']}: {sign}",
            f"  first: case {entry['first_case']} ({entry['strategy']}, seed "
            f"{entry['seed']}); reproduce: {reproduce_hint}--reproduce "
            f"{entry['first_case']}",
            entry["traceback"].rstrip(),
        ]
    return lines


# --- orchestration --------------------------------------------------------------------------


def scratch_root() -> Path:
    """Where workers make their scratch directories: /dev/shm when there is one (decode's
    fsync costs nothing there, and it allows device nodes), else the temporary directory."""
    shm = Path("/dev/shm")
    return shm if shm.is_dir() and os.access(shm, os.W_OK) else Path(tempfile.gettempdir())


@dataclass(frozen=True)
class Plan:
    seeds: tuple[tuple[str, bytes], ...]
    run_seed: int
    cases: int | None  # run cases 0..cases-1, or ...
    deadline: float | None  # ... until this time.time()
    jobs: int
    trace: bool
    strategies: tuple[str, ...] = ()  # empty: all
    eval_every: int = EVAL_EVERY
    workdir: Path | None = None  # the run's scratch directory, removed at its end


def case_indices(plan: Plan, first: int, skip: frozenset[int] = frozenset()) -> Iterator[int]:
    """first, first + jobs, ...: worker w runs every jobs-th case, so results ignore timing."""
    index = first
    while (plan.cases is None or index < plan.cases) and (
        plan.deadline is None or time.time() < plan.deadline
    ):
        if index not in skip:
            yield index
        index += plan.jobs


def fuzzer_of(plan: Plan) -> Fuzzer:
    return Fuzzer(
        plan.seeds,
        plan.run_seed,
        plan.trace,
        strategies=plan.strategies,
        eval_every=plan.eval_every,
        workdir=plan.workdir,
    )


def worker_main(plan: Plan, worker: int, first: int, skip: frozenset[int], out, clock) -> None:
    """A worker process: warm up, run its cases, send results in batches with its peak RSS.

    `clock[2w]` and `clock[2w + 1]` hold the running case and its start (time.monotonic), so
    the parent can kill a worker stuck where the alarm cannot reach it (inside C code).
    """
    fuzzer = fuzzer_of(plan)
    pid = mp.current_process().pid
    out.put(("ready", worker, pid, fuzzer.warm_up()))
    batch, flushed = [], time.monotonic()
    for index in case_indices(plan, first, skip):
        clock[2 * worker], clock[2 * worker + 1] = index, time.monotonic()
        batch.append(fuzzer.run(index))
        clock[2 * worker + 1] = 0.0
        if len(batch) >= 64 or time.monotonic() - flushed > 0.25:
            out.put(("batch", worker, pid, batch, peak_rss_kib()))
            batch, flushed = [], time.monotonic()
    out.put(("batch", worker, pid, batch, peak_rss_kib()))
    fuzzer.close()
    out.put(("done", worker, pid, None))


class _Pool:
    """The parent's side: J workers, restarted after a hard timeout or a crash."""

    def __init__(self, plan: Plan, summary: Summary, bar: tqdm) -> None:
        self.plan, self.summary, self.bar = plan, summary, bar
        self.context = mp.get_context("spawn")  # a clean process: its RSS is its own
        self.out = self.context.Queue()
        self.clock = self.context.Array("d", 2 * plan.jobs, lock=False)
        self.last = {w: w - plan.jobs for w in range(plan.jobs)}  # last case reported
        self.skip: dict[int, set[int]] = {w: set() for w in range(plan.jobs)}
        self.procs: dict[int, mp.Process] = {}
        self.done: set[int] = set()

    def start(self, worker: int) -> None:
        self.clock[2 * worker + 1] = 0.0
        args = (
            self.plan,
            worker,
            self.last[worker] + self.plan.jobs,
            frozenset(self.skip[worker]),
            self.out,
            self.clock,
        )
        process = self.context.Process(target=worker_main, args=args, daemon=True)
        process.start()
        self.procs[worker] = process

    def handle(self, message: tuple) -> None:
        kind, worker, pid = message[:3]
        if kind == "ready":
            self.summary.rss(pid, baseline=message[3])
        elif kind == "batch":
            for result in message[3]:
                self.summary.add(result)
                self.last[worker] = max(self.last[worker], result.case)
            self.summary.rss(pid, peak=message[4])
            self.bar.update(len(message[3]))
            self.bar.set_postfix(
                foreign=self.summary.outcomes["foreign"], slow=self.summary.slow, refresh=False
            )
        else:
            self.done.add(worker)

    def replace_stuck(self) -> None:
        """Kill a worker past the hard timeout, or notice one that crashed; restart it.

        The case it was running counts as over 1 s (killed) or foreign (crashed) and is
        skipped; the restarted worker re-runs the cases whose results died with it.
        """
        for worker, process in list(self.procs.items()):
            started = self.clock[2 * worker + 1]
            hung = bool(started) and time.monotonic() - started > HARD_TIMEOUT_S
            if worker in self.done or process.exitcode == 0 or (process.is_alive() and not hung):
                continue
            if not started:
                raise RuntimeError(f"worker {worker} died outside a case: {process.exitcode}")
            index = int(self.clock[2 * worker])
            process.kill()
            process.join()
            if hung:
                note = f"worker killed after {HARD_TIMEOUT_S:.0f} s (stuck outside Python?)"
            else:
                note = f"worker crashed, exit code {process.exitcode} (a signal if negative)"
            outcome = "timeout" if hung else "foreign"
            strategy = case_strategy(self.plan.run_seed, index, self.plan.strategies)
            seconds = time.monotonic() - started
            self.summary.add(CaseResult(index, strategy, -1, outcome, seconds, signature=note))
            self.skip[worker].add(index)
            self.start(worker)

    def run(self) -> None:
        for worker in range(self.plan.jobs):
            self.start(worker)
        checked = time.monotonic()
        while len(self.done) < self.plan.jobs:
            with contextlib.suppress(queue.Empty):
                self.handle(self.out.get(timeout=0.5))
            if time.monotonic() - checked > 0.5:
                self.replace_stuck()
                checked = time.monotonic()
        for process in self.procs.values():
            process.join()


def fuzz(
    seeds: Sequence[tuple[str, bytes]],
    *,
    run_seed: int = 0,
    cases: int | None = None,
    seconds: float | None = None,
    jobs: int = 2,
    trace_memory: bool = False,
    progress: bool = True,
    strategies: Sequence[str] = (),
    eval_every: int = EVAL_EVERY,
) -> Summary:
    """Run the cases (a count, or until `seconds` pass); jobs=1 runs in this process.

    The parent keeps counts, the distinct findings and the slowest cases, never per-case
    results, so a run of any length takes the same memory.
    """
    unknown = set(strategies) - set(STRATEGIES)
    if unknown:
        raise ValueError(f"unknown strategies {sorted(unknown)}; known: {sorted(STRATEGIES)}")
    deadline = time.time() + seconds if seconds is not None else None
    workdir = Path(tempfile.mkdtemp(prefix="fuzz-run-", dir=scratch_root()))
    plan = Plan(
        tuple(seeds),
        run_seed,
        cases,
        deadline,
        max(1, jobs),
        trace_memory,
        tuple(sorted(strategies)),
        eval_every,
        workdir,
    )
    described = [
        {"name": name, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
        for name, data in seeds
    ]
    summary = Summary(run_seed, plan.jobs, described, list(plan.strategies), eval_every)
    started = time.perf_counter()
    bar = tqdm(total=cases, unit="case", disable=not progress, smoothing=0.05, dynamic_ncols=True)
    try:
        with bar:
            if plan.jobs == 1:
                _run_here(plan, summary, bar)
            else:
                _Pool(plan, summary, bar).run()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    summary.wall_seconds = time.perf_counter() - started
    if trace_memory and tracemalloc.is_tracing():
        tracemalloc.stop()
    return summary


def _run_here(plan: Plan, summary: Summary, bar: tqdm) -> None:
    """All cases in this process (--jobs 1): no hard timeout, no restart."""
    fuzzer = fuzzer_of(plan)
    try:
        summary.rss(0, baseline=fuzzer.warm_up())
        for index in case_indices(plan, 0):
            summary.add(fuzzer.run(index))
            bar.update(1)
        summary.rss(0, peak=peak_rss_kib())
    finally:
        fuzzer.close()


def reproduce(
    seeds: Sequence[tuple[str, bytes]],
    case: str,
    dump: Path | None,
    strategies: Sequence[str] = (),
) -> int:
    """Re-run one case in this process as the fuzz loop does (the oracle and filesystem
    checks included), showing every finding's traceback; 0 if it behaves."""
    run_seed, index = (int(part) for part in case.split(":"))
    fuzzer = Fuzzer(seeds, run_seed, False, strategies=strategies)
    try:
        built = fuzzer.case(index)
        where = f", {built.fs.describe()}" if built.fs else ""
        print(
            f"case {case}: strategy {built.strategy}, seed {built.seed} "
            f"({fuzzer.seeds[built.seed].name}), {len(built.data):,} bytes, sha256 "
            f"{hashlib.sha256(built.data).hexdigest()[:16]}{where}"
        )
        if dump is not None:
            dump.write_bytes(built.data)
            print(f"wrote {dump}")
        result = fuzzer.run(index)
    finally:
        fuzzer.close()
    ran = f"; then {', '.join(result.commands)}" if result.commands else ""
    print(f"{result.outcome} {result.code} in {result.seconds:.3f} s{ran}".replace("  ", " "))
    for finding in result.findings:
        print(f"FINDING {finding.key}\n{finding.error.rstrip()}")
    if result.outcome == "timeout" and not result.findings:
        print(f"TIMEOUT {result.signature}")
    fine = result.outcome in ("accepted", "rejected") and result.seconds <= time_bound(result)
    return 0 if fine else 1


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    amount = parser.add_mutually_exclusive_group()
    amount.add_argument("--cases", type=int, help="cases to run (default 2000)")
    amount.add_argument("--seconds", type=float, help="run for this long instead")
    parser.add_argument("--seed", type=int, default=0, help="run seed K (case ids are K:I)")
    parser.add_argument("--jobs", type=int, default=2, help="worker processes (1: in-process)")
    parser.add_argument(
        "--seeds-dir",
        type=Path,
        default=DEFAULT_SEEDS_DIR,
        help="valid .epr files to mutate, after the builtin seeds",
    )
    parser.add_argument(
        "--strategies",
        type=lambda text: [name for name in text.split(",") if name],
        default=[],
        metavar="A,B",
        help=f"only these families (case ids depend on the choice); known: {', '.join(STRATEGIES)}",
    )
    parser.add_argument(
        "--eval-every",
        type=int,
        default=EVAL_EVERY,
        metavar="N",
        help=f"run eval on every N-th accepted case (default {EVAL_EVERY}), and on every one "
        f"of {', '.join(sorted(IMAGE_TARGETED))}",
    )
    parser.add_argument("--json", type=Path, help="write the summary here")
    parser.add_argument(
        "--trace-memory",
        action="store_true",
        help="per-case peak Python/numpy allocation (tracemalloc; slower)",
    )
    parser.add_argument("--reproduce", metavar="K:I", help="re-run one case here, with traceback")
    parser.add_argument("--dump", type=Path, help="with --reproduce: write the case's bytes here")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    seeds = load_seeds(args.seeds_dir)
    if args.reproduce:
        return reproduce(seeds, args.reproduce, args.dump, args.strategies)
    cases = args.cases if args.cases is not None or args.seconds is not None else 2000
    summary = fuzz(
        seeds,
        run_seed=args.seed,
        cases=cases,
        seconds=args.seconds,
        jobs=args.jobs,
        trace_memory=args.trace_memory,
        progress=not args.no_progress,
        strategies=args.strategies,
        eval_every=max(1, args.eval_every),
    )
    hint = "" if args.seeds_dir == DEFAULT_SEEDS_DIR else f"--seeds-dir {args.seeds_dir} "
    hint += f"--strategies {','.join(args.strategies)} " if args.strategies else ""
    print(render(summary, f"python tools/fuzz_container.py {hint}"))
    if args.json:
        args.json.write_text(json.dumps(summary.as_json(), indent=2) + "\n")
    return 0 if summary.ok else 1


if __name__ == "__main__":
    sys.exit(main())
