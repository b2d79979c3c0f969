"""Human- and machine-readable reports of what a file costs, byte by byte."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from eprpipe.format.container import EprContents, RdftDecoder, ScalarDecoder, SizeBreakdown
from eprpipe.format.manifest import reported_metrics, untrained_tensors


def _decoder_name(decoder: object) -> str:
    if isinstance(decoder, RdftDecoder):
        return "rdft"
    if isinstance(decoder, ScalarDecoder):
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
        f"rate estimate        {result.rate_estimate_bits / 8:,.0f} B under the training "
        f"densities; coded latents + tables: {coded:,} B",
        *buffer_lines(result.buffers),
        f"wall time            {result.wall_seconds:.1f} s",
    ]
    return "\n".join(lines)


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
                "raw_bytes": numel * np.dtype(record.dtype).itemsize
                if record.latents is None
                else 0,
                "bits_per_param": 8 * coded / numel if numel else 0.0,
                "ideal_bits": size.ideal_bits,
                "empirical_bits": size.empirical_bits,
                "trained": record.name not in untrained,
                "payload_bytes": coded + size.raw_bytes,
            }
        )
    return rows


def info_json(contents: EprContents, sizes: SizeBreakdown) -> dict:
    return {
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


def info_report(path: Path, contents: EprContents, sizes: SizeBreakdown) -> str:
    """What `eprpipe info` prints: the manifest's essentials and a per-tensor table."""
    manifest = contents.manifest
    rows = _tensor_rows(contents, sizes)
    trained = [r for r in rows if r["decoder"] != "raw" and r["trained"]]
    num_parameters = sum(math.prod(r["shape"]) for r in trained)
    header = (
        f"{'tensor':<24} {'shape':<16} {'decoder':<7} {'symbols':>9} {'nonzero':>8} "
        f"{'latent B':>9} {'ideal B':>9} {'table B':>8} {'dec B':>6} {'bits/param':>10}  tables"
    )
    architecture, dataset, producer = (
        _printable(manifest.get(key, "?")) for key in ("architecture", "dataset", "producer")
    )
    lines = [
        f"{path}: {architecture} trained on {dataset} by {producer}",
        *_metrics_lines(manifest),
        header,
        "-" * len(header),
    ]
    for r in rows:
        shape = "×".join(str(d) for d in r["shape"]) or "scalar"
        name = _printable(r["name"])
        lines.append(
            f"{name:<24} {shape:<16} {r['decoder']:<7} {r['symbols']:>9,} {r['nonzero']:>8,} "
            f"{r['latent_bytes']:>9,} {r['ideal_bits'] / 8:>9,.1f} {r['table_bytes']:>8,} "
            f"{r['decoder_bytes']:>6,} {r['bits_per_param']:>10.4f}  {r['tables']}"
        )
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
