"""Resumable training: a run killed with SIGKILL and resumed writes the file it would have."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from eprpipe.cli import main
from eprpipe.format.validate import validate_file

ROOT = Path(__file__).resolve().parents[2]
ARGS = [
    "compress", "lenet-300-100", "--dataset", "digits", "--epochs", "4", "--lambda", "0.5",
    "--decoder", "sq", "--quiet", "--checkpoint-every", "3",
]  # fmt: skip


def _compress(output: Path, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "eprpipe", *ARGS, "-o", str(output), *extra],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def _saved_epoch(checkpoint: Path) -> int:
    """The EPR epoch a checkpoint stopped in, 0 before the EPR phase or while being renamed."""
    try:
        state = torch.load(checkpoint, weights_only=True)
    except (OSError, RuntimeError, EOFError):
        return 0
    phase = state.get("phases", {}).get("EPR training")
    return phase["progress"]["epoch"] if phase else 0


def test_a_killed_run_resumes_to_the_same_file(tmp_path: Path) -> None:
    whole = _compress(tmp_path / "whole.epr")
    assert whole.wait(timeout=600) == 0, whole.stderr.read()

    killed_output = tmp_path / "killed.epr"
    checkpoint = tmp_path / "killed.epr.ckpt"
    run = _compress(killed_output)
    deadline = time.monotonic() + 600
    while _saved_epoch(checkpoint) < 2:  # killed in the middle of EPR training
        assert run.poll() is None, "the run finished before it could be killed"
        assert time.monotonic() < deadline
        time.sleep(0.01)
    run.send_signal(signal.SIGKILL)
    run.wait()
    assert not killed_output.exists()

    resumed = _compress(killed_output, "--resume")
    assert resumed.wait(timeout=600) == 0, resumed.stderr.read()
    assert validate_file(killed_output).valid
    assert killed_output.read_bytes() == (tmp_path / "whole.epr").read_bytes()
    assert not checkpoint.exists()  # removed once the output is written


def test_resume_needs_a_checkpoint_of_the_same_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    output = tmp_path / "m.epr"
    assert main([*ARGS, "-o", str(output), "--resume"]) == 1
    assert "no checkpoint at" in capsys.readouterr().err

    run = _compress(output)
    checkpoint = tmp_path / "m.epr.ckpt"
    deadline = time.monotonic() + 600
    while not checkpoint.exists():
        assert run.poll() is None and time.monotonic() < deadline
        time.sleep(0.01)
    run.send_signal(signal.SIGKILL)
    run.wait()
    other = [a if a != "0.5" else "0.25" for a in ARGS]  # another λ
    assert main([*other, "-o", str(output), "--resume"]) == 1
    err = capsys.readouterr().err
    assert "other settings (lam)" in err and not output.exists()


def test_a_checkpoint_is_data_not_code(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import pickle

    class Exploit:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'pwned'}",))

    checkpoint = tmp_path / "m.epr.ckpt"
    checkpoint.write_bytes(
        pickle.dumps({"format": "eprpipe-checkpoint", "x": Exploit()}, protocol=2)
    )
    assert main([*ARGS, "-o", str(tmp_path / "m.epr"), "--resume"]) == 1
    assert "not a readable eprpipe checkpoint" in capsys.readouterr().err
    assert not (tmp_path / "pwned").exists()
