"""Files from hostile sources: declared sizes are budgeted, external data never opened."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import pytest

from eprpipe.errors import FormatError
from eprpipe.format.bitio import svarint, uvarint
from eprpipe.format.coding import CodedGroup, GroupKind, encode_stream, stream_bytes
from eprpipe.format.container import decode_container
from eprpipe.format.geometric import GeometricTable
from eprpipe.format.graph import build_onnx
from eprpipe.format.limits import ReadLimits
from eprpipe.format.structures import FILLER_DECAY, MAX_ALPHABET
from eprpipe.format.testing.records import constant_group, constant_record, scalar_head
from eprpipe.format.testing.sections import replace_section, section_offset, zstd
from eprpipe.format.testing.vectors import base_file, with_records
from eprpipe.format.validate import validate_bytes

VECTORS = Path(__file__).resolve().parents[2] / "spec" / "vectors"

_OPENED: list[str] = []
_WATCHING = [False]


def _audit(event: str, args: tuple) -> None:
    if _WATCHING[0] and event in ("open", "os.open", "io.open"):
        _OPENED.append(str(args[0]))


sys.addaudithook(_audit)


def test_external_data_is_rejected_without_opening_any_file() -> None:
    data = (VECTORS / "invalid" / "graph-external-data.epr").read_bytes()
    valid = (VECTORS / "valid" / "dense-masks.epr").read_bytes()
    build_onnx(decode_container(valid)[0])  # warm up: every lazy import done
    validate_bytes(valid)
    _OPENED.clear()
    _WATCHING[0] = True
    try:
        with pytest.raises(FormatError, match=r"etc/passwd|external data") as info:
            build_onnx(decode_container(data)[0])
        report = validate_bytes(data)
    finally:
        _WATCHING[0] = False
    assert info.value.code == "external-data"
    assert [v.code for v in report.violations] == ["external-data"]
    assert _OPENED == []


def _geometric_groups(count: int) -> bytes:
    """`count` valid records of two latents, each under a GEOMETRIC table of 2**20 symbols."""
    group = CodedGroup(
        GroupKind.GEOMETRIC, table=GeometricTable(-(MAX_ALPHABET // 2), MAX_ALPHABET, 0, 9, 9)
    )
    body = group.encode() + stream_bytes(encode_stream([group], [np.array([0, 0])]))
    return b"".join(scalar_head(f"w{index}".encode(), (2,)) + body for index in range(count))


def test_table_alphabets_are_budgeted_per_file_before_any_model_is_built() -> None:
    data, start = with_records(_geometric_groups(5), count=5)
    began = time.perf_counter()
    with pytest.raises(FormatError, match="tables declare more than") as info:
        decode_container(data)
    assert info.value.code == "limit-exceeded"
    assert time.perf_counter() - began < 5  # four 2**20-symbol models at most, then stop
    record_bytes = len(_geometric_groups(1))
    assert info.value.offset == start + 4 * record_bytes + len(scalar_head(b"w4", (2,)))
    with pytest.raises(FormatError) as small_budget:
        decode_container(data, limits=ReadLimits(max_table_symbols=MAX_ALPHABET - 1))
    assert small_budget.value.offset == start + len(scalar_head(b"w0", (2,)))


def test_elements_a_small_file_may_declare_scale_with_its_size() -> None:
    limits = ReadLimits()
    data, start = with_records(constant_record(b"w", (1 << 11, 1 << 10)))  # 2**21 elements
    assert limits.element_allowance(len(data)) == limits.min_element_allowance < 1 << 21
    with pytest.raises(FormatError, match="more than the 1048576 left") as info:
        decode_container(data)
    assert (info.value.code, info.value.offset) == ("limit-exceeded", start)
    roomy = ReadLimits(min_element_allowance=1 << 21)
    contents, _ = decode_container(data, limits=roomy)
    assert contents.tensors[0].latents.shape == (1 << 11, 1 << 10)
    assert limits.element_allowance(1 << 20) == 512 << 20


def test_a_geometric_filler_is_the_only_valid_unused_decay() -> None:
    head = scalar_head(b"w", (2,))
    for decay in (0, 1, 0x7F, 0xFF):
        table = b"\x02" + svarint(0) + uvarint(2) + bytes([0, decay, FILLER_DECAY])
        data, _ = with_records(head + table + uvarint(0))
        with pytest.raises(FormatError) as info:
            decode_container(data)
        assert info.value.code == "bad-geometric"
    assert np.array_equal(
        decode_container(with_records(head + constant_group(3))[0])[0].tensors[0].latents, [3, 3]
    )


def test_zstd_sections_inflate_at_most_a_bounded_ratio() -> None:
    """A frame of 50 MiB of zeros is valid zstd under the graph limit, but 32x its size or
    1 MiB is all a section may inflate to: rejected from the frame header, never inflated."""
    import zstandard

    bomb = zstandard.ZstdCompressor(level=3).compress(bytes(50 << 20))
    assert len(bomb) * 32 < 50 << 20 < ReadLimits().max_graph_bytes
    data = replace_section(base_file(), b"GRPH", bomb)
    with pytest.raises(FormatError, match="declares 52428800 bytes, limit 1048576") as info:
        decode_container(data)
    assert (info.value.code, info.value.section) == ("limit-exceeded", "GRPH")
    roomy = ReadLimits(inflation_ratio=1 << 20)
    with pytest.raises(FormatError) as parsed:  # inflated now, and then not an ONNX graph
        build_onnx(decode_container(data, limits=roomy)[0])
    assert parsed.value.code == "graph-parse"


@pytest.mark.parametrize(
    "manifest",
    [
        b'{"input":{"normalization":{"mean":[0.5],"std":[0]}}}',
        b'{"input":{"normalization":{"mean":[0.5,0.2],"std":[1]}}}',
        b'{"input":{"normalization":"imagenet"}}',
        b'{"input":{"normalization":{"mean":["a"],"std":[1]}}}',
        b'{"input":{"normalization":{"mean":[true],"std":[1]}}}',
    ],
)
def test_malformed_normalization_is_a_manifest_error(manifest: bytes) -> None:
    data = replace_section(base_file(), b"META", zstd(manifest))
    with pytest.raises(FormatError, match="normalization") as info:
        decode_container(data)
    assert (info.value.code, info.value.section) == ("bad-manifest", "META")
    assert info.value.offset == section_offset(data, b"META")
    assert [v.code for v in validate_bytes(data).violations] == ["bad-manifest"]


def test_the_writer_refuses_files_the_reader_would_refuse() -> None:
    from eprpipe.errors import EprError
    from eprpipe.format.container import (
        EprContents,
        ScalarDecoderParams,
        TensorRecord,
        encode_container,
    )

    zeros = np.zeros((1 << 11, 1 << 10), dtype=np.int64)
    record = TensorRecord("w", zeros.shape, "float32", ScalarDecoderParams(0.5), zeros, None)
    with pytest.raises(EprError, match="2097152 tensor elements in a"):
        encode_container(EprContents({}, b"", [record]))
    wide = np.zeros(5, dtype=np.int64)
    wide[0], wide[1] = -(MAX_ALPHABET // 2), MAX_ALPHABET // 2 - 1  # alphabet 2**20 each
    records = [
        TensorRecord(f"w{i}", wide.shape, "float32", ScalarDecoderParams(0.5), wide, None)
        for i in range(5)
    ]
    with pytest.raises(EprError, match="the tables hold 5242880 symbols"):
        encode_container(EprContents({}, b"", records))


def test_a_manifest_with_a_lone_surrogate_is_rejected() -> None:
    data = replace_section(base_file(), b"META", zstd(b'{"a":"\\ud800"}'))
    with pytest.raises(FormatError, match="cannot be written back as UTF-8") as info:
        decode_container(data)
    assert info.value.code == "bad-manifest"
    assert [v.code for v in validate_bytes(data).violations] == ["bad-manifest"]
