"""Layouts of coded records: optional row/column masks, then the active latents in groups.

Trained networks have dead units, so whole rows (outputs) and columns (inputs) of a weight's
latents are zero. A record may code one 0/1 mask per axis and then only the sub-tensor of
active rows and columns; RDFT records may also split that sub-tensor into one group per
frequency (one per kernel tap, whatever the kernel's rank). All groups' symbols share one
range-coder stream, stored after the group headers. The writer tries every layout and keeps
the smallest (spec/FORMAT.md, section 6.1).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import IntFlag

import numpy as np

from eprpipe.format.bitio import ByteReader
from eprpipe.format.coding import (
    CodedGroup,
    StreamDecoder,
    encode_group,
    encode_stream,
    needs_stream,
    read_group,
    read_words,
    stream_bytes,
)
from eprpipe.format.limits import ReadBudget
from eprpipe.format.structures import COLUMN_MASK, PER_FREQUENCY, ROW_MASK, layout_problem


class Layout(IntFlag):
    PER_FREQUENCY = PER_FREQUENCY  # rdft only: a group of r*c latents per tap instead of one
    ROW_MASK = ROW_MASK
    COLUMN_MASK = COLUMN_MASK


_MASKS = ((Layout.ROW_MASK, "row"), (Layout.COLUMN_MASK, "column"))


@dataclass(frozen=True, eq=False)
class CodedLatents:
    """A coded tensor's layout byte, group headers (masks first: rows, cols) and shared words."""

    layout: Layout
    masks: list[CodedGroup]
    groups: list[CodedGroup]
    values: list[np.ndarray]  # each group's decoded symbols, masks first, in stored order
    words: np.ndarray  # the record's one range-coder stream; empty if every group is CONSTANT

    @property
    def all_groups(self) -> list[CodedGroup]:
        return self.masks + self.groups

    @property
    def _stream(self) -> bytes:
        return stream_bytes(self.words) if needs_stream(self.all_groups) else b""

    @property
    def latent_bytes(self) -> int:
        return 4 * len(self.words)

    @property
    def table_bytes(self) -> int:
        return sum(group.table_bytes for group in self.all_groups)

    @property
    def framing_bytes(self) -> int:
        """The layout byte, the kind bytes and the one word count."""
        return 1 + len(self.all_groups) + len(self._stream) - self.latent_bytes

    @property
    def size(self) -> int:
        return self.framing_bytes + self.table_bytes + self.latent_bytes

    def encode(self) -> bytes:
        """Group headers and the stream; the layout byte belongs to the record body."""
        return b"".join(group.encode() for group in self.all_groups) + self._stream

    @property
    def label(self) -> str:
        """E.g. "row mask const, column mask qtable r1, 3x const, 6x geom, qtable r2"."""
        axes = [axis for flag, axis in _MASKS if self.layout & flag]
        parts = [f"{axis} mask {g.label}" for axis, g in zip(axes, self.masks, strict=True)]
        labels = [group.label for group in self.groups]
        counts = {label: labels.count(label) for label in sorted(set(labels))}
        parts += [f"{n}x {label}" if n > 1 else label for label, n in counts.items()]
        return ", ".join(parts)


def allowed_layouts(shape: tuple[int, ...], rdft: bool) -> list[Layout]:
    return [Layout(value) for value in range(8) if layout_problem(value, shape, rdft) is None]


def _nonzero_along(array: np.ndarray, axis: int) -> np.ndarray:
    """For each index along `axis`: does that slice hold a non-zero value?"""
    return (array != 0).any(axis=tuple(a for a in range(array.ndim) if a != axis))


def _parts(sub: np.ndarray, rdft: bool, per_frequency: bool) -> list[np.ndarray]:
    """The latent groups in stored order: C order, or frequency-major for rdft (the kernel
    axes first, then rows and columns)."""
    if not rdft:
        return [sub.reshape(-1)]
    frequency_major = np.moveaxis(sub, (0, 1), (-2, -1)).reshape(-1)
    if per_frequency:
        return np.split(frequency_major, math.prod(sub.shape[2:]))
    return [frequency_major]


def encode_layout(latents: np.ndarray, layout: Layout, rdft: bool) -> CodedLatents:
    """Code `latents` in exactly `layout`, which must be one of allowed_layouts."""
    sub, masks = latents, []
    for axis, (flag, _) in enumerate(_MASKS):
        if layout & flag:
            active = _nonzero_along(latents, axis)
            masks.append(active.astype(np.int64))
            sub = np.compress(active, sub, axis=axis)
    parts = _parts(sub, rdft, bool(layout & Layout.PER_FREQUENCY))
    mask_groups = [encode_group(mask) for mask in masks]
    groups = [encode_group(part) for part in parts]
    return CodedLatents(
        layout=layout,
        masks=mask_groups,
        groups=groups,
        values=masks + parts,
        words=encode_stream(mask_groups + groups, masks + parts),
    )


def encode_latents(latents: np.ndarray, rdft: bool) -> CodedLatents:
    """The smallest of all allowed layouts; ties go to the lower layout value."""
    options = [encode_layout(latents, lay, rdft) for lay in allowed_layouts(latents.shape, rdft)]
    return min(options, key=lambda coded: (coded.size, coded.layout))


@dataclass(frozen=True)
class _Mask:
    """A decoded mask: which axis, the active indices, and where its group header starts."""

    axis: int
    active: np.ndarray
    offset: int


def read_latents(
    reader: ByteReader,
    shape: tuple[int, ...],
    rdft: bool,
    name: str,
    layout: Layout,
    budget: ReadBudget,
) -> tuple[CodedLatents, np.ndarray]:
    """Parse the group headers of a (validated) `layout` and the shared words; decode the latents.

    The latent groups' symbol counts depend on the masks, so the masks are decoded first from
    the same stream. Every count is bounded by the record's element count, which the caller has
    bounded: masks need every dim >= 1, so neither axis is longer than numel.
    """
    per_frequency = bool(layout & Layout.PER_FREQUENCY)
    mask_axes = [axis for axis, (flag, _) in enumerate(_MASKS) if layout & flag]
    group_count = len(mask_axes) + (math.prod(shape[2:]) if per_frequency else 1)
    offsets, headers = [], []
    for _ in range(group_count):
        offsets.append(reader.offset)
        headers.append(read_group(reader))
        if headers[-1].table is not None:  # before any model of that size is built
            budget.charge_table(headers[-1].table.alphabet_size, reader.section, offsets[-1])
    words_at = reader.offset
    words = read_words(reader) if needs_stream(headers) else np.zeros(0, dtype=np.uint32)
    stream = StreamDecoder(reader, words, words_at)
    masks, mask_values = [], []
    sub_shape = list(shape)
    n_masks = len(mask_axes)
    for axis, group, offset in zip(mask_axes, headers[:n_masks], offsets[:n_masks], strict=True):
        mask = stream.decode(group, shape[axis], offset)
        if ((mask != 0) & (mask != 1)).any():
            axis_name = _MASKS[axis][1]
            raise reader.error(
                f"{name!r}: {axis_name} mask holds a symbol not 0 or 1", at=offset, code="bad-mask"
            )
        masks.append(_Mask(axis, np.flatnonzero(mask), offset))
        mask_values.append(mask)
        sub_shape[axis] = masks[-1].active.size
    counts = _group_counts(sub_shape, per_frequency)
    latent_headers = headers[n_masks:]
    pairs = zip(latent_headers, counts, offsets[n_masks:], strict=True)
    parts = [stream.decode(group, count, offset) for group, count, offset in pairs]
    stream.finish()
    sub = np.concatenate(parts) if len(parts) > 1 else parts[0]
    if rdft:
        r, c, *kernel = sub_shape
        sub = np.moveaxis(sub.reshape(*kernel, r, c), (-2, -1), (0, 1))
    else:
        sub = sub.reshape(tuple(sub_shape))
    coded = CodedLatents(layout, headers[:n_masks], latent_headers, mask_values + parts, words)
    return coded, _expand(reader, sub, masks, shape, name)


def _group_counts(sub_shape: list[int], per_frequency: bool) -> list[int]:
    if per_frequency:  # rdft only: one group of r*c latents per frequency (kernel tap)
        r, c, *kernel = sub_shape
        return [r * c] * math.prod(kernel)
    return [math.prod(sub_shape)]


def _expand(
    reader: ByteReader, sub: np.ndarray, masks: list[_Mask], shape: tuple[int, ...], name: str
) -> np.ndarray:
    """Check that every active row and column holds a non-zero; scatter into zeros."""
    for mask in masks:
        empty = np.flatnonzero(~_nonzero_along(sub, mask.axis))
        if empty.size:
            raise reader.error(
                f"{name!r}: {_MASKS[mask.axis][1]} {mask.active[empty[0]]} is marked active "
                "but holds no non-zero latent",
                at=mask.offset,
                code="bad-mask",
            )
    if not masks:
        return np.asarray(sub, order="C")
    index = [np.arange(dim) for dim in shape[:2]]
    for mask in masks:
        index[mask.axis] = mask.active
    latents = np.zeros(shape, dtype=np.int64)
    latents[np.ix_(*index)] = sub
    return latents
