"""Fuzz case families that work on a file's bytes and sections: bit flips, truncation and
splices (1-3), size fields (4), deep edits behind correct checksums (5), hostile zstd frames
(6), and element allowance that padding and unknown sections must not buy (10)."""

from __future__ import annotations

import math
import random
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import zstandard

from eprpipe.format.bitio import ByteReader, uvarint
from eprpipe.format.limits import DEFAULT_LIMITS
from eprpipe.format.structures import rdft_minor
from eprpipe.format.testing.fuzz_seeds import Seed, fast_zstd
from eprpipe.format.testing.graphs import weightless
from eprpipe.format.testing.records import constant_record
from eprpipe.format.testing.sections import Section, reseal_header

ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
SKIPPABLE_MAGIC = b"\x50\x2a\x4d\x18"
BOMB_BYTES = 60 << 20  # declares less than the 64 MiB graph limit, from a 2 KiB frame
DOC_BOMB_BYTES = 100 << 20


# --- strategies 1-3: plain byte mutations ---------------------------------------------------


def flip_bits(rng: random.Random, data: bytes, most: int = 8) -> bytes:
    """1..`most` random bit flips: the checksums must catch them, or the parsers."""
    out = bytearray(data)
    bits = range(8 * len(out))
    for position in rng.sample(bits, min(rng.randint(1, most), len(bits))):  # distinct bits
        out[position // 8] ^= 1 << (position % 8)
    return bytes(out)


def bit_flips(rng: random.Random, seed: Seed, seeds: Sequence[Seed]) -> bytes:
    """Strategy 1: flip 1..8 bits anywhere in the file."""
    return flip_bits(rng, seed.data)


def truncation(rng: random.Random, seed: Seed, seeds: Sequence[Seed]) -> bytes:
    """Strategy 2: the file cut at a random length (empty included)."""
    return seed.data[: rng.randrange(len(seed.data))]


def splice_bytes(rng: random.Random, data: bytes, donor: bytes) -> bytes:
    """A random slice of `donor` inserted into, or written over, `data` at a random place."""
    start = rng.randrange(len(donor))
    piece = donor[start : start + rng.choice((1, 4, 16, 64, len(donor)))]
    at = rng.randrange(len(data) + 1)
    if rng.random() < 0.5:
        return data[:at] + piece + data[at:]
    return data[:at] + piece + data[at + len(piece) :]


def splice(rng: random.Random, seed: Seed, seeds: Sequence[Seed]) -> bytes:
    """Strategy 3: copy a slice of this file or another seed into a random position."""
    return splice_bytes(rng, seed.data, rng.choice(seeds).data)


# --- strategy 4: size fields ----------------------------------------------------------------

U32_EDGES = (0, 1, 2, 0x7FFFFFFF, 1 << 31, 0xFFFFFFFF)
VARINT_EDGES = (
    0, 1, 2, 127, 128, 255, 4096, 4097, 1 << 20, (1 << 20) + 1, (1 << 31) - 1, 1 << 31,
    (1 << 32) - 1, 1 << 32, 1 << 40, (1 << 63) - 1, 1 << 63, (1 << 64) - 1,
)  # fmt: skip
HOSTILE_VARINTS = (
    b"\x80\x00",  # non-minimal zero
    b"\xff" * 9 + b"\x01",  # 2**64 - 1, the largest legal
    b"\xff" * 9 + b"\x02",  # over 64 bits
    b"\xff" * 11,  # longer than 10 bytes, unterminated
    b"\x80",  # ends inside the varint
    b"\x81\x80\x80\x80\x80\x80\x80\x80\x80\x00",  # non-minimal, 10 bytes
)


def _edge(rng: random.Random, current: int, edges: Sequence[int], top: int) -> int:
    """A boundary value, or one next to the current value, within [0, top]."""
    near = (current - 1, current + 1, 2 * current, current + 256)
    value = rng.choice((*edges, *near, rng.randrange(top + 1)))
    return min(max(value, 0), top)


def edit_section_length(rng: random.Random, seed: Seed) -> bytes:
    """A section-table length (or the section count) rewritten; the header CRC usually fixed."""
    out = bytearray(seed.data)
    count = len(seed.container.sections)
    if rng.random() < 0.15:
        value = rng.choice((0, 1, 2, count - 1, count + 1, 0xFFFF))
        struct.pack_into("<H", out, 12, value)
    else:
        at = 16 + 16 * rng.randrange(count) + 8
        current = struct.unpack_from("<I", out, at)[0]
        struct.pack_into("<I", out, at, _edge(rng, current, U32_EDGES, 0xFFFFFFFF))
    if rng.random() < 0.9:
        reseal_header(out)
    return bytes(out)


def edit_tens_varint(rng: random.Random, seed: Seed) -> bytes:
    """A TENS varint (count, name length, dim, alphabet, word count...) set to an edge value."""
    tens = seed.container.body(b"TENS")
    target = rng.choice([f for f in seed.fields if f.what != "record"])
    if rng.random() < 0.2:
        encoded = rng.choice(HOSTILE_VARINTS)
    else:
        current = ByteReader(tens[target.start : target.end]).read_uvarint()
        encoded = uvarint(_edge(rng, current, VARINT_EDGES, (1 << 64) - 1))
    body = tens[: target.start] + encoded + tens[target.end :]
    return seed.container.with_body(b"TENS", body).to_bytes()


def size_fields(rng: random.Random, seed: Seed, seeds: Sequence[Seed]) -> bytes:
    """Strategy 4: boundary values in section lengths and TENS varints."""
    if rng.random() < 0.3:
        return edit_section_length(rng, seed)
    return edit_tens_varint(rng, seed)


# --- strategy 5: deep mutations behind correct checksums ------------------------------------

INTERESTING_U8 = (0x00, 0x01, 0x02, 0x03, 0x07, 0x08, 0x09, 0x7F, 0x80, 0xFF)
INTERESTING_U16 = (0x0000, 0x0001, 0x3C00, 0x7BFF, 0x7C00, 0x7E00, 0xFC00, 0xFFFF)  # f16 edges


def mutate_bytes(rng: random.Random, data: bytes) -> bytes:
    """One structure-blind edit: flips, an edge value, or bytes inserted, deleted, doubled."""
    op = rng.choice(("flip", "u8", "u16", "u32", "insert", "delete", "duplicate"))
    if op == "flip" or not data:
        return flip_bits(rng, data) if data else bytes([rng.randrange(256)])
    out, at = bytearray(data), rng.randrange(len(data))
    if op == "u8":
        out[at] = rng.choice(INTERESTING_U8)
    elif op in ("u16", "u32"):
        width, edges = (2, INTERESTING_U16) if op == "u16" else (4, U32_EDGES)
        at = max(0, min(at, len(out) - width))
        out[at : at + width] = rng.choice(edges).to_bytes(width, "little")[: len(out) - at]
    elif op == "insert":
        out[at:at] = rng.randbytes(rng.choice((1, 2, 4, 8, 32)))
    elif op == "delete":
        del out[at : at + rng.choice((1, 2, 4, 8, 32))]
    else:
        length = rng.choice((1, 4, 16, 64))
        out[at:at] = out[at : at + length]
    return bytes(out)


def _name_span(record: bytes) -> tuple[int, int]:
    reader = ByteReader(record)
    length = reader.read_uvarint()
    return reader.pos, reader.pos + length


def mutate_records(rng: random.Random, seed: Seed) -> bytes:
    """Whole TENS records dropped, doubled, swapped or renamed, the record count kept right."""
    tens = seed.container.body(b"TENS")
    records = [tens[f.start : f.end] for f in seed.fields if f.what == "record"]
    op = rng.choice(("drop", "duplicate", "swap", "rename"))
    index = rng.randrange(len(records))
    if op == "drop":
        del records[index]
    elif op == "duplicate":
        records.insert(rng.randrange(len(records) + 1), records[index])
    elif op == "swap":
        at = rng.randrange(len(records))
        records[index], records[at] = records[at], records[index]
    else:
        start, end = _name_span(records[index])
        donor = records[rng.randrange(len(records))]
        name = donor[slice(*_name_span(donor))]
        name = rng.choice((name, mutate_bytes(rng, name), b"\xff\xfe", b"x" * (end - start)))
        records[index] = uvarint(len(name)) + name + records[index][end:]
    count = len(records) + (0 if rng.random() < 0.85 else rng.choice((-1, 1)))
    body = uvarint(max(count, 0)) + b"".join(records)
    return seed.container.with_body(b"TENS", body).to_bytes()


STRUCTURE_EDITS = (
    "order", "optional", "required", "drop", "twice", "flags", "tag", "minor", "major",
    "alignment", "header-flags", "empty",
)  # fmt: skip


def _printable_tag(rng: random.Random) -> bytes:
    return bytes(rng.randrange(0x21, 0x7F) for _ in range(4))


def mutate_structure(rng: random.Random, seed: Seed) -> bytes:
    """Container-level edits with correct CRCs; several (order, optional sections) are legal."""
    box = seed.container
    sections = list(box.sections)
    index = rng.randrange(len(sections))
    op = rng.choice(STRUCTURE_EDITS)
    if op == "order":
        rng.shuffle(sections)
    elif op in ("optional", "required"):
        extra = Section(_printable_tag(rng), int(op == "required"), rng.randbytes(rng.randrange(9)))
        sections.insert(rng.randrange(len(sections) + 1), extra)
    elif op == "drop":
        del sections[index]
    elif op == "twice":
        sections.insert(rng.randrange(len(sections) + 1), sections[index])
    elif op == "flags":
        flags = rng.choice((0, 2, 3, 0x80000001, 0xFFFFFFFF))
        sections[index] = sections[index]._replace(flags=flags)
    elif op == "tag":
        tag = rng.choice((b"ME A", b"ET\x00A", b"\x7fTEN", b"GR\xffH", b"meta", b"TENS"))
        sections[index] = sections[index]._replace(tag=tag)
    elif op == "empty":
        sections[index] = sections[index]._replace(body=b"")
    else:
        value = {
            "minor": rng.choice((1, 7, 0xFFFF)),
            "major": rng.choice((0, 2, 0xFFFF)),
            "alignment": rng.choice((1, 2, 6, 12, 13, 255)),
            "header-flags": rng.choice((1, 0x80, 0xFF)),
        }[op]
        field: dict[str, Any] = {{"header-flags": "flags"}.get(op, op): value}
        box = replace(box, **field)
    return replace(box, sections=tuple(sections)).to_bytes()


def mutate_inflated(rng: random.Random, seed: Seed) -> bytes:
    """Edit the manifest text or graph protobuf itself, then re-compress: reaches the parsers."""
    tag, content = rng.choice(((b"META", seed.manifest_json), (b"GRPH", seed.graph)))
    for _ in range(rng.choice((1, 1, 2, 4))):
        content = mutate_bytes(rng, content)
    return seed.container.with_body(tag, fast_zstd(content)).to_bytes()


def mutate_body(rng: random.Random, seed: Seed) -> bytes:
    """Edit the stored bytes of one section (mostly TENS), then fix its CRC."""
    tag = rng.choice((b"TENS", b"TENS", b"TENS", b"META", b"GRPH"))
    body = seed.container.body(tag)
    for _ in range(rng.choice((1, 1, 2, 3))):
        body = mutate_bytes(rng, body)
    return seed.container.with_body(tag, body).to_bytes()


def deep(rng: random.Random, seed: Seed, seeds: Sequence[Seed]) -> bytes:
    """Strategy 5: mutations that recompute the CRCs, so they reach the section parsers."""
    mutation = rng.choices(
        (mutate_body, mutate_records, mutate_structure, mutate_inflated), weights=(5, 2, 2, 3)
    )[0]
    return mutation(rng, seed)


# --- strategy 6: hostile zstd frames --------------------------------------------------------


@dataclass(frozen=True)
class Frame:
    """A zstd frame header taken apart (RFC 8878 3.1.1), to rebuild it with other claims."""

    single_segment: bool
    checksum: bool
    window_byte: int | None
    dict_id: int | None
    content_size: int | None
    blocks: bytes  # everything after the header, checksum included

    @classmethod
    def parse(cls, frame: bytes) -> Frame:
        descriptor = frame[4]
        single = bool(descriptor & 0x20)
        at = 5
        window = None if single else frame[at]
        at += 0 if single else 1
        dict_len = (0, 1, 2, 4)[descriptor & 3]
        dict_id = int.from_bytes(frame[at : at + dict_len], "little") if dict_len else None
        at += dict_len
        fcs_len = (1 if single else 0, 2, 4, 8)[descriptor >> 6]
        size = int.from_bytes(frame[at : at + fcs_len], "little") if fcs_len else None
        if size is not None and fcs_len == 2:
            size += 256
        return cls(single, bool(descriptor & 4), window, dict_id, size, frame[at + fcs_len :])

    def build(self) -> bytes:
        """The frame with 8-byte content size and 4-byte dictionary fields where present."""
        single = self.single_segment and self.content_size is not None
        descriptor = (3 << 6 if self.content_size is not None else 0) | (0x20 if single else 0)
        descriptor |= (4 if self.checksum else 0) | (3 if self.dict_id is not None else 0)
        out = ZSTD_MAGIC + bytes([descriptor])
        if not single:  # 0x58: exponent 11, a 2 MiB window
            out += bytes([self.window_byte if self.window_byte is not None else 0x58])
        if self.dict_id is not None:
            out += self.dict_id.to_bytes(4, "little")
        if self.content_size is not None:
            out += self.content_size.to_bytes(8, "little")
        return out + self.blocks


def zero_frame(size: int, prefix: bytes = b"") -> bytes:
    """`prefix` then zeros, `size` bytes in all, compressed in chunks: never held in memory."""
    compressor = zstandard.ZstdCompressor(level=1, write_content_size=True)
    stream = compressor.compressobj(size=size)
    parts, left, chunk = [stream.compress(prefix)], size - len(prefix), bytes(1 << 20)
    while left > 0:
        parts.append(stream.compress(chunk[: min(left, len(chunk))]))
        left -= len(chunk)
    return b"".join(parts) + stream.flush()


_BOMBS: dict[tuple[str, str], bytes] = {}


def bomb(kind: str, seed: Seed) -> bytes:
    """Cached small frames that inflate hugely: zeros, or a real graph with a giant doc_string."""
    key = (kind, seed.name if kind == "doc" else "")
    if key not in _BOMBS:
        if kind == "zeros":
            _BOMBS[key] = zero_frame(BOMB_BYTES)
        elif kind == "meta-limit":
            _BOMBS[key] = zero_frame(DEFAULT_LIMITS.max_manifest_bytes + 1)
        else:  # ModelProto.doc_string (field 6) appended: the model still parses
            prefix = seed.graph + b"\x32" + uvarint(DOC_BOMB_BYTES)
            _BOMBS[key] = zero_frame(len(prefix) + DOC_BOMB_BYTES, prefix)
    return _BOMBS[key]


FRAME_VARIANTS = (
    "bomb", "doc-bomb", "meta-limit", "no-size", "huge-size", "lie-low", "lie-high",
    "trailing", "concatenated", "skippable-after", "skippable-before", "garbage", "truncated",
    "dictionary", "checksum", "window", "reserved-bit", "empty",
)  # fmt: skip


def skippable(rng: random.Random) -> bytes:
    """A skippable frame (magic 0x184D2A5?): legal zstd, but not allowed in a section."""
    payload = rng.randbytes(rng.randrange(16))
    magic = bytes([0x50 + rng.randrange(16)]) + SKIPPABLE_MAGIC[1:]
    return magic + struct.pack("<I", len(payload)) + payload


def hostile_frame(
    rng: random.Random, content: bytes, limit: int, bomb_of: Callable[[str], bytes]
) -> bytes:
    """One frame the spec says a consumer must reject, or must inflate within its bounds."""
    frame = fast_zstd(content)
    parsed = Frame.parse(frame)
    variant = rng.choice(FRAME_VARIANTS)
    if variant in ("bomb", "doc-bomb", "meta-limit"):
        return bomb_of({"bomb": "zeros", "doc-bomb": "doc"}.get(variant, variant))
    if variant == "no-size":
        return zstandard.ZstdCompressor(write_content_size=False).compress(content)
    if variant == "huge-size":
        size = rng.choice((limit + 1, 1 << 32, 1 << 63, (1 << 64) - 1))
        return replace(parsed, content_size=size).build()
    if variant in ("lie-low", "lie-high"):
        delta = rng.choice((1, 2, 100)) * (-1 if variant == "lie-low" else 1)
        return replace(parsed, content_size=max(len(content) + delta, 0)).build()
    if variant == "trailing":
        return frame + rng.randbytes(rng.randint(1, 16))
    if variant == "concatenated":
        return frame + rng.choice((frame, fast_zstd(b""), fast_zstd(b"{}")))
    if variant == "skippable-after":
        return frame + skippable(rng)
    if variant == "skippable-before":
        return skippable(rng) + frame
    if variant == "garbage":
        return ZSTD_MAGIC + rng.randbytes(rng.randrange(64))
    if variant == "truncated":
        return frame[: rng.randrange(len(frame))]
    if variant == "dictionary":
        return replace(parsed, dict_id=rng.choice((1, 0x8000, 0xFFFFFFFF))).build()
    if variant == "checksum":
        return zstandard.ZstdCompressor(write_checksum=True, write_content_size=True).compress(
            content
        )
    if variant == "window":  # exponent up to 31: windows of up to 2**41 bytes
        window = (rng.choice((17, 18, 20, 31)) << 3) | rng.randrange(8)
        return replace(parsed, single_segment=False, window_byte=window).build()
    if variant == "reserved-bit":
        return frame[:4] + bytes([frame[4] | 0x08]) + frame[5:]
    return fast_zstd(b"")


def zstd_frames(rng: random.Random, seed: Seed, seeds: Sequence[Seed]) -> bytes:
    """Strategy 6: hostile frames in META or GRPH behind correct CRCs."""
    tag = rng.choice((b"META", b"GRPH"))
    content = seed.manifest_json if tag == b"META" else seed.graph
    limit = DEFAULT_LIMITS.max_manifest_bytes if tag == b"META" else DEFAULT_LIMITS.max_graph_bytes
    frame = hostile_frame(rng, content, limit, lambda kind: bomb(kind, seed))
    return seed.container.with_body(tag, frame).to_bytes()


# --- strategy 10: padding-bought element allowance ------------------------------------------

# A reader that accepts these spends about 25 bytes per element (int64 latents, float64 and
# float32 weights, the ONNX copy): these caps keep one accepted case near 200 MB per command.
MAX_PADDED_ELEMENTS = 1 << 23
MAX_RDFT_ELEMENTS = 1 << 22
MAX_FILLER_BYTES = 384 << 10
RDFT_SIDES = (2, 3, 5, 7, 16, 32, 64)
RDFT_SIDES_3D = (2, 3, 5, 7, 16)  # 3-D kernels: 64^3 taps would be one slow kernel per block


def padded_dims(rng: random.Random, elements: int, rdft: bool) -> list[int]:
    """A shape of about `elements` elements (at least that many): 1-D, 2-D, or rdft kernels
    of rank 3, 4 or 5 (1-D, 2-D or 3-D kernels; a 2-D one may be 2 x 1)."""
    if rdft:
        rank = rng.choice((3, 4, 4, 5))
        side = rng.choice(RDFT_SIDES_3D if rank == 5 else RDFT_SIDES)
        kernel = [side] * (rank - 2)
        if rank == 4 and side == 2 and rng.random() < 0.5:
            kernel[-1] = 1
        inner = rng.choice((1, 3, 16, 64))
        return [-(-elements // (inner * math.prod(kernel))), inner, *kernel]
    if rng.random() < 0.5:
        return [elements]
    columns = rng.choice((3, 64, 4096))
    return [-(-elements // columns), columns]


def filler_sections(rng: random.Random, alignment: int) -> list[Section]:
    """Unknown optional sections (required flag clear): many small ones under a large
    alignment (padding), or a few large ones of zeros or random bytes."""
    kind = rng.choice(("many", "zeros", "noise", "mixed"))
    count = rng.choice((8, 32, 64)) if kind == "many" or alignment >= 9 else rng.randint(1, 3)
    sections, budget = [], MAX_FILLER_BYTES
    for index in range(count):
        if kind == "many":
            size = rng.randint(1, 16)
        else:
            size = min(budget, rng.choice((1 << 10, 16 << 10, 64 << 10, 256 << 10)))
        noise = kind == "noise" or (kind == "mixed" and rng.random() < 0.5)
        sections.append(Section(b"P%03d" % index, 0, rng.randbytes(size) if noise else bytes(size)))
        budget -= size
    return sections


def padding_allowance(rng: random.Random, seed: Seed, seeds: Sequence[Seed]) -> bytes:
    """Strategy 10: file bytes that must not buy element allowance (alignment padding, unknown
    optional sections of zeros or noise) spent on one CONSTANT record, scalar or rdft with
    kernels up to 64x64, that declares more elements than the file's core sections allow.

    Every case declares more than the allowance of the file without its padding and unknown
    sections, so a reader that does not count them rejects it (`limit-exceeded`); one that
    does accepts it. The declared elements are capped (MAX_PADDED_ELEMENTS, MAX_RDFT_ELEMENTS:
    at most ~200 MB per command if accepted) and the filler at MAX_FILLER_BYTES per case.
    """
    rdft = rng.random() < 0.4
    name = f"pad.{rng.randrange(1000)}".encode()
    alignment = rng.choice((0, 6, 9, 12, 12))
    fillers = filler_sections(rng, alignment)
    # The core sections with the new record and initializer, and every section table entry:
    # generous, so that any reader that leaves out padding and unknown sections rejects it.
    honest_bytes = len(seed.data) + 128 + 16 * (len(fillers) + 1)
    honest = DEFAULT_LIMITS.element_allowance(honest_bytes) - seed.elements
    cap = MAX_RDFT_ELEMENTS if rdft else MAX_PADDED_ELEMENTS
    excess = rng.choice((1 << 16, 1 << 18, 1 << 20, cap))
    dims = padded_dims(rng, min(max(cap, honest + 1), honest + excess), rdft)
    record = constant_record(name, dims, rng.choice((1, -3, 1 << 30)), rdft=rdft)
    box = seed.container
    tens = box.body(b"TENS")
    count = ByteReader(tens).read_uvarint()
    box = box.with_body(b"TENS", uvarint(count + 1) + tens[len(uvarint(count)) :] + record)
    if rng.random() < 0.6:  # an initializer names it: decode and eval build it too
        model = seed.model()
        model.graph.initializer.append(weightless(name.decode(), dims))
        box = box.with_body(b"GRPH", fast_zstd(model.SerializeToString()))
    sections = list(box.sections)
    for extra in fillers:
        sections.insert(rng.randrange(len(sections) + 1), extra)
    needed = -(-(seed.elements + math.prod(dims)) // DEFAULT_LIMITS.elements_per_byte)
    minor = max(box.minor, rdft_minor(tuple(dims)) if rdft else 0)  # ranks 3 and 5: 1.1
    box = replace(box, alignment=alignment, minor=minor)
    data = replace(box, sections=tuple(sections)).to_bytes()
    if len(data) < needed:  # top up, so that only the filler buys what the record declares
        sections.append(Section(b"PTOP", 0, bytes(needed - len(data))))
        data = replace(box, sections=tuple(sections)).to_bytes()
    return data
