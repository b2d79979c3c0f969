"""What a reader agrees to spend on one file: a file that needs more is rejected, not attempted.

The format lets a few bytes declare a lot of work (a CONSTANT group of any size costs two bytes,
a GEOMETRIC table of 2**20 symbols five), so the reader charges every such declaration to a
budget before it allocates anything (spec/FORMAT.md, section "Limits").
"""

from __future__ import annotations

from dataclasses import dataclass

from eprpipe.errors import FormatError


@dataclass(frozen=True)
class ReadLimits:
    """Resource limits of one read; the defaults accept every file eprpipe's writer makes."""

    max_file_bytes: int = 1 << 32
    max_manifest_bytes: int = 16 << 20
    max_graph_bytes: int = 64 << 20
    max_tensor_elements: int = 1 << 31
    max_total_elements: int = 1 << 31
    elements_per_byte: int = 512  # tensor elements a file may declare per byte it holds ...
    min_element_allowance: int = 1 << 20  # ... but never fewer than this
    max_table_symbols: int = 1 << 22  # alphabet entries of all tables in the file
    max_records: int = 1 << 16  # tensor records in TENS
    max_zstd_window: int = 1 << 27
    inflation_ratio: int = 32  # a zstd section may inflate to this many times its size ...
    min_inflation_allowance: int = 1 << 20  # ... or to this many bytes, whichever is more

    def inflation_allowance(self, frame_bytes: int, limit: int) -> int:
        """Bytes a zstd frame of `frame_bytes` may inflate to, under the section's `limit`."""
        return min(limit, max(self.min_inflation_allowance, self.inflation_ratio * frame_bytes))

    def element_allowance(self, file_bytes: int) -> int:
        """Tensor elements a file of `file_bytes` counted bytes (padding and skipped optional
        sections excluded) may declare in all."""
        scaled = max(self.min_element_allowance, self.elements_per_byte * file_bytes)
        return min(self.max_total_elements, scaled)


DEFAULT_LIMITS = ReadLimits()


class ReadBudget:
    """The elements and table symbols a file has left to declare, charged as they are parsed."""

    def __init__(self, limits: ReadLimits, file_bytes: int) -> None:
        self.limits = limits
        self.elements = limits.element_allowance(file_bytes)
        self.table_symbols = limits.max_table_symbols

    def charge_elements(self, count: int, what: str, section: str | None, offset: int) -> None:
        if count > self.elements:
            limits = self.limits
            raise FormatError(
                f"{what}: {count} elements, more than the {self.elements} left of this file's "
                f"allowance (ReadLimits: {limits.elements_per_byte} per file byte, at least "
                f"{limits.min_element_allowance}, at most {limits.max_total_elements})",
                section=section,
                offset=offset,
                code="limit-exceeded",
            )
        self.elements -= count

    def charge_table(self, symbols: int, section: str | None, offset: int) -> None:
        if symbols > self.table_symbols:
            raise FormatError(
                f"tables declare more than {self.limits.max_table_symbols} symbols in all",
                section=section,
                offset=offset,
                code="limit-exceeded",
            )
        self.table_symbols -= symbols
