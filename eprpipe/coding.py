"""Coded groups: a run of integer latents as a constant, or as a table plus range-coded words.

The writer picks the cheapest representation it can build; the reader re-encodes what it
decoded and insists on the identical words, so one file has exactly one valid reading
(spec/FORMAT.md, "Coded groups").
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from enum import IntEnum

import constriction
import numpy as np

from eprpipe.bitio import ByteReader, svarint, uvarint
from eprpipe.errors import EprError
from eprpipe.geometric import fit_geometric, read_geometric
from eprpipe.paramdecode import LATENT_BOUND
from eprpipe.tables import MANTISSAS, MAX_ALPHABET, QTable, Table, fit_table, read_qtable


class GroupKind(IntEnum):
    CONSTANT = 0
    QTABLE = 1
    GEOMETRIC = 2


_TABLE_READERS = {GroupKind.QTABLE: read_qtable, GroupKind.GEOMETRIC: read_geometric}


@dataclass(frozen=True, eq=False)
class CodedGroup:
    """One coded group; the symbol count is not stored here, the enclosing record implies it."""

    kind: GroupKind
    value: int = 0  # CONSTANT: every symbol's value
    table: Table | None = None  # QTABLE and GEOMETRIC
    words: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.uint32))

    @functools.cached_property
    def side_info(self) -> bytes:
        """The constant or the serialized table: what counts as table bytes in reports."""
        if self.kind is GroupKind.CONSTANT:
            return svarint(self.value)
        assert self.table is not None
        return self.table.encode()

    @property
    def label(self) -> str:
        """How reports name the group's kind: "const", "qtable r2", "geom"."""
        if isinstance(self.table, QTable):
            return f"qtable r{self.table.resolution}"
        return "geom" if self.kind is GroupKind.GEOMETRIC else "const"

    @property
    def table_bytes(self) -> int:
        return len(self.side_info)

    @property
    def framing_bytes(self) -> int:
        """The kind byte, plus the word count for the table kinds."""
        return 1 + (len(uvarint(len(self.words))) if self.table is not None else 0)

    @property
    def latent_bytes(self) -> int:
        return 4 * len(self.words)

    @property
    def size(self) -> int:
        return self.framing_bytes + self.table_bytes + self.latent_bytes

    def encode(self) -> bytes:
        out = bytes([self.kind]) + self.side_info
        if self.table is not None:
            out += uvarint(len(self.words)) + self.words.astype("<u4").tobytes()
        return out


def _range_encode(symbols: np.ndarray, table: Table) -> np.ndarray:
    encoder = constriction.stream.queue.RangeEncoder()
    encoder.encode(symbols.astype(np.int32), table.model())
    return encoder.get_compressed().astype(np.uint32)


def _check_bound(value: int, what: str) -> None:
    if not -LATENT_BOUND < value < LATENT_BOUND:
        raise EprError(f"{what} {value} outside the latent bound +-2**40")


def encode_group(values: np.ndarray) -> CodedGroup:
    """The smallest of CONSTANT (all values equal), QTABLE at each resolution 1..4 and GEOMETRIC.

    Ties go to the candidate listed first: the lower kind, then the lower resolution.
    """
    values = np.asarray(values).reshape(-1)
    if values.size == 0:
        return CodedGroup(GroupKind.CONSTANT, value=0)
    if not np.issubdtype(values.dtype, np.integer):
        raise EprError(f"latents must be integers, got dtype {values.dtype}")
    lo, hi = int(values.min()), int(values.max())  # before any cast can wrap
    _check_bound(lo, "latent")
    _check_bound(hi, "latent")
    if lo == hi:
        return CodedGroup(GroupKind.CONSTANT, value=lo)
    if hi - lo + 1 > MAX_ALPHABET:
        raise EprError(f"latent range {lo}..{hi} needs more than {MAX_ALPHABET} symbols")
    symbols = values.astype(np.int64) - lo
    counts = np.bincount(symbols, minlength=hi - lo + 1)
    tables = [(GroupKind.QTABLE, fit_table(counts, resolution=r, lo=lo)) for r in MANTISSAS]
    tables.append((GroupKind.GEOMETRIC, fit_geometric(counts, lo)))
    candidates = [
        CodedGroup(kind, table=table, words=_range_encode(symbols, table)) for kind, table in tables
    ]
    return min(candidates, key=lambda group: group.size)


def decode_group(coded: CodedGroup, count: int) -> np.ndarray:
    """The group's `count` latents as int64."""
    if coded.kind is GroupKind.CONSTANT:
        return np.full(count, coded.value, dtype=np.int64)
    assert coded.table is not None
    decoder = constriction.stream.queue.RangeDecoder(coded.words)
    symbols = decoder.decode(coded.table.model(), count)
    return symbols.astype(np.int64) + coded.table.lo


def read_group(reader: ByteReader, count: int) -> tuple[CodedGroup, np.ndarray]:
    """Parse one group of `count` symbols and decode it; rejects any non-canonical stream."""
    start = reader.offset
    kind = reader.read_u8("group kind")
    if kind == GroupKind.CONSTANT:
        value = reader.read_svarint("constant value")
        if not -LATENT_BOUND < value < LATENT_BOUND:
            raise reader.error(f"constant {value} outside the latent bound", at=start)
        group = CodedGroup(GroupKind.CONSTANT, value=value)
        return group, decode_group(group, count)
    if kind not in _TABLE_READERS:
        raise reader.error(f"unknown group kind {kind}", at=start)
    table = _TABLE_READERS[GroupKind(kind)](reader)
    if not (table.lo > -LATENT_BOUND and table.lo + table.alphabet_size - 1 < LATENT_BOUND):
        raise reader.error("table values outside the latent bound", at=start)
    word_count = reader.read_uvarint("word count")
    if word_count > reader.remaining // 4:
        raise reader.error(f"{word_count} words declared, {reader.remaining} bytes left")
    words = np.frombuffer(reader.read_bytes(4 * word_count, "words"), dtype="<u4")
    group = CodedGroup(GroupKind(kind), table=table, words=words.astype(np.uint32))
    try:
        values = decode_group(group, count)
    except AssertionError as err:  # constriction's signal for words no encoder can produce
        raise reader.error("coded words are invalid for the table", at=start) from err
    symbols = values - table.lo
    if not table.weights()[symbols].all():
        raise reader.error("stream decodes to a symbol of weight zero", at=start)
    if not np.array_equal(_range_encode(symbols, table), group.words):
        raise reader.error("coded words are not the canonical encoding of their symbols", at=start)
    return group, values


def ideal_bits(coded: CodedGroup, values: np.ndarray) -> float:
    """Information content of `values` under the group's table: sum of -log2 p(symbol)."""
    if coded.kind is GroupKind.CONSTANT:
        return 0.0
    assert coded.table is not None
    counts = np.bincount(np.asarray(values).astype(np.int64).reshape(-1) - coded.table.lo)
    probabilities = coded.table.probabilities()[: len(counts)]
    used = counts > 0
    return float(-(counts[used] * np.log2(probabilities[used])).sum())


def empirical_bits(values: np.ndarray) -> float:
    """Information content under the values' own histogram: the floor for any static table."""
    _, counts = np.unique(np.asarray(values).reshape(-1), return_counts=True)
    return float(-(counts * np.log2(counts / counts.sum())).sum())
