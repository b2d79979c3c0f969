"""Tensor records for test files: in memory, for the writer to code, or as hand-written bytes
that may break any rule of RECORD_HEAD (spec/FORMAT.md, section 6)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from eprpipe.format.bitio import svarint
from eprpipe.format.container import (
    RdftDecoderParams,
    RecordKind,
    ScalarDecoderParams,
    TensorRecord,
)
from eprpipe.format.layout import Layout, encode_layout
from eprpipe.format.structures import RAW_BODY, RAW_DTYPES, RDFT_BODY, RECORD_HEAD, SCALAR_BODY

HEAD_STEP = 0.25  # the step of hand-written scalar records
HEAD_RDFT_STEP = 0.0625  # every frequency's step of hand-written rdft records
_RAW_CODES = {name: code for code, name in RAW_DTYPES.items()}
_CONSTANT = b"\x00"  # group kind CONSTANT


def scalar(name: str, latents: np.ndarray, step: float) -> TensorRecord:
    """A scalar-coded record: theta = step * latent."""
    latents = np.asarray(latents, dtype=np.int64)
    return TensorRecord(name, latents.shape, "float32", ScalarDecoderParams(step), latents, None)


def rdft(name: str, latents: np.ndarray, steps: float | np.ndarray) -> TensorRecord:
    """An rdft-coded record of kernels (out, in, k1[, k2[, k3]]); `steps` one per frequency
    (tap), or one for all."""
    latents = np.asarray(latents, dtype=np.int64)
    grid = np.broadcast_to(np.asarray(steps, dtype=np.float16), latents.shape[2:]).copy()
    return TensorRecord(name, latents.shape, "float32", RdftDecoderParams(grid), latents, None)


def raw(name: str, values: np.ndarray) -> TensorRecord:
    """A record stored verbatim."""
    return TensorRecord(name, values.shape, values.dtype.name, None, None, values)


def record_head(name: bytes, kind: int, dims: Sequence[int]) -> bytes:
    """A record head written as given, so it may break RECORD_HEAD's rules."""
    fields = {"name_length": len(name), "name": name, "kind": kind, "ndim": len(dims)}
    return RECORD_HEAD.pack({**fields, "dims": tuple(dims)})


def scalar_head(name: bytes, dims: Sequence[int], layout: int = 0) -> bytes:
    """Head and body of a scalar record (step 0.25), before its groups."""
    context = {"dims": tuple(dims), "kind": int(RecordKind.SCALAR)}
    body = SCALAR_BODY.write({"step": np.float16(HEAD_STEP), "layout": layout}, context)
    return record_head(name, RecordKind.SCALAR, dims) + body


def rdft_head(name: bytes, dims: Sequence[int]) -> bytes:
    """Head and body of an rdft record of any rank (every step 0.0625, layout 0), before its
    groups."""
    context = {"dims": tuple(dims), "kind": int(RecordKind.RDFT)}
    steps = np.full(math.prod(dims[2:]), HEAD_RDFT_STEP, dtype=np.float16)
    return record_head(name, RecordKind.RDFT, dims) + RDFT_BODY.write(
        {"steps": steps, "layout": 0}, context
    )


def coded_rdft_record(record: TensorRecord, layout: Layout) -> bytes:
    """An rdft record's bytes coded in exactly `layout`, which must be one of the layouts spec
    6.1 allows for its shape: a producer's free choice, where eprpipe's writer keeps the
    smallest."""
    assert isinstance(record.decoder, RdftDecoderParams) and record.latents is not None
    coded = encode_layout(record.latents, layout, rdft=True)
    steps = np.asarray(record.decoder.steps, dtype=np.float16).reshape(-1)
    context = {"dims": tuple(record.shape), "kind": int(RecordKind.RDFT)}
    body = RDFT_BODY.write({"steps": steps, "layout": int(layout)}, context)
    name = record.name.encode()
    return record_head(name, RecordKind.RDFT, record.shape) + body + coded.encode()


def constant_group(value: int) -> bytes:
    """A CONSTANT group: every latent of the record is `value`, in two or so bytes."""
    return _CONSTANT + svarint(value)


def constant_record(
    name: bytes, dims: Sequence[int], value: int = 0, *, rdft: bool = False
) -> bytes:
    """A coded record of any size whose latents are one CONSTANT group."""
    head = rdft_head(name, dims) if rdft else scalar_head(name, dims)
    return head + constant_group(value)


def raw_record(name: bytes, values: np.ndarray) -> bytes:
    """A raw record holding `values` verbatim, little-endian."""
    data = values.astype(values.dtype.newbyteorder("<")).tobytes()
    context = {"dims": values.shape, "kind": int(RecordKind.RAW)}
    body = RAW_BODY.write({"dtype": _RAW_CODES[values.dtype.name], "data": data}, context)
    return record_head(name, RecordKind.RAW, values.shape) + body
