"""Coded groups: a run of integer latents as a constant, or as a table for the record's stream.

A record range-codes all its table groups into one stream, one group after the other, so it
pays one partly used word and one word count instead of one per group. The writer picks each
group's kind on table bytes plus information content; the reader re-encodes what it decoded
and insists on the identical words, so one file has exactly one valid reading
(spec/FORMAT.md, "Coded groups" and "Range coding").
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntEnum

import constriction
import numpy as np

from eprpipe.errors import EprError
from eprpipe.format.bitio import ByteReader
from eprpipe.format.geometric import fit_geometric, read_geometric
from eprpipe.format.structures import (
    CONSTANT_GROUP,
    GROUP_KIND,
    LATENT_BOUND,
    MAX_ALPHABET,
    WORDS,
)
from eprpipe.format.tables import MANTISSAS, QTable, Table, fit_table, read_qtable


class GroupKind(IntEnum):
    CONSTANT = 0
    QTABLE = 1
    GEOMETRIC = 2


_TABLE_READERS = {GroupKind.QTABLE: read_qtable, GroupKind.GEOMETRIC: read_geometric}


@dataclass(frozen=True, eq=False)
class CodedGroup:
    """One group's header; its symbol count is implied by the record, its words are shared."""

    kind: GroupKind
    value: int = 0  # CONSTANT: every symbol's value
    table: Table | None = None  # QTABLE and GEOMETRIC

    @functools.cached_property
    def side_info(self) -> bytes:
        """The constant or the serialized table: what counts as table bytes in reports."""
        if self.kind is GroupKind.CONSTANT:
            return CONSTANT_GROUP.write({"value": self.value})
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

    def encode(self) -> bytes:
        """The kind byte and the constant or table; the words live in the record's stream."""
        return GROUP_KIND.write({"kind": int(self.kind)}) + self.side_info


def _check_bound(value: int, what: str) -> None:
    if not -LATENT_BOUND < value < LATENT_BOUND:
        raise EprError(f"{what} {value} outside the latent bound +-2**40")


def encode_group(values: np.ndarray) -> CodedGroup:
    """CONSTANT when all values are equal, else the cheapest of QTABLE r1..4 and GEOMETRIC.

    The words of one group are not observable in a shared stream, so the cost is table bits
    plus information content; ties go to the candidate listed first (lower kind, lower r).
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
    counts = np.bincount(values.astype(np.int64) - lo, minlength=hi - lo + 1)
    tables: list[tuple[GroupKind, Table]] = [
        (GroupKind.QTABLE, fit_table(counts, resolution=r, lo=lo)) for r in MANTISSAS
    ]
    tables.append((GroupKind.GEOMETRIC, fit_geometric(counts, lo)))
    candidates = [(CodedGroup(kind, table=table), table) for kind, table in tables]
    best, _ = min(candidates, key=lambda c: 8 * c[0].table_bytes + _counts_bits(c[1], counts))
    return best


def encode_stream(groups: Sequence[CodedGroup], values: Sequence[np.ndarray]) -> np.ndarray:
    """The record's words: every table group's symbols, group after group, each its own model."""
    encoder = constriction.stream.queue.RangeEncoder()
    for group, group_values in zip(groups, values, strict=True):
        if group.table is not None and len(group_values):
            symbols = np.asarray(group_values, dtype=np.int64).reshape(-1) - group.table.lo
            encoder.encode(symbols.astype(np.int32), group.table.model())
    return encoder.get_compressed().astype(np.uint32)


def needs_stream(groups: Sequence[CodedGroup]) -> bool:
    """A record stores a word count and words exactly when one group has a table."""
    return any(group.table is not None for group in groups)


def stream_bytes(words: np.ndarray) -> bytes:
    """The word count and the words (u32 little-endian)."""
    return WORDS.write({"word_count": len(words), "words": words})


def read_group(reader: ByteReader) -> CodedGroup:
    """Parse one group header: kind byte and constant or table."""
    kind = GroupKind(GROUP_KIND.read(reader)["kind"])
    if kind is GroupKind.CONSTANT:
        return CodedGroup(kind, value=CONSTANT_GROUP.read(reader)["value"])
    return CodedGroup(kind, table=_TABLE_READERS[kind](reader))


def read_words(reader: ByteReader) -> np.ndarray:
    """Parse the record's word count and words."""
    return WORDS.read(reader)["words"].astype(np.uint32)


class StreamDecoder:
    """Decodes a record's groups, in stored order, from its one stream; then checks the words."""

    def __init__(self, reader: ByteReader, words: np.ndarray, words_at: int) -> None:
        self._reader = reader
        self._words = words
        self._words_at = words_at
        self._decoder = constriction.stream.queue.RangeDecoder(words)
        self._groups: list[CodedGroup] = []
        self._values: list[np.ndarray] = []

    def decode(self, group: CodedGroup, count: int, at: int) -> np.ndarray:
        """The group's `count` latents as int64; `at` is its header's offset, for errors."""
        if count == 0 and (group.table is not None or group.value != 0):
            raise self._reader.error(
                "a group of zero symbols must be CONSTANT 0", at=at, code="empty-group"
            )
        if group.table is None:  # a read-only view: a constant costs no memory per symbol
            values = np.broadcast_to(np.int64(group.value), (count,))
        else:
            try:
                symbols = self._decoder.decode(group.table.model(), count).astype(np.int64)
            except (AssertionError, ValueError) as err:  # constriction: words no encoder makes
                raise self._reader.error(
                    "coded words are invalid for the table", at=at, code="invalid-words"
                ) from err
            used = np.bincount(symbols, minlength=group.table.alphabet_size) > 0
            if not group.table.weights()[used].all():
                raise self._reader.error(
                    "stream decodes to a symbol of weight zero", at=at, code="zero-weight-symbol"
                )
            values = symbols + group.table.lo
        self._groups.append(group)
        self._values.append(values)
        return values

    def finish(self) -> None:
        """Require the words to be exactly what an encoder writes for the decoded symbols."""
        if not np.array_equal(encode_stream(self._groups, self._values), self._words):
            raise self._reader.error(
                "coded words are not the canonical encoding of their symbols",
                at=self._words_at,
                code="non-canonical-words",
            )


def _counts_bits(table: Table, counts: np.ndarray) -> float:
    used = counts > 0
    return float(-(counts[used] * np.log2(table.probabilities()[: len(counts)][used])).sum())


def ideal_bits(coded: CodedGroup, values: np.ndarray) -> float:
    """Information content of `values` under the group's table: sum of -log2 p(symbol)."""
    if coded.table is None:
        return 0.0
    return _counts_bits(
        coded.table, np.bincount(np.asarray(values).astype(np.int64).reshape(-1) - coded.table.lo)
    )


def empirical_bits(values: np.ndarray) -> float:
    """Information content under the values' own histogram: the floor for any static table.

    Counted with bincount over the values' range where that range is small (every coded group:
    its table spans it), so a group of 2**27 latents needs no sorted copy.
    """
    flat = np.asarray(values).reshape(-1)
    if flat.size == 0 or (low := int(flat.min())) == int(flat.max()):
        return 0.0
    if int(flat.max()) - low < 1 << 22:
        wide = np.uint64 if flat.dtype.kind == "u" else np.int64  # exact for every integer dtype
        counts = np.bincount((flat.astype(wide) - wide(low)).astype(np.int64))
        counts = counts[counts > 0]
    else:
        _, counts = np.unique(flat, return_counts=True)
    return float(-(counts * np.log2(counts / counts.sum())).sum())
