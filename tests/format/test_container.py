"""The .epr container: round trips, size accounting, a reader that only ever raises FormatError."""

from __future__ import annotations

import contextlib
import math
import os
import struct
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eprpipe.errors import EprError, FormatError
from eprpipe.format import container
from eprpipe.format.bitio import svarint, uvarint
from eprpipe.format.coding import (
    empirical_bits,
    encode_group,
    encode_stream,
    ideal_bits,
    stream_bytes,
)
from eprpipe.format.container import (
    EprContents,
    RdftDecoderParams,
    ReadLimits,
    ScalarDecoderParams,
    SizeBreakdown,
    TensorRecord,
    decode_container,
    decode_weights,
    encode_container,
    read_epr,
    write_epr,
)
from eprpipe.format.layout import Layout, allowed_layouts, encode_layout
from eprpipe.format.manifest import check_manifest
from eprpipe.format.paramdecode import decode_rdft
from eprpipe.format.testing.records import record_head
from eprpipe.format.testing.sections import assemble, header_bytes, replace_section, split

# --- helpers --------------------------------------------------------------------------------

STEP = struct.pack("<H", 0x3C00)  # 1.0
ZEROS = b"\x00\x00\x00"  # layout 0, then one CONSTANT 0 group


def scalar(name: str, latents: np.ndarray, step: float = 0.0185546875) -> TensorRecord:
    latents = np.asarray(latents, dtype=np.int64)
    return TensorRecord(name, latents.shape, "float32", ScalarDecoderParams(step), latents, None)


def rdft(name: str, latents: np.ndarray, steps: np.ndarray | None = None) -> TensorRecord:
    latents = np.asarray(latents, dtype=np.int64)
    if steps is None:
        steps = np.full(latents.shape[2:], 0.125, dtype=np.float16)
    return TensorRecord(name, latents.shape, "float32", RdftDecoderParams(steps), latents, None)


def raw(name: str, array: np.ndarray) -> TensorRecord:
    return TensorRecord(name, array.shape, array.dtype.name, None, None, array)


def sample_contents(seed: int = 0) -> EprContents:
    rng = np.random.default_rng(seed)
    return EprContents(
        manifest={"architecture": "lenet5", "classes": ["zéro", "un"], "metrics": {"error": 0.01}},
        graph=b"\x08\x07weightless onnx",
        tensors=[
            scalar("fc1.weight", np.rint(rng.laplace(0, 2, size=(20, 12)))),
            scalar("fc1.bias", np.zeros(20)),
            rdft("conv1.weight", np.rint(rng.laplace(0, 3, size=(4, 2, 3, 3)))),
            raw("bn.num_batches_tracked", np.array(17, dtype=np.int64)),
            raw("bn.running_var", rng.random(4).astype(np.float32)),
        ],
    )


MASKED_ROWS = [1, 4, 5, 9, 13, 17, 20, 22]
MASKED_COLS = [0, 3, 7, 8, 12, 15, 19, 23]


def masked_latents() -> np.ndarray:
    """24x24 latents with 8 active rows and columns: the writer codes them with both masks."""
    i, j = np.indices((8, 8))
    latents = np.zeros((24, 24), dtype=np.int64)
    latents[np.ix_(MASKED_ROWS, MASKED_COLS)] = (3 * i + 5 * j) % 7 - 3
    return latents


def small_file() -> bytes:
    contents = EprContents(
        manifest={"a": 1},
        graph=b"g",
        tensors=[
            scalar("w", [0, 1, -1, 0, 2, 0]),
            raw("m", np.array([True, False])),
            scalar("k", masked_latents()),
        ],
    )
    return encode_container(contents)[0]


def with_tensors(*records: bytes) -> bytes:
    return replace_section(small_file(), b"TENS", uvarint(len(records)) + b"".join(records))


def record(name: bytes, kind: int, shape: tuple[int, ...], body: bytes) -> bytes:
    return record_head(name, kind, shape) + body


def with_padding_byte(data: bytes) -> bytes:
    """`data` aligned to 8 bytes, its first padding byte 1: no checksum covers padding."""
    aligned = bytearray(assemble(split(data), alignment=3))
    aligned[header_bytes(len(split(data)))] = 1
    return bytes(aligned)


def assert_same(left: EprContents, right: EprContents) -> None:
    assert left.manifest == right.manifest
    assert left.graph == right.graph
    assert [t.name for t in left.tensors] == [t.name for t in right.tensors]
    for a, b in zip(left.tensors, right.tensors, strict=True):
        assert (tuple(a.shape), a.dtype, type(a.decoder)) == (b.shape, b.dtype, type(b.decoder))
        if isinstance(a.decoder, ScalarDecoderParams):
            assert a.decoder.step == b.decoder.step
        if isinstance(a.decoder, RdftDecoderParams):
            assert b.decoder.steps.dtype == np.float16
            assert np.array_equal(a.decoder.steps, b.decoder.steps)
        if a.decoder is None:
            assert b.raw.dtype == a.raw.dtype and b.raw.shape == a.raw.shape
            assert b.raw.tobytes() == a.raw.tobytes()
        else:
            assert b.latents.dtype == np.int64 and np.array_equal(a.latents, b.latents)


# --- round trips and layout -----------------------------------------------------------------


def test_round_trip_and_layout() -> None:
    contents = sample_contents()
    data, sizes = encode_container(contents)
    decoded, read_sizes = decode_container(data)
    assert_same(contents, decoded)
    assert read_sizes == sizes
    assert data[:8] == b"\x89EPR\r\n\x1a\n"
    assert struct.unpack_from("<HHHH", data, 8) == (1, 0, 3, 0)
    assert [(tag, flags) for tag, flags, _ in split(data)] == [
        (b"META", 1),
        (b"GRPH", 1),
        (b"TENS", 1),
    ]
    manifest = zstandard.ZstdDecompressor().decompress(split(data)[0][2])
    assert (
        manifest
        == '{"architecture":"lenet5","classes":["zéro","un"],"metrics":{"error":0.01}}'.encode()
    )


def test_size_breakdown_adds_up() -> None:
    data, sizes = encode_container(sample_contents())
    parts = (
        sizes.header_bytes
        + sizes.manifest_bytes
        + sizes.graph_bytes
        + sizes.latent_bytes
        + sizes.table_bytes
        + sizes.decoder_bytes
        + sizes.framing_bytes
        + sizes.raw_bytes
    )
    assert parts == sizes.file_bytes == len(data)
    assert sizes.header_bytes == 16 + 3 * 16 + 4
    assert sizes.payload_bytes == (
        sizes.latent_bytes + sizes.table_bytes + sizes.decoder_bytes + sizes.raw_bytes
    )
    by_name = {t.name: t for t in sizes.tensors}
    assert by_name["fc1.bias"].table_kinds == "const" and by_name["fc1.bias"].latent_bytes == 0
    fc1 = by_name["fc1.weight"]  # Laplace latents: GEOMETRIC, lo and A then three bytes
    assert fc1.table_kinds == "geom" and fc1.table_bytes == 5
    assert by_name["fc1.weight"].decoder_bytes == 2
    assert by_name["conv1.weight"].decoder_bytes == 18
    assert (
        by_name["bn.running_var"].raw_bytes == 16 and by_name["bn.running_var"].table_kinds == "raw"
    )
    for tensor in sizes.tensors:
        assert tensor.ideal_bits >= tensor.empirical_bits - 1e-9
        assert 8 * tensor.latent_bytes >= tensor.ideal_bits - 1e-9


def test_rdft_uses_per_frequency_groups_when_cheaper() -> None:
    rng = np.random.default_rng(1)
    scales = np.array([40.0, 0.01, 0.01, 0.01, 6.0, 0.01, 0.01, 0.01, 0.01]).reshape(3, 3)
    latents = np.rint(rng.laplace(0, 1, size=(64, 32, 3, 3)) * scales)
    contents = EprContents({}, b"", [rdft("conv", latents)])
    data, sizes = encode_container(contents)
    assert sizes.tensors[0].groups == 9
    assert "const" in sizes.tensors[0].table_kinds
    assert_same(contents, decode_container(data)[0])


def kill_units(
    rng: np.random.Generator, latents: np.ndarray, dead_rows: float, dead_cols: float
) -> np.ndarray:
    """Zero about these fractions of whole rows and whole columns, as dead units do."""
    latents = np.asarray(latents, dtype=np.int64).copy()
    if latents.ndim >= 2:
        latents[rng.random(latents.shape[0]) < dead_rows] = 0
        latents[:, rng.random(latents.shape[1]) < dead_cols] = 0
    return latents


@st.composite
def records(draw: st.DrawFn) -> TensorRecord:
    kind = draw(st.sampled_from(["scalar", "rdft", "raw"]))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    spread = draw(st.sampled_from([0, 1, 30, 5000]))
    dead = draw(st.sampled_from([0.0, 0.5]))
    if kind == "raw":
        dtype = draw(st.sampled_from(sorted(container.RAW_DTYPES.values())))
        shape = tuple(draw(st.lists(st.integers(0, 4), max_size=3)))
        array = np.asarray((rng.random(shape) * 100 - 50).astype(dtype))
        return raw("", array)
    if kind == "scalar":
        shape = tuple(draw(st.lists(st.integers(0, 6), max_size=4)))
        return scalar(
            "",
            kill_units(rng, np.rint(rng.laplace(0, spread + 1e-9, size=shape)), dead, dead),
            2.0 ** draw(st.integers(-24, 15)),
        )
    shape = (
        draw(st.integers(0, 5)),
        draw(st.integers(0, 4)),
        *draw(st.sampled_from([(1, 2), (3, 3), (5, 1), (5,), (2,), (3, 3, 3), (2, 1, 3)])),
    )
    steps = rng.choice([0.5, 0.25, 2.0, 0.0009765625], size=shape[2:]).astype(np.float16)
    return rdft(
        "", kill_units(rng, np.rint(rng.laplace(0, spread + 1e-9, size=shape)), dead, dead), steps
    )


# Any manifest the writer accepts: a described key (spec 4.1) with a wrong type is refused.
MANIFESTS = st.dictionaries(st.text(), st.integers() | st.text()).filter(
    lambda manifest: check_manifest(manifest) is None
)


@settings(deadline=None, max_examples=60, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(records(), max_size=5), MANIFESTS)
def test_random_contents_round_trip(tensors: list[TensorRecord], manifest: dict) -> None:
    for index, tensor in enumerate(tensors):
        tensor.name = f"t{index}.ü"
    contents = EprContents(manifest, b"\x00graph", tensors)
    data, sizes = encode_container(contents)
    decoded, read_sizes = decode_container(data)
    assert_same(contents, decoded)
    assert read_sizes == sizes


def test_latents_of_any_integer_dtype() -> None:
    tensors = [
        TensorRecord(
            "a", (3,), "float32", ScalarDecoderParams(1.0), np.array([0, 7, 255], np.uint8), None
        ),
        TensorRecord(
            "b",
            (2,),
            "float32",
            ScalarDecoderParams(1.0),
            np.array([2**40 - 1, 2**40 - 3], np.uint64),
            None,
        ),
        TensorRecord(
            "c", (2,), "float32", ScalarDecoderParams(1.0), np.array([-9, 3], np.int32), None
        ),
    ]
    decoded = decode_container(encode_container(EprContents({}, b"", tensors))[0])[0]
    assert [t.latents.tolist() for t in decoded.tensors] == [
        [0, 7, 255],
        [2**40 - 1, 2**40 - 3],
        [-9, 3],
    ]
    too_big = TensorRecord(
        "d", (1,), "float32", ScalarDecoderParams(1.0), np.array([2**63], np.uint64), None
    )
    with pytest.raises(EprError, match="latent bound"):
        encode_container(EprContents({}, b"", [too_big]))


def test_decode_weights() -> None:
    contents = sample_contents()
    decoded = decode_container(encode_container(contents)[0])[0]
    weights = {t.name: decode_weights(t) for t in decoded.tensors}
    assert weights["fc1.weight"].dtype == np.float32
    assert weights["fc1.weight"].tolist() == (contents.tensors[0].latents * 0.0185546875).tolist()
    conv = contents.tensors[2]
    assert (
        weights["conv1.weight"].tobytes() == decode_rdft(conv.decoder.steps, conv.latents).tobytes()
    )
    assert weights["bn.num_batches_tracked"].tolist() == 17
    broken = scalar("x", [1, 2])
    broken.latents = None
    with pytest.raises(EprError):
        decode_weights(broken)


# --- layouts: row and column masks ----------------------------------------------------------


def encode_in_layout(contents: EprContents, layout: Layout) -> tuple[bytes, SizeBreakdown]:
    """Encode with every coded tensor forced into `layout` instead of the smallest one."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(
            container, "encode_latents", lambda latents, rdft: encode_layout(latents, layout, rdft)
        )
        return encode_container(contents)


def sparse(shape: tuple[int, ...], dead_rows: float, dead_cols: float, seed: int = 0) -> np.ndarray:
    """Latents of a trained net: mostly zero, with whole rows and columns of dead units."""
    rng = np.random.default_rng(seed)
    latents = np.rint(rng.laplace(0, 2, size=shape)) * (rng.random(shape) < 0.2)
    return kill_units(rng, latents, dead_rows, dead_cols)


def check_every_layout(tensor: TensorRecord) -> None:
    """Each allowed layout round trips, reports its masks, and the writer keeps the smallest."""
    rdft_record = isinstance(tensor.decoder, RdftDecoderParams)
    contents = EprContents({}, b"", [tensor])
    lengths = {}
    for layout in allowed_layouts(tuple(tensor.shape), rdft_record):
        data, sizes = encode_in_layout(contents, layout)
        decoded, read_sizes = decode_container(data)
        assert_same(contents, decoded)
        assert read_sizes == sizes
        label = sizes.tensors[0].table_kinds
        assert ("row mask" in label) == bool(layout & Layout.ROW_MASK)
        assert ("column mask" in label) == bool(layout & Layout.COLUMN_MASK)
        lengths[layout] = len(data)
    smallest = min(lengths, key=lambda layout: (lengths[layout], layout))
    assert encode_container(contents)[0] == encode_in_layout(contents, smallest)[0]


@settings(deadline=None, max_examples=40, suppress_health_check=[HealthCheck.too_slow])
@given(records().filter(lambda tensor: tensor.decoder is not None))
def test_every_layout_round_trips(tensor: TensorRecord) -> None:
    tensor.name = "t"
    check_every_layout(tensor)


@pytest.mark.parametrize(
    "tensor",
    [
        scalar("fc", sparse((40, 60), 0.3, 0.5)),
        scalar("fc3d", sparse((12, 10, 5), 0.5, 0.3)),
        scalar("dense", sparse((20, 30), 0.0, 0.0)),
        scalar("zeros", np.zeros((20, 30))),
        scalar("line", sparse((200,), 0.0, 0.0)),
        rdft("conv", sparse((16, 12, 3, 3), 0.4, 0.4)),
        rdft("conv12", sparse((8, 6, 1, 2), 0.5, 0.5)),
        rdft("conv0", np.zeros((6, 4, 3, 3))),
        rdft("conv1d", sparse((10, 8, 7), 0.4, 0.4)),
        rdft("conv3d", sparse((6, 5, 3, 3, 3), 0.4, 0.4)),
    ],
    ids=lambda tensor: tensor.name,
)
def test_every_layout_round_trips_on_sparse_latents(tensor: TensorRecord) -> None:
    check_every_layout(tensor)


def test_allowed_layouts() -> None:
    assert allowed_layouts((), False) == allowed_layouts((7,), False) == [0]
    assert allowed_layouts((0, 5), False) == [0]
    assert allowed_layouts((3, 4, 2), False) == [0, 2, 4, 6]
    assert allowed_layouts((2, 3, 1, 2), True) == list(range(8))
    assert allowed_layouts((0, 3, 3, 3), True) == [0, 1]
    assert allowed_layouts((2, 3, 5), True) == allowed_layouts((2, 3, 1, 2, 3), True)
    assert allowed_layouts((2, 3, 5), True) == list(range(8))


def test_writer_picks_masks_when_they_help() -> None:
    """Dead units: 60 % of the columns (inputs) and some rows (outputs) are all zero."""
    contents = EprContents({}, b"", [scalar("fc1.weight", sparse((500, 800), 0.15, 0.6))])
    data, sizes = encode_container(contents)
    unmasked, _ = encode_in_layout(contents, Layout(0))
    assert len(data) < len(unmasked) - 500
    size = sizes.tensors[0]
    assert size.table_kinds.startswith("row mask ") and ", column mask " in size.table_kinds
    assert size.groups == 3
    assert_same(contents, decode_container(data)[0])


def test_mask_groups_count_in_the_payload() -> None:
    latents = masked_latents()
    data, sizes = encode_container(EprContents({}, b"", [scalar("k", latents)]))
    coded = encode_layout(latents, Layout.ROW_MASK | Layout.COLUMN_MASK, False)
    size = sizes.tensors[0]
    assert size.groups == 3
    assert size.latent_bytes == coded.latent_bytes == 4 * len(coded.words)  # one stream
    assert size.table_bytes == sum(group.table_bytes for group in coded.all_groups)
    assert size.framing_bytes == len(record(b"k", 1, (24, 24), b"")) + 1 + 3 + 1  # word count
    assert size.latent_bytes + size.table_bytes + size.decoder_bytes + size.framing_bytes == (
        len(split(data)[2][2]) - 1  # the TENS section less its record count
    )
    pairs = zip(coded.all_groups, coded.values, strict=True)
    assert size.ideal_bits == sum(ideal_bits(group, values) for group, values in pairs)
    assert size.empirical_bits == sum(empirical_bits(values) for values in coded.values)
    assert coded.values[0].tolist() == [int(row in MASKED_ROWS) for row in range(24)]


def coded(runs: list[list[int]]) -> bytes:
    """Group headers for `runs`, then their one stream (the writer's choices, any values)."""
    values = [np.array(run, dtype=np.int64) for run in runs]
    groups = [encode_group(v) for v in values]
    headers = b"".join(group.encode() for group in groups)
    if all(group.table is None for group in groups):
        return headers
    return headers + stream_bytes(encode_stream(groups, values))


def test_constant_groups_store_no_word_count() -> None:
    data, sizes = encode_container(EprContents({}, b"", [scalar("z", np.full((4, 5), 3))]))
    body = struct.pack("<e", 0.0185546875) + b"\x00" + b"\x00" + svarint(3)  # layout, CONSTANT 3
    assert split(data)[2][2] == uvarint(1) + record(b"z", 1, (4, 5), body)
    size = sizes.tensors[0]
    assert size.latent_bytes == 0 and size.framing_bytes == len(record(b"z", 1, (4, 5), b"")) + 2


def test_a_record_with_many_groups_pays_for_one_flush() -> None:
    """25 per-frequency groups, 25,000 latents: the words are within 1 % (+4 bytes) of the
    information content; one stream per group paid up to a word and a word count per group."""
    rng = np.random.default_rng(4)
    scales = np.linspace(0.3, 3.0, 25).reshape(1, 1, 5, 5)
    latents = np.rint(rng.laplace(0, 1, size=(40, 25, 5, 5)) * scales).astype(np.int64)
    tensor = rdft("conv2.weight", latents)
    data, sizes = encode_in_layout(EprContents({}, b"", [tensor]), Layout.PER_FREQUENCY)
    size = sizes.tensors[0]
    assert size.groups == 25 and "const" not in size.table_kinds
    assert size.latent_bytes <= 1.01 * size.ideal_bits / 8 + 4
    prefix = len(record(b"conv2.weight", 2, latents.shape, b""))
    assert size.framing_bytes == prefix + 1 + 25 + len(uvarint(size.latent_bytes // 4))
    assert_same(EprContents({}, b"", [tensor]), decode_container(data)[0])


@pytest.mark.parametrize(
    ("kind", "shape", "layout", "runs", "at", "message"),
    [
        (1, (2, 3), 0x02, [[2, 2], [0]], 0, "row mask holds a symbol not 0"),
        (1, (2, 3), 0x02, [[0, 2], [0]], 0, "row mask holds a symbol not 0"),
        (1, (2, 3), 0x04, [[1, -1, 0], [0]], 0, "column mask holds a"),
        (1, (2, 3), 0x02, [[1, 1], [1, 0, 0, 0, 0, 0]], 0, "row 1 is marked"),
        (1, (2, 3), 0x04, [[1, 1, 1], [1, 0, 2, 3, 0, 0]], 0, "column 1 is"),
        (1, (2, 3), 0x06, [[1, 1], [0, 0, 0], []], 0, "row 0 is"),
        (1, (2, 3), 0x06, [[1, 0], [0, 1, 1], [5, 0]], 1, "column 2"),
        (1, (2, 3), 0x06, [[1, 0], [1, 2, 0], [5, 0]], 1, "column mask holds"),  # from the stream
        (2, (2, 2, 1, 2), 0x03, [[0, 1], [], []], 0, "row 1 is"),
        (2, (2, 2, 1, 2), 0x05, [[1, 1], [1, 0, 2, 0], []], 0, "column 1"),
        (1, (3,), 0x02, [[1, 1, 1], [1, 2, 3]], None, "ndim >= 2"),
        (1, (), 0x04, [[1], [1]], None, "ndim >= 2"),
        (1, (0, 3), 0x02, [[], []], None, "no zero dim"),
        (1, (2, 3), 0x08, [[0]], None, "reserved layout bits 0x08"),
        (2, (1, 1, 1, 2), 0x80, [[0]], None, "reserved layout bits 0x80"),
        (1, (2, 3), 0x01, [[0]], None, "per-frequency grouping"),
    ],
)
def test_malformed_layouts_and_masks(
    kind: int, shape: tuple[int, ...], layout: int, runs: list, at: int | None, message: str
) -> None:
    """Each defect is reported at the layout byte (`at` None) or at the header of mask `at`."""
    steps = STEP * (shape[2] * shape[3] if kind == 2 else 1)
    tensors = uvarint(1) + record(b"w", kind, shape, steps + bytes([layout]) + coded(runs))
    data = replace_section(small_file(), b"TENS", tensors)
    with pytest.raises(FormatError, match=message) as info:
        decode_container(data)
    assert info.value.section == "TENS"
    headers = b"".join(
        encode_group(np.array(run, dtype=np.int64)).encode() for run in runs[: at or 0]
    )
    before = b"" if at is None else bytes([layout]) + headers
    prefix = len(uvarint(1) + record(b"w", kind, shape, steps + before))
    assert info.value.offset == len(data) - len(tensors) + prefix


# --- writer validation ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tensors", "manifest", "message"),
    [
        ([scalar("w", [1]), scalar("w", [2])], {}, "appears twice"),
        ([scalar("w", [1, 2], step=0.1)], {}, "float16"),
        ([scalar("", [1])], {}, "1..4096"),
        ([scalar("x" * 4097, [1])], {}, "1..4096"),
        ([scalar("\ud800", [1])], {}, "UTF-8"),
        ([scalar("w", [0, 2**40])], {}, "latent bound"),
        ([scalar("w", [0, 2**20])], {}, "more than"),
        ([rdft("c", np.zeros((2, 2, 1, 1)))], {}, "rdft needs"),
        ([rdft("c", np.zeros((2, 2, 3, 3)), np.ones((3, 2)))], {}, "steps must have shape"),
        ([TensorRecord("r", (2,), "float32", None, None, np.zeros(3, np.float32))], {}, "shape"),
        ([TensorRecord("r", (2,), "float32", None, None, np.zeros(2))], {}, "dtype"),
        (
            [TensorRecord("r", (2,), "complex64", None, None, np.zeros(2, np.complex64))],
            {},
            "raw dtype",
        ),
        (
            [
                TensorRecord(
                    "r", (2,), "float16", ScalarDecoderParams(1.0), np.zeros(2, np.int64), None
                )
            ],
            {},
            "float32",
        ),
        (
            [TensorRecord("r", (2,), "float32", ScalarDecoderParams(1.0), np.zeros(2), None)],
            {},
            "integers",
        ),
        ([], {"x": float("nan")}, "JSON"),
        ([], {"x": object()}, "JSON"),
        ([], [1, 2], "dict"),
    ],
)
def test_writer_rejects_invalid_contents(tensors: list, manifest: dict, message: str) -> None:
    with pytest.raises(EprError, match=message):
        encode_container(EprContents(manifest, b"", tensors))


# --- hostile input: everything is a FormatError ---------------------------------------------


def test_every_truncation_is_a_format_error() -> None:
    data = small_file()
    for length in range(len(data)):
        with pytest.raises(FormatError):
            decode_container(data[:length])


def test_every_single_bit_flip_is_a_format_error() -> None:
    data = small_file()
    for bit in range(8 * len(data)):
        flipped = bytearray(data)
        flipped[bit // 8] ^= 1 << (bit % 8)
        with pytest.raises(FormatError):
            decode_container(bytes(flipped))


@settings(deadline=None, max_examples=300)
@given(st.data())
def test_mutated_sections_with_valid_checksums_only_raise_format_error(data: st.DataObject) -> None:
    """Checksums stop accidents; this reaches the parsers with deliberate garbage."""
    sections = split(small_file())
    index = data.draw(st.integers(0, len(sections) - 1))
    tag, flags, body = sections[index]
    body = bytearray(body)
    for _ in range(data.draw(st.integers(1, 4))):
        action = data.draw(st.sampled_from(["set", "insert", "delete"]))
        at = data.draw(st.integers(0, len(body)))
        if action == "set" and at < len(body):
            body[at] = data.draw(st.integers(0, 255))
        elif action == "insert":
            body[at:at] = data.draw(st.binary(min_size=1, max_size=8))
        else:
            del body[at : at + data.draw(st.integers(1, 8))]
    sections[index] = (tag, flags, bytes(body))
    with contextlib.suppress(FormatError):
        decode_container(assemble(sections), limits=ReadLimits(max_total_elements=10_000))


def test_format_errors_name_source_section_and_offset() -> None:
    data = small_file()
    tens_offset = len(data) - len(split(data)[2][2])
    with pytest.raises(FormatError) as info:
        decode_container(with_tensors(record(b"w", 7, (), b"")), source="model.epr")
    assert str(info.value).startswith("model.epr: unknown record kind 7")
    assert info.value.section == "TENS"
    assert info.value.offset == tens_offset + 3  # count, name length, name, then the kind
    assert info.value.code == "unknown-record-kind"
    assert "section TENS" in str(info.value)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: b"\x89EPX" + d[4:], "bad magic"),
        (lambda d: d[:10], "truncated version_minor"),
        (lambda d: assemble(split(d), major=2, minor=3), "version 2.3"),
        (lambda d: assemble(split(d), flags=4), "reserved header flags"),
        (lambda d: assemble(split(d), alignment=13), "alignment 13 outside 0..12"),
        (with_padding_byte, "nonzero padding"),
        (
            lambda d: assemble([(t, f | 2, b) for t, f, b in split(d)]),
            "reserved flag bits",
        ),
        (lambda d: assemble([(t, 0, b) for t, f, b in split(d)]), "required flag"),
        (lambda d: assemble(split(d)) + b"\x00", "after the last section"),
        (
            lambda d: assemble([*split(d), (b"XTRA", 1, b"??")]),
            "unknown required section XTRA",
        ),
        (lambda d: assemble([*split(d), (b"TENS", 1, b"\x00")]), "appears twice"),
        (lambda d: assemble(split(d)[1:]), "META is missing"),
        (lambda d: assemble([(b"ME\x00A", 0, b""), *split(d)]), "printable"),
        (lambda d: d[:12] + b"\xff\x00" + d[14:], "runs past the end"),
    ],
)
def test_header_and_section_table_defects(mutate: Callable[[bytes], bytes], message: str) -> None:
    with pytest.raises(FormatError, match=message):
        decode_container(mutate(small_file()))


def test_minor_versions_and_unknown_optional_sections_are_accepted() -> None:
    data = small_file()
    extended = assemble([(b"XTRA", 0, b"future data"), *split(data)], minor=7)
    contents, sizes = decode_container(extended)
    assert_same(decode_container(data)[0], contents)
    assert sizes.file_bytes == len(extended)
    assert sizes.framing_bytes == decode_container(data)[1].framing_bytes + len(b"future data")


def _frame_declaring(content_size: int, blocks: bytes) -> bytes:
    """A zstd frame with an 8-byte content size field, no window descriptor (single segment)."""
    return container.ZSTD_MAGIC + bytes([0xE0]) + struct.pack("<Q", content_size) + blocks


def _rle_blocks(count: int, size: int = 1 << 17) -> bytes:
    block = (size << 3) | (1 << 1)  # RLE block
    return b"".join(
        (block | (i == count - 1)).to_bytes(3, "little") + b"\x00" for i in range(count)
    )


def test_zstd_bomb_is_rejected_before_inflating() -> None:
    bomb = _frame_declaring(1 << 30, _rle_blocks(8192))  # 32 KiB that inflate to 1 GiB
    started = time.perf_counter()
    with pytest.raises(FormatError, match="declares 1073741824 bytes"):
        decode_container(replace_section(small_file(), b"GRPH", bomb))
    assert time.perf_counter() - started < 1.0


def test_zstd_frame_inflating_past_its_declared_size_is_rejected() -> None:
    liar = _frame_declaring(100, _rle_blocks(64))  # declares 100 bytes, holds 8 MiB
    started = time.perf_counter()
    with pytest.raises(FormatError, match="GRPH"):
        decode_container(replace_section(small_file(), b"GRPH", liar))
    assert time.perf_counter() - started < 1.0


@pytest.mark.parametrize(
    ("frame", "message"),
    [
        (zstandard.ZstdCompressor(write_content_size=False).compress(b"abc"), "content size"),
        (zstandard.ZstdCompressor().compress(b"abc") + b"\x00", "beyond its zstd frame"),
        (zstandard.ZstdCompressor().compress(b"abc") * 2, "beyond its zstd frame"),
        (b"plain bytes", "not a zstd frame"),
        (container.ZSTD_MAGIC + b"\x08\x00\x00", "zstd frame"),
        (
            _frame_declaring(5, (1 | 3 << 1 | 5 << 3).to_bytes(3, "little") + b"abcde"),
            "reserved type",
        ),
        (_frame_declaring(5, (1 | 0 << 1 | 5 << 3).to_bytes(3, "little") + b"abcd"), "GRPH"),
        (
            _frame_declaring(6, (1 | 0 << 1 | 5 << 3).to_bytes(3, "little") + b"abcde"),
            "corrupt zstd",
        ),
    ],
)
def test_malformed_zstd_sections(frame: bytes, message: str) -> None:
    with pytest.raises(FormatError, match=message):
        decode_container(replace_section(small_file(), b"GRPH", frame))


def test_zstd_window_limit() -> None:
    params = zstandard.ZstdCompressionParameters(window_log=20, compression_level=3)
    frame = zstandard.ZstdCompressor(compression_params=params).compress(os.urandom(1 << 19) * 3)
    data = replace_section(small_file(), b"GRPH", frame)
    assert decode_container(data)[0].graph
    with pytest.raises(FormatError, match="window"):
        decode_container(data, limits=ReadLimits(max_zstd_window=1 << 19))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (b'{"a":1,"a":2}', "repeats a key"),
        (b'{"a":{"b":1,"b":1}}', "repeats a key"),
        (b"[1]", "not a JSON object"),
        (b'{"a":NaN}', "NaN"),
        (b'{"a":-Infinity}', "Infinity"),
        (b'{"a":1e999}', "overflows"),
        (b'{"a":"\xff"}', "UTF-8"),
        (b"{", "not valid JSON"),
        (b"[" * 100_000, "not valid JSON"),
        (b'{"a":' + b"1" * 5000 + b"}", "not valid JSON"),
    ],
)
def test_malformed_manifests(text: bytes, message: str) -> None:
    meta = zstandard.ZstdCompressor().compress(text)
    with pytest.raises(FormatError, match=message):
        decode_container(replace_section(small_file(), b"META", meta))


def test_manifest_and_graph_size_limits() -> None:
    data = small_file()
    with pytest.raises(FormatError, match="limit 5"):
        decode_container(
            replace_section(data, b"META", zstandard.compress(b'{"abc":"def"}')),
            limits=ReadLimits(max_manifest_bytes=5),
        )
    with pytest.raises(FormatError, match="exceeds the limit"):
        decode_container(data, limits=ReadLimits(max_file_bytes=len(data) - 1))


@pytest.mark.parametrize(
    ("tensors", "message"),
    [
        (uvarint(2) + record(b"w", 1, (3,), STEP + ZEROS), "truncated"),
        (uvarint(1) + record(b"w", 1, (3,), STEP + ZEROS) + b"\x00", "after the last record"),
        (uvarint(2) + record(b"w", 1, (), STEP + ZEROS) * 2, "'w' appears twice"),
        (uvarint(1) + uvarint(4097) + b"x" * 4097, "name length 4097"),
        (uvarint(1) + uvarint(0), "name length 0"),
        (uvarint(1) + record(b"\xff", 0, (), b"\x01" + bytes(4)), "UTF-8"),
        (uvarint(1) + record(b"w", 3, (), b""), "unknown record kind 3"),
        (uvarint(1) + b"\x01w\x01\x09", "ndim 9 outside"),
        (uvarint(1) + record(b"w", 1, (1 << 20, 1 << 20), STEP + ZEROS), "exceeds"),
        (uvarint(1) + record(b"w", 1, (0, 1 << 40), STEP + ZEROS), "exceeds"),
        (uvarint(1) + record(b"w", 0, (2,), b"\x0a"), "unknown dtype code 10"),
        (uvarint(1) + record(b"w", 0, (3,), b"\x01" + bytes(11)), "truncated data"),
        (uvarint(1) + record(b"w", 0, (2,), b"\x08\x01\x02"), "bool"),
        (uvarint(1) + record(b"w", 1, (2,), b"\x00\x7c" + ZEROS), "not finite"),
        (uvarint(1) + record(b"w", 1, (2,), b"\x00\x7e" + ZEROS), "not finite"),
        (uvarint(1) + record(b"w", 2, (2, 2, 3), b""), "rdft needs"),
        (uvarint(1) + record(b"w", 2, (2, 2, 1, 1), b""), "rdft needs"),
        (uvarint(1) + record(b"w", 2, (2, 2, 65, 1), b""), "rdft needs"),
        (uvarint(1) + record(b"w", 2, (1, 1, 1, 2), STEP * 2 + b"\x08"), "reserved layout"),
        (uvarint(1) + record(b"w", 2, (1, 1, 1, 2), STEP * 2 + b"\x01\x00\x00"), "truncated"),
        (uvarint(1) + record(b"w", 1, (2,), STEP + b"\x00\x00" + svarint(2**40)), "latent bound"),
    ],
)
def test_malformed_tensor_records(tensors: bytes, message: str) -> None:
    with pytest.raises(FormatError, match=message):
        decode_container(replace_section(small_file(), b"TENS", tensors))


def test_element_limits_stop_tiny_files_that_declare_huge_tensors() -> None:
    constant = STEP + ZEROS  # a CONSTANT group: no bytes per element
    one = uvarint(1) + record(b"w", 1, (1000, 1000), constant)
    two = (
        uvarint(2) + record(b"a", 1, (600, 1000), constant) + record(b"b", 1, (600, 1000), constant)
    )
    limits = ReadLimits(max_tensor_elements=10**6, max_total_elements=10**6)
    assert decode_container(replace_section(small_file(), b"TENS", one), limits=limits)
    with pytest.raises(FormatError, match="'b': 600000 elements, more than the 400000 left"):
        decode_container(replace_section(small_file(), b"TENS", two), limits=limits)
    with pytest.raises(FormatError, match="exceeds 999999 elements"):
        decode_container(
            replace_section(small_file(), b"TENS", one),
            limits=ReadLimits(max_tensor_elements=999_999),
        )


# --- files ----------------------------------------------------------------------------------


def test_write_and_read_a_file(tmp_path: Path) -> None:
    path = tmp_path / "model.epr"
    sizes = write_epr(path, sample_contents())
    assert path.stat().st_size == sizes.file_bytes
    contents, read_sizes = read_epr(path)
    assert_same(sample_contents(), contents)
    assert read_sizes == sizes
    assert [p.name for p in tmp_path.iterdir()] == ["model.epr"]


@pytest.mark.parametrize("failing", ["fsync", "replace", "write"])
def test_failed_write_leaves_no_partial_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failing: str
) -> None:
    path = tmp_path / "model.epr"
    path.write_bytes(b"previous contents")

    def fail(*args: object, **kwargs: object) -> None:
        raise OSError(28, "No space left on device")

    if failing == "write":
        monkeypatch.setattr(container.os, "fdopen", lambda fd, mode: _FailingFile(fd))
    else:
        monkeypatch.setattr(container.os, failing, fail)
    with pytest.raises(EprError, match="No space left"):
        write_epr(path, sample_contents())
    assert path.read_bytes() == b"previous contents"
    assert [p.name for p in tmp_path.iterdir()] == ["model.epr"]


class _FailingFile:
    """Writes half, then fails: the temporary file exists and holds a partial container."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def __enter__(self) -> _FailingFile:
        return self

    def __exit__(self, *exc: object) -> None:
        os.close(self.fd)

    def write(self, data: bytes) -> None:
        os.write(self.fd, data[: len(data) // 2])
        raise OSError(28, "No space left on device")


def test_interrupted_write_cleans_up(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def interrupt(*args: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(container.os, "replace", interrupt)
    with pytest.raises(KeyboardInterrupt):
        write_epr(tmp_path / "model.epr", sample_contents())
    assert list(tmp_path.iterdir()) == []


def test_invalid_contents_never_touch_the_disk(tmp_path: Path) -> None:
    with pytest.raises(EprError):
        write_epr(tmp_path / "model.epr", EprContents({}, b"", [scalar("w", [1], step=0.1)]))
    assert list(tmp_path.iterdir()) == []


def test_read_errors(tmp_path: Path) -> None:
    with pytest.raises(EprError, match="cannot read"):
        read_epr(tmp_path / "missing.epr")
    path = tmp_path / "model.epr"
    path.write_bytes(b"garbage")
    with pytest.raises(FormatError, match=str(path)):
        read_epr(path)
    write_epr(path, sample_contents())
    with pytest.raises(FormatError, match="exceeds the limit"):
        read_epr(path, limits=ReadLimits(max_file_bytes=100))


def test_decoding_needs_no_torch(tmp_path: Path) -> None:
    path = tmp_path / "model.epr"
    write_epr(path, sample_contents())
    script = (
        "import sys; sys.modules['torch'] = None\n"
        "from eprpipe.format.container import read_epr, decode_weights\n"
        f"contents, _ = read_epr({str(path)!r})\n"
        "print(sum(decode_weights(t).size for t in contents.tensors))\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(240 + 20 + 72 + 1 + 4)


def test_golden_file_still_decodes() -> None:
    """A file written by format 1.0 code (document revision 4: one stream per record) from the
    contents of small_file(); readers must keep reading it. Files of revisions 1 to 3 are not
    valid under revision 4 (drafts before 1.0 made no compatibility promise)."""
    contents, sizes = decode_container(bytes.fromhex(GOLDEN_FILE))
    assert contents.manifest == {"a": 1}
    assert contents.graph == b"g"
    assert [(t.name, t.shape, t.dtype) for t in contents.tensors] == [
        ("w", (6,), "float32"),
        ("m", (2,), "bool"),
        ("k", (24, 24), "float32"),
    ]
    assert contents.tensors[0].latents.tolist() == [0, 1, -1, 0, 2, 0]
    assert contents.tensors[1].raw.tolist() == [True, False]
    assert np.array_equal(contents.tensors[2].latents, masked_latents())
    kinds = ["geom", "raw", "row mask qtable r1, column mask qtable r1, geom"]
    assert [size.table_kinds for size in sizes.tensors] == kinds
    assert split(bytes.fromhex(GOLDEN_FILE))[2] == split(small_file())[2]


def test_small_file_holds_both_table_kinds() -> None:
    """So the truncation, bit-flip and mutation tests reach the GEOMETRIC and QTABLE parsers."""
    kinds = [size.table_kinds for size in decode_container(small_file())[1].tensors]
    assert "geom" in kinds[0] and "qtable" in kinds[2]


GOLDEN_FILE = (
    "894550520d0a1a0a01000000030000004d45544101000000100000001da1e99147525048010000000a000000"
    "94121e0c54454e53010000005800000046a61f336fc7591a28b52ffd20073900007b2261223a317d28b52ffd"
    "200109000067030177010106c0240002010406f780018a81ff80016d000102080100016b01021818c0240601"
    "000201012a01000201012a02050700fcff08075ade8854008434635ba94fac9be20f296dd20b4827bee44bb9"
    "afbd00000000"
)


@pytest.mark.parametrize(
    "group",
    [
        b"\x00\x0a",  # CONSTANT 5
        # a table over no symbols, then a stream of zero words
        encode_group(np.array([0, 1, 1], dtype=np.int64)).encode() + uvarint(0),
    ],
)
def test_a_group_of_zero_symbols_must_be_constant_zero(group: bytes) -> None:
    """Otherwise an empty tensor would have more than one valid encoding."""
    tensors = uvarint(1) + record(b"e", 1, (0,), STEP + b"\x00" + group)
    data = replace_section(small_file(), b"TENS", tensors)
    with pytest.raises(FormatError, match="zero symbols must be CONSTANT 0"):
        decode_container(data)


@pytest.mark.parametrize("alignment", [0, 5])
def test_with_manifest_equals_encoding_the_new_manifest(alignment: int) -> None:
    from eprpipe.format.container import with_manifest

    contents = sample_contents()
    data, sizes = encode_container(contents, alignment=alignment)
    contents.manifest = {**contents.manifest, "metrics": {"test_error": 0.0123}}
    expected = encode_container(contents, alignment=alignment)
    assert with_manifest(data, sizes, contents.manifest) == expected
    assert decode_container(expected[0])[0].manifest["metrics"] == {"test_error": 0.0123}


# --- format 1.1: rdft records of rank 3 and 5 -----------------------------------------------


def kernel_contents(manifest: dict | None = None) -> EprContents:
    """A Conv1d and a Conv3d kernel tensor beside a 2-D one: a 1.1 file by its records."""
    rng = np.random.default_rng(13)
    return EprContents(
        manifest or {"architecture": "kernels"},
        b"graph",
        [
            rdft("conv1d.weight", np.rint(rng.laplace(0, 3, size=(6, 4, 7)))),
            rdft("conv2d.weight", np.rint(rng.laplace(0, 3, size=(4, 2, 3, 3)))),
            rdft("conv3d.weight", np.rint(rng.laplace(0, 3, size=(3, 2, 3, 3, 3)))),
        ],
    )


def test_rdft_records_of_rank_3_and_5_round_trip_in_a_1_1_file() -> None:
    contents = kernel_contents()
    assert contents.minor == 1  # what the writer will write: the records need 1.1
    data, sizes = encode_container(contents)
    assert struct.unpack_from("<HH", data, 8) == (1, 1)
    decoded, read_sizes = decode_container(data)
    assert decoded.version_minor == 1 and read_sizes == sizes
    assert_same(contents, decoded)
    assert [size.minor for size in sizes.tensors] == [1, 0, 1]
    assert [size.decoder_bytes for size in sizes.tensors] == [14, 18, 54]  # a step per tap
    for record in decoded.tensors:
        assert decode_weights(record).tobytes() == (
            decode_rdft(record.decoder.steps, record.latents).tobytes()
        )


def test_only_rank_3_and_5_rdft_records_make_a_1_1_file() -> None:
    two_d = EprContents({}, b"g", [kernel_contents().tensors[1]])
    assert struct.unpack_from("<H", encode_container(two_d)[0], 10) == (0,)
    scalar_3d = EprContents({}, b"g", [scalar("fc3d", np.ones((2, 3, 5)))])
    assert struct.unpack_from("<H", encode_container(scalar_3d)[0], 10) == (0,)


def test_with_manifest_keeps_the_minor_the_records_need() -> None:
    data, sizes = encode_container(kernel_contents())
    again, _ = container.with_manifest(data, sizes, {"architecture": "renamed"})
    assert struct.unpack_from("<H", again, 10) == (1,)
    assert decode_container(again)[0].manifest == {"architecture": "renamed"}


def test_a_1_0_header_refuses_rdft_records_of_rank_3() -> None:
    data = encode_container(kernel_contents())[0]
    as_1_0 = assemble(split(data), minor=0)
    with pytest.raises(FormatError, match=r"minor version 0; dims \(6, 4, 7\) of rank 3") as info:
        decode_container(as_1_0)
    assert info.value.code == "bad-shape" and info.value.section == "TENS"
    assert decode_container(assemble(split(data), minor=5))[0].version_minor == 5


@pytest.mark.parametrize(
    ("shape", "message"),
    [
        ((2, 2, 1), "at least 2 kernel taps"),
        ((2, 2, 1, 1, 1), "at least 2 kernel taps"),
        ((2, 2, 65), "side <= 64"),
        ((2, 2, 2, 2, 65), "side <= 64"),
        ((2, 2, 2, 2, 2, 2), "k1"),
        ((2, 2), "k1"),
    ],
)
def test_rdft_shapes_a_1_1_file_refuses(shape: tuple[int, ...], message: str) -> None:
    steps = STEP * math.prod(shape[2:])
    tensors = uvarint(1) + record(b"w", 2, shape, steps + ZEROS)
    v11 = assemble(split(replace_section(small_file(), b"TENS", tensors)), minor=1)
    with pytest.raises(FormatError, match=message) as info:
        decode_container(v11)
    assert info.value.code == "bad-shape"
    with pytest.raises(EprError, match=message):
        encode_container(EprContents({}, b"", [rdft("w", np.zeros(shape))]))


def test_rdft_records_are_charged_a_pass_per_kernel_side() -> None:
    """(2, 1, 9, 9, 9): 1,458 elements, ceil(27 / 8) = 4 passes each, 5,832 in all."""
    tensors = uvarint(1) + record(b"w", 2, (2, 1, 9, 9, 9), STEP * 729 + ZEROS)
    data = assemble(split(replace_section(small_file(), b"TENS", tensors)), minor=1)
    fits = ReadLimits(elements_per_byte=1, min_element_allowance=5832)
    assert decode_container(data, limits=fits)[0].tensors[0].shape == (2, 1, 9, 9, 9)
    short = ReadLimits(elements_per_byte=1, min_element_allowance=5831)
    with pytest.raises(FormatError, match="5832 elements") as info:
        decode_container(data, limits=short)
    assert info.value.code == "limit-exceeded"
