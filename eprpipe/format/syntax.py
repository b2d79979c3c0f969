"""The byte syntax of the .epr format, described once and used to read, write and document it.

Each `Structure` lists its fields in storage order with their type, validity rule, error code
and spec comment. The reader and the writer walk the same list, so they cannot drift apart: a
value the writer accepts is one the reader accepts, and the rule that rejects a file on read is
the rule that refuses it on write. `render` prints the pseudo-structure exactly as
spec/FORMAT.md shows it, and a test holds the spec to it (the approach of NNCodec's syntax
layer, where one routine per syntax structure serves both directions).
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from eprpipe.errors import EprError
from eprpipe.format.bitio import ByteReader, svarint, uvarint

Context = dict[str, Any]
Rule = Callable[[Any, Context], str | None]  # why a value is invalid, or None

_FIXED = {"u8": struct.Struct("<B"), "u16": struct.Struct("<H"), "u32": struct.Struct("<I")}
_ARRAY_DTYPES = {"u32": "<u4", "f16": "<f2"}


@dataclass(frozen=True)
class Field:
    """One syntax element: `kind` is u8, u16, u32, varint, svarint or f16.

    `count` makes it an array (a u8 array is read as `bytes`); `count_text` is how the spec
    writes the count; `present` makes it conditional on earlier fields.
    """

    name: str
    kind: str
    comment: str
    rule: Rule | None = None
    code: str = "invalid-field"
    count: Callable[[Context], int] | int | None = None
    count_text: str = ""
    present: Callable[[Context], bool] | None = None

    def declaration(self) -> str:
        suffix = f"[{self.count_text or self.count}]" if self.count is not None else ""
        return f"{self.kind:<7} {self.name}{suffix}"


@dataclass(frozen=True)
class Structure:
    name: str
    fields: tuple[Field, ...]
    comment: str = ""

    @property
    def size(self) -> int:
        """Bytes of a structure whose fields all have a fixed size."""
        widths = {"u8": 1, "u16": 2, "u32": 4, "f16": 2}
        total = 0
        for item in self.fields:
            if item.kind not in widths or callable(item.count) or item.present is not None:
                raise TypeError(f"{self.name} has no fixed size")
            total += widths[item.kind] * (1 if item.count is None else int(item.count))
        return total

    def read(self, reader: ByteReader, context: Context | None = None) -> Context:
        """Parse every present field, applying its rule; returns the fields by name.

        `context` supplies values from enclosing structures (e.g. the shape for a layout).
        Offsets in errors point at the first byte of the offending field.
        """
        values: Context = dict(context or {})
        for item in self._present(values):
            at = reader.offset
            value = _read_value(reader, item, values)
            values[item.name] = value
            if item.rule is not None and (problem := item.rule(value, values)):
                raise reader.error(problem, at=at, code=item.code)
        return values

    def problem(self, values: Context, context: Context | None = None) -> str | None:
        """The first rule `values` break, named by field, or None; nothing is serialized."""
        scope: Context = {**(context or {}), **values}
        for item in self._present(scope):
            if item.rule is not None and (problem := item.rule(values[item.name], scope)):
                return f"{item.name}: {problem}"
        return None

    def write(self, values: Context, context: Context | None = None) -> bytes:
        """Serialize `values`; a value the reader would reject is an EprError here."""
        scope: Context = {**(context or {}), **values}
        fields = list(self._present(scope))
        for item in fields:
            if item.name not in values:
                raise EprError(f"{self.name}: field {item.name} is missing")
            if item.count is not None and len(values[item.name]) != _count(item.count, scope):
                raise EprError(
                    f"{self.name}.{item.name}: {len(values[item.name])} elements, "
                    f"syntax needs {_count(item.count, scope)}"
                )
        if problem := self.problem(values, context):
            raise EprError(f"{self.name}.{problem}")
        return self.pack(values, context)

    def pack(self, values: Context, context: Context | None = None) -> bytes:
        """Serialize `values` applying no rule: test files must break rules with intact bytes."""
        scope: Context = {**(context or {}), **values}
        return b"".join(_encode_value(item, values[item.name]) for item in self._present(scope))

    def _present(self, scope: Context) -> Iterator[Field]:
        """The fields `scope` (the values read or given so far) says are in the structure."""
        return (item for item in self.fields if item.present is None or item.present(scope))

    def render(self) -> str:
        """The pseudo-structure as spec/FORMAT.md prints it."""
        opening = f"{self.name} {{"
        lines = [f"{opening:<34}// {self.comment}" if self.comment else opening]
        for item in self.fields:
            declaration = f"  {item.declaration()}"
            lines.append(f"{declaration:<34}// {item.comment}")
        lines.append("}")
        return "\n".join(lines)


def _count(count: Callable[[Context], int] | int, values: Context) -> int:
    return count(values) if callable(count) else int(count)


def _read_scalar(reader: ByteReader, kind: str, what: str) -> Any:
    if kind == "varint":
        return reader.read_uvarint(what)
    if kind == "svarint":
        return reader.read_svarint(what)
    if kind == "f16":
        return np.frombuffer(reader.read_bytes(2, what), dtype="<f2").astype(np.float16)[0]
    return _FIXED[kind].unpack(reader.read_bytes(_FIXED[kind].size, what))[0]


def _read_value(reader: ByteReader, item: Field, values: Context) -> Any:
    if item.count is None:
        return _read_scalar(reader, item.kind, item.name)
    count = _count(item.count, values)
    if item.kind == "u8":
        return bytes(reader.read_bytes(count, item.name))
    if item.kind in _ARRAY_DTYPES:
        dtype = np.dtype(_ARRAY_DTYPES[item.kind])
        if count > reader.remaining // dtype.itemsize:
            raise reader.error(
                f"truncated {item.name}: need {count} x {dtype.itemsize} bytes, "
                f"{reader.remaining} left",
                code="truncated",
            )
        data = reader.read_bytes(count * dtype.itemsize, item.name)
        return np.frombuffer(data, dtype=dtype).astype(dtype.newbyteorder("="))
    return tuple(_read_scalar(reader, item.kind, item.name) for _ in range(count))


def _encode_scalar(kind: str, value: Any) -> bytes:
    if kind == "varint":
        return uvarint(int(value))
    if kind == "svarint":
        return svarint(int(value))
    if kind == "f16":
        return np.asarray(value, dtype="<f2").tobytes()
    return _FIXED[kind].pack(int(value))


def _encode_value(item: Field, value: Any) -> bytes:
    if item.count is None:
        return _encode_scalar(item.kind, value)
    if item.kind == "u8":
        return bytes(value)
    if item.kind in _ARRAY_DTYPES:
        return np.asarray(value).astype(_ARRAY_DTYPES[item.kind]).tobytes()
    return b"".join(_encode_scalar(item.kind, element) for element in value)


def in_range(low: int, high: int, what: str) -> Rule:
    """Rule: low <= value <= high."""
    return lambda value, _: (
        None if low <= value <= high else f"{what} {value} outside {low}..{high}"
    )


def one_of(allowed: dict[int, str] | set[int], what: str) -> Rule:
    """Rule: the value is one of the enumerated codes."""
    return lambda value, _: None if value in allowed else f"unknown {what} {value}"
