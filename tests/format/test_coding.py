"""Tables, coded groups and record streams, against constriction and a pure-Python spec reading.

The reference quantizer and range coder below follow spec/FORMAT.md sections 7.2 and 7.3 line by
line; if they agree with constriction bit for bit, the spec describes the bitstream we write.
"""

from __future__ import annotations

from fractions import Fraction

import constriction
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eprpipe.errors import EprError, FormatError
from eprpipe.format.bitio import ByteReader, svarint, uvarint
from eprpipe.format.coding import (
    CodedGroup,
    GroupKind,
    StreamDecoder,
    empirical_bits,
    encode_group,
    encode_stream,
    ideal_bits,
    needs_stream,
    read_group,
    read_words,
    stream_bytes,
)
from eprpipe.format.geometric import (
    FILLER_DECAY,
    GeometricTable,
    distance_weights,
    fit_geometric,
    read_geometric,
    zero_weight,
)
from eprpipe.format.tables import MANTISSAS, QTable, fit_table, read_qtable

MASK64 = (1 << 64) - 1
PRECISION = 24


# --- reference implementation of spec sections 7.2 and 7.3 ---------------------------------


def reference_cdf(probabilities: np.ndarray) -> list[int]:
    """Spec 7.2: left cumulatives of constriction's fast leaky quantization, plus 2**24."""
    free = (1 << PRECISION) - len(probabilities)
    total = 0.0
    for p in probabilities.tolist():
        total += p
    scale = float(free) / total
    cdf, cumulative = [], 0.0
    for k, p in enumerate(probabilities.tolist()):
        cdf.append(int(cumulative * scale) + k)
        cumulative += p
    return [*cdf, 1 << PRECISION]


def reference_encode(symbols: list[int], cdf: list[int]) -> list[int]:
    return reference_encode_groups([(symbols, cdf)])


def reference_encode_groups(groups: list[tuple[list[int], list[int]]]) -> list[int]:
    """Spec 7.3: one range encoder (64-bit state, 32-bit words) for each group's symbols in
    turn, each under its own cumulative table."""
    lower, span, inverted, out = 0, MASK64, None, []

    def flush_inverted(carry: bool) -> None:
        count, first = inverted
        out.append((first + 1) & 0xFFFFFFFF if carry else first)
        out.extend([0 if carry else 0xFFFFFFFF] * (count - 1))

    for symbol, cdf in ((symbol, cdf) for symbols, cdf in groups for symbol in symbols):
        scale = span >> PRECISION
        span = scale * (cdf[symbol + 1] - cdf[symbol])
        new_lower = (lower + scale * cdf[symbol]) & MASK64
        if inverted is not None and (new_lower + span) & MASK64 > new_lower:
            flush_inverted(new_lower < lower)
            inverted = None
        lower = new_lower
        if span < 1 << 32:
            span <<= 32
            word, lower = lower >> 32, (lower << 32) & MASK64
            if inverted is not None:
                inverted = (inverted[0] + 1, inverted[1])
            elif (lower + span) & MASK64 > lower:
                out.append(word)
            else:
                inverted = (1, word)
    if span == MASK64:
        return out
    point = (lower + 0xFFFFFFFF) & MASK64
    if inverted is not None:
        flush_inverted(point < lower)
    out.append(point >> 32)
    if ((lower + span) & MASK64) >> 32 == point >> 32:
        out.append(0)
    return out


def reference_decode(words: list[int], cdf: list[int], count: int) -> list[int]:
    return reference_decode_groups(words, [(cdf, count)])[0]


def reference_decode_groups(words: list[int], groups: list[tuple[list[int], int]]) -> list[list]:
    """Spec 7.3: one range decoder for each group's `count` symbols in turn; raises ValueError
    where constriction reports invalid data."""
    stream = iter(words)
    head = [next(stream, None), next(stream, None)]
    point = ((head[0] or 0) << 32 | (head[1] or 0)) if head[0] is not None else 0
    lower, span, decoded = 0, MASK64, []
    for cdf, count in groups:
        decoded.append(symbols := [])
        for _ in range(count):
            scale = span >> PRECISION
            quantile = ((point - lower) & MASK64) // scale
            if quantile >= 1 << PRECISION:
                raise ValueError("invalid data")
            symbol = next(k for k in range(len(cdf) - 1) if cdf[k + 1] > quantile)
            lower = (lower + scale * cdf[symbol]) & MASK64
            span = scale * (cdf[symbol + 1] - cdf[symbol])
            if span < 1 << 32:
                lower, span = (lower << 32) & MASK64, span << 32
                point = ((point << 32) & MASK64) | next(stream, 0)
            symbols.append(symbol)
    return decoded


def random_table(rng: np.random.Generator, size: int, resolution: int) -> QTable:
    levels = rng.integers(0, 30 * resolution + 1, size=size)
    levels[rng.random(size) < 0.3] = 0
    levels[rng.integers(size)] = rng.integers(1, 30 * resolution + 1)
    return QTable(
        lo=int(rng.integers(-50, 50)), resolution=resolution, levels=levels.astype(np.uint8)
    )


def draw_symbols(rng: np.random.Generator, table: QTable, count: int) -> np.ndarray:
    weights = table.weights().astype(np.float64)
    return rng.choice(len(weights), size=count, p=weights / weights.sum())


@pytest.mark.parametrize("seed", range(40))
def test_reference_coder_matches_constriction(seed: int) -> None:
    rng = np.random.default_rng(seed)
    table = random_table(rng, int(rng.integers(2, 200)), int(rng.integers(1, 5)))
    symbols = draw_symbols(rng, table, int(rng.integers(0, 800)))
    words = _words(symbols, table)
    cdf = reference_cdf(table.probabilities())
    assert reference_encode(symbols.tolist(), cdf) == words.tolist()
    assert reference_decode(words.tolist(), cdf, len(symbols)) == symbols.tolist()
    assert (_decode(table, words, len(symbols)) - table.lo).tolist() == symbols.tolist()


@pytest.mark.parametrize("seed", range(10))
def test_reference_coder_matches_constriction_on_a_record_stream(seed: int) -> None:
    """Several groups, each under its own table, one after the other in one stream (7.3)."""
    rng = np.random.default_rng(500 + seed)
    tables = [
        random_table(rng, int(rng.integers(2, 40)), 2) for _ in range(int(rng.integers(2, 8)))
    ]
    runs = [draw_symbols(rng, t, int(rng.integers(0, 300))) for t in tables]
    groups = [CodedGroup(GroupKind.QTABLE, table=t) for t in tables]
    words = encode_stream(groups, [run + t.lo for run, t in zip(runs, tables, strict=True)])
    cdfs = [reference_cdf(t.probabilities()) for t in tables]
    pairs = [(run.tolist(), cdf) for run, cdf in zip(runs, cdfs, strict=True)]
    assert reference_encode_groups(pairs) == words.tolist()
    counts = [(cdf, len(run)) for run, cdf in zip(runs, cdfs, strict=True)]
    assert reference_decode_groups(words.tolist(), counts) == [run.tolist() for run in runs]


@pytest.mark.parametrize("seed", range(20))
def test_reference_decoder_matches_constriction_on_arbitrary_words(seed: int) -> None:
    rng = np.random.default_rng(1000 + seed)
    table = random_table(rng, int(rng.integers(2, 50)), 2)
    words = rng.integers(0, 2**32, size=int(rng.integers(0, 6)), dtype=np.uint32)
    if seed == 0:
        words = np.array([0xFFFFFFFF, 0xFFFFFFFF], dtype=np.uint32)
    try:
        expected = reference_decode(words.tolist(), reference_cdf(table.probabilities()), 20)
    except ValueError:
        with pytest.raises(FormatError, match="invalid for the table"):
            _decode(table, words, 20)
    else:  # these words may decode to symbols of weight zero: ask constriction directly
        decoder = constriction.stream.queue.RangeDecoder(words)
        assert decoder.decode(table.model(), 20).tolist() == expected


def _words(symbols: np.ndarray, table: QTable | GeometricTable) -> np.ndarray:
    """Constriction's words for one group alone, encoded directly."""
    encoder = constriction.stream.queue.RangeEncoder()
    encoder.encode(symbols.astype(np.int32), table.model())
    return encoder.get_compressed()


def _decode(table: QTable, words: np.ndarray, count: int) -> np.ndarray:
    """One group decoded from `words` (no canonical check); FormatError on invalid words."""
    decoder = StreamDecoder(ByteReader(b""), np.asarray(words, dtype=np.uint32), 0)
    return decoder.decode(CodedGroup(GroupKind.QTABLE, table=table), count, 0)


# --- tables ---------------------------------------------------------------------------------


def test_mantissas_are_rounded_powers_of_two() -> None:
    for resolution, mantissas in MANTISSAS.items():
        assert mantissas == tuple(round(4096 * 2 ** (j / resolution)) for j in range(resolution))


def test_weights_follow_levels_exactly() -> None:
    table = QTable(lo=0, resolution=3, levels=np.array([0, 1, 2, 3, 4, 90], dtype=np.uint8))
    assert table.weights().tolist() == [0, 4096, 5161, 6502, 4096 << 1, 6502 << 29]


@given(st.integers(1, 4), st.lists(st.integers(0, 120), min_size=2, max_size=300))
def test_probabilities_are_correctly_rounded_quotients(resolution: int, levels: list[int]) -> None:
    levels = [min(level, 30 * resolution) for level in levels]
    levels[0] = max(levels[0], 1)
    table = QTable(lo=0, resolution=resolution, levels=np.array(levels, dtype=np.uint8))
    weights = [int(w) for w in table.weights()]
    total = float(sum(weights))  # correctly rounded int -> float
    expected = [float(Fraction(w) / Fraction(total)) for w in weights]  # correctly rounded quotient
    assert table.probabilities().tolist() == expected


def test_fit_table_levels() -> None:
    table = fit_table(np.array([4, 0, 1, 2, 1000, 1 << 40]), resolution=2, lo=-3)
    assert table.lo == -3
    # r*log2(count/1) + 1, rounded, clipped to 60
    assert table.levels.tolist() == [5, 0, 1, 3, 21, 60]
    with pytest.raises(ValueError):
        fit_table(np.zeros(4))
    with pytest.raises(ValueError):
        fit_table(np.array([5]))  # one symbol: constriction needs two


@given(
    st.integers(1, 4),
    st.integers(-(2**39), 2**39),
    st.lists(st.integers(0, 120), min_size=2, max_size=400),
)
def test_table_serialization_round_trip(resolution: int, lo: int, levels: list[int]) -> None:
    levels = [min(level, 30 * resolution) for level in levels]
    levels[-1] = max(levels[-1], 1)
    table = QTable(lo=lo, resolution=resolution, levels=np.array(levels, dtype=np.uint8))
    reader = ByteReader(table.encode())
    parsed = read_qtable(reader)
    assert reader.remaining == 0
    assert (parsed.lo, parsed.resolution) == (lo, resolution)
    assert parsed.levels.tolist() == levels


def _table_bytes(lo: int, size: int, resolution: int, packed: bytes) -> bytes:
    return uvarint(2 * lo) + uvarint(size) + bytes([resolution]) + uvarint(len(packed)) + packed


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (_table_bytes(0, 1, 1, b"\x60"), "alphabet size 1"),  # code "011": level 1
        (_table_bytes(0, (1 << 20) + 1, 1, b""), "alphabet size"),
        (_table_bytes(0, 2, 0, b"\x70"), "resolution 0"),  # codes "011", "1": levels 1, 1
        (_table_bytes(0, 2, 5, b"\x70"), "resolution 5"),
        (_table_bytes(0, 2, 1, b"\xc0"), "all levels are zero"),  # codes "1", "1"
        (_table_bytes(0, 2, 1, b"\x70\x00"), "2 bytes"),  # one byte too many
        (_table_bytes(0, 2, 1, b"\x71"), "padding"),
        (_table_bytes(0, 2, 1, b""), "ends early"),
        (_table_bytes(0, 2, 1, b"\x40"), "level -1"),  # code "010": zigzag 1, a step of -1
        (_table_bytes(0, 2, 1, bytes(20)), "too long"),
    ],
)
def test_read_qtable_rejects_malformed(data: bytes, message: str) -> None:
    with pytest.raises(FormatError, match=message):
        read_qtable(ByteReader(data, section="TENS"))


def test_read_qtable_rejects_level_above_maximum() -> None:
    table = QTable(lo=0, resolution=1, levels=np.array([31, 1], dtype=np.uint8))
    with pytest.raises(FormatError, match="level 31"):
        read_qtable(ByteReader(table.encode()))


# --- geometric tables -----------------------------------------------------------------------


def canonical_geometric(lo: int, size: int, level: int, pos: int, neg: int) -> GeometricTable:
    """The table with these parameters, each one no weight depends on replaced by its filler."""
    return GeometricTable(
        lo,
        size,
        level if lo <= 0 < lo + size else 0,
        pos if lo + size - 1 >= 2 else FILLER_DECAY,
        neg if lo <= -2 else FILLER_DECAY,
    )


def test_geometric_weights_exactly() -> None:
    """Hand-computed from spec 7.5: g_1 = 2**30, g_(j+1) = max(1, (g_j * m) >> 8)."""
    # values -2..3: w(0) = (2**30 * (4096 << 1)) >> 12; m = 128 halves, m = 64 quarters
    table = GeometricTable(-2, 6, 4, 128, 64)
    assert table.weights().tolist() == [2**28, 2**30, 2**31, 2**30, 2**29, 2**28]
    # values 1..6, m = 1: 2**30, 2**22, 2**14, 2**6, then (2**6 * 1) >> 8 = 0 -> 1, and 1 stays
    one_sided = GeometricTable(1, 6, 0, 1, FILLER_DECAY)
    assert one_sided.weights().tolist() == [2**30, 2**22, 2**14, 64, 1, 1]
    # m = 255: (2**30 * 255) >> 8 = 1069547520, (1069547520 * 255) >> 8 = 1065369600
    assert distance_weights(255, np.array([1, 2, 3])).tolist() == [2**30, 1069547520, 1065369600]
    # w(0) = (2**30 * L(l)) >> 12 with L(1) = 4871, L(7) = 6889 << 1, L(80) = 4096 << 20
    assert [zero_weight(level) for level in (0, 1, 7, 80)] == [
        2**30,
        4871 << 18,
        6889 << 19,
        2**50,
    ]
    # far from zero every distance weight has long reached 1, whatever the decay
    far = GeometricTable(2**40 - 10, 9, 0, 255, FILLER_DECAY)
    assert far.weights().tolist() == [1] * 9


def test_distance_weights_follow_the_recurrence_and_reach_one_by_4044() -> None:
    """The spec's bound: g(m, d) = 1 for every m once d >= 4044, so no loop runs past it."""
    distances = np.arange(1, 4100)
    for m in range(1, 256):
        g, expected = 2**30, []
        while len(expected) < len(distances):
            expected.append(g)
            g = max(1, (g * m) >> 8)
        assert distance_weights(m, distances).tolist() == expected
        assert distance_weights(m, np.array([4044, 10**6, 2**40])).tolist() == [1, 1, 1]
    assert distance_weights(255, np.array([4043])).tolist() == [2]  # the slowest decay


@given(
    st.integers(-40, 40),
    st.integers(2, 300),
    st.integers(0, 80),
    st.integers(1, 255),
    st.integers(1, 255),
)
def test_geometric_probabilities_are_correctly_rounded_quotients(
    lo: int, size: int, level: int, pos: int, neg: int
) -> None:
    table = canonical_geometric(lo, size, level, pos, neg)
    weights = [int(w) for w in table.weights()]
    assert min(weights) >= 1 and sum(weights) < 2**51  # so fl(S) is exact
    total = float(sum(weights))
    expected = [float(Fraction(w) / Fraction(total)) for w in weights]
    assert table.probabilities().tolist() == expected


@given(
    st.integers(-(2**40) + 1, 2**40 - 2),
    st.integers(2, 1 << 20),
    st.integers(0, 80),
    st.integers(1, 255),
    st.integers(1, 255),
)
def test_geometric_serialization_round_trip(
    lo: int, size: int, level: int, pos: int, neg: int
) -> None:
    size = min(size, 2**40 - lo)  # the latent bound: lo + size - 1 < 2**40
    table = canonical_geometric(lo, size, level, pos, neg)
    data = table.encode()
    assert data.endswith(bytes([table.zero_level, table.decay_pos, table.decay_neg]))
    reader = ByteReader(data)
    parsed = read_geometric(reader)
    assert reader.remaining == 0
    assert (parsed.lo, parsed.alphabet_size, parsed.zero_level) == (lo, size, table.zero_level)
    assert (parsed.decay_pos, parsed.decay_neg) == (table.decay_pos, table.decay_neg)


def _geometric_bytes(lo: int, size: int, level: int, pos: int, neg: int) -> bytes:
    return svarint(lo) + uvarint(size) + bytes([level, pos, neg])


@pytest.mark.parametrize(
    ("data", "message", "at"),
    [
        (_geometric_bytes(0, 1, 0, 0x80, 0x80), "alphabet size 1", 1),
        (_geometric_bytes(0, (1 << 20) + 1, 0, 5, 0x80), "alphabet size 1048577", 1),
        (_geometric_bytes(-3, 7, 81, 5, 5), "zero level 81", 2),
        (_geometric_bytes(-3, 7, 255, 5, 5), "zero level 255", 2),
        (_geometric_bytes(1, 5, 4, 5, 0x80), "zero level 4 for a range without 0", 2),
        (_geometric_bytes(-5, 3, 1, 0x80, 5), "zero level 1 for a range without 0", 2),
        (_geometric_bytes(-3, 7, 0, 0, 5), "positive decay 0 ", 3),
        (_geometric_bytes(-3, 7, 0, 5, 0), "negative decay 0 ", 4),
        (_geometric_bytes(-5, 3, 0, 0x7F, 5), "positive decay 0x7f.*must be 0x80", 3),  # no v > 0
        (_geometric_bytes(-1, 3, 0, 5, 0x80), "positive decay 0x05.*must be 0x80", 3),  # only v = 1
        (_geometric_bytes(-1, 3, 0, 0x80, 0x81), "negative decay 0x81.*must be 0x80", 4),  # only -1
        (_geometric_bytes(3, 4, 0, 5, 0), "negative decay 0x00.*must be 0x80", 4),  # no v < 0
        (_geometric_bytes(-3, 7, 0, 5, 5)[:-1], "truncated decay_neg", 4),
    ],
)
def test_read_geometric_rejects_malformed(data: bytes, message: str, at: int) -> None:
    with pytest.raises(FormatError, match=message) as info:
        read_geometric(ByteReader(data, section="TENS", base=100))
    assert info.value.offset == 100 + at
    with pytest.raises(FormatError, match=message):  # and as a group of kind 2
        read_group(ByteReader(b"\x02" + data))


def spike_and_slab(seed: int, count: int, spike: float, scale: float, shape: str) -> np.ndarray:
    """Rounded Laplace latents with extra zeros, two-sided, one-sided or far from zero."""
    rng = np.random.default_rng(seed)
    values = np.rint(rng.laplace(0, scale, count)).astype(np.int64)
    values[rng.random(count) < spike] = 0
    if shape in ("from 0", "from 1"):
        values = np.abs(values) + (shape == "from 1")
    elif shape == "up to 0":
        values = -np.abs(values)
    elif shape == "far":
        offset = int(rng.integers(int(np.abs(values).max()) + 1, 2**39))
        values += offset if rng.random() < 0.5 else -offset
    if values.min() == values.max():
        values[0] += 1
    return values


SPIKES = st.tuples(
    st.integers(0, 2**32 - 1),
    st.integers(2, 2000),
    st.floats(0.0, 0.99),
    st.floats(0.2, 40.0),
    st.sampled_from(["two-sided", "from 0", "from 1", "up to 0", "far"]),
)


@settings(deadline=None, max_examples=60)
@given(SPIKES)
def test_geometric_group_round_trip(spikes: tuple) -> None:
    values = spike_and_slab(*spikes)
    lo = int(values.min())
    table = fit_geometric(np.bincount(values - lo), lo)
    group = CodedGroup(GroupKind.GEOMETRIC, table=table)
    assert group.table_bytes == len(table.encode())
    parsed, decoded = read_coded(coded_bytes([group], [values]), [len(values)])
    assert parsed[0].kind is GroupKind.GEOMETRIC  # the fit is canonical: the reader agrees
    assert decoded[0].tolist() == values.tolist()
    chosen = encode_group(values)
    assert cost(chosen, values) <= cost(group, values)
    assert read_coded(coded_bytes([chosen], [values]), [len(values)])[1][0].tolist() == (
        values.tolist()
    )


def test_writer_picks_geometric_for_a_large_spike_and_slab_group() -> None:
    values = spike_and_slab(11, 200_000, 0.9, 3.0, "two-sided")
    chosen = encode_group(values)
    candidates = _candidates(values)
    assert chosen.kind is GroupKind.GEOMETRIC and chosen.label == "geom"
    costs = [cost(group, values) for group in candidates]
    assert cost(chosen, values) == costs[-1] < min(costs[:-1])
    assert chosen.table_bytes == 1 + 1 + 3  # lo, A, zero level and decays
    assert ideal_bits(chosen, values) <= 1.0005 * empirical_bits(values)


@pytest.mark.parametrize("seed", range(3))
def test_fit_is_within_two_percent_of_brute_force(seed: int) -> None:
    """Every (zero level, decay_pos, decay_neg) on a small group, bits from the tables' weights."""
    values = spike_and_slab(seed, 400, 0.5, 2.0, "two-sided")
    lo, size = int(values.min()), int(values.max() - values.min() + 1)
    counts = np.bincount(values - lo).astype(np.float64)
    sides = [np.arange(lo, lo + size) == 0, np.arange(lo, lo + size) > 0]
    sides.append(~sides[0] & ~sides[1])
    # each side's weights depend only on its own parameter: tabulate them separately
    levels = [GeometricTable(lo, size, level, 1, 1).weights() for level in range(81)]
    decays = [GeometricTable(lo, size, 0, m, m).weights() for m in range(1, 256)]
    parts = [
        np.array(w, dtype=np.float64)[:, side]
        for w, side in zip([levels, decays, decays], sides, strict=True)
    ]
    mass = [part.sum(axis=1) for part in parts]
    logs = [np.log2(part) @ counts[side] for part, side in zip(parts, sides, strict=True)]
    grid = (
        counts.sum()
        * np.log2(mass[0][:, None, None] + mass[1][None, :, None] + mass[2][None, None, :])
        - logs[0][:, None, None]
        - logs[1][None, :, None]
        - logs[2][None, None, :]
    )
    table = fit_geometric(counts.astype(np.int64), lo)
    fitted = ideal_bits(CodedGroup(GroupKind.GEOMETRIC, table=table), values)
    assert fitted <= 1.02 * grid.min()


def test_geometric_tables_reject_invalid_parameters() -> None:
    """The writer cannot build a table the reader would reject."""
    with pytest.raises(ValueError, match="alphabet size 1"):
        fit_geometric(np.array([5]), 0)
    with pytest.raises(ValueError, match="alphabet size"):
        GeometricTable(0, (1 << 20) + 1, 0, 5, FILLER_DECAY)
    with pytest.raises(ValueError, match="positive decay 256"):
        GeometricTable(0, 3, 0, 256, FILLER_DECAY)
    with pytest.raises(ValueError, match="negative decay 0x05"):
        GeometricTable(0, 3, 0, 5, 5)


# --- groups and record streams -------------------------------------------------------------


def cost(group: CodedGroup, values: np.ndarray) -> float:
    """What the writer minimizes per group: table bits plus information content."""
    return 8 * group.table_bytes + ideal_bits(group, values)


def coded_bytes(groups: list[CodedGroup], values: list[np.ndarray]) -> bytes:
    """Group headers, then the one word count and stream (if a group has a table), as a record
    stores them after its layout byte."""
    data = b"".join(group.encode() for group in groups)
    return data + (stream_bytes(encode_stream(groups, values)) if needs_stream(groups) else b"")


def read_coded(data: bytes, counts: list[int]) -> tuple[list[CodedGroup], list[np.ndarray]]:
    """The reader's side of coded_bytes: headers, words, groups decoded in turn, canonical check."""
    reader = ByteReader(data, section="TENS")
    groups = [read_group(reader) for _ in counts]
    at = reader.offset
    words = read_words(reader) if needs_stream(groups) else np.zeros(0, dtype=np.uint32)
    stream = StreamDecoder(reader, words, at)
    values = [stream.decode(group, count, 0) for group, count in zip(groups, counts, strict=True)]
    stream.finish()
    assert reader.remaining == 0
    return groups, values


NEAR_BOUND = st.sampled_from([-(2**40) + 1, 2**40 - 5001, 0])
LATENTS = st.one_of(
    st.lists(st.integers(-5, 5), max_size=300),
    st.lists(st.integers(-5000, 5000), min_size=1, max_size=300),
    st.tuples(NEAR_BOUND, st.lists(st.integers(0, 5000), min_size=1, max_size=50)).map(
        lambda t: [t[0] + v for v in t[1]]
    ),
    st.tuples(st.integers(-(2**40) + 1, 2**40 - 1), st.integers(0, 50)).map(
        lambda t: [t[0]] * t[1]
    ),
)


@settings(deadline=None, max_examples=150)
@given(LATENTS)
def test_group_round_trip(values: list[int]) -> None:
    latents = np.array(values, dtype=np.int64)
    group = encode_group(latents)
    data = coded_bytes([group], [latents])
    parsed, decoded = read_coded(data, [len(latents)])
    assert decoded[0].dtype == np.int64
    assert decoded[0].tolist() == values
    assert parsed[0].encode() == group.encode()
    if len(set(values)) <= 1:  # CONSTANT only: no word count, no words
        assert group.kind is GroupKind.CONSTANT and data == group.encode()


@settings(deadline=None, max_examples=60)
@given(st.lists(LATENTS, min_size=1, max_size=12))
def test_groups_share_one_stream(runs: list[list[int]]) -> None:
    values = [np.array(run, dtype=np.int64) for run in runs]
    groups = [encode_group(v) for v in values]
    data = coded_bytes(groups, values)
    _, decoded = read_coded(data, [len(v) for v in values])
    assert [d.tolist() for d in decoded] == runs
    headers = b"".join(group.encode() for group in groups)
    if needs_stream(groups):
        words = encode_stream(groups, values)
        assert data == headers + uvarint(len(words)) + words.astype("<u4").tobytes()
    else:
        assert data == headers


def test_group_of_wide_range_latents() -> None:
    rng = np.random.default_rng(5)
    values = np.rint(rng.laplace(0, 1500, size=20_000)).clip(-5000, 5000).astype(np.int64)
    group = encode_group(values)
    assert group.kind is GroupKind.QTABLE
    assert group.table.alphabet_size == values.max() - values.min() + 1
    _, decoded = read_coded(coded_bytes([group], [values]), [len(values)])
    assert np.array_equal(decoded[0], values)


def test_group_with_the_largest_alphabet() -> None:
    values = np.array([-(2**19), 2**19 - 1, 0, 0, 5], dtype=np.int64)
    group = encode_group(values)
    assert group.table.alphabet_size == 1 << 20
    decoded = read_coded(coded_bytes([group], [values]), [len(values)])[1]
    assert decoded[0].tolist() == values.tolist()


def test_coder_is_within_one_percent_of_ideal_bits() -> None:
    rng = np.random.default_rng(7)
    for size, scale in [(10_000, 0.7), (10_000, 3.0), (100_000, 1.5), (100_000, 20.0)]:
        values = np.rint(rng.laplace(0, scale, size=size)).astype(np.int64)
        group = encode_group(values)
        ideal = ideal_bits(group, values)
        assert 32 * len(encode_stream([group], [values])) <= 1.01 * ideal
        assert ideal >= empirical_bits(values) - 1e-6


def test_many_groups_pay_for_one_flush() -> None:
    """25 groups of 1,000 symbols: the words are within 1 % plus one word of the ideal bits,
    where one stream per group would pay up to a word (and a word count) for each."""
    rng = np.random.default_rng(8)
    values = [np.rint(rng.laplace(0, 0.3 + 0.2 * g, size=1000)).astype(np.int64) for g in range(25)]
    groups = [encode_group(v) for v in values]
    ideal = sum(ideal_bits(g, v) for g, v in zip(groups, values, strict=True))
    words = encode_stream(groups, values)
    assert 4 * len(words) <= 1.01 * ideal / 8 + 4
    separate = sum(len(encode_stream([g], [v])) for g, v in zip(groups, values, strict=True))
    assert len(words) < separate


def _candidates(values: np.ndarray) -> list[CodedGroup]:
    """The QTABLE r=1..4 and GEOMETRIC groups encode_group chooses from, built directly."""
    lo = int(values.min())
    counts = np.bincount(values - lo)
    tables = [(GroupKind.QTABLE, fit_table(counts, resolution=r, lo=lo)) for r in MANTISSAS]
    tables.append((GroupKind.GEOMETRIC, fit_geometric(counts, lo)))
    return [CodedGroup(kind, table=t) for kind, t in tables]


@pytest.mark.parametrize("scale", [0.4, 4.0])
def test_encoder_picks_the_cheapest_candidate(scale: float) -> None:
    values = np.rint(np.random.default_rng(3).laplace(0, scale, size=5000)).astype(np.int64)
    chosen = encode_group(values)
    costs = [cost(group, values) for group in _candidates(values)]
    first_cheapest = _candidates(values)[costs.index(min(costs))]
    assert chosen.encode() == first_cheapest.encode()


def test_information_content_helpers() -> None:
    values = np.array([0, 0, 0, 1])
    assert empirical_bits(values) == pytest.approx(-3 * np.log2(0.75) - np.log2(0.25))
    assert empirical_bits(np.array([], dtype=np.int64)) == 0.0
    assert ideal_bits(encode_group(np.full(9, 4)), np.full(9, 4)) == 0.0
    group = encode_group(values)
    probabilities = group.table.probabilities()
    assert ideal_bits(group, values) == pytest.approx(
        -3 * np.log2(probabilities[0]) - np.log2(probabilities[1])
    )


GOLDEN_VALUES = np.array([0, 0, 1, 0, -1, 0, 2, 0, 0, 1, 0, 0, -1, 0, 0, 0], dtype=np.int64)
GOLDEN_RUNS = [np.array([1, 0, 1, 1, 0]), GOLDEN_VALUES, np.full(3, -2), 2 * GOLDEN_VALUES[::-1]]


def test_golden_group_bytes() -> None:
    """Pins the bitstream: a change here is a format change, not a refactoring."""
    group = encode_group(GOLDEN_VALUES)
    data = coded_bytes([group], [GOLDEN_VALUES])  # one group: header, word count, words
    assert data.hex() == GOLDEN_GROUP  # GEOMETRIC: lo -1, A 4, level 10, decays 131 and filler
    weights = [2**30, 5793 << 20, 2**30, 131 << 22]  # 7.5 by hand: L(10) = 5793 << 2
    assert group.table.weights().tolist() == weights
    cdf = reference_cdf(np.array(weights, dtype=np.float64) / float(sum(weights)))
    words = encode_stream([group], [GOLDEN_VALUES])
    assert reference_encode((GOLDEN_VALUES + 1).tolist(), cdf) == words.tolist()
    assert read_coded(data, [len(GOLDEN_VALUES)])[1][0].tolist() == GOLDEN_VALUES.tolist()
    qtable = _candidates(GOLDEN_VALUES)[0]  # the QTABLE r1 group revision 2 chose
    qtable_data = coded_bytes([qtable], [GOLDEN_VALUES])
    assert qtable_data.hex() == GOLDEN_QTABLE_GROUP
    assert read_coded(qtable_data, [len(GOLDEN_VALUES)])[1][0].tolist() == GOLDEN_VALUES.tolist()


def test_golden_record_stream() -> None:
    """Four groups (QTABLE, GEOMETRIC, CONSTANT, GEOMETRIC) in one stream (revision 4)."""
    groups = [encode_group(run) for run in GOLDEN_RUNS]
    data = coded_bytes(groups, GOLDEN_RUNS)
    assert [group.label for group in groups] == ["qtable r3", "geom", "const", "geom"]
    assert data.hex() == GOLDEN_STREAM
    cdfs = [reference_cdf(g.table.probabilities()) for g in groups if g.table is not None]
    runs = [run - g.table.lo for g, run in zip(groups, GOLDEN_RUNS, strict=True) if g.table]
    pairs = [(run.tolist(), cdf) for run, cdf in zip(runs, cdfs, strict=True)]
    assert reference_encode_groups(pairs) == encode_stream(groups, GOLDEN_RUNS).tolist()
    decoded = read_coded(data, [len(run) for run in GOLDEN_RUNS])[1]
    assert [d.tolist() for d in decoded] == [run.tolist() for run in GOLDEN_RUNS]


GOLDEN_GROUP = "0201040a838001760cf49b"
GOLDEN_QTABLE_GROUP = "0101040103294880012af88b8d"
GOLDEN_STREAM = "0100020301650201040a838000030203070fffff0210892c8ebc1d570f"


def test_encode_group_rejects_unrepresentable_latents() -> None:
    with pytest.raises(EprError, match="latent bound"):
        encode_group(np.array([0, 2**40]))
    with pytest.raises(EprError, match="more than"):
        encode_group(np.array([0, 2**20]))
    with pytest.raises(EprError, match="integers"):
        encode_group(np.array([0.5, 1.0]))


def _with_words(groups: list[CodedGroup], words: list[int]) -> bytes:
    return b"".join(g.encode() for g in groups) + stream_bytes(np.array(words, dtype=np.uint32))


def test_read_rejects_noncanonical_and_invalid_words() -> None:
    values = np.array([0, 1, 1, 2, 2, 2, 2, 0, 1, 2] * 20, dtype=np.int64)
    other = np.array([3, -1, 0, 0, 0, 5, 0, 0] * 9, dtype=np.int64)
    groups = [encode_group(values), encode_group(other)]
    words = encode_stream(groups, [values, other]).tolist()
    separate = [
        encode_stream([g], [v]).tolist() for g, v in zip(groups, [values, other], strict=True)
    ]
    cases = [
        ("canonical", _with_words(groups, [*words, 0])),
        ("canonical", _with_words(groups, words[:-1])),
        ("canonical", _with_words(groups, separate[0] + separate[1])),  # one flush per group
        ("invalid for the table", _with_words(groups, [0xFFFFFFFF, 0xFFFFFFFF])),
    ]
    for message, data in cases:
        with pytest.raises(FormatError, match=message):
            read_coded(data, [len(values), len(other)])
    assert [d.tolist() for d in read_coded(_with_words(groups, words), [200, 72])[1]] == [
        values.tolist(),
        other.tolist(),
    ]


def test_read_rejects_symbols_of_weight_zero() -> None:
    table = QTable(lo=0, resolution=1, levels=np.array([30, 0], dtype=np.uint8))
    symbols = np.array([0] * 10 + [1])  # the leaky quantizer can still code symbol 1
    first = encode_group(np.array([4, 5, 5]))
    group = CodedGroup(GroupKind.QTABLE, table=table)
    words = encode_stream([first, group], [np.array([4, 5, 5]), symbols])
    with pytest.raises(FormatError, match="weight zero"):
        read_coded(_with_words([first, group], words.tolist()), [3, len(symbols)])


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\x03", "unknown group kind 3"),
        (b"\xff", "unknown group kind 255"),
        (b"\x00" + uvarint(2 * 2**40), "latent bound"),
        (b"\x00", "truncated"),
        (
            b"\x01" + svarint(2**40 - 2) + QTable(0, 1, np.ones(3, np.uint8)).encode()[1:],
            "latent bound",
        ),
        (b"\x02" + svarint(2**40 - 2) + uvarint(3) + bytes([0, 7, FILLER_DECAY]), "latent bound"),
        (b"\x02" + svarint(-(2**40)) + uvarint(2) + bytes([0, FILLER_DECAY, 7]), "latent bound"),
        (
            b"\x01" + QTable(0, 1, np.array([1, 1], np.uint8)).encode() + uvarint(3) + bytes(8),
            "truncated words",
        ),
        (b"\x01" + QTable(0, 1, np.array([1, 1], np.uint8)).encode(), "truncated word_count"),
    ],
)
def test_read_rejects_malformed(data: bytes, message: str) -> None:
    with pytest.raises(FormatError, match=message):
        read_coded(data, [5])
