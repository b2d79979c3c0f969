"""`eprpipe validate`: every violation with its section and offset; exit 0 only when all pass."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from eprpipe.cli import main
from eprpipe.format.bitio import uvarint
from eprpipe.format.testing.records import constant_record
from eprpipe.format.testing.sections import Container, replace_section, zstd
from eprpipe.format.testing.vectors import base_file
from eprpipe.format.validate import validate_bytes, validate_file

VECTORS = Path(__file__).resolve().parents[2] / "spec" / "vectors"


def run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(args)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_valid_files_pass(capsys: pytest.CaptureFixture[str]) -> None:
    files = sorted(str(p) for p in (VECTORS / "valid").glob("*.epr"))
    code, out, _ = run(["validate", *files], capsys)
    assert code == 0
    assert out.count(": valid (") == len(files) >= 4


def test_one_invalid_file_fails_the_run(capsys: pytest.CaptureFixture[str]) -> None:
    good = str(VECTORS / "valid" / "conv-rdft.epr")
    bad = str(VECTORS / "invalid" / "layout-bit-3.epr")
    code, out, _ = run(["validate", good, bad], capsys)
    assert code == 1
    assert f"{good}: valid" in out
    assert f"{bad}: section TENS, offset " in out and "[bad-layout]" in out


def test_defects_in_several_sections_are_all_reported(tmp_path: Path) -> None:
    data = replace_section(base_file(), b"META", zstd(b'{"a":1,"a":2}'))
    data = replace_section(data, b"TENS", uvarint(1) + uvarint(0))
    path = tmp_path / "two.epr"
    path.write_bytes(data)
    report = validate_file(path)
    assert [(v.code, v.section) for v in report.violations] == [
        ("bad-manifest", "META"),
        ("bad-name", "TENS"),
    ]
    assert all(v.offset is not None for v in report.violations)


def test_json_output(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = VECTORS / "invalid" / "zstd-bomb.epr"
    missing = tmp_path / "missing.epr"
    code, out, _ = run(["validate", "--json", str(bad), str(missing)], capsys)
    assert code == 1
    reports = json.loads(out)
    assert [r["valid"] for r in reports] == [False, False]
    assert reports[0]["violations"] == [
        {
            "code": "limit-exceeded",
            "message": reports[0]["violations"][0]["message"],
            "section": "META",
            "offset": 68,
        }
    ]
    assert reports[1]["violations"][0]["code"] == "unreadable"
    assert "missing.epr" in reports[1]["violations"][0]["message"]


def test_validate_checks_the_canonical_manifest_that_decoding_skips() -> None:
    data = (VECTORS / "invalid" / "meta-not-canonical.epr").read_bytes()
    assert [v.code for v in validate_bytes(data).violations] == ["non-canonical-manifest"]


def test_non_epr_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("hello")
    code, out, _ = run(["validate", str(path)], capsys)
    assert code == 1
    assert "[bad-magic]" in out and "offset 0" in out


def test_read_limits_can_be_raised_from_the_command_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A third-party file declaring 2^21 elements in a few hundred bytes: over the default."""
    base = base_file()
    tens = Container.of(base).body(b"TENS")
    extra = constant_record(b"extra", (1 << 11, 1 << 10), 0)
    path = tmp_path / "dense.epr"
    path.write_bytes(replace_section(base, b"TENS", uvarint(tens[0] + 1) + tens[1:] + extra))
    code, out, _ = run(["validate", str(path)], capsys)
    assert code == 1 and "[limit-exceeded]" in out
    code, out, _ = run(["validate", "--elements-per-byte", "8192", str(path)], capsys)
    assert code == 0, out
    assert main(["info", "--elements-per-byte", "8192", str(path)]) == 0
    assert main(["decode", "--elements-per-byte", "0", str(path), "-o", str(tmp_path / "m")]) == 1
    assert "--elements-per-byte must be at least 1" in capsys.readouterr().err
