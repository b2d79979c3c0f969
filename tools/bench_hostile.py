"""What hostile files cost each command: peak memory and time, per file byte (issue 11).

Builds the attacker's resource cases of issue 11 as files in a temporary directory (valid files
whose allowance was bought with padding, a rdft tensor behind one CONSTANT group, 600,000 tiny
records, a graph frame that inflates to a 200 MB Constant, evaluation shapes of 10^10
elements, a 1 GiB optional section, a 1 GiB file of zeros, a FIFO and a copy of /dev/zero),
adds a sample of the fuzz tool's corpus, and runs `validate`, `info`, `decode` and `eval` on
each in a fresh process. Each run is timed, reports its peak RSS (VmHWM) as it exits, and is
killed when it passes --timeout ("hung") or when its RSS, polled every 50 ms, passes --cap
("over cap"). Each command also runs on a tiny valid file it handles to the end (the
baseline: what imports, onnxruntime and the dataset cost; conv-rdft.epr, and for `eval` a
digits classifier), and the table shows RSS over that baseline.

The targets read: RSS over baseline <= 64 MiB + C x file bytes (eval also gets spec 9's
runtime arena and input batch, 1088 MiB), and time over baseline <= --time-grace + T x file MiB
(eval's time is not bounded per byte: spec 9 leaves it to --time-limit). The tool prints the
worst case of each (the C and T that every run needs, and CPU time beside wall time, which
load from other processes moves) and fails when --memory-factor C or --seconds-per-mib T
(CPU) are given and exceeded, or when a run hangs, passes the cap, crashes or prints a
traceback. Writes the table as JSON and markdown, and a plot of RSS over baseline against
file size, under --results.

    python tools/bench_hostile.py --quick                  # no 1 GiB files
    python tools/bench_hostile.py --cases a-const-pad,i-fifo --fuzz-cases 0
"""

from __future__ import annotations

import argparse
import json
import math
import os
import select
import stat
import subprocess
import sys
import tempfile
import time
import zlib
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
import onnx
from onnx import TensorProto, helper
from tqdm import tqdm

from eprpipe.format.bitio import uvarint
from eprpipe.format.container import section_table
from eprpipe.format.structures import FLAG_REQUIRED
from eprpipe.format.testing.fuzz_cases import make_case
from eprpipe.format.testing.fuzz_seeds import FRAME_LEVEL, Seed, load_seeds
from eprpipe.format.testing.graphs import model_bytes, value_info, weightless
from eprpipe.format.testing.records import constant_record, raw_record
from eprpipe.format.testing.sections import canonical_json, zstd
from eprpipe.format.validate import validate_bytes

ROOT = Path(__file__).resolve().parents[1]
BASELINE_FILE = ROOT / "spec" / "vectors" / "valid" / "conv-rdft.epr"
RESULTS = ROOT / "tools" / "results" / "hostile"
COMMANDS = ("validate", "info", "decode", "eval")
MIB = 1 << 20
GIB = 1 << 30
POLL_S = 0.05
MEMORY_GRACE = 64 * MIB
NON_REGULAR_TIMEOUT_S = 20.0  # a command on a FIFO or device either refuses at once or hangs
FUZZ_RUN_SEED = 0
# Spec 9, "Running the model": eval may also spend onnxruntime's arena (--max-runtime-memory,
# 1024 MiB) and one input batch (64 MiB), whatever the file's size; its time is not bounded
# per file byte at all (a 2 KB graph may compute for ever), so T leaves eval out.
EVAL_ALLOWANCE = (1024 + 64) * MIB


# --- writing containers (spec/FORMAT.md, section 3) -----------------------------------------


@dataclass(frozen=True)
class Part:
    """One section: its body, or (an int) that many zero bytes, written as a hole."""

    tag: bytes
    flags: int
    body: bytes | int

    @property
    def length(self) -> int:
        return self.body if isinstance(self.body, int) else len(self.body)

    def crc(self) -> int:
        return zeros_crc(self.body) if isinstance(self.body, int) else zlib.crc32(self.body)


def zeros_crc(length: int, chunk: int = 16 * MIB) -> int:
    """CRC-32 of `length` zero bytes, never holding more than `chunk` of them."""
    zeros, crc = bytes(chunk), 0
    for start in range(0, length, chunk):
        crc = zlib.crc32(zeros[: min(chunk, length - start)], crc)
    return crc


def write_container(path: Path, parts: Sequence[Part], alignment: int = 0) -> Path:
    """The file, with zero padding to `alignment`; zero bodies become holes (sparse files)."""
    step = 1 << alignment
    with open(path, "wb") as handle:
        entries = [(part.tag, part.flags, part.length, part.crc()) for part in parts]
        handle.write(section_table(entries, alignment=alignment))
        end = handle.tell()
        for part in parts:
            handle.write(bytes(-end % step))
            if isinstance(part.body, int):
                handle.seek(part.body, os.SEEK_CUR)
            else:
                handle.write(part.body)
            end = handle.tell()
        handle.truncate(end)
    return path


def fast_zstd(content: bytes) -> bytes:
    """A frame declaring its size; level 3, so 200 MB compress in a second."""
    return zstd(content, FRAME_LEVEL)


def manifest(value: dict) -> bytes:
    """The canonical manifest text (spec 4.1), compressed."""
    return fast_zstd(canonical_json(value))


def core_parts(meta: dict, graph: bytes, records: Sequence[bytes]) -> list[Part]:
    tens = uvarint(len(records)) + b"".join(records)
    return [
        Part(b"META", FLAG_REQUIRED, manifest(meta)),
        Part(b"GRPH", FLAG_REQUIRED, fast_zstd(graph)),
        Part(b"TENS", FLAG_REQUIRED, tens),
    ]


# --- records and graphs ---------------------------------------------------------------------


def raw_float(name: str, values: np.ndarray) -> bytes:
    return raw_record(name.encode(), values.astype(np.float32))


def scalar_constant(name: str, dims: tuple[int, ...]) -> bytes:
    """A scalar record whose latents are one CONSTANT group of 1: two bytes for any size."""
    return constant_record(name.encode(), dims, 1)


def rdft_constant(name: str, dims: tuple[int, int, int, int]) -> bytes:
    """An rdft record (kh * kw f16 steps, layout 0) whose latents are one CONSTANT group."""
    return constant_record(name.encode(), dims, 1, rdft=True)


def classifier_records() -> list[bytes]:
    weight = ((np.arange(640) % 7) - 3).reshape(10, 64) / 8
    return [raw_float("fc.weight", weight), raw_float("fc.bias", np.zeros(10))]


def classifier_graph(
    nodes: Sequence[onnx.NodeProto] = (),
    outputs: Sequence[onnx.ValueInfoProto] = (),
    initializers: Sequence[onnx.TensorProto] = (),
) -> bytes:
    """A digits classifier (8x8 pixels, 10 logits), plus the hostile nodes and outputs given."""
    graph = helper.make_graph(
        [
            helper.make_node("Flatten", ["x"], ["flat"]),
            helper.make_node("Gemm", ["flat", "fc.weight", "fc.bias"], ["logits"], transB=1),
            *nodes,
        ],
        "classifier",
        [value_info("x", ["n", 1, 8, 8])],
        [value_info("logits", ["n", 10]), *outputs],
        initializer=[weightless("fc.weight", (10, 64)), weightless("fc.bias", (10,)),
                     *initializers],
    )  # fmt: skip
    return model_bytes(graph)


def with_big_output(name: str, dims: tuple[int, ...]) -> bytes:
    """The classifier with a data-less initializer `name` copied to a second output."""
    return classifier_graph(
        [helper.make_node("Identity", [name], ["extra"])],
        [value_info("extra", list(dims))],
        [weightless(name, dims)],
    )


CLASSIFIER_META = {"architecture": "hostile", "input": {"name": "x", "shape": [None, 1, 8, 8]}}


# --- the cases of issue 11 ------------------------------------------------------------------

BIG_CONSTANT = (1 << 13, 1 << 14)  # 2^27 elements, 512 MiB as float32
BIG_RDFT = (180, 176, 64, 64)  # 129,761,280 elements
PADDING = 256 << 10  # 2^27 elements / 512 per byte: the file size that allows them


def control(path: Path) -> Path:
    """The classifier alone: a file every command handles, eval included."""
    return write_container(path, core_parts(CLASSIFIER_META, classifier_graph(),
                                            classifier_records()))  # fmt: skip


def const_pad(path: Path) -> Path:
    graph = with_big_output("w", BIG_CONSTANT)
    records = [*classifier_records(), scalar_constant("w", BIG_CONSTANT)]
    parts = core_parts(CLASSIFIER_META, graph, records)
    return write_container(path, [*parts, Part(b"PADS", 0, bytes(PADDING))])


def const_align(path: Path) -> Path:
    """Alignment 12 and 61 one-byte sections: 64 sections x 4 KiB of padding is 256 KiB."""
    graph = with_big_output("w", BIG_CONSTANT)
    meta, grph, tens = core_parts(
        CLASSIFIER_META, graph, [*classifier_records(), scalar_constant("w", BIG_CONSTANT)]
    )
    extra = [Part(f"X{index:03d}".encode(), 0, b"\x00") for index in range(61)]
    return write_container(path, [meta, grph, *extra, tens], alignment=12)


def rdft_pad(path: Path) -> Path:
    graph = with_big_output("w", BIG_RDFT)
    records = [*classifier_records(), rdft_constant("w", BIG_RDFT)]
    parts = core_parts(CLASSIFIER_META, graph, records)
    return write_container(path, [*parts, Part(b"PADS", 0, bytes(PADDING))])


def paid_constant(path: Path, dims: tuple[int, int] = BIG_CONSTANT) -> Path:
    """The valid worst case the limits allow: a CONSTANT tensor the graph uses, paid for with
    raw bytes in TENS (numel / 512 of them), so every command decodes all of it."""
    paid = np.random.default_rng(0).integers(0, 256, math.prod(dims) // 512, dtype=np.uint8)
    raw = raw_record(b"paid", paid)
    records = [*classifier_records(), scalar_constant("w", dims), raw]
    return write_container(path, core_parts(CLASSIFIER_META, with_big_output("w", dims), records))


def paid_constant_small(path: Path) -> Path:
    return paid_constant(path, (1 << 12, 1 << 12))


def many_records(path: Path, count: int = 600_000) -> Path:
    """600,000 raw uint8 records of one element each, besides the classifier's two."""
    tiny = [raw_record(f"r{index}".encode(), np.ones(1, np.uint8)) for index in range(count)]
    records = [*classifier_records(), *tiny]
    return write_container(path, core_parts(CLASSIFIER_META, classifier_graph(), records))


def graph_constant(path: Path, size: int = 200 * MIB, noise: int = 826_000) -> Path:
    """A Constant of `size` bytes: `noise` random bytes then zeros, so the frame is ~1/256."""
    data = np.random.default_rng(11).bytes(noise) + bytes(size - noise)
    value = TensorProto(name="c", data_type=TensorProto.FLOAT, dims=[size // 4], raw_data=data)
    graph = classifier_graph(
        [helper.make_node("Constant", [], ["extra"], value=value)],
        [value_info("extra", [size // 4])],
    )
    frame = fast_zstd(graph)
    if 256 * len(frame) < len(graph):
        raise RuntimeError(f"graph frame of {len(frame):,} B cannot inflate to {len(graph):,} B")
    meta, _, tens = core_parts(CLASSIFIER_META, b"", classifier_records())
    return write_container(path, [meta, Part(b"GRPH", FLAG_REQUIRED, frame), tens])


def input_shape(path: Path) -> Path:
    """A graph for any H x W; the manifest asks eval for 100,000 x 100,000 images."""
    graph = helper.make_graph(
        [
            helper.make_node("GlobalAveragePool", ["x"], ["pooled"]),
            helper.make_node("Flatten", ["pooled"], ["flat"]),
            helper.make_node("Gemm", ["flat", "fc.weight", "fc.bias"], ["logits"], transB=1),
        ],
        "any-size",
        [value_info("x", ["n", 1, "h", "w"])],
        [value_info("logits", ["n", 10])],
        initializer=[weightless("fc.weight", (10, 1)), weightless("fc.bias", (10,))],
    )
    records = [raw_float("fc.weight", np.ones((10, 1))), raw_float("fc.bias", np.zeros(10))]
    meta = {"architecture": "hostile", "input": {"name": "x", "shape": [None, 1, 100000, 100000]}}
    return write_container(path, core_parts(meta, model_bytes(graph), records))


def constant_of_shape(path: Path) -> Path:
    """ConstantOfShape [32768, 32768] (4 GiB of float32), summed into a second output."""
    shape = helper.make_tensor("shape", TensorProto.INT64, [2], [32768, 32768])
    graph = classifier_graph(
        [
            helper.make_node("Constant", [], ["big_shape"], value=shape),
            helper.make_node("ConstantOfShape", ["big_shape"], ["big"]),
            helper.make_node("ReduceSum", ["big"], ["extra"], keepdims=0),
        ],
        [value_info("extra", [])],
    )
    return write_container(path, core_parts(CLASSIFIER_META, graph, classifier_records()))


def big_section(path: Path) -> Path:
    """The classifier and a 1 GiB optional section of zeros, with its correct CRC."""
    parts = core_parts(CLASSIFIER_META, classifier_graph(), classifier_records())
    return write_container(path, [*parts, Part(b"ZERO", 0, GIB)])


def zeros_file(path: Path) -> Path:
    with open(path, "wb") as handle:
        handle.truncate(GIB)
    return path


def fifo(path: Path) -> Path:
    os.mkfifo(path)
    return path


def dev_zero(path: Path) -> Path:
    os.mknod(path, 0o666 | stat.S_IFCHR, os.makedev(1, 5))
    return path


@dataclass(frozen=True)
class Case:
    name: str
    description: str
    build: Callable[[Path], Path]
    big: bool = False  # a 1 GiB file: left out by --quick
    timeout: float | None = None  # shorter than --timeout for inputs that are not files


CASES = (
    Case("control", "digits classifier, valid (not hostile)", control),
    Case("a-const-pad", "2^27-element CONSTANT + 256 KiB optional section", const_pad),
    Case("a-const-align", "2^27-element CONSTANT + alignment 12, 61 tiny sections", const_align),
    Case("b-rdft-pad", "rdft [180,176,64,64] CONSTANT + 256 KiB optional section", rdft_pad),
    Case("c-records", "600,000 one-byte raw records", many_records),
    Case("d-graph-constant", "GRPH frame inflating to a 200 MiB Constant", graph_constant),
    Case("e-input-shape", "manifest input.shape [null,1,100000,100000]", input_shape),
    Case("f-constant-of-shape", "ConstantOfShape [32768,32768] in the graph", constant_of_shape),
    Case("g-1gib-section", "valid file + 1 GiB optional section of zeros", big_section, True),
    Case("h-1gib-zeros", "1 GiB sparse file of zeros, no magic", zeros_file, True),
    Case("j-paid-2^24", "valid: 2^24 elements paid with 32 KiB of raw bytes", paid_constant_small),
    Case("j-paid-2^27", "valid: 2^27 elements paid with 256 KiB of raw bytes", paid_constant),
    Case("i-fifo", "a FIFO with no writer", fifo, timeout=NON_REGULAR_TIMEOUT_S),
    Case("i-dev-zero", "a character device like /dev/zero", dev_zero,
         timeout=NON_REGULAR_TIMEOUT_S),
)  # fmt: skip


def fuzz_corpus(folder: Path, count: int) -> list[tuple[str, str, Path]]:
    """Half accepted, half rejected cases of the fuzz tool's run seed 0, in case order."""
    seeds = [Seed.of(name, data) for name, data in load_seeds(BASELINE_FILE.parent, ROOT)]
    wanted = {True: (count + 1) // 2, False: count // 2}
    found: list[tuple[str, str, Path]] = []
    for index in range(100 * count):
        if not any(wanted.values()):
            break
        case = make_case(FUZZ_RUN_SEED, index, seeds)
        strategy, data = case.strategy, case.data
        accepted = validate_bytes(data).valid
        if wanted[accepted]:
            wanted[accepted] -= 1
            name = f"fuzz-{index}-{strategy}-{'accepted' if accepted else 'rejected'}"
            path = folder / f"{name}.epr"
            path.write_bytes(data)
            found.append((name, f"fuzz case {FUZZ_RUN_SEED}:{index} ({strategy})", path))
    return found


# --- running one command --------------------------------------------------------------------


@dataclass
class Run:
    case: str
    description: str
    file_bytes: int
    command: str
    status: str  # ok, refused, traceback, hung, over cap, exit N
    exit_code: int | None
    wall_s: float
    cpu_s: float  # user + system: what the time bound is checked on, as load does not move it
    peak_rss_mib: float
    over_baseline_mib: float = 0.0
    stderr: str = ""


# `python -m eprpipe` that writes its own peak RSS (VmHWM) to $BENCH_PEAK_FILE as it exits.
# Not os.wait4's ru_maxrss: Linux carries the RSS of the process that forked the child into
# the child's ru_maxrss across exec, so every run would show this benchmark's own size.
PEAK_REPORTING_EPRPIPE = """
import atexit, os, runpy
def report_peak():
    with open("/proc/self/status") as status, open(os.environ["BENCH_PEAK_FILE"], "w") as out:
        out.write(next(line for line in status if line.startswith("VmHWM:")))
atexit.register(report_peak)
runpy.run_module("eprpipe", run_name="__main__", alter_sys=True)
"""


def _memory_kib(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) of a live process; zeros once it is gone."""
    values = {b"VmRSS:": 0, b"VmHWM:": 0}
    try:
        with open(f"/proc/{pid}/status", "rb") as handle:
            for line in handle:
                if line[:6] in values:
                    values[line[:6]] = int(line.split()[1])
    except (OSError, ValueError):
        pass
    return values[b"VmRSS:"], values[b"VmHWM:"]


def _wait(process: subprocess.Popen, timeout: float, cap_kib: int) -> tuple[str | None, int, float]:
    """Wait for `process`, killing it past `timeout` or `cap_kib`.

    Returns the verdict (None, "hung" or "over cap"), the peak RSS polled (KiB) and the CPU
    seconds the process used.
    """
    pidfd = os.pidfd_open(process.pid)
    started, verdict, peak = time.perf_counter(), None, 0
    try:
        while verdict is None:
            select.select([pidfd], [], [], POLL_S)  # readable as soon as the child exits
            pid, status, usage = os.wait4(process.pid, os.WNOHANG)
            if pid:
                break
            rss, high = _memory_kib(process.pid)
            peak = max(peak, high)
            if time.perf_counter() - started > timeout:
                verdict = "hung"
            elif rss > cap_kib:
                verdict = "over cap"
        else:
            process.kill()
            _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
        return verdict, peak, usage.ru_utime + usage.ru_stime
    finally:
        os.close(pidfd)


def _reported_peak_kib(path: Path) -> int:
    """The peak the child wrote as it exited; 0 if it was killed first."""
    try:
        return int(path.read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return 0


def _first_line(stderr: str) -> str:
    """The error line; for a traceback, the exception it ends with."""
    lines = [line for line in stderr.splitlines() if line.strip()]
    if not lines:
        return ""
    if lines[0].startswith("Traceback"):
        return f"Traceback: {lines[-1].strip()}"
    return lines[0].strip()


def _status(verdict: str | None, code: int, stderr: str) -> str:
    if verdict:
        return verdict
    if "Traceback" in stderr:
        return "traceback"
    return {0: "ok", 1: "refused"}.get(code, f"exit {code}")


def command_args(command: str, path: Path, scratch: Path) -> list[str]:
    if command == "decode":
        return ["decode", str(path), "-o", str(scratch / "out.onnx")]
    if command == "eval":
        return ["eval", str(path), "--dataset", "digits"]
    return [command, str(path)]


class Measured(NamedTuple):
    status: str
    exit_code: int | None
    wall_s: float
    cpu_s: float
    peak_rss_mib: float
    line: str  # the first line of stderr, or validate's first violation


def run_command(
    command: str, path: Path, scratch: Path, timeout: float, cap_bytes: int
) -> Measured:
    """Run one command on `path` in a fresh process, watched."""
    out_path, err_path = scratch / "stdout.txt", scratch / "stderr.txt"
    peak_path = scratch / "peak.txt"
    peak_path.unlink(missing_ok=True)
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        started = time.perf_counter()
        process = subprocess.Popen(
            [sys.executable, "-c", PEAK_REPORTING_EPRPIPE, *command_args(command, path, scratch)],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            cwd=scratch,
            env={**os.environ, "BENCH_PEAK_FILE": str(peak_path)},
        )
        verdict, polled, cpu = _wait(process, timeout, cap_bytes // 1024)
        wall = time.perf_counter() - started
    peak_mib = max(polled, _reported_peak_kib(peak_path)) / 1024
    stderr = err_path.read_text(errors="replace")
    line = _first_line(stderr) or _validate_line(command, path, out_path)
    (scratch / "out.onnx").unlink(missing_ok=True)
    code = None if verdict else process.returncode
    status = _status(verdict, process.returncode, stderr)
    return Measured(status, code, wall, cpu, peak_mib, line)


def _validate_line(command: str, path: Path, out_path: Path) -> str:
    """`validate` reports violations on stdout: its first one, without the file name."""
    if command != "validate":
        return ""
    with open(out_path, errors="replace") as handle:
        line = handle.readline().strip()
    return line.removeprefix(f"{path}: ") if "valid (" not in line else ""


# --- the benchmark --------------------------------------------------------------------------


@dataclass
class Bench:
    timeout: float
    cap_bytes: int
    scratch: Path
    baseline: dict[str, dict[str, float]] = field(default_factory=dict)  # command: field: value
    runs: list[Run] = field(default_factory=list)

    def measure(self, name: str, description: str, path: Path, command: str,
                timeout: float | None = None) -> Run:  # fmt: skip
        limit = min(self.timeout, timeout or self.timeout)
        got = run_command(command, path, self.scratch, limit, self.cap_bytes)
        size = path.stat().st_size if path.is_file() else 0
        return Run(name, description, size, command, got.status, got.exit_code, got.wall_s,
                   got.cpu_s, got.peak_rss_mib, stderr=got.line)  # fmt: skip

    def measure_baseline(self, commands: Sequence[str], classifier: Path) -> None:
        """Each command on a tiny valid file it handles to the end, the cheaper of two runs.

        conv-rdft.epr, except for `eval`, which refuses it (8 input channels, not digits)
        before it loads the dataset and onnxruntime: eval's baseline is the control classifier.
        """
        for command in commands:
            path = classifier if command == "eval" else BASELINE_FILE
            runs = [self.measure("baseline", "", path, command) for _ in range(2)]
            self.baseline[command] = {
                what: min(getattr(run, what) for run in runs)
                for what in ("wall_s", "cpu_s", "peak_rss_mib")
            }

    def add(self, run: Run) -> None:
        run.over_baseline_mib = run.peak_rss_mib - self.baseline[run.command]["peak_rss_mib"]
        self.runs.append(run)


def _allowance(run: Run, eval_allowance: int) -> int:
    return eval_allowance if run.command == "eval" else 0


def memory_factor(run: Run, eval_allowance: int = EVAL_ALLOWANCE) -> float:
    """The C this run needs in RSS over baseline <= 64 MiB + C x file bytes (+ eval's bounds)."""
    excess = run.over_baseline_mib * MIB - MEMORY_GRACE - _allowance(run, eval_allowance)
    if excess <= 0:
        return 0.0
    return excess / run.file_bytes if run.file_bytes else math.inf


def seconds_per_mib(run: Run, baseline: float, grace: float, clock: str = "cpu_s") -> float:
    """The T this run needs in time - baseline <= grace + T x file MiB, on `clock`."""
    excess = getattr(run, clock) - baseline - grace
    if excess <= 0:
        return 0.0
    return excess / (run.file_bytes / MIB) if run.file_bytes else math.inf


FAILURES = ("hung", "over cap", "traceback")


def is_failure(run: Run) -> bool:
    return run.status in FAILURES or run.status.startswith("exit")


def table(runs: Sequence[Run]) -> list[str]:
    head = (f"{'case':<34} {'file bytes':>13} {'command':<8} {'exit':>4} {'wall s':>7} "
            f"{'CPU s':>6} {'RSS MiB':>8} {'+base MiB':>9}  "
            "status / first line of stderr")  # fmt: skip
    lines = [head, "-" * len(head)]
    for run in runs:
        code = "-" if run.exit_code is None else str(run.exit_code)
        note = run.status if run.status in (*FAILURES, "ok") else ""
        text = f"{note}: {run.stderr}" if note and run.stderr else note or run.stderr
        lines.append(
            f"{run.case[:34]:<34} {run.file_bytes:>13,} {run.command:<8} {code:>4} "
            f"{run.wall_s:>7.2f} {run.cpu_s:>6.2f} {run.peak_rss_mib:>8.1f} "
            f"{run.over_baseline_mib:>9.1f}  "
            f"{text[:110]}"
        )
    return lines


def fuzz_summary(runs: Sequence[Run]) -> list[str]:
    """One line per command over the fuzz corpus: worst memory and time, statuses."""
    lines = []
    for command in COMMANDS:
        rows = [run for run in runs if run.command == command]
        if not rows:
            continue
        statuses = Counter(run.status for run in rows)
        worst_rss = max(rows, key=lambda run: run.over_baseline_mib)
        worst_wall = max(rows, key=lambda run: run.wall_s)
        lines.append(
            f"fuzz corpus {command:<8} {len(rows)} files: {dict(statuses)}; most RSS over "
            f"baseline {worst_rss.over_baseline_mib:.1f} MiB ({worst_rss.case}), slowest "
            f"{worst_wall.wall_s:.2f} s ({worst_wall.case})"
        )
    return lines


def worst_cases(bench: Bench, grace: float, eval_allowance: int) -> dict:
    """The runs that need the largest C and T (on CPU and on wall time), and the failures.

    C and T are taken over inputs of at least one byte: a FIFO or a device has none, so any
    cost at all would need an infinite constant; their hangs and blow-ups are failures. T
    leaves eval out (spec 9 bounds its time by --time-limit, not per byte). Where every run
    needs 0, the worst is the one closest to its bound.
    """
    sized = [run for run in bench.runs if run.file_bytes] or bench.runs

    def memory_key(run: Run) -> tuple[float, float]:
        headroom = run.over_baseline_mib * MIB - _allowance(run, eval_allowance)
        return memory_factor(run, eval_allowance), headroom

    memory = max(sized, key=memory_key)
    worst = {
        "failures": [asdict(run) for run in bench.runs if is_failure(run)],
        "memory": {"factor": memory_factor(memory, eval_allowance), "run": asdict(memory)},
    }
    timed = [run for run in sized if run.command != "eval"] or sized
    for clock in ("cpu_s", "wall_s"):

        def time_key(run: Run, clock: str = clock) -> tuple[float, float]:
            baseline = bench.baseline[run.command][clock]
            return seconds_per_mib(run, baseline, grace, clock), getattr(run, clock) - baseline

        slowest = max(timed, key=time_key)
        worst[clock] = {"seconds_per_mib": time_key(slowest)[0], "run": asdict(slowest)}
    evals = [run for run in bench.runs if run.command == "eval"]
    worst["slowest_eval"] = asdict(max(evals, key=lambda run: run.wall_s)) if evals else None
    return worst


def describe_worst(worst: dict, grace: float, eval_allowance: int) -> list[str]:
    memory = worst["memory"]["run"]
    lines = [
        f"worst memory:    C = {worst['memory']['factor']:.4g} bytes of RSS per file byte over "
        f"64 MiB (eval: + {eval_allowance // MIB} MiB): {memory['case']} / {memory['command']} "
        f"({memory['file_bytes']:,} B file, "
        f"+{memory['over_baseline_mib']:.1f} MiB over baseline, {memory['status']})"
    ]
    for clock, label in (("cpu_s", "CPU"), ("wall_s", "wall")):
        run, needed = worst[clock]["run"], worst[clock]["seconds_per_mib"]
        lines.append(
            f"worst {label + ' time:':<10} T = {needed:.4g} s per file MiB over baseline + "
            f"{grace:g} s: {run['case']} / {run['command']} ({run['file_bytes']:,} B file, "
            f"{run[clock]:.2f} s, {run['status']})"
        )
    if worst["slowest_eval"]:
        run = worst["slowest_eval"]
        lines.append(
            f"slowest eval:    {run['wall_s']:.2f} s ({run['cpu_s']:.2f} s CPU): {run['case']} "
            f"({run['file_bytes']:,} B file, {run['status']}); not bounded per byte (spec 9)"
        )
    count = len(worst["failures"])
    return [*lines, f"failures:        {count} run(s) hung, over the cap, crashed or traceback"]


def plot(runs: Sequence[Run], path: Path, eval_allowance: int) -> None:
    """RSS over baseline against file size, log-log, one marker per command."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(9, 6))
    for command, marker in zip(COMMANDS, "os^D", strict=True):
        rows = [run for run in runs if run.command == command]
        sizes = [max(run.file_bytes, 1) for run in rows]
        rss = [max(run.over_baseline_mib, 0.1) for run in rows]
        axes.scatter(sizes, rss, marker=marker, label=command, alpha=0.6)
    for run in runs:
        if run.over_baseline_mib > MEMORY_GRACE / MIB:
            label = run.case if run.status == "ok" else f"{run.case} ({run.status})"
            point = (max(run.file_bytes, 1), run.over_baseline_mib)
            axes.annotate(label, point, fontsize=6, alpha=0.7)
    axes.axhline(MEMORY_GRACE / MIB, color="grey", linestyle="--", label="64 MiB")
    eval_line = (MEMORY_GRACE + eval_allowance) / MIB
    axes.axhline(eval_line, color="grey", linestyle=":", label=f"{eval_line:.0f} MiB (eval)")
    axes.set(xscale="log", yscale="log", xlabel="file bytes (0-byte inputs at 1)",
             ylabel="peak RSS over the command's baseline, MiB (<= 0 at 0.1)",
             title="eprpipe commands on hostile files")  # fmt: skip
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", help="comma-separated case names (default: all)")
    parser.add_argument("--quick", action="store_true", help="leave out the 1 GiB cases")
    parser.add_argument("--fuzz-cases", type=int, default=200, help="fuzz corpus files")
    parser.add_argument("--commands", default=",".join(COMMANDS), help="comma-separated")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds per run")
    parser.add_argument("--cap", type=float, default=8.0, help="RSS cap per run, GiB")
    parser.add_argument("--time-grace", type=float, default=1.0, help="seconds over baseline")
    parser.add_argument(
        "--eval-allowance",
        type=float,
        default=EVAL_ALLOWANCE / MIB,
        help="MiB eval may use besides 64 MiB + C x size (default: spec 9's runtime arena and "
        "input batch, 1024 + 64)",
    )
    parser.add_argument("--memory-factor", type=float, help="fail if C exceeds this")
    parser.add_argument("--seconds-per-mib", type=float, help="fail if T (CPU) exceeds this")
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--stem", help="result file names (default bench_hostile[_quick])")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    names = {case.name for case in CASES}
    args.cases = args.cases.split(",") if args.cases else [case.name for case in CASES]
    unknown = sorted(set(args.cases) - names)
    args.commands = args.commands.split(",")
    if unknown or set(args.commands) - set(COMMANDS):
        parser.error(f"unknown cases {unknown} (known: {sorted(names)}) or commands")
    return args


def inputs(args: argparse.Namespace, folder: Path) -> list[tuple[str, str, Path, float | None]]:
    """(name, description, path, timeout) of every input, built in `folder`."""
    chosen = [c for c in CASES if c.name in args.cases and not (args.quick and c.big)]
    built = [(c.name, c.description, c.build(folder / c.name), c.timeout) for c in chosen]
    corpus = fuzz_corpus(folder, args.fuzz_cases) if args.fuzz_cases else []
    return built + [(name, text, path, None) for name, text, path in corpus]


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-hostile-") as temporary:
        folder = Path(temporary)
        (folder / "scratch").mkdir()
        bench = Bench(args.timeout, int(args.cap * GIB), folder / "scratch")
        started = time.perf_counter()
        todo = inputs(args, folder)
        print(f"built {len(todo)} inputs in {time.perf_counter() - started:.1f} s")
        bench.measure_baseline(args.commands, control(folder / "baseline"))
        total = len(todo) * len(args.commands)
        with tqdm(total=total, unit="run", disable=args.no_progress, dynamic_ncols=True) as bar:
            for name, description, path, timeout in todo:
                for command in args.commands:
                    bar.set_postfix_str(f"{name} {command}", refresh=True)
                    bench.add(bench.measure(name, description, path, command, timeout))
                    bar.update(1)
    return report(bench, args)


def _tree() -> str:
    """The commit measured, `-dirty` with uncommitted changes."""
    done = subprocess.run(["git", "-C", str(ROOT), "describe", "--always", "--dirty"],
                          capture_output=True, text=True, check=False)  # fmt: skip
    return done.stdout.strip() or "unknown"


def report(bench: Bench, args: argparse.Namespace) -> int:
    """Print the table and worst cases, write them, and say whether the targets hold."""
    hostile = [run for run in bench.runs if not run.case.startswith("fuzz-")]
    fuzz = [run for run in bench.runs if run.case.startswith("fuzz-")]
    allowance = int(args.eval_allowance * MIB)
    worst = worst_cases(bench, args.time_grace, allowance)
    base = ", ".join(
        f"{command} {b['wall_s']:.2f} s ({b['cpu_s']:.2f} s CPU) {b['peak_rss_mib']:.0f} MiB"
        for command, b in bench.baseline.items()
    )
    lines = [f"baseline ({BASELINE_FILE.name}; eval: control): {base}", ""]
    lines += [*table(hostile), ""]
    lines += [*fuzz_summary(fuzz), *[line for run in fuzz if is_failure(run)
                                     for line in table([run])[2:]]]  # fmt: skip
    lines += ["", *describe_worst(worst, args.time_grace, allowance)]
    print("\n".join(lines))
    stem = args.stem or ("bench_hostile_quick" if args.quick else "bench_hostile")
    args.results.mkdir(parents=True, exist_ok=True)
    document = {
        "command_line": sys.argv,
        "tree": _tree(),
        "pythonpath": os.environ.get("PYTHONPATH"),  # set to measure another tree's eprpipe
        "baseline": bench.baseline,
        "timeout_s": args.timeout,
        "cap_gib": args.cap,
        "time_grace_s": args.time_grace,
        "eval_allowance_mib": args.eval_allowance,
        "worst": worst,
        "runs": [asdict(run) for run in bench.runs],
    }
    (args.results / f"{stem}.json").write_text(json.dumps(document, indent=1) + "\n")
    (args.results / f"{stem}.md").write_text("```\n" + "\n".join(lines) + "\n```\n")
    plot(bench.runs, args.results / f"{stem}.png", allowance)
    print(f"wrote {args.results / stem}.json, .md and .png")
    needed_c = worst["memory"]["factor"]
    needed_t = worst["cpu_s"]["seconds_per_mib"]
    over_memory = args.memory_factor is not None and needed_c > args.memory_factor
    over_time = args.seconds_per_mib is not None and needed_t > args.seconds_per_mib
    return 1 if worst["failures"] or over_memory or over_time else 0


if __name__ == "__main__":
    sys.exit(main())
