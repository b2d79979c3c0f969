"""Running one `eprpipe` command in this process the way the fuzzer needs it: output captured,
stopped by an alarm, the address space capped, and anything but a clean exit made a Finding."""

from __future__ import annotations

import argparse
import contextlib
import functools
import io
import os
import resource
import signal
import threading
import time
import traceback
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from eprpipe import cli

EVAL_DATASET = "digits"  # scikit-learn's, bundled: no download, loaded once per worker
EVAL_MEMORY_MIB = 32  # eval's onnxruntime arena, which onnxruntime keeps once it has grown
EVAL_SECONDS = 2.0  # eval's time limit: a valid graph decides what it computes per image
EVAL_LIMITS = ("--max-runtime-memory", str(EVAL_MEMORY_MIB), "--time-limit", str(EVAL_SECONDS))
BLOCKED_CPU_SHARE = 0.05  # a command timed out using less CPU than this share was blocked
ALARM = "stopped by the alarm"  # the finding of a command that worked too long
GUARD_BYTES = 2 << 30  # commands may grow the address space this much: eval's 1 GiB arena, more


class CaseTimeout(BaseException):
    """Raised by the alarm; a BaseException so that no `except Exception` can swallow it."""


@dataclass(frozen=True)
class Finding:
    """One command's misbehaviour in a case: what the summary groups and counts by command."""

    command: str
    signature: str  # without the command: type and place, or what went wrong
    error: str = ""  # the traceback, or what the command printed

    @property
    def key(self) -> str:
        return f"{self.command}: {self.signature}"


def peak_rss_kib() -> int:
    """This process's peak resident set so far, in KiB: VmHWM on Linux, since a forked
    worker's ru_maxrss starts at its parent's peak and would hide the worker's own growth."""
    try:
        with open("/proc/self/status") as status:
            line = next(row for row in status if row.startswith("VmHWM:"))
        return int(line.split()[1])
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


@contextlib.contextmanager
def watchdog(seconds: float) -> Iterator[None]:
    """Raise CaseTimeout in the body after `seconds` (main thread only: signals need it)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def fire(signum: int, frame: object) -> None:
        raise CaseTimeout(f"case ran over {seconds} s")

    previous = signal.signal(signal.SIGALRM, fire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _address_space() -> int:
    """This process's virtual size in bytes (/proc/self/statm; 0 where there is none)."""
    try:
        return int(Path("/proc/self/statm").read_text().split()[0]) * resource.getpagesize()
    except (OSError, ValueError, IndexError):
        return 0


@contextlib.contextmanager
def memory_guard(headroom: int = GUARD_BYTES) -> Iterator[None]:
    """Cap the address space at its current size plus `headroom` while the body runs, so a
    command that reads /dev/zero or allocates a 4 GiB activation fails with MemoryError (a
    finding) instead of taking the machine's memory; not used around validate_bytes, which
    turns MemoryError into a limit-exceeded rejection."""
    size = _address_space()
    if not size:
        yield
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    limit = size + headroom if hard == resource.RLIM_INFINITY else min(hard, size + headroom)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


@contextlib.contextmanager
def quiet_stderr_fd() -> Iterator[None]:
    """Send file descriptor 2 (onnxruntime's C++ log) to /dev/null while the body runs."""
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def signature(error: BaseException) -> str:
    """What makes two foreign exceptions one bug: the type, where it was raised, and the
    innermost eprpipe frame that let it through (messages vary with the bytes, so not them)."""
    frames = traceback.extract_tb(error.__traceback__)
    ours = [f for f in frames if "eprpipe" in Path(f.filename).parts]
    places = [frames[-1], *ours[-1:]] if frames else []
    where = " via ".join(dict.fromkeys(f"{Path(f.filename).name}:{f.lineno}" for f in places))
    return f"{type(error).__name__} at {where or '?'}"


@dataclass(frozen=True)
class Ran:
    """What one in-process `eprpipe` command did: its exit code, or why it has none."""

    command: str
    code: int | None = None
    stderr: str = ""
    finding: Finding | None = None
    timed_out: bool = False
    blocked: bool = False  # timed out having used almost no CPU: waiting, not working
    stdout: str = ""


def argv_of(command: str, path: Path, out: Path) -> list[str]:
    """The `eprpipe` arguments of `command` on input `path` (decode writes to `out`)."""
    words = command.split()
    if words[0] == "decode":
        return ["decode", str(path), "-o", str(out)]
    if words[0] == "eval":
        return ["eval", str(path), "--dataset", EVAL_DATASET, *EVAL_LIMITS]
    return [*words, str(path)]


@functools.cache
def _parser() -> argparse.ArgumentParser:
    return _build_parser()


_build_parser = cli.build_parser


@contextlib.contextmanager
def parser_built_once() -> Iterator[None]:
    """cli.main with its argument parser built once per process, not per call: building it
    costs 3 ms, more than most commands on a small file; parsing and running are untouched."""
    cli.build_parser = _parser
    try:
        yield
    finally:
        cli.build_parser = _build_parser


def run_command(command: str, path: Path, out: Path, seconds: float) -> Ran:
    """Run `eprpipe COMMAND` in this process, its output captured and discarded; anything but
    an exit code 0/1/2 is a finding, and so is a traceback printed on stderr."""
    stdout, stderr = io.StringIO(), io.StringIO()
    cpu = time.process_time()
    try:
        with watchdog(max(seconds, 0.01)), quiet_stderr_fd(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with (
                contextlib.redirect_stdout(stdout),
                contextlib.redirect_stderr(stderr),
                parser_built_once(),
            ):
                code = cli.main(argv_of(command, path, out))
    except CaseTimeout:
        blocked = time.process_time() - cpu < BLOCKED_CPU_SHARE * seconds
        return Ran(command, None, stderr.getvalue(), None, True, blocked)
    except (Exception, SystemExit) as error:
        crash = Finding(command, signature(error), traceback.format_exc())
        return Ran(command, None, stderr.getvalue(), crash)
    text = stderr.getvalue()
    finding = None
    if "Traceback (most recent call last)" in text:
        finding = Finding(command, "printed a traceback", text)
    elif code not in (0, 1, 2):
        finding = Finding(command, f"returned {code!r}", text)
    return Ran(command, code, text, finding, stdout=stdout.getvalue())


def first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else ""
