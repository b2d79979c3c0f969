"""The syntax layer: reader and writer walk one description, so they accept the same values."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from eprpipe.errors import EprError, FormatError
from eprpipe.format import structures
from eprpipe.format.bitio import ByteReader
from eprpipe.format.syntax import Structure

U8, U16, U32 = st.integers(0, 255), st.integers(0, 2**16 - 1), st.integers(0, 2**32 - 1)
SMALL_SIGNED = st.integers(-(2**41), 2**41)


def assert_one_reading(structure: Structure, values: dict, context: dict | None = None) -> None:
    """Valid values round-trip through both directions; invalid ones fail both, same field.

    `pack` applies no rule: it writes what a careless or hostile producer writes."""
    data = structure.pack(values, context)
    problem = structure.problem(values, context)
    if problem is None:
        assert structure.write(values, context) == data
        read = structure.read(ByteReader(data), context)
        for name, value in values.items():
            assert np.array_equal(read[name], value), name
        return
    field = next(item for item in structure.fields if problem.startswith(f"{item.name}: "))
    with pytest.raises(EprError):
        structure.write(values, context)
    with pytest.raises(FormatError) as info:
        structure.read(ByteReader(data), context)
    assert info.value.code == field.code
    prefix = Structure("prefix", structure.fields[: structure.fields.index(field)]).pack(
        values, context
    )
    assert info.value.offset == len(prefix)


@given(st.integers(0, 3), U16, U16, st.integers(0, 16), st.integers(0, 3))
def test_header(major: int, minor: int, count: int, alignment: int, flags: int) -> None:
    values = {"magic": structures.MAGIC, "version_major": major, "version_minor": minor}
    values |= {"section_count": count, "alignment": alignment, "flags": flags}
    assert_one_reading(structures.HEADER, values)


@given(st.binary(min_size=4, max_size=4), st.integers(0, 5), U32, U32)
def test_section_entry(tag: bytes, flags: int, length: int, crc: int) -> None:
    values = {"tag": tag, "flags": flags, "length": length, "crc": crc}
    assert_one_reading(structures.SECTION_ENTRY, values)


@given(
    st.binary(min_size=1, max_size=6), st.integers(0, 4), st.lists(st.integers(0, 70), max_size=9)
)
def test_record_head(name: bytes, kind: int, dims: list[int]) -> None:
    values = {"name_length": len(name), "name": name, "kind": kind, "ndim": len(dims)}
    assert_one_reading(structures.RECORD_HEAD, values | {"dims": tuple(dims)})


@given(U8, SMALL_SIGNED)
def test_group_kind_and_constant(kind: int, value: int) -> None:
    assert_one_reading(structures.GROUP_KIND, {"kind": kind})
    assert_one_reading(structures.CONSTANT_GROUP, {"value": value})


@given(SMALL_SIGNED, st.integers(0, 2**21), st.integers(0, 90), U8, U8)
def test_geometric_group(lo: int, size: int, zero: int, pos: int, neg: int) -> None:
    values = {"lo": lo, "alphabet_size": size, "zero_level": zero}
    assert_one_reading(structures.GEOMETRIC_GROUP, values | {"decay_pos": pos, "decay_neg": neg})


@given(st.integers(-8, 8), st.integers(0, 40), st.integers(0, 6), st.binary(max_size=12))
def test_qtable_group(lo: int, size: int, resolution: int, levels: bytes) -> None:
    values = {"lo": lo, "alphabet_size": size, "resolution": resolution}
    values |= {"levels_length": len(levels), "levels": levels}
    assert_one_reading(structures.QTABLE_GROUP, values)


@given(
    st.sampled_from([np.float16(0.5), np.float16(-0.0), np.float16("inf"), np.float16("nan")]),
    U8,
    st.lists(st.integers(0, 3), min_size=0, max_size=3),
)
def test_scalar_body(step: np.float16, layout: int, dims: list[int]) -> None:
    context = {"dims": tuple(dims), "kind": 1}
    assert_one_reading(structures.SCALAR_BODY, {"step": step, "layout": layout}, context)


def test_fixed_sizes_and_rendering() -> None:
    assert (structures.HEADER.size, structures.SECTION_ENTRY.size) == (16, 16)
    with pytest.raises(TypeError):
        _ = structures.RECORD_HEAD.size
    rendered = structures.GEOMETRIC_GROUP.render().splitlines()
    assert rendered[0].startswith("geometric_group {") and rendered[-1] == "}"
    assert [line.split()[1] for line in rendered[1:-1]] == [
        "lo", "alphabet_size", "zero_level", "decay_pos", "decay_neg",
    ]  # fmt: skip
