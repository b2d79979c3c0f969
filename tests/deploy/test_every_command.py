"""Every command on every file `validate` accepts: a result or one clean error line, never a crash.

Issue 11's first target: a file that `validate` calls valid must be safe for every other
command. The files are the valid vectors, the first accepted cases of the fuzz tool's default
corpus (run seed 0, deterministic) and a freshly trained demo file, the file a user most often
has. Each runs through the real CLI entry point with real onnxruntime. The second target's
instrument, tools/bench_hostile.py, is checked end to end on two cheap cases.
"""

from __future__ import annotations

import contextlib
import io
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import onnxruntime
import pytest

from eprpipe.cli import main
from eprpipe.format.testing.fuzz_cases import make_case
from eprpipe.format.testing.fuzz_seeds import Seed, load_seeds
from eprpipe.format.validate import validate_bytes

ROOT = Path(__file__).resolve().parents[2]
VALID = ROOT / "spec" / "vectors" / "valid"
VECTORS = sorted(VALID.glob("*.epr"))
FUZZ_ACCEPTED = 40  # accepted fuzz cases to run every command on
FUZZ_SCAN = 5000  # cases looked at to find them (about 400 suffice today)
FUZZ_RUN_SEED = 0
COMMANDS: dict[str, Callable[[Path, Path], list[str]]] = {
    "validate": lambda epr, _: ["validate", str(epr)],
    "validate-json": lambda epr, _: ["validate", "--json", str(epr)],
    "info": lambda epr, _: ["info", str(epr)],
    "info-json": lambda epr, _: ["info", "--json", str(epr)],
    "decode": lambda epr, out: ["decode", str(epr), "-o", str(out / "model.onnx")],
    "eval": lambda epr, _: ["eval", str(epr), "--dataset", "digits"],
}
MUST_SUCCEED = {"validate", "validate-json", "info", "info-json", "decode"}  # on a valid file


def accepted_fuzz_cases(count: int) -> list[tuple[str, bytes]]:
    """The first `count` cases of the fuzz tool's default run that `validate` accepts."""
    seeds = [Seed.of(name, data) for name, data in load_seeds(VALID, ROOT)]
    found = []
    for index in range(FUZZ_SCAN):
        case = make_case(FUZZ_RUN_SEED, index, seeds)
        if validate_bytes(case.data).valid:
            found.append((f"{FUZZ_RUN_SEED}:{index}-{case.strategy}", case.data))
            if len(found) == count:
                return found
    raise AssertionError(f"only {len(found)} of {FUZZ_SCAN} fuzz cases are valid, need {count}")


@pytest.fixture(scope="module")
def fuzz_files(tmp_path_factory) -> list[Path]:
    folder = tmp_path_factory.mktemp("fuzz-accepted")
    paths = []
    for name, data in accepted_fuzz_cases(FUZZ_ACCEPTED):
        path = folder / f"{name.replace(':', '-')}.epr"
        path.write_bytes(data)
        paths.append(path)
    return paths


@pytest.fixture(scope="module")
def demo_file(tmp_path_factory) -> Path:
    """`eprpipe demo` for one epoch (about 6 s on 2 cores), as a user would first run it."""
    pytest.importorskip("torch")
    path = tmp_path_factory.mktemp("demo") / "demo.epr"
    with contextlib.redirect_stdout(io.StringIO()):
        code = main(["demo", "--epochs", "1", "--quiet", "--no-baseline", "-o", str(path)])
    assert code == 0 and path.is_file()
    return path


def run(capsys, args: list[str]) -> tuple[int, str, str]:
    """Exit code, stdout and stderr of one command; an escaping exception fails the test."""
    capsys.readouterr()
    try:
        code = main(args)
    except Exception as error:
        raise AssertionError(f"eprpipe {' '.join(args)} raised {error!r}") from error
    out, err = capsys.readouterr()
    return code, out, err


def check_command(capsys, command: str, epr: Path, out: Path) -> tuple[int, str]:
    """Run `command` on `epr` and check the promises every command keeps on a valid file."""
    args = COMMANDS[command](epr, out)
    code, stdout, stderr = run(capsys, args)
    shown = f"eprpipe {' '.join(args)} -> {code}\nstdout: {stdout[-500:]}\nstderr: {stderr}"
    assert code in (0, 1), shown
    assert "Traceback" not in stdout + stderr, shown
    lines = stderr.splitlines()
    assert lines == [] or (
        len(lines) == 1 and lines[0].startswith(f"eprpipe {args[0]}: error: ")
    ), shown
    assert (code == 0) == (lines == []), shown
    if command in MUST_SUCCEED:
        assert code == 0, shown
    if command == "validate":
        assert stdout.startswith(f"{epr}: valid ("), shown
    if command == "validate-json":
        assert [report["valid"] for report in json.loads(stdout)] == [True], shown
    if command == "info-json":
        assert isinstance(json.loads(stdout), dict), shown
    if command == "decode" and code == 0:
        session = onnxruntime.InferenceSession(
            str(out / "model.onnx"), providers=["CPUExecutionProvider"]
        )
        assert session.get_outputs(), shown
    if command == "eval" and code == 0:
        assert ": test error " in stdout, shown
    return code, stdout


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("vector", VECTORS, ids=lambda path: path.stem)
def test_every_command_on_every_valid_vector(capsys, tmp_path, vector: Path, command: str):
    check_command(capsys, command, vector, tmp_path)


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("index", range(FUZZ_ACCEPTED))
def test_every_command_on_accepted_fuzz_cases(
    capsys, tmp_path, fuzz_files: list[Path], index: int, command: str
):
    check_command(capsys, command, fuzz_files[index], tmp_path)


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_on_a_freshly_trained_demo_file(
    capsys, tmp_path, demo_file: Path, command: str
):
    code, stdout = check_command(capsys, command, demo_file, tmp_path)
    if command == "eval":
        assert code == 0
        percent = float(stdout.split(": test error ")[1].split(" %")[0])
        assert 0 <= percent < 90  # one epoch already beats chance (90 % on ten classes)


def test_the_fuzz_cases_used_are_the_same_on_every_run() -> None:
    first = accepted_fuzz_cases(3)
    assert first == accepted_fuzz_cases(3)
    assert all(validate_bytes(data).valid for _, data in first)


def test_the_resource_benchmark_measures_each_run_and_writes_its_results(tmp_path) -> None:
    """tools/bench_hostile.py end to end on two cheap cases: a FIFO must not hang `info`."""
    pytest.importorskip("matplotlib")  # its plot; matplotlib comes with the train extra
    argv = ["--cases", "control,i-fifo", "--fuzz-cases", "0", "--commands", "info"]
    argv += ["--timeout", "30", "--results", str(tmp_path), "--no-progress"]
    tool = ROOT / "tools" / "bench_hostile.py"
    done = subprocess.run([sys.executable, str(tool), *argv], capture_output=True, text=True)
    results = json.loads((tmp_path / "bench_hostile.json").read_text())
    runs = {run["case"]: run for run in results["runs"]}
    assert done.returncode == 0, (runs, done.stderr)
    assert runs["control"]["status"] == "ok" and runs["i-fifo"]["status"] == "refused"
    assert 20 < runs["control"]["peak_rss_mib"] < 100  # info alone, not this test process
    assert (tmp_path / "bench_hostile.png").stat().st_size > 0
