"""Section surgery: a file taken apart into header fields and section bodies, changed, and
joined again by the writer's own code (container.join_sections) with every length and CRC-32
right, so that an edit reaches the parser it aims at instead of the checksum.

`split` gives a plain list of Sections: insert, remove or reorder them as a list, then
`assemble` with whatever header fields the test needs; `Container` keeps the file's own header
fields for edits that change bodies only (`replace_section`).
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import NamedTuple

import zstandard

from eprpipe.format.bitio import ByteReader
from eprpipe.format.container import ZSTD_LEVEL, join_sections, split_sections
from eprpipe.format.structures import HEADER, SECTION_ENTRY, VERSION_MAJOR

_CRC_BYTES = 4
_COUNT_AT = 12  # the header's section_count field


class Section(NamedTuple):
    """One section as stored (padding is not part of it)."""

    tag: bytes
    flags: int
    body: bytes


@dataclass(frozen=True)
class Container:
    """A file as header fields and sections, so that an edit can re-seal it (`to_bytes`)."""

    major: int
    minor: int
    alignment: int
    flags: int
    sections: tuple[Section, ...]

    @classmethod
    def of(cls, data: bytes) -> Container:
        """A valid file taken apart; FormatError for a broken header or section table."""
        header = HEADER.read(ByteReader(data))
        return cls(
            header["version_major"],
            header["version_minor"],
            header["alignment"],
            header["flags"],
            tuple(split(data)),
        )

    def body(self, tag: bytes) -> bytes:
        return next(section.body for section in self.sections if section.tag == tag)

    def with_body(self, tag: bytes, body: bytes) -> Container:
        sections = tuple(s._replace(body=body) if s.tag == tag else s for s in self.sections)
        return replace(self, sections=sections)

    def to_bytes(self) -> bytes:
        return assemble(
            self.sections,
            alignment=self.alignment,
            minor=self.minor,
            flags=self.flags,
            major=self.major,
        )


def split(data: bytes) -> list[Section]:
    """The sections of a file whose header and section table are valid, padding dropped."""
    return [Section(*section) for section in split_sections(data)]


def assemble(
    sections: Sequence[tuple[bytes, int, bytes]],
    *,
    alignment: int = 0,
    minor: int = 0,
    flags: int = 0,
    major: int = VERSION_MAJOR,
) -> bytes:
    """A file around `sections` with correct lengths, checksums and zero padding, whatever
    rules its fields break (alignments past the largest legal one get no padding)."""
    return join_sections(
        sections, alignment=alignment, major=major, minor=minor, flags=flags, checked=False
    )


def replace_section(data: bytes, tag: bytes, body: bytes) -> bytes:
    """`data` with the body of section `tag` replaced, everything else re-sealed."""
    return Container.of(data).with_body(tag, body).to_bytes()


def section_offset(data: bytes, tag: bytes) -> int:
    """Where the body of section `tag` starts."""
    box = Container.of(data)
    offset = header_bytes(len(box.sections))
    for section in box.sections:
        offset += -offset % (1 << box.alignment)
        if section.tag == tag:
            return offset
        offset += len(section.body)
    raise KeyError(tag)


def header_bytes(section_count: int) -> int:
    """Header, section table and header CRC of a file of `section_count` sections."""
    return HEADER.size + section_count * SECTION_ENTRY.size + _CRC_BYTES


def reseal_header(data: bytearray) -> None:
    """Recompute the header CRC in place, for the section count the header now declares."""
    count = int.from_bytes(data[_COUNT_AT : _COUNT_AT + 2], "little")
    _seal(data, header_bytes(count) - _CRC_BYTES)


def with_header_byte(data: bytes, offset: int, value: int) -> bytes:
    """`data` with one header byte replaced and the header checksum fixed, nothing else."""
    patched = bytearray(data)
    patched[offset] = value
    _seal(patched, header_bytes(len(split(data))) - _CRC_BYTES)
    return bytes(patched)


def _seal(data: bytearray, end: int) -> None:
    """Write the CRC-32 of data[:end] at `end`, if the file reaches that far."""
    if end + _CRC_BYTES <= len(data):
        data[end : end + _CRC_BYTES] = zlib.crc32(bytes(data[:end])).to_bytes(4, "little")


def canonical_json(value: object) -> bytes:
    """JSON as a manifest must be written (spec 4.1): sorted keys, no spaces, UTF-8."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def zstd(content: bytes, level: int = ZSTD_LEVEL) -> bytes:
    """A frame declaring its content size, as sections must be (any level will do)."""
    return zstandard.ZstdCompressor(level=level, write_content_size=True).compress(content)
