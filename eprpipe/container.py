"""The .epr container: reader, writer and in-memory model (spec/FORMAT.md is the contract).

The reader treats every file as hostile: each declared size is checked against the bytes that
are really there and against ReadLimits before anything is allocated, and every defect is a
FormatError naming the section and byte offset.
"""

from __future__ import annotations

import io
import json
import math
import os
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import IntEnum

import numpy as np
import zstandard

from eprpipe.atomic import write_atomically
from eprpipe.bitio import ByteReader, uvarint
from eprpipe.coding import empirical_bits, ideal_bits
from eprpipe.errors import EprError, FormatError
from eprpipe.layout import CodedLatents, encode_latents, read_latents
from eprpipe.paramdecode import as_float16, decode_rdft, decode_scalar

MAGIC = b"\x89EPR\r\n\x1a\n"
VERSION_MAJOR, VERSION_MINOR = 1, 0
FLAG_REQUIRED = 1
TAG_META, TAG_GRAPH, TAG_TENSORS = b"META", b"GRPH", b"TENS"
_HEADER = struct.Struct("<8sHHHH")  # magic, major, minor, section_count, flags
_ENTRY = struct.Struct("<4sIII")  # tag, flags, length, crc32
_CRC = struct.Struct("<I")
MAX_NAME_BYTES = 4096
MAX_NDIM = 8
MAX_KERNEL_SIDE = 64  # rdft kernels; bounds the basis a decoder has to build
ZSTD_LEVEL = 19
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_ZSTD_CHUNK = 1 << 20

RAW_DTYPES: dict[int, str] = {
    1: "float32", 2: "float16", 3: "float64", 4: "int64", 5: "int32",
    6: "int8", 7: "uint8", 8: "bool", 9: "int16",
}  # fmt: skip
_RAW_CODES = {name: code for code, name in RAW_DTYPES.items()}


class RecordKind(IntEnum):
    RAW = 0
    SCALAR = 1
    RDFT = 2


_RECORD_KINDS = frozenset(int(kind) for kind in RecordKind)


@dataclass(frozen=True)
class ReadLimits:
    """What a reader agrees to allocate; a file that needs more is rejected, not attempted."""

    max_file_bytes: int = 1 << 32
    max_manifest_bytes: int = 16 << 20
    max_graph_bytes: int = 256 << 20
    max_tensor_elements: int = 1 << 31
    max_total_elements: int = 1 << 31
    max_zstd_window: int = 1 << 27


DEFAULT_LIMITS = ReadLimits()


@dataclass(frozen=True)
class ScalarDecoder:
    """theta = step * latent."""

    step: float  # exactly representable as IEEE float16


@dataclass(frozen=True)
class RdftDecoder:
    """theta = inverse orthonormal real 2-D DFT of (steps * latent)."""

    steps: np.ndarray  # (kh, kw), float16


@dataclass
class TensorRecord:
    name: str
    shape: tuple[int, ...]
    dtype: str  # numpy dtype name of the decoded tensor; "float32" for coded tensors
    decoder: ScalarDecoder | RdftDecoder | None  # None: raw tensor stored verbatim
    latents: np.ndarray | None  # int64, shape `shape`, coded tensors only
    raw: np.ndarray | None  # decoder None only


@dataclass
class EprContents:
    manifest: dict
    graph: bytes  # serialized weightless ONNX ModelProto, opaque here
    tensors: list[TensorRecord]


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


def _f16_bits(value: float, what: str) -> int:
    return int(as_float16(value, what).view(np.uint16))


def _tensor_size(
    name: str, framing: int, decoder: int, coded: CodedLatents | None, raw: int = 0
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
    )


def _record_prefix(record: TensorRecord, kind: RecordKind) -> bytes:
    name = record.name.encode("utf-8")
    dims = b"".join(uvarint(dim) for dim in record.shape)
    return uvarint(len(name)) + name + bytes([kind, len(record.shape)]) + dims


def _check_record(record: TensorRecord) -> None:
    """Writer-side validation: a record the reader would reject is an EprError here."""
    try:
        name_length = len(record.name.encode("utf-8"))
    except (AttributeError, UnicodeEncodeError) as err:
        raise EprError(f"tensor name {record.name!r} is not encodable UTF-8 text") from err
    if not 1 <= name_length <= MAX_NAME_BYTES:
        raise EprError(f"tensor name {record.name!r} must be 1..{MAX_NAME_BYTES} UTF-8 bytes")
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
        return
    if record.dtype != "float32":
        raise EprError(f"{record.name}: coded tensors decode to float32, not {record.dtype}")
    if record.raw is not None:
        raise EprError(f"{record.name}: a coded tensor stores no raw array")
    latents = record.latents
    if not isinstance(latents, np.ndarray) or latents.shape != shape:
        raise EprError(f"{record.name}: latents must be an array of shape {shape}")
    if not np.issubdtype(latents.dtype, np.integer):
        raise EprError(f"{record.name}: latents must be integers, got {latents.dtype}")
    if isinstance(record.decoder, RdftDecoder):
        if len(shape) != 4 or shape[2] * shape[3] < 2 or max(shape[2:]) > MAX_KERNEL_SIDE:
            raise EprError(
                f"{record.name}: rdft needs (out, in, kh, kw) with 2 <= kh*kw, "
                f"kh, kw <= {MAX_KERNEL_SIDE}; got {shape}"
            )
        if np.shape(record.decoder.steps) != shape[2:]:
            raise EprError(f"{record.name}: rdft steps must have shape {shape[2:]}")
    elif not isinstance(record.decoder, ScalarDecoder):
        raise EprError(f"{record.name}: unknown decoder {type(record.decoder).__name__}")


def _encode_record(record: TensorRecord) -> tuple[bytes, TensorSize]:
    _check_record(record)
    if record.decoder is None:
        prefix = _record_prefix(record, RecordKind.RAW) + bytes([_RAW_CODES[record.dtype]])
        data = record.raw.astype(record.raw.dtype.newbyteorder("<")).tobytes()
        return prefix + data, _tensor_size(record.name, len(prefix), 0, None, raw=len(data))
    rdft = isinstance(record.decoder, RdftDecoder)
    step_values = np.asarray(record.decoder.steps if rdft else record.decoder.step).reshape(-1)
    steps = b"".join(
        struct.pack("<H", _f16_bits(v, f"{record.name}: step")) for v in step_values.tolist()
    )
    coded = encode_latents(record.latents, rdft)
    prefix = _record_prefix(record, RecordKind.RDFT if rdft else RecordKind.SCALAR)
    size = _tensor_size(record.name, len(prefix), len(steps), coded)
    return prefix + steps + coded.encode(), size


def _read_record(
    reader: ByteReader, limits: ReadLimits, elements_left: int
) -> tuple[TensorRecord, TensorSize]:
    """One record; the file may declare only `elements_left` more tensor elements."""
    start = reader.pos
    name_length = reader.read_uvarint("name length")
    if not 1 <= name_length <= MAX_NAME_BYTES:
        raise reader.error(f"name length {name_length} outside 1..{MAX_NAME_BYTES}")
    try:
        name = str(reader.read_bytes(name_length, "name"), "utf-8")
    except UnicodeDecodeError as err:
        raise reader.error("tensor name is not valid UTF-8") from err
    kind = reader.read_u8("record kind")
    if kind not in _RECORD_KINDS:
        raise reader.error(f"{name!r}: unknown record kind {kind}")
    ndim = reader.read_u8("ndim")
    if ndim > MAX_NDIM:
        raise reader.error(f"{name!r}: {ndim} dims, at most {MAX_NDIM}")
    shape = tuple(reader.read_uvarint("dim") for _ in range(ndim))
    numel = 1
    for dim in shape:
        numel *= dim
        if numel > limits.max_tensor_elements or dim > limits.max_tensor_elements:
            raise reader.error(
                f"{name!r}: shape {shape} exceeds {limits.max_tensor_elements} elements"
            )
    if numel > elements_left:
        raise reader.error(
            f"{name!r}: file declares more than {limits.max_total_elements} elements"
        )

    if kind == RecordKind.RAW:
        code = reader.read_u8("dtype code")
        if code not in RAW_DTYPES:
            raise reader.error(f"{name!r}: unknown dtype code {code}")
        dtype = np.dtype(RAW_DTYPES[code]).newbyteorder("<")
        data = reader.read_bytes(numel * dtype.itemsize, "raw tensor data")
        raw = np.frombuffer(data, dtype=dtype).astype(dtype.newbyteorder("="))
        if dtype.kind == "b" and np.frombuffer(data, dtype=np.uint8).max(initial=0) > 1:
            raise reader.error(f"{name!r}: bool tensor holds bytes other than 0 and 1")
        framing = reader.pos - start - len(data)
        record = TensorRecord(name, shape, RAW_DTYPES[code], None, None, raw.reshape(shape))
        return record, _tensor_size(name, framing, 0, None, raw=len(data))

    rdft = kind == RecordKind.RDFT
    if rdft and (ndim != 4 or shape[2] * shape[3] < 2 or max(shape[2:]) > MAX_KERNEL_SIDE):
        raise reader.error(
            f"{name!r}: rdft needs dims (out, in, kh, kw) with kh*kw >= 2 and "
            f"kh, kw <= {MAX_KERNEL_SIDE}, got {shape}"
        )
    steps = _read_steps(reader, shape[2] * shape[3] if rdft else 1, name)
    framing = reader.pos - start - 2 * steps.size
    coded, latents = read_latents(reader, shape, rdft, name)
    decoder = RdftDecoder(steps.reshape(shape[2:])) if rdft else ScalarDecoder(float(steps[0]))
    record = TensorRecord(name, shape, "float32", decoder, latents, None)
    return record, _tensor_size(name, framing, 2 * steps.size, coded)


def _read_steps(reader: ByteReader, count: int, name: str) -> np.ndarray:
    data = reader.read_bytes(2 * count, "steps")
    steps = np.frombuffer(data, dtype="<f2").astype(np.float16)
    if not np.isfinite(steps).all():
        raise reader.error(f"{name!r}: step is not finite")
    return steps


# --- zstd and JSON sections -----------------------------------------------------------------


def _zstd_frame_length(frame: bytes, fail: Callable[[str], FormatError]) -> int:
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


def _unzstd(section: bytes, limit: int, window: int, fail: Callable[[str], FormatError]) -> bytes:
    """Inflate one zstd frame, never past its declared size or `limit`, whatever it claims."""
    if section[:4] != ZSTD_MAGIC or len(section) < 6:
        raise fail("section is not a zstd frame")
    try:
        params = zstandard.get_frame_parameters(section)
        if params.content_size == zstandard.CONTENTSIZE_UNKNOWN:
            raise fail("zstd frame does not declare its content size")
        if params.content_size > limit:
            raise fail(f"zstd frame declares {params.content_size} bytes, limit {limit}")
        if params.window_size > window:
            raise fail(f"zstd window of {params.window_size} bytes, limit {window}")
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
    except (TypeError, ValueError) as err:
        raise EprError(f"manifest is not JSON-serializable: {err}") from err


def _parse_manifest(data: bytes, fail: Callable[[str], FormatError]) -> dict:
    def unique_keys(pairs: list[tuple[str, object]]) -> dict:
        result = dict(pairs)
        if len(result) != len(pairs):
            raise fail("manifest repeats a key")
        return result

    def finite_float(text: str) -> float:
        value = float(text)
        if not np.isfinite(value):
            raise fail(f"manifest number {text[:40]} overflows float64")
        return value

    def no_constant(text: str) -> None:
        raise fail(f"manifest holds {text}, which is not JSON")

    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise fail("manifest is not valid UTF-8") from err
    try:
        manifest = json.loads(
            text,
            object_pairs_hook=unique_keys,
            parse_float=finite_float,
            parse_constant=no_constant,
        )
    except (ValueError, RecursionError) as err:
        raise fail(f"manifest is not valid JSON: {str(err)[:200]}") from err
    if not isinstance(manifest, dict):
        raise fail("manifest is not a JSON object")
    return manifest


# --- container ------------------------------------------------------------------------------


def encode_container(contents: EprContents) -> tuple[bytes, SizeBreakdown]:
    """Serialize `contents`; invalid contents raise EprError before anything is written."""
    names = [record.name for record in contents.tensors]
    if len(set(names)) != len(names):
        duplicate = next(name for name in names if names.count(name) > 1)
        raise EprError(f"tensor name {duplicate!r} appears twice")
    if not isinstance(contents.graph, bytes | bytearray | memoryview):
        raise EprError(f"graph must be bytes, got {type(contents.graph).__name__}")
    encoded = [_encode_record(record) for record in contents.tensors]
    if sum(math.prod(r.shape) for r in contents.tensors) > DEFAULT_LIMITS.max_total_elements:
        raise EprError(f"more than {DEFAULT_LIMITS.max_total_elements} elements in all")
    tensors = uvarint(len(encoded)) + b"".join(body for body, _ in encoded)
    sections = [
        (TAG_META, _zstd(_manifest_json(contents.manifest))),
        (TAG_GRAPH, _zstd(bytes(contents.graph))),
        (TAG_TENSORS, tensors),
    ]
    header = _HEADER.pack(MAGIC, VERSION_MAJOR, VERSION_MINOR, len(sections), 0) + b"".join(
        _ENTRY.pack(tag, FLAG_REQUIRED, len(body), zlib.crc32(body)) for tag, body in sections
    )
    header += _CRC.pack(zlib.crc32(header))
    data = header + b"".join(body for _, body in sections)
    sizes = [size for _, size in encoded]
    return data, _breakdown(
        len(data),
        len(header),
        len(sections[0][1]),
        len(sections[1][1]),
        len(uvarint(len(encoded))),
        sizes,
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
    data: bytes


def _read_section_table(data: bytes) -> tuple[list[_Section], int]:
    """Validate the header and section table; returns the sections and the header length."""
    if len(data) < _HEADER.size + _CRC.size:
        raise FormatError(f"file of {len(data)} bytes is too short for a header", offset=0)
    magic, major, minor, count, flags = _HEADER.unpack_from(data)
    if magic != MAGIC:
        raise FormatError("not an .epr file (bad magic)", offset=0)
    # Magic and version are the only fields every major version keeps: check them first.
    if major != VERSION_MAJOR:
        raise FormatError(
            f"unsupported format version {major}.{minor} (this reader reads 1.x)", offset=8
        )
    header_end = _HEADER.size + count * _ENTRY.size + _CRC.size
    if header_end > len(data):
        raise FormatError(
            f"section table of {count} entries runs past the end of the file", offset=12
        )
    if _CRC.unpack_from(data, header_end - 4)[0] != zlib.crc32(data[: header_end - 4]):
        raise FormatError("header checksum mismatch", offset=header_end - 4)
    if flags:
        raise FormatError(f"reserved header flags {flags:#06x} are set", offset=14)
    sections, offset, seen = [], header_end, set()
    for index in range(count):
        entry_at = _HEADER.size + index * _ENTRY.size
        tag, section_flags, length, crc = _ENTRY.unpack_from(data, entry_at)
        if not all(0x21 <= byte <= 0x7E for byte in tag):
            raise FormatError(f"section tag {tag!r} is not printable ASCII", offset=entry_at)
        name = tag.decode("ascii")
        if tag in seen:
            raise FormatError(f"section {name} appears twice", offset=entry_at)
        seen.add(tag)
        if section_flags & ~FLAG_REQUIRED:
            raise FormatError(
                f"reserved flag bits {section_flags:#x} are set", section=name, offset=entry_at
            )
        if offset + length > len(data):
            raise FormatError(
                f"{length} bytes run past the end of the file", section=name, offset=offset
            )
        body = data[offset : offset + length]
        if zlib.crc32(body) != crc:
            raise FormatError("checksum mismatch", section=name, offset=offset)
        sections.append(_Section(tag, section_flags, offset, body))
        offset += length
    if offset != len(data):
        raise FormatError(f"{len(data) - offset} bytes after the last section", offset=offset)
    return sections, header_end


def decode_container(
    data: bytes, *, source: str = "<bytes>", limits: ReadLimits = DEFAULT_LIMITS
) -> tuple[EprContents, SizeBreakdown]:
    """Parse and fully validate an .epr file; any defect raises FormatError naming `source`."""
    try:
        return _decode(bytes(data), limits)
    except FormatError as err:
        located = FormatError(f"{source}: {err}")
        located.section, located.offset = err.section, err.offset
        raise located from err
    except MemoryError as err:
        raise FormatError(f"{source}: not enough memory to decode this file") from err


def _decode(data: bytes, limits: ReadLimits) -> tuple[EprContents, SizeBreakdown]:
    if len(data) > limits.max_file_bytes:
        raise FormatError(f"file of {len(data)} bytes exceeds the limit {limits.max_file_bytes}")
    sections, header_bytes = _read_section_table(data)
    known = {TAG_META: None, TAG_GRAPH: None, TAG_TENSORS: None}
    unknown_bytes = 0
    for section in sections:
        name = section.tag.decode("ascii")
        if section.tag in known:
            if not section.flags & FLAG_REQUIRED:
                raise FormatError(
                    "core section lacks the required flag", section=name, offset=section.offset
                )
            known[section.tag] = section
        elif section.flags & FLAG_REQUIRED:
            raise FormatError(
                f"unknown required section {name}", section=name, offset=section.offset
            )
        else:
            unknown_bytes += len(section.data)
    for tag, section in known.items():
        if section is None:
            raise FormatError(f"required section {tag.decode()} is missing")

    def failure(section: _Section) -> Callable[[str], FormatError]:
        return lambda message: FormatError(
            message, section=section.tag.decode(), offset=section.offset
        )

    meta, graph, tens = known[TAG_META], known[TAG_GRAPH], known[TAG_TENSORS]
    manifest_json = _unzstd(
        meta.data, limits.max_manifest_bytes, limits.max_zstd_window, failure(meta)
    )
    manifest = _parse_manifest(manifest_json, failure(meta))
    graph_bytes = _unzstd(
        graph.data, limits.max_graph_bytes, limits.max_zstd_window, failure(graph)
    )

    reader = ByteReader(tens.data, section="TENS", base=tens.offset)
    record_count = reader.read_uvarint("record count")
    records, sizes, names = [], [], set()
    elements_left = limits.max_total_elements
    for _ in range(record_count):
        at = reader.offset
        record, size = _read_record(reader, limits, elements_left)
        elements_left -= math.prod(record.shape)
        if record.name in names:
            raise FormatError(
                f"tensor name {record.name!r} appears twice", section="TENS", offset=at
            )
        names.add(record.name)
        records.append(record)
        sizes.append(size)
    if reader.remaining:
        raise reader.error(f"{reader.remaining} bytes after the last record")
    framing = len(uvarint(record_count)) + unknown_bytes
    breakdown = _breakdown(len(data), header_bytes, len(meta.data), len(graph.data), framing, sizes)
    return EprContents(manifest=manifest, graph=graph_bytes, tensors=records), breakdown


# --- files and weights ----------------------------------------------------------------------


def read_epr(
    path: str | os.PathLike, *, limits: ReadLimits = DEFAULT_LIMITS
) -> tuple[EprContents, SizeBreakdown]:
    """Read and decode a file; I/O problems are EprError, content problems FormatError."""
    try:
        with open(path, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            if size > limits.max_file_bytes:
                raise FormatError(
                    f"{path}: file of {size} bytes exceeds the limit {limits.max_file_bytes}"
                )
            data = handle.read()
    except OSError as err:
        raise EprError(f"cannot read {path}: {err.strerror or err}") from err
    return decode_container(data, source=str(path), limits=limits)


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
    if isinstance(record.decoder, ScalarDecoder):
        return decode_scalar(record.decoder.step, record.latents)
    return decode_rdft(record.decoder.steps, record.latents)
