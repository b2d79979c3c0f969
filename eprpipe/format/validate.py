"""`eprpipe validate`: check a file against every consumer-checkable MUST of spec/FORMAT.md.

Beyond what decoding needs, validation also checks the producer's obligations a consumer can
see (the manifest's canonical form), decodes every tensor, fills the graph and runs the ONNX
checker on it. Torch-free, like the rest of the deploy path.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field

from eprpipe.errors import FormatError
from eprpipe.format.container import (
    EprContents,
    PartialRead,
    decode_weights,
    find_source_violations,
)
from eprpipe.format.graph import build_onnx, parse_graph
from eprpipe.format.limits import DEFAULT_LIMITS, ReadLimits
from eprpipe.format.sources import ByteSource, MemorySource, open_regular


@dataclass(frozen=True)
class Violation:
    code: str  # the rule broken, from the spec's table of error codes
    message: str
    section: str | None  # section tag, None for the header and file-level rules
    offset: int | None  # byte offset in the file, where the spec fixes one

    @classmethod
    def of(cls, error: FormatError) -> Violation:
        return cls(error.code, error.message, error.section, error.offset)

    def describe(self) -> str:
        where = [f"section {self.section}"] if self.section else []
        where += [f"offset {self.offset}"] if self.offset is not None else []
        return f"{', '.join(where) or 'file'}: [{self.code}] {self.message}"


@dataclass
class Report:
    source: str
    file_bytes: int
    violations: list[Violation] = field(default_factory=list)
    tensors: int = 0  # records decoded

    @property
    def valid(self) -> bool:
        return not self.violations

    def as_json(self) -> dict:
        return {
            "file": self.source,
            "valid": self.valid,
            "file_bytes": self.file_bytes,
            "tensors": self.tensors,
            "violations": [asdict(v) for v in self.violations],
        }


def validate_bytes(
    data: bytes, *, source: str = "<bytes>", limits: ReadLimits = DEFAULT_LIMITS
) -> Report:
    """All violations found in `data`; a report without violations is a valid file."""
    return _validate(MemorySource(bytes(data)), source, limits)


def _validate(data: ByteSource, source: str, limits: ReadLimits) -> Report:
    partial = find_source_violations(data, limits=limits)
    report = Report(source, data.size, [Violation.of(err) for err in partial.violations])
    if partial.manifest_is_canonical is False:
        report.violations.append(
            Violation("non-canonical-manifest", "manifest is not in canonical form", "META", None)
        )
    _check_graph(partial, report)
    return report


def _check_graph(partial: PartialRead, report: Report) -> None:
    """Graph profile on its own; then, with the tensors, decode, fill and check the model."""
    if partial.graph is None:
        return
    try:
        parse_graph(partial.graph)
        if partial.tensors is None:
            return
        for record in partial.tensors:
            decode_weights(record)
        report.tensors = len(partial.tensors)
        if partial.manifest is None:
            return
        build_onnx(
            EprContents(partial.manifest, partial.graph, partial.tensors, partial.version_minor)
        )
    except FormatError as err:
        report.violations.append(Violation.of(err))


def validate_file(path: str | os.PathLike, *, limits: ReadLimits = DEFAULT_LIMITS) -> Report:
    """Validate one regular file, read only as far as its header calls for; a path that cannot
    be opened or is not a regular file is an EprError, not a report."""
    with open_regular(path) as source:
        return _validate(source, str(path), limits)
