"""`eprpipe info`: raw tensors show the bytes they take, and long names keep the table aligned."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest

from eprpipe.cli import main
from eprpipe.format.container import read_epr
from eprpipe.report import info_report

VALID = Path(__file__).resolve().parents[2] / "spec" / "vectors" / "valid"
RAW_DTYPES = VALID / "raw-dtypes.epr"  # nine raw tensors, one of each dtype, and two coded ones


def _table(text: str) -> tuple[str, list[str]]:
    """The header of the per-tensor table and its rows (the lines between rule and legend)."""
    lines = text.splitlines()
    rule = next(i for i, line in enumerate(lines) if line and set(line) == {"-"})
    end = next(i for i, line in enumerate(lines) if line.startswith("ideal B:"))
    return lines[rule - 1], lines[rule + 1 : end]


def _column(header: str, row: str, title: str) -> str:
    """The right-aligned cell of `row` under `title`."""
    end = header.index(title) + len(title)
    return row[:end].split()[-1]


def test_raw_tensors_show_the_bytes_they_are_stored_in(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["info", str(RAW_DTYPES)]) == 0
    text = capsys.readouterr().out
    header, rows = _table(text)
    contents, _ = read_epr(RAW_DTYPES)
    raw = [record for record in contents.tensors if record.raw is not None]
    assert len(raw) == 9
    shown = {row.split()[0]: row for row in rows}
    for record in raw:
        row = shown[record.name]
        stored = math.prod(record.shape) * np.dtype(record.dtype).itemsize
        assert _column(header, row, "raw B") == f"{stored:,}", row
        assert _column(header, row, "bits/param") == f"{8 * np.dtype(record.dtype).itemsize:.4f}"
    total = sum(int(_column(header, row, "raw B").replace(",", "")) for row in rows)
    assert f"raw tensors        {total:>10,} B" in text  # the byte breakdown below the table

    assert main(["info", "--json", str(RAW_DTYPES)]) == 0
    tensors = {row["name"]: row for row in json.loads(capsys.readouterr().out)["tensors"]}
    for record in raw:
        itemsize = np.dtype(record.dtype).itemsize
        assert tensors[record.name]["raw_bytes"] == math.prod(record.shape) * itemsize
        assert tensors[record.name]["bits_per_param"] == 8 * itemsize
    assert tensors["scalar0d"]["raw_bytes"] == 0


def test_long_names_keep_the_columns_aligned() -> None:
    contents, sizes = read_epr(VALID / "dense-masks.epr")
    long_name = "features.denseblock4.denselayer16.conv2.weight"  # 46 characters
    renamed = {"fc.weight": long_name}
    contents.tensors = [
        dataclasses.replace(record, name=renamed.get(record.name, record.name))
        for record in contents.tensors
    ]
    sizes.tensors = [
        dataclasses.replace(size, name=renamed.get(size.name, size.name)) for size in sizes.tensors
    ]
    header, rows = _table(info_report(Path("m.epr"), contents, sizes))
    assert [row.split()[0] for row in rows] == [long_name, "fc.bias"]
    shape_at = header.index("shape")
    assert shape_at > len(long_name)
    for row, shape in zip(rows, ("24×24", "24"), strict=True):
        assert row[shape_at:].startswith(shape + " ") and row[shape_at - 1] == " ", row
        for title in ("symbols", "raw B", "bits/param"):
            end = header.index(title) + len(title)
            assert row[end] == " " and row[end - 1] != " ", (title, row)


def test_info_prints_what_a_1_1_file_declares(capsys: pytest.CaptureFixture[str]) -> None:
    path = VALID / "v11-normalized-classifier.epr"
    assert main(["info", str(path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1:5] == [
        "task   classification (3 classes)",
        "input  image: float32 [batch, 1, 4, 4] (normalized inside the graph along axis 1)",
        "output logits: float32 [batch, 3]",
        "metadata source",
    ]
    assert main(["info", "--json", str(path)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["format_version"] == "1.1" and report["manifest"]["metadata"] == {
        "source": "formula"
    }
    assert main(["info", "--json", str(RAW_DTYPES)]) == 0
    assert json.loads(capsys.readouterr().out)["format_version"] == "1.0"


def test_the_compress_report_says_why_the_rate_estimate_differs_from_the_coded_size():
    from eprpipe.report import rate_line

    line = rate_line(8 * 27_801, 8 * 22_255, 21_002)
    assert line.startswith("rate estimate        27,801 B under the training densities")
    assert "32% above the coded 21,002 B" in line and "(22,255 B of latents)" in line
    assert "8% below the coded 1,000 B" in rate_line(8 * 920, None, 1_000)
    assert rate_line(8 * 920, None, 0).endswith("under the training densities")
