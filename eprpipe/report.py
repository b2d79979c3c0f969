"""Human- and machine-readable reports of what a file costs, byte by byte."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np

from eprpipe.format.container import (
    EprContents,
    RdftDecoderParams,
    ScalarDecoderParams,
    SizeBreakdown,
)
from eprpipe.format.manifest import (
    TensorSpec,
    inputs,
    outputs,
    reported_metrics,
    task,
    task_metric,
    untrained_tensors,
    user_metadata,
)


def _decoder_name(decoder: object) -> str:
    if isinstance(decoder, RdftDecoderParams):
        return "rdft"
    if isinstance(decoder, ScalarDecoderParams):
        return "scalar"
    return "raw"


def _printable(text: str) -> str:
    """Text from a file, shown on one line: control characters (a terminal's escape sequences,
    newlines) are escaped rather than sent to the terminal."""
    if text.isprintable():
        return text
    return "".join(char if char.isprintable() else ascii(char)[1:-1] for char in text)


def _payload_ratios(payload: int, num_parameters: int) -> str:
    """Bits per parameter and the ratio to float32; a file may have no parameters or no bytes."""
    if not num_parameters:
        return "no trained parameters"
    float32 = 4 * num_parameters
    bits = f"{8 * payload / num_parameters:.4f} bits/param, "
    if not payload:
        return f"{bits}float32 would take {float32:,} B"
    return f"{bits}{float32 / payload:,.1f}× smaller than float32 ({float32:,} B)"


def size_lines(sizes: SizeBreakdown, num_parameters: int) -> list[str]:
    """The byte breakdown of a file, with the parameter payload and its ratio to float32."""
    payload = sizes.payload_bytes
    return [
        f"file                 {sizes.file_bytes:>10,} B",
        f"  coded latents      {sizes.latent_bytes:>10,} B",
        f"  probability tables {sizes.table_bytes:>10,} B",
        f"  decoder parameters {sizes.decoder_bytes:>10,} B",
        f"  raw tensors        {sizes.raw_bytes:>10,} B",
        f"  record framing     {sizes.framing_bytes:>10,} B   (names, shapes, counts)",
        f"  ONNX graph         {sizes.graph_bytes:>10,} B   (zstd, weightless)",
        f"  manifest           {sizes.manifest_bytes:>10,} B   (zstd JSON)",
        f"  header             {sizes.header_bytes:>10,} B   (magic, sections, checksums)",
        f"parameter payload    {payload:>10,} B = latents + tables + decoders + raw; "
        + _payload_ratios(payload, num_parameters),
    ]


def compress_report(result, architecture: str, dataset: str, config) -> str:
    """What `eprpipe compress` prints."""
    evaluation = result.evaluation
    baseline = (
        f"{100 * result.baseline_error:.2f} %" if result.baseline_error is not None else "not run"
    )
    coded = result.sizes.latent_bytes + result.sizes.table_bytes
    lines = [
        f"wrote {result.path}: {architecture} on {dataset}, λ={config.lam:g}, "
        f"{config.epochs} epochs, {result.num_parameters:,} parameters",
        *size_lines(result.sizes, result.num_parameters),
        f"test error           {100 * evaluation.error:.2f} % of {evaluation.total:,} {dataset} "
        f"test images (decoded ONNX model, onnxruntime); uncompressed model: {baseline}",
        rate_line(result.rate_estimate_bits, result.histogram_bits, coded),
        *buffer_lines(result.buffers),
        f"wall time            {result.wall_seconds:.1f} s",
    ]
    return "\n".join(lines)


def rate_line(estimate_bits: float, histogram_bits: float | None, coded: int) -> str:
    """The training estimate beside the coded size, and in the same line why they differ: the
    densities learned in training are smooth fits, while the coder fits a table to each
    group's own histogram and skips dead rows and columns."""
    estimate = estimate_bits / 8
    line = f"rate estimate        {estimate:,.0f} B under the training densities"
    if not coded:
        return line
    gap = estimate / coded - 1
    line += f", {abs(gap):.0%} {'above' if gap >= 0 else 'below'} the coded {coded:,} B"
    if histogram_bits is None:
        return line
    return (
        line + f" (latents + tables): the coder fits each group's own histogram "
        f"({histogram_bits / 8:,.0f} B of latents) and skips dead rows and columns"
    )


def buffer_lines(choice) -> list[str]:
    """How the float tensors EPR does not train (BatchNorm statistics) were stored."""
    if choice is None or not choice.raw_bytes:
        return []
    how = (
        f"{choice.bits}-bit grid, {choice.raw_bytes:,} → {choice.coded_bytes:,} B"
        if choice.bits is not None
        else f"verbatim float32, {choice.raw_bytes:,} B (no coarser grid kept the predictions)"
    )
    return [
        f"untrained floats     {how}; {choice.changed} of {choice.examples:,} held-out "
        "predictions differ from those with exact values"
    ]


def _tensor_rows(contents: EprContents, sizes: SizeBreakdown) -> list[dict]:
    by_name = {tensor.name: tensor for tensor in sizes.tensors}
    untrained = untrained_tensors(contents.manifest)
    rows = []
    for record in contents.tensors:
        size = by_name[record.name]
        numel = math.prod(record.shape)
        coded = size.latent_bytes + size.table_bytes + size.decoder_bytes
        symbols = 0 if record.latents is None else numel
        nonzero = 0 if record.latents is None else int(np.count_nonzero(record.latents))
        rows.append(
            {
                "name": record.name,
                "shape": list(record.shape),
                "decoder": _decoder_name(record.decoder),
                "symbols": symbols,
                "nonzero": nonzero,
                "groups": size.groups,
                "tables": size.table_kinds,
                "latent_bytes": size.latent_bytes,
                "table_bytes": size.table_bytes,
                "decoder_bytes": size.decoder_bytes,
                "raw_bytes": size.raw_bytes,
                "bits_per_param": 8 * (coded + size.raw_bytes) / numel if numel else 0.0,
                "ideal_bits": size.ideal_bits,
                "empirical_bits": size.empirical_bits,
                "trained": record.name not in untrained,
                "payload_bytes": coded + size.raw_bytes,
            }
        )
    return rows


# The per-tensor table of `eprpipe info`: header, narrowest width, alignment, cell of a row.
# Each column widens to its widest cell, so long names and shapes keep the columns aligned.
_COLUMNS: tuple[tuple[str, int, str, Callable[[dict], str]], ...] = (
    ("tensor", 24, "<", lambda r: _printable(r["name"])),
    ("shape", 16, "<", lambda r: "×".join(str(d) for d in r["shape"]) or "scalar"),
    ("decoder", 7, "<", lambda r: r["decoder"]),
    ("symbols", 9, ">", lambda r: f"{r['symbols']:,}"),
    ("nonzero", 8, ">", lambda r: f"{r['nonzero']:,}"),
    ("latent B", 9, ">", lambda r: f"{r['latent_bytes']:,}"),
    ("ideal B", 9, ">", lambda r: f"{r['ideal_bits'] / 8:,.1f}"),
    ("table B", 8, ">", lambda r: f"{r['table_bytes']:,}"),
    ("dec B", 6, ">", lambda r: f"{r['decoder_bytes']:,}"),
    ("raw B", 7, ">", lambda r: f"{r['raw_bytes']:,}"),
    ("bits/param", 10, ">", lambda r: f"{r['bits_per_param']:.4f}"),
)


def _tensor_table(rows: list[dict]) -> list[str]:
    """The header, a rule and one line per tensor, the kinds of its tables last."""
    cells = [[header for header, *_ in _COLUMNS]]
    cells += [[cell(row) for *_, cell in _COLUMNS] for row in rows]
    widths = [
        max(narrowest, *(len(line[i]) for line in cells))
        for i, (_, narrowest, *_) in enumerate(_COLUMNS)
    ]
    tables = ["tables", *(row["tables"] for row in rows)]
    lines = [
        " ".join(
            f"{cell:{align}{width}}"
            for cell, width, (_, _, align, _) in zip(line, widths, _COLUMNS, strict=True)
        )
        + f"  {kinds}"
        for line, kinds in zip(cells, tables, strict=True)
    ]
    return [lines[0], "-" * len(lines[0]), *lines[1:]]


def info_json(contents: EprContents, sizes: SizeBreakdown) -> dict:
    return {
        "format_version": f"1.{contents.minor}",
        "manifest": contents.manifest,
        "sizes": {
            "file": sizes.file_bytes,
            "payload": sizes.payload_bytes,
            "latents": sizes.latent_bytes,
            "tables": sizes.table_bytes,
            "decoders": sizes.decoder_bytes,
            "raw": sizes.raw_bytes,
            "framing": sizes.framing_bytes,
            "graph": sizes.graph_bytes,
            "manifest": sizes.manifest_bytes,
            "header": sizes.header_bytes,
        },
        "tensors": _tensor_rows(contents, sizes),
    }


def _metrics_lines(manifest: dict) -> list[str]:
    """The test error the producer reported, with what it says of the test set, if it says."""
    metrics = reported_metrics(manifest)
    if "test_error" not in metrics:
        return []
    examples = f"{metrics['test_examples']:,} " if "test_examples" in metrics else ""
    dataset = f"{_printable(metrics['dataset'])} " if "dataset" in metrics else ""
    return [
        f"reported test error {100 * metrics['test_error']:.2f} % on {examples}{dataset}"
        "test images (decoded ONNX)"
    ]


def _spec_line(kind: str, spec: TensorSpec) -> str:
    """One declared input or output: name, dtype and shape, symbolic dims by their names."""
    dims = ", ".join(_printable(d) if isinstance(d, str) else str(d) for d in spec.shape)
    line = f"{kind:<7}{_printable(spec.name)}: {spec.dtype} [{dims}]"
    if spec.normalization is not None:
        line += f" (normalized inside the graph along axis {spec.normalization.axis})"
    return line


def _task_lines(contents: EprContents) -> list[str]:
    """What a 1.1 file declares: its task, inputs and outputs, its metric, its metadata keys."""
    manifest, minor = contents.manifest, contents.minor
    lines = []
    declared = task(manifest, minor)
    if declared is not None:
        names = f" ({len(declared.classes):,} classes)" if declared.classes else ""
        lines.append(f"task   {declared.kind}{names}")
    lines += [_spec_line("input", spec) for spec in inputs(manifest, minor) or ()]
    lines += [_spec_line("output", spec) for spec in outputs(manifest, minor) or ()]
    metric = task_metric(manifest, minor)
    if metric is not None:
        details = [f"{metric.examples:,} test examples"] if metric.examples is not None else []
        if metric.baseline is not None:
            details.append(f"uncompressed {metric.baseline:.6g}")
        if metric.higher_is_better is not None:
            details.append("higher is better" if metric.higher_is_better else "lower is better")
        shown = f" ({', '.join(details)})" if details else ""
        lines.append(f"reported {_printable(metric.name)} {metric.value:.6g}{shown}")
    keys = user_metadata(manifest, minor)
    if keys:
        lines.append("metadata " + ", ".join(_printable(key) for key in keys))
    return lines


def _headline(path: Path, manifest: dict, minor: int) -> str:
    """What the file is, in the words its manifest has: architecture and dataset where the
    built-in loop wrote them, else only the producer (a model saved from the user's loop)."""
    producer = _printable(manifest.get("producer", "?"))
    if "architecture" in manifest or "dataset" in manifest:
        architecture, dataset = (
            _printable(manifest.get(key, "?")) for key in ("architecture", "dataset")
        )
        return f"{path}: {architecture} trained on {dataset} by {producer}"
    return f"{path}: written by {producer} (format 1.{minor})"


def info_report(path: Path, contents: EprContents, sizes: SizeBreakdown) -> str:
    """What `eprpipe info` prints: the manifest's essentials and a per-tensor table."""
    manifest = contents.manifest
    rows = _tensor_rows(contents, sizes)
    trained = [r for r in rows if r["decoder"] != "raw" and r["trained"]]
    num_parameters = sum(math.prod(r["shape"]) for r in trained)
    lines = [
        _headline(path, manifest, contents.minor),
        *_metrics_lines(manifest),
        *_task_lines(contents),
        *_tensor_table(rows),
    ]
    lines.append(
        "ideal B: information content of the latents under the stored tables, which the range "
        "coder approaches"
    )
    lines.append("")
    lines += size_lines(sizes, num_parameters)
    untrained = [r for r in rows if not r["trained"]]
    if untrained:
        lines.append(
            f"  of which untrained {sum(r['payload_bytes'] for r in untrained):>6,} B   "
            f"({len(untrained)} tensors EPR does not train: BatchNorm statistics, counters)"
        )
    return "\n".join(lines)
