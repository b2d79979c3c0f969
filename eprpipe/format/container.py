"""The .epr container: reader, writer and in-memory model (spec/FORMAT.md is the contract).

The reader treats every file as hostile: each declared size is checked against the bytes that
are really there and against ReadLimits before anything is allocated, and every defect is a
FormatError naming the section and byte offset.
"""

from __future__ import annotations

import dataclasses
import io
import json
import math
import os
import struct
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from typing import TypeVar

import numpy as np
import zstandard

from eprpipe.errors import EprError, FormatError
from eprpipe.format.atomic import write_atomically
from eprpipe.format.bitio import ByteReader, uvarint
from eprpipe.format.coding import empirical_bits, ideal_bits
from eprpipe.format.layout import CodedLatents, Layout, encode_latents, read_latents
from eprpipe.format.limits import DEFAULT_LIMITS, ReadBudget, ReadLimits
from eprpipe.format.manifest import check_manifest, check_tied_tensors, required_minor
from eprpipe.format.paramdecode import as_float16, decode_rdft, decode_scalar
from eprpipe.format.sources import ByteSource, MemorySource, crc32_of, open_regular
from eprpipe.format.structures import (
    FLAG_REQUIRED,
    HEADER,
    MAGIC,
    MAX_ALIGNMENT_LOG2,
    MAX_NDIM,
    RAW_BODY,
    RAW_DTYPES,
    RDFT_BODY,
    RECORD_HEAD,
    SCALAR_BODY,
    SECTION_ENTRY,
    VERSION_MAJOR,
    VERSION_MINOR,
    rdft_minor,
    rdft_shape_problem,
)
from eprpipe.format.syntax import Structure

TAG_META, TAG_GRAPH, TAG_TENSORS = b"META", b"GRPH", b"TENS"
_T = TypeVar("_T")
_CORE_TAGS = frozenset({TAG_META, TAG_GRAPH, TAG_TENSORS})
_CRC = struct.Struct("<I")
ZSTD_LEVEL = 19
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_ZSTD_CHUNK = 1 << 20
_RAW_CODES = {name: code for code, name in RAW_DTYPES.items()}


class RecordKind(IntEnum):
    RAW = 0
    SCALAR = 1
    RDFT = 2


@dataclass(frozen=True)
class ScalarDecoderParams:
    """theta = step * latent."""

    step: float  # exactly representable as IEEE float16


@dataclass(frozen=True)
class RdftDecoderParams:
    """theta = inverse orthonormal separable real DFT of (steps * latent), per kernel."""

    steps: np.ndarray  # the kernel's shape, shape[2:] of its record (1-D to 3-D), float16


@dataclass
class TensorRecord:
    name: str
    shape: tuple[int, ...]
    dtype: str  # numpy dtype name of the decoded tensor; "float32" for coded tensors
    decoder: ScalarDecoderParams | RdftDecoderParams | None  # None: raw tensor stored verbatim
    latents: np.ndarray | None  # int64, shape `shape`, coded tensors only
    raw: np.ndarray | None  # decoder None only


@dataclass
class EprContents:
    manifest: dict
    graph: bytes  # serialized weightless ONNX ModelProto, opaque here
    tensors: list[TensorRecord]
    # The header's version_minor, as read; None for contents made in memory. A writer never
    # takes it from here: it writes the lowest minor the manifest and records need (spec 4).
    version_minor: int | None = None

    @property
    def minor(self) -> int:
        """The minor version whose rules apply: the one read, else the one a writer writes."""
        if self.version_minor is not None:
            return self.version_minor
        return written_minor(self.manifest, self.tensors)


def written_minor(manifest: dict, records: Sequence[TensorRecord]) -> int:
    """The header's version_minor a writer gives these contents: the lowest minor version that
    defines every feature they use (spec 4), so that 1.0 contents stay byte-identical 1.0 files."""
    keys = required_minor(manifest) if isinstance(manifest, dict) else 0  # else refused later
    return max(keys, records_minor(records))


def record_minor(kind: int, shape: tuple[int, ...]) -> int:
    """The lowest minor version whose files may hold this record: 1 for rdft of rank 3 or 5."""
    return rdft_minor(shape) if kind == RecordKind.RDFT else 0


def records_minor(records: Sequence[TensorRecord]) -> int:
    """The lowest minor version whose files may hold every record of `records` (spec 4)."""
    return max(
        (record_minor(_kind_of(record), tuple(record.shape)) for record in records), default=0
    )


@dataclass
class TensorSize:
    name: str
    latent_bytes: int  # the range-coded words (one stream per record)
    table_bytes: int  # tables and constants
    decoder_bytes: int  # steps
    framing_bytes: int  # name, kind, shape, layout, group kinds and the word count
    ideal_bits: float  # information content under the chosen tables, masks included
    groups: int  # coded groups, masks included
    table_kinds: str  # e.g. "geom" or "row mask const, column mask qtable r1, 9x geom, qtable r2"
    empirical_bits: float = 0.0  # information content under each group's own histogram
    raw_bytes: int = 0  # verbatim tensor data
    table_symbols: int = 0  # alphabet entries of its tables: what readers budget per file
    minor: int = 0  # the lowest minor version whose files may hold its record (spec 4)

    @property
    def payload_bytes(self) -> int:
        """This tensor's share of the parameter payload (see SizeBreakdown.payload_bytes)."""
        return self.latent_bytes + self.table_bytes + self.decoder_bytes + self.raw_bytes


@dataclass
class SizeBreakdown:
    """Where the bytes go; the fields sum to file_bytes (unknown sections count as framing)."""

    file_bytes: int
    header_bytes: int  # magic, version, section table, checksums
    manifest_bytes: int
    graph_bytes: int
    latent_bytes: int
    table_bytes: int
    decoder_bytes: int
    framing_bytes: int
    raw_bytes: int
    tensors: list[TensorSize] = field(default_factory=list)

    @property
    def payload_bytes(self) -> int:
        """The parameter payload: what the paper's sizes count."""
        return self.latent_bytes + self.table_bytes + self.decoder_bytes + self.raw_bytes


# --- tensor records -------------------------------------------------------------------------


def _tensor_size(
    name: str,
    framing: int,
    decoder: int,
    coded: CodedLatents | None,
    raw: int = 0,
    minor: int = 0,
) -> TensorSize:
    """Per-tensor accounting shared by writer and reader, so both report the same numbers.

    Mask groups count like any group (their symbols are in the words, their tables are tables):
    they are part of the parameter payload. The layout byte, kind bytes and word count are
    framing.
    """
    groups = coded.all_groups if coded else []
    values = coded.values if coded else []
    return TensorSize(
        name=name,
        latent_bytes=coded.latent_bytes if coded else 0,
        table_bytes=coded.table_bytes if coded else 0,
        decoder_bytes=decoder,
        framing_bytes=framing + (coded.framing_bytes if coded else 0),
        ideal_bits=sum((ideal_bits(g, v) for g, v in zip(groups, values, strict=True)), 0.0),
        groups=len(groups),
        table_kinds=coded.label if coded else "raw",
        empirical_bits=sum((empirical_bits(v) for v in values), 0.0),
        raw_bytes=raw,
        table_symbols=sum(g.table.alphabet_size for g in groups if g.table is not None),
        minor=minor,
    )


def _record_head(record: TensorRecord, kind: RecordKind, minor: int) -> bytes:
    try:
        name = record.name.encode("utf-8")
    except (AttributeError, UnicodeEncodeError) as err:
        raise EprError(f"tensor name {record.name!r} is not encodable UTF-8 text") from err
    fields = {
        "name_length": len(name),
        "name": name,
        "kind": int(kind),
        "ndim": len(record.shape),
        "dims": tuple(int(dim) for dim in record.shape),
    }
    try:
        return RECORD_HEAD.write(fields, {"minor": minor})
    except EprError as err:
        raise EprError(f"tensor {record.name!r}: {err}") from err


def _check_record(record: TensorRecord, minor: int) -> np.ndarray:
    """Writer-side checks of the in-memory record, for a file of minor version `minor`;
    RECORD_HEAD and the bodies check the rest.

    Returns the checked array: the raw tensor, or the latents of a coded one.
    """
    shape = tuple(record.shape)
    if len(shape) > MAX_NDIM or not all(isinstance(d, int | np.integer) and d >= 0 for d in shape):
        raise EprError(f"{record.name}: shape {shape} needs at most {MAX_NDIM} non-negative dims")
    if int(np.prod(shape, dtype=object)) > DEFAULT_LIMITS.max_tensor_elements:
        raise EprError(f"{record.name}: shape {shape} has too many elements")
    if record.decoder is None:
        if record.dtype not in _RAW_CODES:
            raise EprError(f"{record.name}: raw dtype {record.dtype!r} not in {sorted(_RAW_CODES)}")
        if not isinstance(record.raw, np.ndarray) or record.raw.shape != shape:
            raise EprError(f"{record.name}: raw must be an array of shape {shape}")
        if record.raw.dtype.name != record.dtype:
            raise EprError(f"{record.name}: raw dtype {record.raw.dtype} is not {record.dtype}")
        return record.raw
    if record.dtype != "float32":
        raise EprError(f"{record.name}: coded tensors decode to float32, not {record.dtype}")
    if record.raw is not None:
        raise EprError(f"{record.name}: a coded tensor stores no raw array")
    latents = record.latents
    if not isinstance(latents, np.ndarray) or latents.shape != shape:
        raise EprError(f"{record.name}: latents must be an array of shape {shape}")
    if not np.issubdtype(latents.dtype, np.integer):
        raise EprError(f"{record.name}: latents must be integers, got {latents.dtype}")
    if isinstance(record.decoder, RdftDecoderParams):
        if problem := rdft_shape_problem(shape, minor):
            raise EprError(f"{record.name}: {problem}")
        if np.shape(record.decoder.steps) != shape[2:]:
            raise EprError(f"{record.name}: rdft steps must have shape {shape[2:]}")
    elif not isinstance(record.decoder, ScalarDecoderParams):
        raise EprError(f"{record.name}: unknown decoder {type(record.decoder).__name__}")
    return latents


def _encode_record(record: TensorRecord, minor: int) -> tuple[bytes, TensorSize]:
    """The record's bytes in a file of minor version `minor`, and its accounting."""
    array = _check_record(record, minor)
    if record.decoder is None:
        head = _record_head(record, RecordKind.RAW, minor)
        data = array.astype(array.dtype.newbyteorder("<")).tobytes()
        context = {"dims": record.shape, "kind": int(RecordKind.RAW)}
        body = RAW_BODY.write({"dtype": _RAW_CODES[record.dtype], "data": data}, context)
        framing = len(head) + len(body) - len(data)
        return head + body, _tensor_size(record.name, framing, 0, None, raw=len(data))
    decoder = record.decoder
    rdft = isinstance(decoder, RdftDecoderParams)
    kind = RecordKind.RDFT if rdft else RecordKind.SCALAR
    steps = np.asarray(decoder.steps if isinstance(decoder, RdftDecoderParams) else decoder.step)
    steps = np.array([as_float16(v, f"{record.name}: step") for v in steps.reshape(-1).tolist()])
    coded = encode_latents(array, rdft)
    head = _record_head(record, kind, minor)
    context = {"dims": record.shape, "kind": int(kind)}
    if rdft:
        body = RDFT_BODY.write({"steps": steps, "layout": int(coded.layout)}, context)
    else:
        body = SCALAR_BODY.write({"step": steps[0], "layout": int(coded.layout)}, context)
    size = _tensor_size(
        record.name, len(head), 2 * steps.size, coded, minor=record_minor(kind, record.shape)
    )
    return head + body + coded.encode(), size


def _kind_of(record: TensorRecord) -> RecordKind:
    if record.decoder is None:
        return RecordKind.RAW
    return RecordKind.RDFT if isinstance(record.decoder, RdftDecoderParams) else RecordKind.SCALAR


def _decode_passes(kind: int, shape: tuple[int, ...]) -> int:
    """Element allowance an element costs (spec 9): an rdft decoder makes one pass over its
    latents per kernel position of each side (kh + kw for 2-D kernels), so a large kernel
    costs what ceil(sum of the kernel's sides / 8) scalar elements cost."""
    if kind == RecordKind.RDFT and len(shape) > 2:
        return max(1, -(-sum(shape[2:]) // 8))
    return 1


def _read_record(
    reader: ByteReader, limits: ReadLimits, budget: ReadBudget, minor: int
) -> tuple[TensorRecord, TensorSize]:
    """One record of a file of minor version `minor`; its elements are charged to `budget`
    before anything is decoded."""
    start = reader.offset
    head = RECORD_HEAD.read(reader, {"minor": minor})
    head_end = reader.offset
    name, kind, shape = head["name"].decode("utf-8"), head["kind"], tuple(head["dims"])
    numel = 1
    for dim in shape:
        numel *= dim
        if numel > limits.max_tensor_elements or dim > limits.max_tensor_elements:
            raise FormatError(
                f"{name!r}: shape {shape} exceeds {limits.max_tensor_elements} elements",
                section=reader.section,
                offset=start,
                code="limit-exceeded",
            )
    budget.charge_elements(
        numel * _decode_passes(kind, shape), f"tensor {name!r}", reader.section, start
    )

    if kind == RecordKind.RAW:
        body = RAW_BODY.read(reader, head)
        dtype = np.dtype(RAW_DTYPES[body["dtype"]])
        raw = np.frombuffer(body["data"], dtype=dtype.newbyteorder("<")).astype(dtype)
        framing = reader.offset - start - len(body["data"])
        record = TensorRecord(name, shape, dtype.name, None, None, raw.reshape(shape))
        return record, _tensor_size(name, framing, 0, None, raw=len(body["data"]))

    rdft = kind == RecordKind.RDFT
    body = (RDFT_BODY if rdft else SCALAR_BODY).read(reader, head)
    steps = np.atleast_1d(body["steps"] if rdft else body["step"]).astype(np.float16)
    framing = head_end - start  # the layout byte counts with the groups' framing
    coded, latents = read_latents(reader, shape, rdft, name, Layout(body["layout"]), budget)
    decoder = (
        RdftDecoderParams(steps.reshape(shape[2:]))
        if rdft
        else ScalarDecoderParams(float(steps[0]))
    )
    record = TensorRecord(name, shape, "float32", decoder, latents, None)
    size = _tensor_size(name, framing, 2 * steps.size, coded, minor=record_minor(kind, shape))
    return record, size


# --- zstd and JSON sections -----------------------------------------------------------------


def _zstd_frame_length(frame: bytes, fail: Callable[..., FormatError]) -> int:
    """Bytes of the single zstd frame at the start of `frame` (RFC 8878 section 3.1.1)."""
    pos = zstandard.frame_header_size(frame)
    while True:
        if pos + 3 > len(frame):
            raise fail("zstd frame ends inside a block header")
        header = int.from_bytes(frame[pos : pos + 3], "little")
        block_type, block_size = (header >> 1) & 3, header >> 3
        if block_type == 3:
            raise fail("zstd block of reserved type")
        pos += 3 + (1 if block_type == 1 else block_size)
        if header & 1:
            return pos + (4 if frame[4] & 0x04 else 0)  # content checksum flag


def _unzstd(part: _Section, limit: int, window: int) -> bytes:
    """Inflate one zstd frame, never past its declared size or `limit`, whatever it claims."""
    section, fail = part.body, _failure(part)
    if section[:4] != ZSTD_MAGIC or len(section) < 6:
        raise fail("section is not a zstd frame")
    try:
        params = zstandard.get_frame_parameters(section)
        if params.content_size == zstandard.CONTENTSIZE_UNKNOWN:
            raise fail("zstd frame does not declare its content size")
        if params.content_size > limit:
            raise fail(
                f"zstd frame declares {params.content_size} bytes, limit {limit}", "limit-exceeded"
            )
        if params.window_size > window:
            raise fail(
                f"zstd window of {params.window_size} bytes, limit {window}", "limit-exceeded"
            )
        if params.dict_id:
            raise fail("zstd frame needs a dictionary")
        if _zstd_frame_length(section, fail) != len(section):
            raise fail("section holds bytes beyond its zstd frame")
        decompressor = zstandard.ZstdDecompressor(max_window_size=window)
        out = bytearray()
        with decompressor.stream_reader(io.BytesIO(section), read_across_frames=False) as reader:
            while chunk := reader.read(_ZSTD_CHUNK):
                out += chunk
                if len(out) > params.content_size:
                    raise fail("zstd frame inflates past its declared content size")
    except zstandard.ZstdError as err:
        raise fail(f"corrupt zstd frame: {err}") from err
    if len(out) != params.content_size:
        raise fail(f"zstd frame inflates to {len(out)} bytes, declares {params.content_size}")
    return bytes(out)


def _zstd(data: bytes) -> bytes:
    return zstandard.ZstdCompressor(level=ZSTD_LEVEL, write_content_size=True).compress(data)


def _manifest_json(manifest: dict) -> bytes:
    if not isinstance(manifest, dict):
        raise EprError(f"manifest must be a dict, got {type(manifest).__name__}")
    try:
        text = json.dumps(
            manifest, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
        )
        return text.encode("utf-8")
    except (TypeError, ValueError, RecursionError) as err:
        raise EprError(f"manifest is not JSON-serializable: {str(err)[:200]}") from err


def _manifest_section(manifest: dict, minor: int) -> bytes:
    """The META body for `manifest`, refused if a reader would reject its application keys
    in a file of minor version `minor`, the one the writer gives the file."""
    text = _manifest_json(manifest)
    if (problem := check_manifest(manifest, minor)) is not None:
        raise EprError(f"cannot write this manifest: {problem}")
    return _zstd(text)


def _check_tied_names(manifest: dict, names: list[str], minor: int) -> None:
    """Refuse tied_tensors a reader would reject: aliases of records the file does not hold."""
    problem = check_tied_tensors(manifest, minor, names)
    if problem is not None:
        raise EprError(f"cannot write this manifest: {problem}")


def _parse_manifest(data: bytes, fail: Callable[..., FormatError], minor: int) -> tuple[dict, bool]:
    """The manifest of a file of minor version `minor`, and whether `data` is its canonical
    text (which only validators require)."""

    def unique_keys(pairs: list[tuple[str, object]]) -> dict:
        result = dict(pairs)
        if len(result) != len(pairs):
            raise fail("manifest repeats a key", "bad-manifest")
        return result

    def finite_float(text: str) -> float:
        value = float(text)
        if not np.isfinite(value):
            raise fail(f"manifest number {text[:40]} overflows float64", "bad-manifest")
        return value

    def no_constant(text: str) -> None:
        raise fail(f"manifest holds {text}, which is not JSON", "bad-manifest")

    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise fail("manifest is not valid UTF-8", "bad-manifest") from err
    try:
        manifest = json.loads(
            text,
            object_pairs_hook=unique_keys,
            parse_float=finite_float,
            parse_constant=no_constant,
        )
    except (ValueError, RecursionError) as err:
        raise fail(f"manifest is not valid JSON: {str(err)[:200]}", "bad-manifest") from err
    if not isinstance(manifest, dict):
        raise fail("manifest is not a JSON object", "bad-manifest")
    try:
        canonical = _manifest_json(manifest)
    except EprError as err:  # a lone surrogate escape, which UTF-8 cannot carry; deep nesting
        raise fail(f"manifest cannot be written back as UTF-8 JSON: {err}", "bad-manifest") from err
    problem = check_manifest(manifest, minor)
    if problem is not None:
        raise fail(f"manifest {problem}", "bad-manifest")
    return manifest, canonical == data


# --- container ------------------------------------------------------------------------------


def _padding(offset: int, alignment: int) -> int:
    """Zero bytes that move `offset` to the next multiple of 2**alignment."""
    return -offset % (1 << alignment)


def encode_container(contents: EprContents, *, alignment: int = 0) -> tuple[bytes, SizeBreakdown]:
    """Serialize `contents`, each section at a multiple of 2**alignment bytes (default 1).

    Invalid contents raise EprError before anything is written.
    """
    if not (isinstance(alignment, int) and 0 <= alignment <= MAX_ALIGNMENT_LOG2):
        raise EprError(f"alignment must be 0..{MAX_ALIGNMENT_LOG2} (log2 bytes), got {alignment}")
    names = [record.name for record in contents.tensors]
    if len(set(names)) != len(names):
        duplicate = next(name for name in names if names.count(name) > 1)
        raise EprError(f"tensor name {duplicate!r} appears twice")
    if not isinstance(contents.graph, bytes | bytearray | memoryview):
        raise EprError(f"graph must be bytes, got {type(contents.graph).__name__}")
    minor = written_minor(contents.manifest, contents.tensors)  # never the one read
    encoded = [_encode_record(record, minor) for record in contents.tensors]
    if sum(math.prod(r.shape) for r in contents.tensors) > DEFAULT_LIMITS.max_total_elements:
        raise EprError(f"more than {DEFAULT_LIMITS.max_total_elements} elements in all")
    tensors = uvarint(len(encoded)) + b"".join(body for body, _ in encoded)
    sections = [
        (TAG_META, FLAG_REQUIRED, _manifest_section(contents.manifest, minor)),
        (TAG_GRAPH, FLAG_REQUIRED, _zstd(bytes(contents.graph))),
        (TAG_TENSORS, FLAG_REQUIRED, tensors),
    ]
    _check_tied_names(contents.manifest, names, minor)  # once the manifest passed its checks
    data = join_sections(sections, alignment=alignment, minor=minor)
    sizes = [size for _, size in encoded]
    table_bytes = HEADER.size + len(sections) * SECTION_ENTRY.size + _CRC.size
    _check_budgets(contents, sizes, table_bytes + _body_bytes(sections))
    return data, _breakdown(
        len(data),
        len(data) - _body_bytes(sections),
        len(sections[0][2]),
        len(sections[1][2]),
        len(uvarint(len(encoded))),
        sizes,
    )


Sections = Sequence[tuple[bytes, int, bytes]]  # (tag, flags, body) in stored order


def join_sections(
    sections: Sections,
    *,
    alignment: int = 0,
    major: int = VERSION_MAJOR,
    minor: int = VERSION_MINOR,
    flags: int = 0,
    checked: bool = True,
) -> bytes:
    """Header, section table and CRC-32s around `sections`, each body at a multiple of
    2**alignment (no padding for an alignment past MAX_ALIGNMENT_LOG2).

    The writer's files pass every field rule of the reader; checked=False writes the fields as
    given, so that test vectors and the fuzzer can break one rule with every checksum right.
    """
    entries = [
        (tag, section_flags, len(body), zlib.crc32(body)) for tag, section_flags, body in sections
    ]
    out = bytearray(
        section_table(
            entries, alignment=alignment, major=major, minor=minor, flags=flags, checked=checked
        )
    )
    aligned = alignment <= MAX_ALIGNMENT_LOG2
    for _, _, body in sections:
        out += bytes(_padding(len(out), alignment) if aligned else 0) + body
    return bytes(out)


def section_table(
    entries: Sequence[tuple[bytes, int, int, int]],
    *,
    alignment: int,
    major: int = VERSION_MAJOR,
    minor: int = VERSION_MINOR,
    flags: int = 0,
    checked: bool = True,
) -> bytes:
    """The header, an entry (tag, flags, length, crc) per section and the header CRC: all of a
    file but its padding and bodies. checked=False as in join_sections."""
    encode = Structure.write if checked else Structure.pack
    fields = {
        "magic": MAGIC,
        "version_major": major,
        "version_minor": minor,
        "section_count": len(entries),
        "alignment": alignment,
        "flags": flags,
    }
    header = encode(HEADER, fields)
    for tag, section_flags, length, crc in entries:
        entry = {"tag": tag, "flags": section_flags, "length": length, "crc": crc}
        header += encode(SECTION_ENTRY, entry)
    return header + _CRC.pack(zlib.crc32(header))


def split_sections(data: bytes) -> list[tuple[bytes, int, bytes]]:
    """(tag, flags, body) of each section, padding dropped; a FormatError unless the header,
    section table, padding and checksums are valid (the sections' contents are not read)."""
    sections = _read_section_table(MemorySource(data)).sections
    return [(s.tag, s.flags, data[s.offset : s.offset + s.length]) for s in sections]


def _body_bytes(sections: Sections) -> int:
    return sum(len(body) for _, _, body in sections)


def with_manifest(data: bytes, sizes: SizeBreakdown, manifest: dict) -> tuple[bytes, SizeBreakdown]:
    """A file `encode_container` wrote, with another manifest: the tensors are not re-encoded.

    Lets a producer put numbers measured on the decoded file (its test error) into the file
    without coding the latents twice. `sizes` is the breakdown encode_container returned.
    """
    header = HEADER.read(ByteReader(data))
    sections = split_sections(data)
    if any(not section_flags & FLAG_REQUIRED for _, section_flags, _ in sections):
        raise EprError("with_manifest takes files with the three core sections only")
    minor = max(required_minor(manifest), *(tensor.minor for tensor in sizes.tensors), 0)
    meta = _manifest_section(manifest, minor)
    _check_tied_names(manifest, [tensor.name for tensor in sizes.tensors], minor)
    sections = [(tag, f, meta if tag == TAG_META else body) for tag, f, body in sections]
    out = join_sections(sections, alignment=header["alignment"], minor=minor)
    return out, dataclasses.replace(
        sizes,
        file_bytes=len(out),
        header_bytes=len(out) - _body_bytes(sections),
        manifest_bytes=len(meta),
    )


def _check_budgets(contents: EprContents, sizes: list[TensorSize], counted_bytes: int) -> None:
    """Refuse a file that eprpipe's reader, with default limits, would refuse."""
    if len(contents.tensors) > DEFAULT_LIMITS.max_records:
        raise EprError(
            f"{len(contents.tensors)} tensors: more than readers accept by default "
            f"({DEFAULT_LIMITS.max_records})"
        )
    elements = sum(
        math.prod(record.shape) * _decode_passes(_kind_of(record), tuple(record.shape))
        for record in contents.tensors
    )
    if elements > DEFAULT_LIMITS.element_allowance(counted_bytes):
        raise EprError(
            f"{elements} tensor elements in a file of {counted_bytes} counted bytes: more than "
            "readers accept "
            f"by default ({DEFAULT_LIMITS.elements_per_byte} per byte, at least "
            f"{DEFAULT_LIMITS.min_element_allowance}); see spec/FORMAT.md, Limits"
        )
    symbols = sum(size.table_symbols for size in sizes)
    if symbols > DEFAULT_LIMITS.max_table_symbols:
        raise EprError(
            f"the tables hold {symbols} symbols in all, more than readers accept by default "
            f"({DEFAULT_LIMITS.max_table_symbols})"
        )


def _breakdown(
    file_bytes: int, header: int, manifest: int, graph: int, framing: int, tensors: list[TensorSize]
) -> SizeBreakdown:
    return SizeBreakdown(
        file_bytes=file_bytes,
        header_bytes=header,
        manifest_bytes=manifest,
        graph_bytes=graph,
        latent_bytes=sum(t.latent_bytes for t in tensors),
        table_bytes=sum(t.table_bytes for t in tensors),
        decoder_bytes=sum(t.decoder_bytes for t in tensors),
        framing_bytes=framing + sum(t.framing_bytes for t in tensors),
        raw_bytes=sum(t.raw_bytes for t in tensors),
        tensors=tensors,
    )


@dataclass(frozen=True)
class _Section:
    tag: bytes
    flags: int
    offset: int
    length: int
    data: bytes | None  # None: an optional section nobody reads, checksummed and skipped

    @property
    def body(self) -> bytes:
        """The bytes of a section that was read, as every core section is."""
        assert self.data is not None, f"section {self.tag!r} was skipped, not read"
        return self.data


@dataclass(frozen=True)
class _Layout:
    """What the header and section table say, checked against the file."""

    sections: list[_Section]
    header_end: int  # header, entries and header_crc
    padding: int  # zero bytes before sections
    minor: int  # the header's version_minor: which manifest keys are described (spec 4.1)

    @property
    def counted_bytes(self) -> int:
        """Bytes that buy element allowance: all but padding and skipped optional sections."""
        skipped = sum(s.length for s in self.sections if s.data is None)
        return self.header_end + sum(s.length for s in self.sections) - skipped


def _read_section_table(source: ByteSource) -> _Layout:
    """Validate the header and section table, reading no byte the header does not call for.

    Core sections are read into memory; unknown optional ones are only checksummed, in chunks.
    """
    head = source.read(0, min(HEADER.size, source.size))
    magic = head[: len(MAGIC)]
    if magic != MAGIC[: len(magic)]:  # a short file that is not even a prefix of an .epr
        raise FormatError("not an .epr file (bad magic)", offset=0, code="bad-magic")
    if magic == MAGIC and len(head) >= 12:  # every version keeps magic and version fields
        major, minor = struct.unpack_from("<HH", head, 8)
        if major != VERSION_MAJOR:
            raise FormatError(
                f"unsupported format version {major}.{minor} (this reader reads {VERSION_MAJOR}.x)",
                offset=8,
                code="unsupported-version",
            )
    header = HEADER.read(ByteReader(head))
    count, alignment = header["section_count"], header["alignment"]
    header_end = HEADER.size + count * SECTION_ENTRY.size + _CRC.size
    if header_end > source.size:
        raise FormatError(
            f"section table of {count} entries runs past the end of the file",
            offset=12,
            code="truncated",
        )
    table = source.read(0, header_end)
    if _CRC.unpack_from(table, header_end - 4)[0] != zlib.crc32(table[: header_end - 4]):
        raise FormatError("header checksum mismatch", offset=header_end - 4, code="bad-checksum")
    reader = ByteReader(table[: header_end - 4])
    reader.read_bytes(HEADER.size, "header")
    sections, offset, seen, padding = [], header_end, set(), 0
    for _ in range(count):
        entry_at = reader.offset
        entry = SECTION_ENTRY.read(reader)
        tag, length = entry["tag"], entry["length"]
        name = tag.decode("ascii")
        if tag in seen:
            raise FormatError(
                f"section {name} appears twice", offset=entry_at, code="duplicate-section"
            )
        seen.add(tag)
        start = _skip_padding(source, offset, alignment)
        padding += start - offset
        if start + length > source.size:
            raise FormatError(
                f"{length} bytes run past the end of the file",
                section=name,
                offset=start,
                code="truncated",
            )
        body = source.read(start, length) if tag in _CORE_TAGS else None
        crc = zlib.crc32(body) if body is not None else crc32_of(source, start, length)
        if crc != entry["crc"]:
            raise FormatError("checksum mismatch", section=name, offset=start, code="bad-checksum")
        sections.append(_Section(tag, entry["flags"], start, length, body))
        offset = start + length
    if offset != source.size:
        raise FormatError(
            f"{source.size - offset} bytes after the last section",
            offset=offset,
            code="trailing-bytes",
        )
    return _Layout(sections, header_end, padding, header["version_minor"])


def _skip_padding(source: ByteSource, offset: int, alignment: int) -> int:
    """The next section's start; the padding before it must be present and zero."""
    end = offset + _padding(offset, alignment)
    if end > source.size:
        raise FormatError("file ends inside section padding", offset=offset, code="truncated")
    if any(source.read(offset, end - offset)):
        raise FormatError("nonzero padding before a section", offset=offset, code="bad-padding")
    return end


def decode_container(
    data: bytes, *, source: str = "<bytes>", limits: ReadLimits = DEFAULT_LIMITS
) -> tuple[EprContents, SizeBreakdown]:
    """Parse and fully validate an .epr file; the first defect is a FormatError naming `source`."""
    return _decode_located(MemorySource(bytes(data)), source, limits)


def _decode_located(
    source: ByteSource, name: str, limits: ReadLimits
) -> tuple[EprContents, SizeBreakdown]:
    try:
        return _decode(source, limits, None)
    except FormatError as err:
        raise err.located(name) from err
    except MemoryError as err:
        raise FormatError(
            f"{name}: not enough memory to decode this file", code="limit-exceeded"
        ) from err


@dataclass
class PartialRead:
    """What a lenient read recovered: each core part, or None where it has a defect."""

    manifest: dict | None = None
    manifest_is_canonical: bool | None = None  # producers must write canonical JSON (spec 4.1)
    graph: bytes | None = None
    tensors: list[TensorRecord] | None = None
    version_minor: int | None = None  # None: the header could not be read
    violations: list[FormatError] = field(default_factory=list)


def find_violations(data: bytes, *, limits: ReadLimits = DEFAULT_LIMITS) -> PartialRead:
    """Every defect the reader can find: the header's, then each core section's on its own.

    A defect ends the reading of its own part only, so one report lists the problems of the
    manifest, the graph bytes and the tensor records together; no violations means the
    container decodes.
    """
    return find_source_violations(MemorySource(bytes(data)), limits=limits)


def find_source_violations(
    source: ByteSource, *, limits: ReadLimits = DEFAULT_LIMITS
) -> PartialRead:
    """find_violations for bytes read on demand (a file opened with sources.open_regular)."""
    result = PartialRead()
    try:
        _decode(source, limits, result)
    except FormatError as err:
        if not any(err is found for found in result.violations):
            result.violations.append(err)
    except MemoryError:
        result.violations.append(
            FormatError("not enough memory to decode this file", code="limit-exceeded")
        )
    return result


def _decode(
    source: ByteSource, limits: ReadLimits, partial: PartialRead | None
) -> tuple[EprContents, SizeBreakdown]:
    """Decode `source`; given `partial`, record each core part's defect or result and go on."""
    if source.size > limits.max_file_bytes:
        raise FormatError(
            f"file of {source.size} bytes exceeds the limit {limits.max_file_bytes}",
            code="limit-exceeded",
        )
    layout = _read_section_table(source)
    if partial is not None:
        partial.version_minor = layout.minor
    meta, graph, tens, unknown_bytes = _core_sections(layout.sections)

    def part(read: Callable[[], _T]) -> _T | None:
        if partial is None:
            return read()
        try:
            return read()
        except FormatError as err:
            partial.violations.append(err)
        except MemoryError:
            partial.violations.append(
                FormatError("not enough memory for this section", code="limit-exceeded")
            )
        return None

    manifest = part(lambda: _read_manifest(meta, limits, layout.minor))
    graph_limit = limits.inflation_allowance(len(graph.body), limits.max_graph_bytes)
    graph_bytes = part(lambda: _unzstd(graph, graph_limit, limits.max_zstd_window))
    budget = ReadBudget(limits, layout.counted_bytes)
    tensors = part(lambda: _read_tensors(tens, limits, budget, layout.minor))
    if manifest is not None and tensors is not None:
        part(lambda: _check_tied(meta, manifest[0], layout.minor, tensors[0]))
    if partial is not None:
        partial.manifest, partial.manifest_is_canonical = manifest or (None, None)
        partial.graph = graph_bytes
        partial.tensors = tensors[0] if tensors else None
        if partial.violations:
            raise partial.violations[0]
    # every part was read: a part that failed raised, or left a violation that was raised
    assert manifest is not None and graph_bytes is not None and tensors is not None
    records, sizes, record_framing = tensors
    breakdown = _breakdown(
        source.size,
        layout.header_end + layout.padding,
        len(meta.body),
        len(graph.body),
        record_framing + unknown_bytes,
        sizes,
    )
    contents = EprContents(manifest[0], graph_bytes, records, version_minor=layout.minor)
    return contents, breakdown


def _core_sections(sections: list[_Section]) -> tuple[_Section, _Section, _Section, int]:
    """META, GRPH and TENS, each present and required; unknown optional sections skipped."""
    known: dict[bytes, _Section] = {}
    unknown_bytes = 0
    for section in sections:
        name = section.tag.decode("ascii")
        if section.tag in _CORE_TAGS:
            if not section.flags & FLAG_REQUIRED:
                raise FormatError(
                    "core section lacks the required flag",
                    section=name,
                    offset=section.offset,
                    code="missing-section",
                )
            known[section.tag] = section
        elif section.flags & FLAG_REQUIRED:
            raise FormatError(
                f"unknown required section {name}",
                section=name,
                offset=section.offset,
                code="unknown-required-section",
            )
        else:
            unknown_bytes += section.length
    for tag in (TAG_META, TAG_GRAPH, TAG_TENSORS):
        if tag not in known:
            raise FormatError(f"required section {tag.decode()} is missing", code="missing-section")
    return known[TAG_META], known[TAG_GRAPH], known[TAG_TENSORS], unknown_bytes


def _read_manifest(meta: _Section, limits: ReadLimits, minor: int) -> tuple[dict, bool]:
    limit = limits.inflation_allowance(len(meta.body), limits.max_manifest_bytes)
    return _parse_manifest(_unzstd(meta, limit, limits.max_zstd_window), _failure(meta), minor)


def _check_tied(meta: _Section, manifest: dict, minor: int, records: list[TensorRecord]) -> None:
    """The manifest's tied_tensors against the records: the rule that needs both (4.1)."""
    problem = check_tied_tensors(manifest, minor, (record.name for record in records))
    if problem is not None:
        raise _failure(meta)(f"manifest {problem}", "bad-manifest")


def _read_tensors(
    tens: _Section, limits: ReadLimits, budget: ReadBudget, minor: int
) -> tuple[list[TensorRecord], list[TensorSize], int]:
    reader = ByteReader(tens.body, section="TENS", base=tens.offset)
    count_at = reader.offset
    record_count = reader.read_uvarint("record count")
    if record_count > limits.max_records:
        raise FormatError(
            f"{record_count} records, more than the limit {limits.max_records}",
            section="TENS",
            offset=count_at,
            code="limit-exceeded",
        )
    records: list[TensorRecord] = []
    sizes: list[TensorSize] = []
    names: set[str] = set()
    for _ in range(record_count):
        at = reader.offset
        if not reader.remaining:  # a record takes at least a byte: count must not outrun data
            raise reader.error(
                f"truncated: {record_count} records declared, {len(records)} present",
                code="truncated",
            )
        record, size = _read_record(reader, limits, budget, minor)
        if record.name in names:
            raise FormatError(
                f"tensor name {record.name!r} appears twice",
                section="TENS",
                offset=at,
                code="duplicate-name",
            )
        names.add(record.name)
        records.append(record)
        sizes.append(size)
    if reader.remaining:
        raise reader.error(f"{reader.remaining} bytes after the last record", code="trailing-bytes")
    return records, sizes, len(uvarint(record_count))


def _failure(section: _Section) -> Callable[..., FormatError]:
    """Errors of one compressed section, located at its first byte."""
    return lambda message, code="bad-zstd": FormatError(
        message, section=section.tag.decode(), offset=section.offset, code=code
    )


# --- files and weights ----------------------------------------------------------------------


def read_epr(
    path: str | os.PathLike, *, limits: ReadLimits = DEFAULT_LIMITS
) -> tuple[EprContents, SizeBreakdown]:
    """Read and decode a regular file; I/O problems are EprError, content problems FormatError.

    Only what the header declares is read, each section once, and never past the size the file
    had when it was opened.
    """
    with open_regular(path) as source:
        return _decode_located(source, str(path), limits)


def write_epr(path: str | os.PathLike, contents: EprContents) -> SizeBreakdown:
    """Encode and write atomically; on failure an existing `path` is left untouched."""
    data, sizes = encode_container(contents)
    write_atomically(path, data)
    return sizes


def decode_weights(record: TensorRecord) -> np.ndarray:
    """The tensor as deployed: float32 weights decoded from latents, or the raw array."""
    if record.decoder is None:
        if record.raw is None:
            raise EprError(f"{record.name}: raw record without data")
        return record.raw
    if record.latents is None or record.latents.shape != tuple(record.shape):
        raise EprError(f"{record.name}: coded record needs latents of shape {record.shape}")
    if isinstance(record.decoder, ScalarDecoderParams):
        return decode_scalar(record.decoder.step, record.latents)
    return decode_rdft(record.decoder.steps, record.latents)
