"""The format wing's public functions: what a file holds, whether it is valid, its model and
its weights, without torch or onnxruntime (`import eprpipe` exports them).

Each function reads the file afresh under `limits` (spec/FORMAT.md, "Limits"), so a file from
elsewhere costs at most what the limits allow.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from eprpipe.format.atomic import write_atomically
from eprpipe.format.container import (
    EprContents,
    ScalarDecoderParams,
    SizeBreakdown,
    TensorRecord,
    TensorSize,
    decode_weights,
    read_epr,
)
from eprpipe.format.graph import build_onnx
from eprpipe.format.limits import DEFAULT_LIMITS, ReadLimits
from eprpipe.format.manifest import (
    Task,
    TaskMetric,
    TensorSpec,
    classes,
    input_shape,
    inputs,
    outputs,
    reported_metrics,
    task,
    task_metric,
    tied_tensors,
    untrained_tensors,
    user_metadata,
)
from eprpipe.format.validate import Report, validate_file

PathLike = str | os.PathLike


@dataclass(frozen=True)
class TensorInfo:
    """One tensor record: its state-dict name, what it decodes to and what it costs."""

    name: str
    shape: tuple[int, ...]
    dtype: str  # numpy dtype name of the decoded tensor
    decoder: str  # "scalar" or "rdft" (coded latents), "raw" (stored verbatim)
    trained: bool  # False for tensors EPR does not train (BatchNorm statistics, counters)
    payload_bytes: int  # coded latents + tables + decoder parameters, or the verbatim bytes

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


@dataclass(frozen=True)
class EprInfo:
    """What `info` reads from a file: its manifest, its tensors and where its bytes go."""

    path: str
    manifest: dict
    tensors: tuple[TensorInfo, ...]
    sizes: SizeBreakdown  # the byte breakdown `eprpipe info` prints
    version_minor: int = 0  # the header's: from 1 on, the 1.1 manifest keys are described

    @property
    def format_version(self) -> str:
        return f"1.{self.version_minor}"

    @property
    def inputs(self) -> tuple[TensorSpec, ...] | None:
        """The model's inputs (name, dtype, shape with symbolic dims), if the file declares
        them (format 1.1); a declared normalization is already inside the graph."""
        return inputs(self.manifest, self.version_minor)

    @property
    def outputs(self) -> tuple[TensorSpec, ...] | None:
        return outputs(self.manifest, self.version_minor)

    @property
    def task(self) -> Task | None:
        """classification (with class names), regression or none, if the file says (1.1)."""
        return task(self.manifest, self.version_minor)

    @property
    def metadata(self) -> dict[str, str]:
        """The user's free metadata (1.1); the decoded model carries every entry."""
        return user_metadata(self.manifest, self.version_minor)

    @property
    def tied_tensors(self) -> dict[str, str]:
        """Alias → stored record, for parameters shared by two modules (1.1)."""
        return tied_tensors(self.manifest, self.version_minor)

    @property
    def task_metric(self) -> TaskMetric | None:
        """The task's own metric on the test data, as its producer measured it (1.1)."""
        return task_metric(self.manifest, self.version_minor)

    @property
    def architecture(self) -> str | None:
        return self.manifest.get("architecture")

    @property
    def dataset(self) -> str | None:
        return self.manifest.get("dataset")

    @property
    def classes(self) -> list[str] | None:
        """Class names in the order of the output's last axis, if the file names them."""
        return classes(self.manifest)

    @property
    def input_shape(self) -> tuple[int | None, ...] | None:
        """The declared input shape, batch entry first (None: any batch size)."""
        return input_shape(self.manifest)

    @property
    def test_error(self) -> float | None:
        """The test error its producer measured on the decoded model, if it says."""
        return reported_metrics(self.manifest).get("test_error")

    @property
    def num_parameters(self) -> int:
        """Elements of the coded tensors EPR trained: what bits per parameter divides by."""
        return sum(t.numel for t in self.tensors if t.decoder != "raw" and t.trained)

    @property
    def payload_bytes(self) -> int:
        """Coded latents, tables, decoder parameters and verbatim tensors: the paper's size."""
        return self.sizes.payload_bytes


def _tensor_info(record: TensorRecord, size: TensorSize, untrained: frozenset[str]) -> TensorInfo:
    if record.decoder is None:
        decoder = "raw"
    else:
        decoder = "scalar" if isinstance(record.decoder, ScalarDecoderParams) else "rdft"
    return TensorInfo(
        name=record.name,
        shape=tuple(record.shape),
        dtype=record.dtype,
        decoder=decoder,
        trained=record.name not in untrained,
        payload_bytes=size.payload_bytes,
    )


def _summary(path: PathLike, contents: EprContents, sizes: SizeBreakdown) -> EprInfo:
    by_name = {size.name: size for size in sizes.tensors}
    untrained = untrained_tensors(contents.manifest)
    tensors = tuple(_tensor_info(r, by_name[r.name], untrained) for r in contents.tensors)
    return EprInfo(str(path), contents.manifest, tensors, sizes, contents.minor)


def info(path: PathLike, *, limits: ReadLimits = DEFAULT_LIMITS) -> EprInfo:
    """Read an .epr file: its manifest, its tensor table and its byte breakdown.

    A damaged or foreign file raises `eprpipe.FormatError` naming the section and offset.

        >>> import eprpipe
        >>> summary = eprpipe.info("spec/vectors/valid/dense-masks.epr")
        >>> [(t.name, t.decoder, t.payload_bytes) for t in summary.tensors]
        [('fc.weight', 'scalar', 47), ('fc.bias', 'raw', 96)]
    """
    contents, sizes = read_epr(path, limits=limits)
    return _summary(path, contents, sizes)


def validate(path: PathLike, *, limits: ReadLimits = DEFAULT_LIMITS) -> Report:
    """Check a file against every rule of spec/FORMAT.md a reader can check; never raises on
    a bad file, but returns every violation (`report.valid`, `report.violations`).

    A path that cannot be opened, or is not a regular file, raises `eprpipe.EprError`.

        >>> import eprpipe
        >>> eprpipe.validate("spec/vectors/valid/conv-rdft.epr").valid
        True
        >>> report = eprpipe.validate("spec/vectors/invalid/bad-magic.epr")
        >>> [violation.code for violation in report.violations]
        ['bad-magic']
    """
    return validate_file(path, limits=limits)


def decode(path: PathLike, *, limits: ReadLimits = DEFAULT_LIMITS) -> onnx.ModelProto:
    """Decode an .epr file into a self-contained ONNX model (weights filled in, checked).

    The model takes what the manifest's `input` declares (for eprpipe's classifiers: float32
    pixels in [0, 1], NCHW, normalized inside the graph).

        >>> import eprpipe
        >>> model = eprpipe.decode("spec/vectors/valid/conv-rdft.epr")
        >>> [initializer.name for initializer in model.graph.initializer]
        ['conv.weight']
    """
    contents, _ = read_epr(path, limits=limits)
    return build_onnx(contents)


def write_onnx(path: PathLike, output: PathLike, *, limits: ReadLimits = DEFAULT_LIMITS) -> Path:
    """Decode an .epr file and write the ONNX model to `output`, atomically; returns `output`.

    `output` may not be the input file (under any name), a device or a FIFO.

        >>> import eprpipe
        >>> eprpipe.write_onnx("spec/vectors/valid/conv-rdft.epr", "conv.onnx").name
        'conv.onnx'
    """
    model = decode(path, limits=limits)
    write_atomically(output, model.SerializeToString(), inputs=(Path(path),))
    return Path(output)


def load_weights(path: PathLike, *, limits: ReadLimits = DEFAULT_LIMITS) -> dict[str, np.ndarray]:
    """The decoded tensors by state-dict name, as the ONNX model gets them (like
    `safetensors.numpy.load_file`): float32 for coded tensors, the stored dtype for raw ones.
    Aliases of tied tensors (1.1) come too, each the very array of the record it shares, so
    that a state_dict is restored whole.

        >>> import eprpipe
        >>> weights = eprpipe.load_weights("spec/vectors/valid/dense-masks.epr")
        >>> {name: (array.dtype.name, array.shape) for name, array in weights.items()}
        {'fc.weight': ('float32', (24, 24)), 'fc.bias': ('float32', (24,))}
    """
    contents, _ = read_epr(path, limits=limits)
    weights = {record.name: decode_weights(record) for record in contents.tensors}
    aliases = tied_tensors(contents.manifest, contents.minor)
    return weights | {alias: weights[target] for alias, target in aliases.items()}
