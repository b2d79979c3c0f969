"""Filesystem cases (family 12): the case's bytes behind a FIFO, a symlink, a device node, a
directory or a sparse 1 GiB file, `decode -o` pointed at such nodes or at the input, every
command run on them, and the directory compared with what it was."""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import threading
import time
from pathlib import Path

from eprpipe.format.testing.fuzz_cases import FsPlan
from eprpipe.fuzzing.commands import ALARM, Finding, memory_guard, run_command

FS_COMMANDS = ("validate", "info", "decode", "eval")  # one per way of opening the input
FS_TIMEOUT_S = 2.0  # a command is stopped here: a hang if it was blocked (BLOCKED_CPU_SHARE)
SPARSE_BYTES = 1 << 30


class FifoWriter:
    """Serves `data` to each reader that opens the FIFO, until stopped; never blocks on open
    (O_NONBLOCK fails with ENXIO while nobody reads), so a command that refuses the FIFO
    without opening it leaves no thread stuck."""

    def __init__(self, path: Path, data: bytes) -> None:
        self.path, self.data = path, data
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.stopping.is_set():
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_NONBLOCK)
            except OSError:
                time.sleep(0.001)
                continue
            os.set_blocking(fd, True)
            with contextlib.suppress(OSError), os.fdopen(fd, "wb") as pipe:
                pipe.write(self.data)  # an OSError: the reader stopped reading, its business

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(timeout=5)


DEVICES = {"null": 3, "zero": 5}  # minor numbers of the memory devices (major 1)


def make_device(path: Path, name: str) -> None:
    """A copy of /dev/`name` at `path` (mknod: root only); else a link to the real one, which a
    process that may not mknod may not replace either (/dev is not writable to it)."""
    try:
        os.mknod(path, 0o666 | stat.S_IFCHR, os.makedev(1, DEVICES[name]))
    except PermissionError:
        path.symlink_to(f"/dev/{name}")


def make_input(root: Path, kind: str, source: Path) -> Path:
    """The input node of `kind` in `root`; `source` is a regular file holding the case's bytes."""
    path = root / "in.epr"
    if kind == "regular":
        return source
    if kind in ("fifo", "fifo-writer"):
        os.mkfifo(path)
    elif kind == "symlink":
        path.symlink_to(source.name)
    elif kind == "symlink-chain":
        for link, target in (("l1", "l2"), ("l2", "l3"), ("l3", source.name)):
            (root / link).symlink_to(target)
        path.symlink_to("l1")
    elif kind == "symlink-loop":
        (root / "loop.epr").symlink_to("in.epr")
        path.symlink_to("loop.epr")
    elif kind == "dangling-symlink":
        path.symlink_to("missing.epr")
    elif kind in ("char-zero", "char-null"):
        make_device(path, kind.removeprefix("char-"))
    elif kind == "directory":
        path.mkdir()
    else:  # 1 GiB that takes no space: zeros, or the case's bytes and then zeros
        with open(path, "wb") as handle:
            handle.write(source.read_bytes() if kind == "sparse-tail" else b"")
            handle.truncate(SPARSE_BYTES)
    return path


def make_output(root: Path, kind: str, inp: Path, source: Path) -> Path:
    """The node `decode -o` names: nothing, a device copy, a FIFO, a directory, the input..."""
    path = root / "out.onnx"
    if kind == "input":
        return inp
    if kind in ("char-null", "char-zero"):
        make_device(path, kind.removeprefix("char-"))
    elif kind == "fifo":
        os.mkfifo(path)
    elif kind == "directory":
        path.mkdir()
    elif kind == "symlink-to-input":
        path.symlink_to(inp.name)
    elif kind == "hardlink-to-input" and os.path.realpath(inp) == os.path.realpath(source):
        os.link(source, path)
    elif kind == "symlink-to-device":
        make_device(root / "null.dev", "null")
        path.symlink_to("null.dev")
    elif kind == "dangling-symlink":
        path.symlink_to("missing.onnx")
    elif kind == "symlink-loop":
        path.symlink_to("out.onnx")
    return path


Snapshot = dict[str, tuple[int, int, int]]  # name: (inode, file type, size)


def snapshot(root: Path) -> Snapshot:
    """Every node under `root`, links not followed."""
    nodes = {}
    for directory, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(directory, name)
            status = path.lstat()
            nodes[str(path.relative_to(root))] = (
                status.st_ino,
                stat.S_IFMT(status.st_mode),
                status.st_size,
            )
    return nodes


def compare_nodes(before: Snapshot, after: Snapshot, plan: FsPlan, source: str) -> list[Finding]:
    """Nodes replaced, removed or changed (the input's bytes included), and files left behind;
    the only new files allowed are decode's output and a dangling link's target."""
    findings = []
    roles = {source: "the input", "in.epr": "the input", "out.onnx": f"-o {plan.output}"}
    for name, (inode, kind, size) in before.items():
        now = after.get(name)
        what = roles.get(name, name)
        if now is None:
            findings.append(Finding("decode", f"removed {what}", name))
        elif now[:2] != (inode, kind):
            findings.append(Finding("decode", f"replaced {what} ({plan.describe()})", name))
        elif name == source and now[2] != size:
            findings.append(Finding("decode", f"changed the input ({plan.describe()})", name))
    allowed = {"out.onnx", "missing.onnx"}
    left = sorted(name for name in after if name not in before and name not in allowed)
    if left:
        findings.append(Finding("decode", f"left a file behind ({plan.describe()})", str(left)))
    return findings


class FileCases:
    """Runs filesystem cases: the bytes behind a node of some kind in a fresh directory, every
    command on it in this process, then the directory compared with what it was."""

    def __init__(self, workdir: Path) -> None:
        self.root = workdir / "fs"

    def run(self, data: bytes, plan: FsPlan) -> tuple[str, list[Finding], dict[str, int | None]]:
        """(outcome, findings, exit code of each command run): 'accepted' when validate said
        valid; a decode that says it wrote a file must have left one where -o leads."""
        if self.root.exists():
            shutil.rmtree(self.root)
        self.root.mkdir()
        source = self.root / "case.epr"
        source.write_bytes(data)
        inp = make_input(self.root, plan.input, source)
        out = make_output(self.root, plan.output, inp, source)
        writer = FifoWriter(inp, data) if plan.input == "fifo-writer" else None
        before = snapshot(self.root)
        try:
            codes, findings = self._commands(inp, out, plan)
        finally:
            if writer is not None:
                writer.stop()
        findings += compare_nodes(before, snapshot(self.root), plan, source.name)
        if source.read_bytes() != data:
            findings.append(Finding("decode", f"changed the input ({plan.describe()})"))
        if codes.get("decode") == 0 and not os.path.isfile(out):
            findings.append(Finding("decode", f"exit 0 but no file at -o ({plan.describe()})"))
        shutil.rmtree(self.root)
        outcome = "foreign" if findings else ("accepted" if codes["validate"] == 0 else "rejected")
        return outcome, findings, codes

    def _commands(self, inp: Path, out: Path, plan: FsPlan) -> tuple[dict, list[Finding]]:
        codes, findings = {}, []
        with memory_guard():
            for command in FS_COMMANDS:
                result = run_command(command, inp, out, FS_TIMEOUT_S)
                codes[command] = result.code
                if result.timed_out:  # the other commands would wait or work as long
                    note = f"hung over {FS_TIMEOUT_S:.0f} s, blocked ({plan.describe()})"
                    findings.append(Finding(command, note if result.blocked else ALARM))
                    break
                if result.finding is not None:
                    findings.append(result.finding)
        return codes, findings
