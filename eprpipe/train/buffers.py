"""Float tensors EPR does not train (BatchNorm running statistics): stored as small as they can be.

Running means and variances are not parameters, so they get no latents during training; stored
verbatim they cost 32 bits each, a visible share of a compressed ResNet. After training they
are quantized on a grid of `2^bits` steps of their tensor's range and coded like any scalar
record (step · integer). The coarsest grid is chosen at which the decoded model's outputs on
held-out examples stay those of the exact values (at most MAX_CHANGED of the examples may
change), and only if it is smaller than the verbatim bytes: the same model, fewer bytes,
measured. What counts as a change is the task's (`eprpipe.train.tasks`): a classifier's
predicted class, a relative change of other outputs. Predictions, not error counts: on a
resnet20 two grids with equal held-out error differed in 14 of 1,000 predictions and by 0.4
points of test error.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from eprpipe.format import container
from eprpipe.format.paramdecode import as_float16

BIT_DEPTHS = (6, 8, 10, 12, 14)  # tried coarsest first
MIN_ELEMENTS = 4  # below this the table costs more than the raw bytes save
MAX_CHANGED = 0.002  # share of held-out predictions a grid may change


@dataclass(frozen=True)
class BufferChoice:
    """What `compact_buffers` chose, for reports: bits (None = verbatim) and bytes both ways."""

    bits: int | None
    raw_bytes: int
    coded_bytes: int
    changed: int  # held-out examples whose outputs changed from those with the exact values
    examples: int


def quantize(record: container.TensorRecord, bits: int) -> container.TensorRecord | None:
    """`record` (float32, verbatim) as a scalar coded record on a 2^bits grid of its range.

    None when the grid step is not a normal float16 (a zero tensor, or an extreme range).
    """
    values = record.raw.astype(np.float64)
    largest = float(np.abs(values).max(initial=0.0))
    if largest == 0.0 or not math.isfinite(largest):
        return None
    step = 2.0 ** (math.floor(math.log2(largest)) + 1 - bits)  # |latent| < 2^bits
    if not 2.0**-14 <= step <= 2.0**15:
        return None
    latents = np.rint(values / step).astype(np.int64)
    decoder = container.ScalarDecoderParams(step=float(as_float16(step, f"{record.name}: step")))
    return container.TensorRecord(record.name, record.shape, "float32", decoder, latents, None)


def _candidates(records: list[container.TensorRecord]) -> list[int]:
    return [
        index
        for index, record in enumerate(records)
        if record.decoder is None and record.dtype == "float32" and record.raw.size >= MIN_ELEMENTS
    ]


def differs(exact: np.ndarray, trial: np.ndarray) -> np.ndarray:
    """The default criterion: per example, whether the prediction (a class) differs."""
    return exact != trial


def compact_buffers(
    records: list[container.TensorRecord],
    outputs: Callable[[list[container.TensorRecord]], Any],
    changed: Callable[[Any, Any], np.ndarray] = differs,
) -> tuple[list[container.TensorRecord], BufferChoice]:
    """Quantize the verbatim float32 records on the coarsest grid that keeps the outputs.

    `outputs(records)` is what the decoded model with those records gives for the held-out
    examples (their predicted classes, or its outputs: an array or a tuple of them), and
    `changed(exact, trial)` says per example whether those of a grid differ materially from
    those of the exact values (a task's `changed`); one bit depth is chosen for all buffers.
    """
    chosen = _candidates(records)
    raw_bytes = sum(4 * records[i].raw.size for i in chosen)
    if not chosen:
        return records, BufferChoice(None, 0, 0, 0, 0)
    exact = outputs(records)
    examples = len(exact if isinstance(exact, np.ndarray) else exact[0])
    allowed = int(MAX_CHANGED * examples)
    for bits in BIT_DEPTHS:
        trial = list(records)
        for index in chosen:
            trial[index] = quantize(records[index], bits) or records[index]
        coded = _payload_bytes([trial[i] for i in chosen])
        if coded >= raw_bytes:
            break  # finer grids only cost more
        count = int(np.count_nonzero(changed(exact, outputs(trial))))
        if count <= allowed:
            return trial, BufferChoice(bits, raw_bytes, coded, count, examples)
    return records, BufferChoice(None, raw_bytes, raw_bytes, 0, examples)


def _payload_bytes(records: list[container.TensorRecord]) -> int:
    """What `records` add to a file's parameter payload, coded as the writer codes them."""
    _, sizes = container.encode_container(container.EprContents({}, b"", records))
    return sizes.payload_bytes
