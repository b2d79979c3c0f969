"""Geometric tables: a spike at zero and a geometric slope on each side, in five bytes.

Most groups of trained latents look like that, and at LeNet5 sizes a QTABLE's dozen bytes of
levels per group is a visible share of the file. The weights come from integer arithmetic
only, so every decoder feeds constriction the identical float64 array (spec/FORMAT.md,
"Geometric tables").
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from eprpipe.format.bitio import ByteReader
from eprpipe.format.structures import FILLER_DECAY, GEOMETRIC_GROUP, MAX_ZERO_LEVEL, geometric_sides
from eprpipe.format.syntax import Context
from eprpipe.format.tables import MANTISSAS, Table

UNIT = 1 << 30  # g_1: the weight of the values +-1
ZERO_MANTISSAS = MANTISSAS[4]  # w(0) up to 2**20 * UNIT = 2**50 at MAX_ZERO_LEVEL
DECAYS = np.arange(1, 256, dtype=np.int64)


def zero_weight(level: int) -> int:
    """w(0) = (2**30 * L(level)) >> 12, L(l) = M_4[l mod 4] << (l div 4): 2**(l/4) * g_1."""
    return (UNIT * (ZERO_MANTISSAS[level % 4] << (level // 4))) >> 12


@functools.cache
def _all_distance_weights() -> np.ndarray:
    """g_1, g_2, ... for every decay 1..255 (row m - 1), up to the first column of all ones.

    g_(j+1) = max(1, (g_j * m) >> 8) stays 1 once it is 1 (m <= 255), so this one table of
    255 x 4044 entries (m = 255 decays slowest) answers every distance up to 2**40, and both
    the reader and the fit slice it instead of iterating the recurrence per group.
    """
    g = np.full(len(DECAYS), UNIT, dtype=np.int64)
    columns = [g]
    while (g > 1).any():
        g = np.maximum(1, (g * DECAYS) >> 8)
        columns.append(g)
    return np.stack(columns, axis=1)


def _column(distances: np.ndarray) -> np.ndarray:
    """The column of _all_distance_weights that holds g_d: the last one for every d beyond."""
    return np.minimum(distances, _all_distance_weights().shape[1]) - 1


def distance_weights(decay: int, distances: np.ndarray) -> np.ndarray:
    """g_d under `decay` (1..255) for each distance d >= 1, exactly."""
    return _all_distance_weights()[decay - 1, _column(np.asarray(distances))]


@dataclass(frozen=True, eq=False)
class GeometricTable(Table):
    """w(0) from `zero_level`; w(+-d) = g_d under the side's decay m, ratio m/256 per step."""

    lo: int
    size: int
    zero_level: int  # 0..80; 0 when 0 is out of range
    decay_pos: int  # 1..255; FILLER_DECAY when no weight depends on it
    decay_neg: int

    def __post_init__(self) -> None:
        if problem := GEOMETRIC_GROUP.problem(self.fields()):
            raise ValueError(problem)

    def fields(self) -> Context:
        return {
            "lo": self.lo,
            "alphabet_size": self.size,
            "zero_level": self.zero_level,
            "decay_pos": self.decay_pos,
            "decay_neg": self.decay_neg,
        }

    @property
    def alphabet_size(self) -> int:
        return self.size

    def weights(self) -> np.ndarray:
        values = self.lo + np.arange(self.size, dtype=np.int64)
        weights = np.full(self.size, zero_weight(self.zero_level), dtype=np.int64)
        for side, decay in ((values > 0, self.decay_pos), (values < 0, self.decay_neg)):
            if side.any():
                weights[side] = distance_weights(decay, np.abs(values[side]))
        return weights

    def encode(self) -> bytes:
        """Serialized table: lo, A, then the zero level and the two decays, one byte each."""
        return GEOMETRIC_GROUP.write(self.fields())


def read_geometric(reader: ByteReader) -> GeometricTable:
    """Parse a geometric table; GEOMETRIC_GROUP's rules reject every invalid parameter."""
    fields = GEOMETRIC_GROUP.read(reader)
    return GeometricTable(
        fields["lo"],
        fields["alphabet_size"],
        fields["zero_level"],
        fields["decay_pos"],
        fields["decay_neg"],
    )


@dataclass(frozen=True)
class _Axis:
    """One parameter's candidates: each one's summed weight and its share of the bits."""

    options: np.ndarray  # the byte values
    mass: np.ndarray  # float64: sum of the weights this parameter sets, over the alphabet
    log_mass: np.ndarray  # float64: sum over symbols of count * log2(weight)
    start: int  # index of the first guess


def _zero_axis(count: int, present: bool) -> _Axis:
    if not present:
        return _Axis(np.zeros(1, np.int64), np.zeros(1), np.zeros(1), 0)
    weights = np.array([zero_weight(level) for level in range(MAX_ZERO_LEVEL + 1)], np.float64)
    return _Axis(np.arange(MAX_ZERO_LEVEL + 1), weights, count * np.log2(weights), 0)


def _side_axis(counts: np.ndarray, distances: np.ndarray, used: bool) -> _Axis:
    """All 255 decays of a side at once, from the exact g of every decay and distance.

    `distances` are the side's, consecutive (a range of values); those past the table's
    width share its last column. Only columns of present symbols need a log2, which keeps
    wide, sparse alphabets cheap.
    """
    rows = slice(None) if used else slice(FILLER_DECAY - 1, FILLER_DECAY)
    decays = DECAYS[rows]
    if not distances.size:
        return _Axis(decays, np.zeros(1), np.zeros(1), 0)
    column = _column(distances)
    first, last = int(column[0]), int(column[-1])
    table = _all_distance_weights()[rows]
    beyond = len(distances) - (last - first + 1)  # distances that share the last column
    mass = table[:, first : last + 1].sum(axis=1) + beyond * table[:, last]  # exact, < 2**51
    samples = np.bincount(column, weights=counts, minlength=last + 1)
    present = np.flatnonzero(samples)
    log_mass = np.log2(table[:, present]) @ samples[present]
    excess = float(samples[present] @ (present - first)) / max(float(samples.sum()), 1.0)
    guess = np.clip(np.rint(256 * excess / (1 + excess)), 1, 255)  # geometric mean m/256
    return _Axis(decays, mass.astype(np.float64), log_mass, int(np.argmin(np.abs(decays - guess))))


def fit_geometric(counts: np.ndarray, lo: int) -> GeometricTable:
    """The parameters that minimize the group's information content under the exact weights.

    The bits are N*log2(W0 + Wpos + Wneg) - (the three sides' sums of count*log2 w): each
    parameter sets one term, so a coordinate step scans all 81 zero levels or 255 decays at
    once. Coordinate descent from moment estimates, then a search of the 26 joint neighbours,
    until neither improves: the bits are nearly convex in (level, log m), and on random
    spike-and-slab groups this ends on the exhaustive optimum or within 0.06 % of it, in about
    half a millisecond for alphabets of ~100.
    """
    counts = np.asarray(counts, dtype=np.int64)
    size = len(counts)
    values = lo + np.arange(size, dtype=np.int64)
    used = geometric_sides(lo, size)
    axes = [
        _zero_axis(int(counts[values == 0].sum()), lo <= 0 < lo + size),
        _side_axis(counts[values > 0], values[values > 0], used[0]),
        _side_axis(counts[values < 0][::-1], -values[values < 0][::-1], used[1]),
    ]
    total = float(counts.sum())

    def bits(index: list[np.ndarray]) -> np.ndarray:
        grids = np.ix_(*index)
        mass = sum(axis.mass[i] for axis, i in zip(axes, grids, strict=True))
        log_mass = sum(axis.log_mass[i] for axis, i in zip(axes, grids, strict=True))
        return total * np.log2(mass) - log_mass

    best = [axis.start for axis in axes]
    while True:
        for k, axis in enumerate(axes):  # one exact scan per parameter, the others fixed
            scan = [np.array([b]) for b in best]
            scan[k] = np.arange(len(axis.options))
            best[k] = int(np.argmin(bits(scan)))
        near = [
            np.arange(max(b - 1, 0), min(b + 2, len(axis.options)))
            for b, axis in zip(best, axes, strict=True)
        ]
        cube = bits(near)
        corner = np.unravel_index(np.argmin(cube), cube.shape)
        here = tuple(b - n[0] for b, n in zip(best, near, strict=True))
        if cube[corner] >= cube[here]:
            break
        best = [int(n[i]) for n, i in zip(near, corner, strict=True)]
    level, pos, neg = (int(axis.options[b]) for axis, b in zip(axes, best, strict=True))
    return GeometricTable(lo, size, level, pos, neg)
