"""Outputs never destroy: `decode -o` refuses devices, FIFOs, directories and the input itself,
follows symlinks to the file they name, and `write_atomically` keeps a replaced file's mode.
"""

from __future__ import annotations

import contextlib
import os
import resource
import shutil
import signal
import socket
import stat
from collections.abc import Callable, Iterator
from pathlib import Path

import onnx
import pytest
from torch_free import needs_torch

from eprpipe.cli import main
from eprpipe.errors import EprError
from eprpipe.format.atomic import write_atomically

ROOT = Path(__file__).resolve().parents[2]
VECTOR = ROOT / "spec" / "vectors" / "valid" / "conv-rdft.epr"
NULL, FULL, LOOP0 = os.makedev(1, 3), os.makedev(1, 7), os.makedev(7, 0)


@pytest.fixture
def epr(tmp_path: Path) -> Path:
    """A private copy of a valid vector: tests that aim -o at the input must not risk the spec's."""
    copy = tmp_path / "in" / "model.epr"
    copy.parent.mkdir()
    shutil.copyfile(VECTOR, copy)
    return copy


@pytest.fixture
def reference(tmp_path: Path, epr: Path, capsys) -> bytes:
    """The ONNX bytes `decode` writes to a plain new path."""
    plain = tmp_path / "reference.onnx"
    assert main(["decode", str(epr), "-o", str(plain)]) == 0
    capsys.readouterr()
    data = plain.read_bytes()
    plain.unlink()
    return data


def _mknod(path: Path, device: int, kind: int = stat.S_IFCHR) -> Path:
    """A copy of a device node; skips where the process may not create one (not root)."""
    try:
        os.mknod(path, 0o666 | kind, device)
    except PermissionError:
        pytest.skip("creating device nodes needs CAP_MKNOD")
    return path


def _state(path: Path) -> tuple:
    """What must not change about a refused output: inode, type, device number, bytes, link."""
    status = os.lstat(path)
    content = path.read_bytes() if stat.S_ISREG(status.st_mode) else None
    link = os.readlink(path) if stat.S_ISLNK(status.st_mode) else None
    return status.st_ino, stat.S_IFMT(status.st_mode), status.st_rdev, content, link


def _tree(directory: Path) -> dict[str, tuple]:
    """Every entry under `directory` with its state, to show nothing was added, removed or hit."""
    return {str(p.relative_to(directory)): _state(p) for p in sorted(directory.rglob("*"))}


@contextlib.contextmanager
def _deadline(seconds: int) -> Iterator[None]:
    """Fail instead of hanging forever (an open() of a FIFO with no reader blocks)."""

    def expire(signum, frame):
        raise TimeoutError(f"still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def _decode_refused(capsys, tmp_path: Path, epr: Path, output: Path, *expected: str) -> str:
    """Run `decode -o output`; it must fail with one line and leave every file as it was."""
    before = _tree(tmp_path)
    with _deadline(20):
        code = main(["decode", str(epr), "-o", str(output)])
    out, err = capsys.readouterr()
    assert code == 1
    assert out == ""
    assert len(err.splitlines()) == 1 and err.startswith("eprpipe decode: error: ")
    for text in expected:
        assert text in err
    assert _tree(tmp_path) == before
    return err


def _fifo(path: Path) -> Path:
    os.mkfifo(path)
    return path


def _directory(path: Path) -> Path:
    path.mkdir()
    (path / "keep").write_bytes(b"kept")
    return path


NON_REGULAR: dict[str, tuple[Callable[[Path], Path], str]] = {
    "dev-null-copy": (lambda d: _mknod(d / "null", NULL), "a character device"),
    "dev-full-copy": (lambda d: _mknod(d / "full", FULL), "a character device"),
    "fifo": (lambda d: _fifo(d / "fifo"), "a FIFO"),
    "directory": (lambda d: _directory(d / "dir"), "a directory"),
}


@pytest.mark.parametrize("name", sorted(NON_REGULAR))
def test_decode_refuses_a_non_regular_output(capsys, tmp_path, epr, name):
    make, reason = NON_REGULAR[name]
    output = make(tmp_path)
    _decode_refused(capsys, tmp_path, epr, output, f"refusing to write {output}: it is {reason}")


def test_decode_refuses_a_symlink_to_a_device(capsys, tmp_path, epr):
    device = _mknod(tmp_path / "null", NULL)
    link = tmp_path / "out.onnx"
    link.symlink_to(device)
    _decode_refused(capsys, tmp_path, epr, link, str(link), "links to", "a character device")


def test_decode_refuses_a_symlink_loop(capsys, tmp_path, epr):
    (tmp_path / "a").symlink_to(tmp_path / "b")
    (tmp_path / "b").symlink_to(tmp_path / "a")
    _decode_refused(capsys, tmp_path, epr, tmp_path / "a", "refusing")


def test_decode_refuses_the_input_by_its_own_name(capsys, tmp_path, epr):
    _decode_refused(capsys, tmp_path, epr, epr, f"refusing to overwrite the input {epr}")


def test_decode_refuses_the_input_through_a_symlink(capsys, tmp_path, epr):
    link = tmp_path / "out.onnx"
    link.symlink_to(epr)
    _decode_refused(capsys, tmp_path, epr, link, "refusing to overwrite the input", str(link))


def test_decode_refuses_the_input_through_a_hard_link(capsys, tmp_path, epr):
    hard = tmp_path / "out.onnx"
    os.link(epr, hard)
    _decode_refused(capsys, tmp_path, epr, hard, "refusing to overwrite the input", str(hard))


def test_decode_refuses_an_input_named_through_a_symlink(capsys, tmp_path, epr):
    alias = tmp_path / "alias.epr"
    alias.symlink_to(epr)
    _decode_refused(capsys, tmp_path, alias, epr, "refusing to overwrite the input")


def test_decode_through_a_symlink_replaces_the_file_it_names(capsys, tmp_path, epr, reference):
    elsewhere = tmp_path / "models"
    elsewhere.mkdir()
    target = elsewhere / "model.onnx"
    target.write_bytes(b"old model")
    old_inode = target.stat().st_ino
    link = tmp_path / "out.onnx"
    link.symlink_to(target)
    assert main(["decode", str(epr), "-o", str(link)]) == 0
    out, err = capsys.readouterr()
    assert out == f"wrote {link} ({len(reference):,} bytes)\n" and err == ""
    assert link.is_symlink() and os.readlink(link) == str(target)
    assert target.read_bytes() == reference
    assert target.stat().st_ino != old_inode  # replaced by rename, not rewritten in place
    assert sorted(p.name for p in elsewhere.iterdir()) == ["model.onnx"]
    onnx.checker.check_model(onnx.load_from_string(target.read_bytes()))


def test_decode_through_a_dangling_symlink_creates_the_file_it_names(
    capsys, tmp_path, epr, reference
):
    target = tmp_path / "new.onnx"
    link = tmp_path / "out.onnx"
    link.symlink_to(target)
    assert main(["decode", str(epr), "-o", str(link)]) == 0
    assert capsys.readouterr().out.startswith(f"wrote {link} ")
    assert link.is_symlink() and target.read_bytes() == reference
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in", "new.onnx", "out.onnx"]


def test_decode_over_an_existing_file_keeps_its_mode(capsys, tmp_path, epr, reference):
    output = tmp_path / "model.onnx"
    output.write_bytes(b"old")
    output.chmod(0o600)
    assert main(["decode", str(epr), "-o", str(output)]) == 0
    assert capsys.readouterr().out == f"wrote {output} ({len(reference):,} bytes)\n"
    assert output.read_bytes() == reference
    assert stat.S_IMODE(output.stat().st_mode) == 0o600


# write_atomically itself


def _bound_socket(path: Path) -> Path:
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(path))
    server.close()  # the socket file stays
    return path


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda d: _mknod(d / "node", FULL), "a character device"),
        (lambda d: _mknod(d / "node", LOOP0, stat.S_IFBLK), "a block device"),
        (lambda d: _bound_socket(d / "node"), "a socket"),
    ],
    ids=["char", "block", "socket"],
)
def test_write_atomically_refuses_other_kinds(tmp_path, make, reason):
    node = make(tmp_path)
    before = _tree(tmp_path)
    with pytest.raises(EprError, match=f"refusing to write {node}: it is {reason}"):
        write_atomically(node, b"data")
    assert _tree(tmp_path) == before


def test_write_atomically_keeps_the_mode_of_a_replaced_file(tmp_path):
    path = tmp_path / "secret.bin"
    path.write_bytes(b"old")
    path.chmod(0o640)
    write_atomically(path, b"new")
    assert path.read_bytes() == b"new"
    assert stat.S_IMODE(path.stat().st_mode) == 0o640


def test_write_atomically_never_copies_setuid(tmp_path):
    path = tmp_path / "tool"
    path.write_bytes(b"old")
    path.chmod(0o4755)
    write_atomically(path, b"new")
    assert stat.S_IMODE(path.stat().st_mode) == 0o755


def test_write_atomically_gives_a_new_file_the_umask_mode(tmp_path):
    previous = os.umask(0o027)
    try:
        write_atomically(tmp_path / "new.bin", b"x")
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / "new.bin").stat().st_mode) == 0o640


def test_write_atomically_failure_leaves_the_target_untouched(tmp_path):
    """A real write error (the file-size limit) mid-write: old file kept, temporary removed."""
    path = tmp_path / "model.onnx"
    path.write_bytes(b"old contents")
    path.chmod(0o600)
    before = _tree(tmp_path)
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (4096, hard))
    try:
        with pytest.raises(EprError, match=f"cannot write {path}: File too large"):
            write_atomically(path, b"x" * 100_000)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, previous)
    assert _tree(tmp_path) == before


def test_write_atomically_refuses_any_of_its_inputs(tmp_path):
    first, second = tmp_path / "a.epr", tmp_path / "b.epr"
    first.write_bytes(b"a")
    second.write_bytes(b"b")
    with pytest.raises(EprError, match=f"refusing to overwrite the input {second}"):
        write_atomically(second, b"new", inputs=(tmp_path / "gone.epr", first, second))
    assert second.read_bytes() == b"b"
    write_atomically(tmp_path / "c.onnx", b"new", inputs=(first, second))
    assert (tmp_path / "c.onnx").read_bytes() == b"new"


@needs_torch
def test_compress_refuses_a_bad_output_before_training(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Refused in the first second, not after an hour of training: a FIFO output, and an output
    that is the weights file the run starts from."""
    fifo = tmp_path / "model.epr"
    os.mkfifo(fifo)
    weights = tmp_path / "weights.safetensors"
    weights.write_bytes(b"not read: refused first")
    link = tmp_path / "link.epr"
    link.symlink_to(weights)
    cases = [
        (["-o", str(fifo)], "it is a FIFO"),
        (["-o", str(link), "--init-from", str(weights)], "refusing to overwrite the input"),
    ]
    for extra, message in cases:
        code = main(["compress", "lenet5-caffe", "--dataset", "digits", "--quiet", *extra])
        err = capsys.readouterr().err
        assert code == 1 and message in err and err.count("\n") == 1, err
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    assert weights.read_bytes() == b"not read: refused first"
