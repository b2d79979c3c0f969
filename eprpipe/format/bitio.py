"""Bit- and byte-level primitives of the .epr format (spec/FORMAT.md, section "Primitives").

Readers raise FormatError on every malformed or truncated input, so the container parser can
let them propagate: no IndexError or struct.error ever leaves this module.
"""

from __future__ import annotations

from typing import TypeVar

import numpy as np

from eprpipe.errors import FormatError

T = TypeVar("T", int, np.ndarray)
MAX_VARINT_BYTES = 10  # 64 bits of payload at 7 bits per byte
MAX_EXP_GOLOMB_ZEROS = 62  # codes of values up to 2**63 - 2, so numpy int64 holds them
MAX_EXP_GOLOMB_VALUE = (1 << 63) - 2


def zigzag(value: T) -> T:
    """Map signed to unsigned, 0, -1, 1, -2, 2 ... -> 0, 1, 2, 3, 4 ...; ints or int64 arrays."""
    return (value << 1) ^ (value >> 63)


def unzigzag(value: int) -> int:
    """Inverse of `zigzag`."""
    return value >> 1 if value % 2 == 0 else -((value + 1) >> 1)


def uvarint(value: int) -> bytes:
    """Unsigned LEB128, minimal length; values must lie in [0, 2**64)."""
    if not 0 <= value < 1 << 64:
        raise ValueError(f"varint out of range: {value}")
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def svarint(value: int) -> bytes:
    """Signed integer in [-2**63, 2**63) as the unsigned LEB128 of its zigzag mapping."""
    if not -(1 << 63) <= value < 1 << 63:
        raise ValueError(f"signed varint out of range: {value}")
    return uvarint(zigzag(value))


class ByteReader:
    """Cursor over one section's bytes; errors name the section and the absolute file offset."""

    def __init__(self, data: bytes | memoryview, *, section: str | None = None, base: int = 0):
        self._data = memoryview(data)
        self.pos = 0
        self.section = section
        self.base = base

    @property
    def remaining(self) -> int:
        return len(self._data) - self.pos

    @property
    def offset(self) -> int:
        """Absolute file offset of the cursor, for error messages."""
        return self.base + self.pos

    def error(self, message: str, *, at: int | None = None, code: str = "invalid") -> FormatError:
        offset = self.offset if at is None else at
        return FormatError(message, section=self.section, offset=offset, code=code)

    def read_bytes(self, count: int, what: str = "data") -> memoryview:
        if count < 0 or count > self.remaining:
            raise self.error(
                f"truncated {what}: need {count} bytes, {self.remaining} left", code="truncated"
            )
        start = self.pos
        self.pos += count
        return self._data[start : self.pos]

    def read_u8(self, what: str = "u8") -> int:
        return self.read_bytes(1, what)[0]

    def read_uvarint(self, what: str = "varint") -> int:
        """Minimal-length LEB128 below 2**64; overlong or oversized encodings are rejected."""
        start = self.offset
        value = 0
        for index in range(MAX_VARINT_BYTES):
            byte = self.read_u8(what)
            value |= (byte & 0x7F) << (7 * index)
            if not byte & 0x80:
                if byte == 0 and index > 0:
                    raise self.error(f"non-minimal varint in {what}", at=start, code="bad-varint")
                if value >= 1 << 64:
                    raise self.error(f"varint over 64 bits in {what}", at=start, code="bad-varint")
                return value
        raise self.error(
            f"varint longer than {MAX_VARINT_BYTES} bytes in {what}", at=start, code="bad-varint"
        )

    def read_svarint(self, what: str = "signed varint") -> int:
        return unzigzag(self.read_uvarint(what))


class BitWriter:
    """MSB-first bit string; `getvalue` pads the last byte with zero bits.

    Bits are kept as numpy 0/1 arrays so that a table of a million codes is built in a few
    vectorized passes rather than a million Python steps.
    """

    def __init__(self) -> None:
        self._chunks: list[np.ndarray] = []
        self.bit_length = 0

    def _append(self, bits: np.ndarray) -> None:
        self._chunks.append(bits)
        self.bit_length += len(bits)

    def write_bits(self, value: int, count: int) -> None:
        if count < 0 or value < 0 or value >> count:
            raise ValueError(f"{value} does not fit in {count} bits")
        self._append(np.array([(value >> (count - 1 - i)) & 1 for i in range(count)], np.uint8))

    def write_exp_golomb(self, values: int | np.ndarray) -> None:
        """Order-0 Exp-Golomb of each value: n zeros, then the n+1 bits of value+1."""
        values = np.atleast_1d(np.asarray(values))
        if values.size and (
            values.dtype.kind not in "iu" or values.min() < 0 or values.max() > MAX_EXP_GOLOMB_VALUE
        ):
            raise ValueError(f"Exp-Golomb values must be integers in [0, {MAX_EXP_GOLOMB_VALUE}]")
        codes = values.astype(np.uint64) + np.uint64(1)
        zeros = np.zeros(len(codes), dtype=np.int64)  # floor(log2(code)), exact in integers
        while (shifted := codes >> (zeros + 1).astype(np.uint64)).any():
            zeros += shifted > 0
        lengths = 2 * zeros + 1
        starts = np.cumsum(lengths) - lengths
        bits = np.zeros(int(lengths.sum()), dtype=np.uint8)
        for j in range(int(zeros.max(initial=-1)) + 1):  # j-th bit of code, from the top
            has = zeros >= j
            shift = (zeros[has] - j).astype(np.uint64)
            bits[starts[has] + zeros[has] + j] = (codes[has] >> shift) & np.uint64(1)
        self._append(bits)

    def getvalue(self) -> bytes:
        if not self._chunks:
            return b""
        return np.packbits(np.concatenate(self._chunks)).tobytes()


class BitReader:
    """MSB-first reader over a byte string, the inverse of BitWriter."""

    def __init__(self, data: bytes | memoryview, *, section: str | None = None, base: int = 0):
        self._byte_length = len(data)
        self._bits = format(int.from_bytes(data, "big"), f"0{8 * len(data)}b") if data else ""
        self.bit_pos = 0
        self.section = section
        self.base = base

    def error(self, message: str, code: str = "bad-levels") -> FormatError:
        offset = self.base + self.bit_pos // 8
        return FormatError(message, section=self.section, offset=offset, code=code)

    def read_bits(self, count: int) -> int:
        end = self.bit_pos + count
        if end > len(self._bits):
            raise self.error("bit string ends early")
        value = int(self._bits[self.bit_pos : end], 2) if count else 0
        self.bit_pos = end
        return value

    def read_exp_golomb(self) -> int:
        one = self._bits.find("1", self.bit_pos, self.bit_pos + MAX_EXP_GOLOMB_ZEROS + 1)
        if one < 0:
            if len(self._bits) - self.bit_pos > MAX_EXP_GOLOMB_ZEROS:
                raise self.error(f"Exp-Golomb code with more than {MAX_EXP_GOLOMB_ZEROS} zeros")
            raise self.error("bit string ends early")
        zeros = one - self.bit_pos
        self.bit_pos = one
        return self.read_bits(zeros + 1) - 1

    def finish(self) -> None:
        """Require that only zero padding, less than one byte of it, is left."""
        used = (self.bit_pos + 7) // 8
        if self._byte_length != used:
            raise self.error(f"bit string holds {self._byte_length} bytes, codes use {used}")
        if "1" in self._bits[self.bit_pos :]:
            raise self.error("nonzero padding bits")
