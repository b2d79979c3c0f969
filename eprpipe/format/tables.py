"""Quantized probability tables: a few bits of side information per symbol, rebuilt bit-exactly.

A table stores one small integer level per symbol. Levels map to integer weights through
exact integer arithmetic, and weights to float64 probabilities through one correctly rounded
division each, so every decoder feeds constriction the identical float64 array
(spec/FORMAT.md, "Probability tables"). `Table` is what every table kind shares: the step from
weights to probabilities and to constriction's model (geometric.py is the other kind).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import constriction
import numpy as np

from eprpipe.errors import FormatError
from eprpipe.format.bitio import BitReader, BitWriter, ByteReader, unzigzag, zigzag
from eprpipe.format.structures import MAX_ALPHABET, MIN_ALPHABET, QTABLE_GROUP

# round(4096 * 2**(j / r)) for j < r: weights step by a factor 2**(1/r) per level.
MANTISSAS: dict[int, tuple[int, ...]] = {
    1: (4096,),
    2: (4096, 5793),
    3: (4096, 5161, 6502),
    4: (4096, 4871, 5793, 6889),
}
LEVELS_PER_OCTAVE_MAX = 30  # levels run 0..30*r: weights span 2**29


def max_level(resolution: int) -> int:
    return LEVELS_PER_OCTAVE_MAX * resolution


class Table(ABC):
    """A coded group's model: symbol k stands for value lo + k and has an exact integer weight.

    Every table kind turns its weights into probabilities the same way, so the range coder
    sees bit-identical inputs on every machine whichever kind produced them.
    """

    lo: int

    @property
    @abstractmethod
    def alphabet_size(self) -> int: ...

    @abstractmethod
    def weights(self) -> np.ndarray:
        """One int64 weight per symbol, each below 2**51, their sum below 2**63."""

    @abstractmethod
    def encode(self) -> bytes:
        """The serialized table: what counts as table bytes in reports."""

    def probabilities(self) -> np.ndarray:
        """float64(w_k) / float64(sum w), each a single correctly rounded IEEE operation."""
        weights = self.weights()
        total = float(int(weights.sum()))  # the sum is below 2**63; float() rounds correctly
        return weights.astype(np.float64) / total

    def model(self) -> constriction.stream.model.Categorical:
        return constriction.stream.model.Categorical(self.probabilities(), perfect=False)


@dataclass(frozen=True, eq=False)
class QTable(Table):
    """Symbol k stands for value lo + k; `levels[k]` is 0 (never used) or 1..30*resolution."""

    lo: int
    resolution: int
    levels: np.ndarray  # uint8, one per symbol

    @property
    def alphabet_size(self) -> int:
        return len(self.levels)

    def weights(self) -> np.ndarray:
        """Integer weights, exact: M_r[(l-1) mod r] << ((l-1) div r), or 0 for level 0."""
        levels = self.levels.astype(np.int64)
        mantissas = np.array(MANTISSAS[self.resolution], dtype=np.int64)
        shifted = np.maximum(levels - 1, 0)
        weights = mantissas[shifted % self.resolution] << (shifted // self.resolution)
        return np.where(levels == 0, 0, weights)

    def encode(self) -> bytes:
        """Serialized table: lo, A, r, level bit-string length and bytes."""
        deltas = np.diff(self.levels.astype(np.int64), prepend=0)
        bits = BitWriter()
        bits.write_exp_golomb(zigzag(deltas))
        packed = bits.getvalue()
        return QTABLE_GROUP.write(
            {
                "lo": self.lo,
                "alphabet_size": self.alphabet_size,
                "resolution": self.resolution,
                "levels_length": len(packed),
                "levels": packed,
            }
        )


def read_qtable(reader: ByteReader) -> QTable:
    """Parse a table (QTABLE_GROUP checks each field), then decode and check its levels."""
    start = reader.offset
    fields = QTABLE_GROUP.read(reader)
    size, resolution, packed = fields["alphabet_size"], fields["resolution"], fields["levels"]
    bits = BitReader(packed, section=reader.section, base=reader.offset - len(packed))
    levels = np.empty(size, dtype=np.uint8)
    level = 0
    limit = max_level(resolution)
    for index in range(size):
        level += unzigzag(bits.read_exp_golomb())
        if not 0 <= level <= limit:
            raise bits.error(f"level {level} of symbol {index} outside 0..{limit}")
        levels[index] = level
    bits.finish()
    if not levels.any():
        raise FormatError(
            "all levels are zero", section=reader.section, offset=start, code="bad-levels"
        )
    return QTable(lo=fields["lo"], resolution=resolution, levels=levels)


def fit_table(symbol_counts: np.ndarray, *, resolution: int = 4, lo: int = 0) -> QTable:
    """Levels whose weights follow the empirical counts: absent symbols get level 0.

    The level of a present symbol is the nearest to r*log2(count/min_count) + 1, so the
    rarest present symbol gets level 1 and weight ratios follow count ratios to within about
    a factor 2**(1/(2r)).
    """
    counts = np.asarray(symbol_counts, dtype=np.float64)
    present = counts > 0
    if resolution not in MANTISSAS:
        raise ValueError(f"resolution {resolution} not in 1..4")
    if not MIN_ALPHABET <= len(counts) <= MAX_ALPHABET:
        raise ValueError(f"alphabet size {len(counts)} outside {MIN_ALPHABET}..{MAX_ALPHABET}")
    if not present.any():
        raise ValueError("fit_table needs at least one present symbol")
    ratios = np.log2(np.where(present, counts, 1.0) / counts[present].min())
    fitted = np.clip(np.rint(resolution * ratios) + 1, 1, max_level(resolution))
    levels = np.where(present, fitted, 0).astype(np.uint8)
    return QTable(lo=lo, resolution=resolution, levels=levels)
