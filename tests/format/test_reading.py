"""The reader reads the header first and only what it declares, from regular files only.

Each test is one of the attacks of "Hostile files, round two" (issue 11): inputs that are not
files, bytes that must not buy allowance, and sizes a few bytes may declare.
"""

from __future__ import annotations

import os
import signal
import stat
import time
import tracemalloc
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from eprpipe.cli import main
from eprpipe.errors import EprError, FormatError
from eprpipe.format.bitio import uvarint
from eprpipe.format.container import decode_container, read_epr
from eprpipe.format.limits import ReadLimits
from eprpipe.format.sources import open_regular
from eprpipe.format.testing.records import constant_record, raw_record
from eprpipe.format.testing.sections import assemble, split
from eprpipe.format.testing.vectors import base_file, with_records
from eprpipe.format.validate import validate_bytes, validate_file

ROOT = Path(__file__).resolve().parents[2]
VALID = ROOT / "spec" / "vectors" / "valid" / "conv-rdft.epr"

COMMANDS = (
    ["validate"],
    ["info"],
    ["info", "--json"],
    ["decode", "-o", "out.onnx"],
    ["eval", "--dataset", "digits"],
)


@pytest.fixture
def alarm() -> Iterator[None]:
    """Fail instead of hanging forever when something blocks."""

    def fire(signum: int, frame: object) -> None:
        raise TimeoutError("blocked")

    previous = signal.signal(signal.SIGALRM, fire)
    signal.alarm(20)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


def run_all(path: Path, capsys: pytest.CaptureFixture[str], cwd: Path) -> list[str]:
    """Every reading command on `path`: each fails with one line (validate reports the file as
    unreadable on stdout, the others print an error on stderr)."""
    lines = []
    for command in COMMANDS:
        args = [command[0], str(path), *command[1:]]
        if command[0] == "decode":
            args = ["decode", str(path), "-o", str(cwd / "out.onnx")]
        code = main(args)
        out, err = capsys.readouterr()
        assert code == 1, (args, err)
        if command[0] == "validate":
            assert err == "" and out.count("\n") == 1 and "[unreadable] cannot read" in out, out
            lines.append(out)
            continue
        assert err.count("\n") == 1 and err.startswith(f"eprpipe {command[0]}: error:"), err
        lines.append(err)
    assert not (cwd / "out.onnx").exists()
    return lines


def make_node(path: Path, kind: int, device: tuple[int, int] = (0, 0)) -> None:
    try:
        os.mknod(path, 0o666 | kind, os.makedev(*device))
    except PermissionError:
        pytest.skip("creating device nodes needs root")


def test_a_fifo_is_refused_without_blocking(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], alarm: None
) -> None:
    fifo = tmp_path / "model.epr"
    os.mkfifo(fifo)
    for line in run_all(fifo, capsys, tmp_path):
        assert "it is a FIFO, not a regular file" in line


@pytest.mark.parametrize("device", [(1, 5), (1, 3)], ids=["dev-zero", "dev-null"])
def test_a_device_is_refused_before_any_read(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], alarm: None, device: tuple[int, int]
) -> None:
    node = tmp_path / "model.epr"

    make_node(node, stat.S_IFCHR, device)
    for line in run_all(node, capsys, tmp_path):
        assert "it is a character device" in line


def test_a_directory_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "model.epr"
    folder.mkdir()
    for line in run_all(folder, capsys, tmp_path):
        assert "it is a directory" in line


def test_a_huge_file_of_zeros_is_bad_magic_after_eight_bytes(tmp_path: Path) -> None:
    sparse = tmp_path / "zeros.epr"
    with open(sparse, "wb") as handle:
        handle.truncate(1 << 30)
    tracemalloc.start()
    began = time.perf_counter()
    report = validate_file(sparse)
    elapsed = time.perf_counter() - began
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert [(v.code, v.offset) for v in report.violations] == [("bad-magic", 0)]
    assert report.file_bytes == 1 << 30
    assert elapsed < 0.5 and peak < 1 << 20  # read whole, it took seconds and 1 GiB


def _with_optional(data: bytes, body_length: int, *, alignment: int = 0) -> bytes:
    """`data` with an optional section "PADS" of zeros appended to its sections."""
    return assemble([*split(data), (b"PADS", 0, bytes(body_length))], alignment=alignment)


def test_an_optional_section_is_checksummed_in_chunks_never_loaded(tmp_path: Path) -> None:
    big = 64 << 20
    path = tmp_path / "padded.epr"
    path.write_bytes(_with_optional(VALID.read_bytes(), big))
    validate_file(VALID)  # warm up: lazy imports and caches are not the file's cost
    tracemalloc.start()
    report = validate_file(path)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert report.valid, report.violations
    assert peak < 4 << 20  # the section alone is 64 MiB
    sizes = read_epr(path)[1]
    assert sizes.file_bytes == path.stat().st_size and sizes.framing_bytes > big
    corrupt = bytearray(path.read_bytes())
    corrupt[-1] = 1
    path.write_bytes(bytes(corrupt))
    assert [v.code for v in validate_file(path).violations] == ["bad-checksum"]


def test_padding_and_optional_sections_buy_no_element_allowance() -> None:
    """2**21 elements need 4 KiB of counted bytes; 256 KiB of padding or skipped section bytes
    do not count, the same 4 KiB as a raw tensor in TENS do."""
    record = constant_record(b"w", (1 << 11, 1 << 10))
    data, _ = with_records(record)
    for padded in (
        _with_optional(data, 256 << 10),
        assemble([*split(data), *((b"PD%02d" % i, 0, b"x") for i in range(60))], alignment=12),
    ):
        assert len(padded) > 4 * ReadLimits().min_element_allowance // 512
        with pytest.raises(FormatError, match="more than the 1048576 left") as info:
            decode_container(padded)
        assert info.value.code == "limit-exceeded"
    raw = raw_record(b"r", np.zeros(4096, np.uint8))  # counted: in TENS
    paid, _ = with_records(record + raw, count=2)
    assert decode_container(paid)[0].tensors[0].latents.shape == (1 << 11, 1 << 10)


def test_large_rdft_kernels_cost_their_decoding_passes() -> None:
    """2**20 elements are free to any file as scalars; as 64x64 kernels they cost 16 each."""
    scalar, _ = with_records(constant_record(b"w", (256, 4096)))
    assert decode_container(scalar)[0].tensors[0].latents.size == 1 << 20
    kernels, start = with_records(constant_record(b"k", (16, 16, 64, 64), rdft=True))
    with pytest.raises(FormatError, match="16777216 elements, more than") as info:
        decode_container(kernels)
    assert (info.value.code, info.value.offset) == ("limit-exceeded", start)
    small, _ = with_records(
        constant_record(b"k", (16, 16, 8, 8), rdft=True)
    )  # ceil(16 / 8) = 2 per element
    assert decode_container(small)[0].tensors[0].latents.shape == (16, 16, 8, 8)


def test_the_record_count_is_bounded_before_any_record_is_read() -> None:
    records = b"".join(raw_record(b"r%d" % i, np.ones(1, np.uint8)) for i in range(3))
    data, start = with_records(records, count=(1 << 16) + 1)
    count_at = start - len(uvarint((1 << 16) + 1))
    began = time.perf_counter()
    with pytest.raises(FormatError, match="65537 records, more than the limit 65536") as info:
        decode_container(data)
    assert time.perf_counter() - began < 0.5
    assert (info.value.code, info.value.offset) == ("limit-exceeded", count_at)
    roomy = ReadLimits(max_records=1 << 17)
    with pytest.raises(FormatError) as truncated:
        decode_container(data, limits=roomy)
    assert truncated.value.code == "truncated"


def test_a_file_that_shrinks_while_read_is_truncated_not_short(tmp_path: Path) -> None:
    path = tmp_path / "model.epr"
    path.write_bytes(VALID.read_bytes())
    with open_regular(path) as source:
        os.truncate(path, 100)
        with pytest.raises(FormatError, match="file ended at 100 bytes") as info:
            source.read(0, source.size)
    assert info.value.code == "truncated"


def test_a_missing_file_is_an_error_naming_it(tmp_path: Path) -> None:
    with pytest.raises(EprError, match=r"missing\.epr: No such file"):
        read_epr(tmp_path / "missing.epr")


def test_in_memory_and_file_reads_agree(tmp_path: Path) -> None:
    data = _with_optional(base_file(), 1000, alignment=6)
    path = tmp_path / "aligned.epr"
    path.write_bytes(data)
    from_file, file_sizes = read_epr(path)
    from_memory, memory_sizes = decode_container(data)
    assert file_sizes == memory_sizes
    assert [t.name for t in from_file.tensors] == [t.name for t in from_memory.tensors]
    assert validate_file(path).as_json()["valid"] == validate_bytes(data).valid is True
    assert zlib.crc32(path.read_bytes()) == zlib.crc32(data)
