"""Every byte-level structure of the .epr format, each described once (see syntax.py).

The reader (container.py, layout.py, coding.py) parses with these, the writer serializes with
them, and spec/FORMAT.md prints their `render()` verbatim (tests/format/test_spec.py checks it).
Semantic checks that span structures (checksums, masks, canonical streams) live with the code
that owns them; every check that concerns one field lives here.
"""

from __future__ import annotations

import math

import numpy as np

from eprpipe.format.syntax import Context, Field, Structure, in_range, one_of

MAGIC = b"\x89EPR\r\n\x1a\n"
VERSION_MAJOR, VERSION_MINOR = 1, 0
MINOR_1_1 = 1  # format 1.1: the general manifest, rdft records of rank 3 and 5
FLAG_REQUIRED = 1
MAX_ALIGNMENT_LOG2 = 12
MAX_NAME_BYTES = 4096
MAX_NDIM = 8
MAX_KERNEL_SIDE = 64  # rdft kernels; bounds the basis a decoder builds
RDFT_RANKS = {0: (4,), MINOR_1_1: (3, 4, 5)}  # ndim of rdft records, by the file's minor version
LATENT_BOUND = 1 << 40  # |latent| < 2**40 keeps step * latent exact in float64
MIN_ALPHABET, MAX_ALPHABET = 2, 1 << 20
MAX_RESOLUTION = 4
MAX_LEVEL_CODE_BITS = 17  # the Exp-Golomb code of a level step of +-120 is 15 bits
MAX_ZERO_LEVEL = 80
FILLER_DECAY = 0x80  # the decay byte of a side on which no weight depends

RAW_DTYPES: dict[int, str] = {
    1: "float32", 2: "float16", 3: "float64", 4: "int64", 5: "int32",
    6: "int8", 7: "uint8", 8: "bool", 9: "int16",
}  # fmt: skip
RECORD_KINDS = {0: "raw", 1: "scalar", 2: "rdft"}
GROUP_KINDS = {0: "CONSTANT", 1: "QTABLE", 2: "GEOMETRIC"}
PER_FREQUENCY, ROW_MASK, COLUMN_MASK = 1, 2, 4


def _magic(value: bytes, _: Context) -> str | None:
    return None if value == MAGIC else "not an .epr file (bad magic)"


def _major(value: int, _: Context) -> str | None:
    if value == VERSION_MAJOR:
        return None
    return f"unsupported format version {value}.x (this reader reads {VERSION_MAJOR}.x)"


def _zero(what: str):
    return lambda value, _: None if value == 0 else f"reserved {what} {value:#x} are set"


def _tag(value: bytes, _: Context) -> str | None:
    if all(0x21 <= byte <= 0x7E for byte in value):
        return None
    return f"section tag {value!r} is not printable ASCII"


def _section_flags(value: int, _: Context) -> str | None:
    return None if not value & ~FLAG_REQUIRED else f"reserved flag bits {value:#x} are set"


HEADER = Structure(
    "header",
    (
        Field("magic", "u8", '89 45 50 52 0D 0A 1A 0A ("\\x89EPR\\r\\n\\x1a\\n")', _magic,
              "bad-magic", count=8),
        Field("version_major", "u16", "1", _major, "unsupported-version"),
        Field("version_minor", "u16", "the lowest minor version the file needs (4)"),
        Field("section_count", "u16", "n"),
        Field("alignment", "u8", f"log2 of the section alignment, 0..{MAX_ALIGNMENT_LOG2}",
              in_range(0, MAX_ALIGNMENT_LOG2, "alignment"), "bad-alignment"),
        Field("flags", "u8", "reserved, MUST be 0", _zero("header flags"), "reserved-bits"),
    ),
)  # fmt: skip

SECTION_ENTRY = Structure(
    "section_entry",
    (
        Field("tag", "u8", 'ASCII, each byte in 0x21..0x7E, e.g. "META"', _tag, "bad-tag",
              count=4),
        Field("flags", "u32", "bit 0: required; bits 1..31 reserved, MUST be 0",
              _section_flags, "reserved-bits"),
        Field("length", "u32", "bytes in the section body"),
        Field("crc", "u32", "CRC-32 of the section body"),
    ),
)  # fmt: skip


def _utf8_name(value: bytes, _: Context) -> str | None:
    try:
        value.decode("utf-8")
    except UnicodeDecodeError:
        return "tensor name is not valid UTF-8"
    return None


def rdft_ranks(minor: int) -> tuple[int, ...]:
    """The ndim an rdft record may have in a file of minor version `minor`."""
    return RDFT_RANKS[min(minor, MINOR_1_1)]


def rdft_minor(shape: tuple[int, ...]) -> int:
    """The lowest minor version whose files may hold an rdft record of `shape` (spec 4)."""
    return 0 if len(shape) in RDFT_RANKS[0] else MINOR_1_1


def rdft_shape_problem(shape: tuple[int, ...], minor: int = MINOR_1_1) -> str | None:
    """Why `shape` cannot hold rdft kernels in a file of minor version `minor`, or None.

    Dims are (out, in, k1[, k2[, k3]]): at least 2 taps per kernel, every side at most
    MAX_KERNEL_SIDE. Ranks 3 and 5 are format 1.1; a 1.0 file holds only (out, in, kh, kw).
    """
    kernel = shape[2:]
    if (
        len(shape) in rdft_ranks(minor)
        and math.prod(kernel) >= 2
        and max(kernel) <= MAX_KERNEL_SIDE
    ):
        return None
    if len(shape) in RDFT_RANKS[MINOR_1_1] and minor < MINOR_1_1:
        return (
            f"rdft needs dims (out, in, kh, kw) in a file of minor version {minor}; "
            f"dims {shape} of rank {len(shape)} need format 1.1 (version_minor 1)"
        )
    return (
        "rdft needs dims (out, in, k1[, k2[, k3]]) with at least 2 kernel taps and every "
        f"kernel side <= {MAX_KERNEL_SIDE}, got {shape}"
    )


def kernel_taps(context: Context) -> int:
    """Taps of an rdft record's kernel: the product of dims[2:], one step per tap."""
    return math.prod(context["dims"][2:])


def _dims(value: tuple[int, ...], context: Context) -> str | None:
    if context["kind"] != 2:
        return None
    return rdft_shape_problem(tuple(value), context.get("minor", MINOR_1_1))


RECORD_HEAD = Structure(
    "record_head",
    (
        Field("name_length", "varint", f"1..{MAX_NAME_BYTES}",
              in_range(1, MAX_NAME_BYTES, "name length"), "bad-name"),
        Field("name", "u8", "UTF-8; unique in the file; the initializer name", _utf8_name,
              "bad-name", count=lambda c: c["name_length"], count_text="name_length"),
        Field("kind", "u8", "0 raw, 1 scalar, 2 rdft; other values reserved",
              one_of(RECORD_KINDS, "record kind"), "unknown-record-kind"),
        Field("ndim", "u8", f"0..{MAX_NDIM}", in_range(0, MAX_NDIM, "ndim"), "bad-shape"),
        Field("dims", "varint", "the shape; numel = product of dims (1 if ndim = 0)", _dims,
              "bad-shape", count=lambda c: c["ndim"], count_text="ndim"),
    ),
)  # fmt: skip


def numel(context: Context) -> int:
    return math.prod(context["dims"])


def _bool_bytes(value: bytes, context: Context) -> str | None:
    if RAW_DTYPES[context["dtype"]] == "bool" and np.frombuffer(value, np.uint8).max(initial=0) > 1:
        return "bool tensor holds bytes other than 0 and 1"
    return None


RAW_BODY = Structure(
    "raw_body",
    (
        Field("dtype", "u8", "table below", one_of(RAW_DTYPES, "dtype code"), "unknown-dtype"),
        Field("data", "u8", "elements in C order, each little-endian", _bool_bytes,
              "bad-bool", count=lambda c: numel(c) * np.dtype(RAW_DTYPES[c["dtype"]]).itemsize,
              count_text="numel * itemsize"),
    ),
    comment="kind 0: the tensor verbatim",
)  # fmt: skip


def layout_problem(value: int, shape: tuple[int, ...], rdft: bool) -> str | None:
    """Why a layout byte is invalid for a record of `shape`, or None when it is valid."""
    if value & ~0b111:
        return f"reserved layout bits {value:#04x} are set"
    if value & PER_FREQUENCY and not rdft:
        return "per-frequency grouping (layout bit 0) in a scalar record"
    if value & (ROW_MASK | COLUMN_MASK) and not (len(shape) >= 2 and all(shape)):
        return f"row/column masks need ndim >= 2 and no zero dim, shape is {shape}"
    return None


def _finite(value, _: Context) -> str | None:
    return None if np.isfinite(value).all() else "step is not finite"


def _layout(value: int, context: Context) -> str | None:
    return layout_problem(value, tuple(context["dims"]), context["kind"] == 2)


_LAYOUT = Field("layout", "u8", "6.1", _layout, "bad-layout")

SCALAR_BODY = Structure(
    "scalar_body",
    (Field("step", "f16", "finite", _finite, "non-finite-step"), _LAYOUT),
    comment="kind 1: theta = step * latent (8.1)",
)

RDFT_BODY = Structure(
    "rdft_body",
    (
        Field("steps", "f16", "taps = product of dims[2..]; row-major; finite", _finite,
              "non-finite-step", count=kernel_taps, count_text="taps"),
        _LAYOUT,
    ),
    comment="kind 2: dims = (out, in, k1[, k2[, k3]]) (8.2)",
)  # fmt: skip

GROUP_KIND = Structure(
    "group",
    (
        Field("kind", "u8", "0 CONSTANT, 1 QTABLE, 2 GEOMETRIC; others reserved",
              one_of(GROUP_KINDS, "group kind"), "unknown-group-kind"),
    ),
)  # fmt: skip


def _latent(value: int, _: Context) -> str | None:
    if -LATENT_BOUND < value < LATENT_BOUND:
        return None
    return f"constant {value} outside the latent bound +-2**40"


CONSTANT_GROUP = Structure(
    "constant_group",
    (Field("value", "svarint", "|value| < 2^40", _latent, "latent-bound"),),
    comment="kind 0: every symbol has this value",
)


def _alphabet(value: int, context: Context) -> str | None:
    if not MIN_ALPHABET <= value <= MAX_ALPHABET:
        return f"alphabet size {value} outside {MIN_ALPHABET}..{MAX_ALPHABET}"
    lo = context["lo"]
    if not (lo > -LATENT_BOUND and lo + value - 1 < LATENT_BOUND):
        return f"table values {lo}..{lo + value - 1} outside the latent bound +-2**40"
    return None


_LO = Field("lo", "svarint", "the value of symbol 0")
_ALPHABET = Field(
    "alphabet_size", "varint", "A, 2..2^20; symbol k stands for lo + k", _alphabet, "bad-alphabet"
)


def _levels_length(value: int, context: Context) -> str | None:
    bound = (context["alphabet_size"] * MAX_LEVEL_CODE_BITS + 7) // 8
    if value <= bound:
        return None
    return f"level string of {value} bytes is too long for {context['alphabet_size']} symbols"


QTABLE_GROUP = Structure(
    "qtable_group",
    (
        _LO,
        _ALPHABET,
        Field("resolution", "u8", f"r, 1..{MAX_RESOLUTION}",
              in_range(1, MAX_RESOLUTION, "table resolution"), "bad-resolution"),
        Field("levels_length", "varint", "bytes of the level string", _levels_length,
              "bad-levels"),
        Field("levels", "u8", "bit string (5.2) of the level codes (7.1)",
              count=lambda c: c["levels_length"], count_text="levels_length"),
    ),
    comment="kind 1; symbols: in the record's stream",
)  # fmt: skip


def geometric_sides(lo: int, size: int) -> tuple[bool, bool]:
    """Whether any weight depends on decay_pos, and on decay_neg: a value at distance >= 2."""
    return lo + size - 1 >= 2, lo <= -2


def _zero_level(value: int, context: Context) -> str | None:
    if value > MAX_ZERO_LEVEL:
        return f"zero level {value} outside 0..{MAX_ZERO_LEVEL}"
    lo, size = context["lo"], context["alphabet_size"]
    if value and not lo <= 0 < lo + size:
        return f"zero level {value} for a range without 0; must be 0"
    return None


def _decay(side: int, name: str):
    def rule(value: int, context: Context) -> str | None:
        used = geometric_sides(context["lo"], context["alphabet_size"])[side]
        if used and not 1 <= value <= 255:
            return f"{name} decay {value} outside 1..255"
        if not used and value != FILLER_DECAY:
            return f"{name} decay {value:#04x} on which no weight depends; must be 0x80"
        return None

    return rule


GEOMETRIC_GROUP = Structure(
    "geometric_group",
    (
        _LO,
        _ALPHABET,
        Field("zero_level", "u8", f"0..{MAX_ZERO_LEVEL}; 0 if 0 is not in [lo, lo + A - 1]",
              _zero_level, "bad-geometric"),
        Field("decay_pos", "u8", "1..255; 0x80 if lo + A - 1 < 2 (7.5)",
              _decay(0, "positive"), "bad-geometric"),
        Field("decay_neg", "u8", "1..255; 0x80 if lo > -2 (7.5)", _decay(1, "negative"),
              "bad-geometric"),
    ),
    comment="kind 2; symbols: in the record's stream",
)  # fmt: skip

WORDS = Structure(
    "stream",
    (
        Field("word_count", "varint", "32-bit words of the record's range-coder stream"),
        Field("words", "u32", "the stream (7.3)", count=lambda c: c["word_count"],
              count_text="word_count"),
    ),
    comment="present iff a group of the record has a table",
)  # fmt: skip

ALL = (
    HEADER, SECTION_ENTRY, RECORD_HEAD, RAW_BODY, SCALAR_BODY, RDFT_BODY, GROUP_KIND,
    CONSTANT_GROUP, QTABLE_GROUP, GEOMETRIC_GROUP, WORDS,
)  # fmt: skip
