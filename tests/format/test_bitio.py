"""Primitives: zigzag, LEB128 varints, MSB-first Exp-Golomb bit strings."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from eprpipe.errors import FormatError
from eprpipe.format.bitio import (
    BitReader,
    BitWriter,
    ByteReader,
    svarint,
    unzigzag,
    uvarint,
    zigzag,
)

INT64 = st.integers(-(2**63), 2**63 - 1)
UINT64 = st.integers(0, 2**64 - 1)


def test_zigzag_known_values() -> None:
    assert [zigzag(v) for v in (0, -1, 1, -2, 2, -(2**63), 2**63 - 1)] == [
        0,
        1,
        2,
        3,
        4,
        2**64 - 1,
        2**64 - 2,
    ]


@given(INT64)
def test_zigzag_round_trip(value: int) -> None:
    assert unzigzag(zigzag(value)) == value


@pytest.mark.parametrize(
    ("value", "encoded"),
    [
        (0, "00"),
        (1, "01"),
        (127, "7f"),
        (128, "8001"),
        (300, "ac02"),
        (2**64 - 1, "ffffffffffffffffff01"),
    ],
)
def test_uvarint_known_encodings(value: int, encoded: str) -> None:
    assert uvarint(value).hex() == encoded
    assert ByteReader(bytes.fromhex(encoded)).read_uvarint() == value


@given(UINT64)
def test_uvarint_round_trip_is_minimal(value: int) -> None:
    data = uvarint(value)
    assert len(data) == max(1, -(-value.bit_length() // 7))
    reader = ByteReader(data)
    assert reader.read_uvarint() == value
    assert reader.remaining == 0


@given(INT64)
def test_svarint_round_trip(value: int) -> None:
    assert ByteReader(svarint(value)).read_svarint() == value


def test_uvarint_rejects_values_outside_64_bits() -> None:
    with pytest.raises(ValueError):
        uvarint(2**64)
    with pytest.raises(ValueError):
        uvarint(-1)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ("8000", "non-minimal"),
        ("ff00", "non-minimal"),
        ("ffffffffffffffffff02", "over 64 bits"),
        ("ffffffffffffffffffff01", "longer than 10"),
        ("80", "truncated"),
        ("", "truncated"),
    ],
)
def test_uvarint_rejects_malformed(data: str, message: str) -> None:
    with pytest.raises(FormatError, match=message):
        ByteReader(bytes.fromhex(data), section="TENS", base=100).read_uvarint()


def test_byte_reader_errors_name_section_and_absolute_offset() -> None:
    reader = ByteReader(b"\x01\x02\x03", section="TENS", base=40)
    assert bytes(reader.read_bytes(2, "pair")) == b"\x01\x02"
    with pytest.raises(FormatError) as info:
        reader.read_bytes(4, "word")
    assert (info.value.section, info.value.offset) == ("TENS", 42)
    assert "truncated word" in str(info.value)


@pytest.mark.parametrize(
    ("value", "bits"),
    [(0, "1"), (1, "010"), (2, "011"), (3, "00100"), (6, "00111"), (7, "0001000")],
)
def test_exp_golomb_known_codes(value: int, bits: str) -> None:
    writer = BitWriter()
    writer.write_exp_golomb(value)
    assert writer.bit_length == len(bits)
    padded = bits + "0" * (-len(bits) % 8)
    assert writer.getvalue() == int(padded, 2).to_bytes(len(padded) // 8, "big")


@given(st.lists(st.integers(0, 2**63 - 2), max_size=200), st.booleans())
def test_exp_golomb_round_trip(values: list[int], as_array: bool) -> None:
    writer = BitWriter()
    if as_array:
        writer.write_exp_golomb(np.array(values, dtype=np.int64))
    else:
        for value in values:
            writer.write_exp_golomb(value)
    data = writer.getvalue()
    assert len(data) == -(-writer.bit_length // 8)
    reader = BitReader(data)
    assert [reader.read_exp_golomb() for _ in values] == values
    reader.finish()


def test_bit_reader_rejects_nonzero_padding_and_extra_bytes() -> None:
    BitReader(b"\x80").read_exp_golomb()  # "1" then seven zero padding bits: fine
    reader = BitReader(b"\x81")
    reader.read_exp_golomb()
    with pytest.raises(FormatError, match="padding"):
        reader.finish()
    reader = BitReader(b"\x80\x00")
    reader.read_exp_golomb()
    with pytest.raises(FormatError, match="2 bytes"):
        reader.finish()


def test_bit_reader_rejects_truncated_and_overlong_codes() -> None:
    with pytest.raises(FormatError, match="ends early"):
        BitReader(b"\x00").read_exp_golomb()
    with pytest.raises(FormatError, match="ends early"):
        BitReader(b"\x01").read_exp_golomb()  # seven zeros, a one, then no value bits
    with pytest.raises(FormatError, match="more than 62 zeros"):
        BitReader(bytes(9)).read_exp_golomb()
    with pytest.raises(FormatError):
        BitReader(b"").read_bits(1)


def test_bit_writer_mixes_fixed_width_fields_and_codes() -> None:
    writer = BitWriter()
    writer.write_bits(0b101, 3)
    writer.write_exp_golomb(np.array([0, 3]))
    writer.write_bits(0, 0)
    assert writer.bit_length == 9
    assert writer.getvalue() == bytes([0b10110010, 0b00000000])
    reader = BitReader(writer.getvalue())
    assert (reader.read_bits(3), reader.read_exp_golomb(), reader.read_exp_golomb()) == (5, 0, 3)


def test_zigzag_vectorized_matches_scalar() -> None:
    values = np.array([0, -1, 1, -(2**62), 2**62 - 1, -(2**63)], dtype=np.int64)
    assert zigzag(values).astype(np.uint64).tolist() == [zigzag(int(v)) for v in values]


def test_bit_writer_rejects_values_that_do_not_fit() -> None:
    with pytest.raises(ValueError):
        BitWriter().write_bits(4, 2)
    for bad in (-1, 2**63 - 1, 2**64, 0.5):
        with pytest.raises(ValueError):
            BitWriter().write_exp_golomb(bad)
    assert BitWriter().getvalue() == b""
