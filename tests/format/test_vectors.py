"""The format's test vectors (spec/vectors/): what every 1.x reader must accept and reject."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import zstandard

from eprpipe.errors import FormatError
from eprpipe.format.container import decode_container, decode_weights
from eprpipe.format.graph import build_onnx
from eprpipe.format.testing import vectors
from eprpipe.format.validate import validate_bytes

ROOT = Path(__file__).resolve().parents[2]
VECTORS = ROOT / "spec" / "vectors"
INDEX = json.loads((VECTORS / "vectors.json").read_text())
VALID = {entry["file"]: entry for entry in INDEX["valid"]}
INVALID = {entry["file"]: entry for entry in INDEX["invalid"]}


def test_the_index_lists_every_file_and_both_kinds() -> None:
    on_disk = {str(p.relative_to(VECTORS)) for p in VECTORS.glob("*/*.epr")}
    assert on_disk == set(VALID) | set(INVALID)
    assert len(VALID) >= 4 and len(INVALID) >= 40


@pytest.mark.parametrize("name", sorted(VALID))
def test_valid_vector_decodes_to_the_listed_tensors(name: str) -> None:
    data = (VECTORS / name).read_bytes()
    contents, sizes = decode_container(data)
    assert sizes.file_bytes == len(data)
    expected = VALID[name]["tensors"]
    assert [record.name for record in contents.tensors] == [t["name"] for t in expected]
    for record, entry in zip(contents.tensors, expected, strict=True):
        values = np.ascontiguousarray(decode_weights(record))
        assert list(values.shape) == entry["shape"] and values.dtype.name == entry["dtype"]
        little = values.astype(values.dtype.newbyteorder("<")).tobytes()
        assert hashlib.sha256(little).hexdigest() == entry["sha256"], record.name
        if "values" in entry:
            listed = [float.fromhex(v) if isinstance(v, str) else v for v in entry["values"]]
            assert values.reshape(-1).tolist() == listed
    assert validate_bytes(data).valid
    build_onnx(contents)


@pytest.mark.parametrize("name", sorted(INVALID))
def test_invalid_vector_gives_its_error(name: str) -> None:
    entry = INVALID[name]
    data = (VECTORS / name).read_bytes()
    report = validate_bytes(data)
    found = [(v.code, v.section, v.offset) for v in report.violations]
    assert found == [(entry["code"], entry["section"], entry["offset"])]
    if entry["code"] == "non-canonical-manifest":  # a producer rule only a validator checks
        return
    with pytest.raises(FormatError) as info:
        build_onnx(decode_container(data)[0])
    assert (info.value.code, info.value.section, info.value.offset) == found[0]


@pytest.mark.parametrize("name", sorted(VALID))
def test_every_bit_flip_and_truncation_of_a_valid_vector_is_rejected(name: str) -> None:
    data = (VECTORS / name).read_bytes()
    missed = []
    for bit in range(8 * len(data)):
        flipped = bytearray(data)
        flipped[bit // 8] ^= 1 << (bit % 8)
        try:
            decode_container(bytes(flipped))
            missed.append(f"bit {bit}")
        except FormatError:
            pass
    for length in range(len(data)):
        try:
            decode_container(data[:length])
            missed.append(f"truncation to {length}")
        except FormatError:
            pass
    assert not missed


@pytest.mark.skipif(
    zstandard.__version__ != INDEX["zstandard"],
    reason="zstd output differs across versions; decoded contents are checked above",
)
def test_vectors_regenerate_byte_for_byte() -> None:
    assert vectors.differing(VECTORS) == ([], len(VALID) + len(INVALID))
