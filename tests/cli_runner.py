"""Run the eprpipe CLI in a child process, the way a user does."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_eprpipe(args: list[str], extra_path: Path | None = None) -> subprocess.CompletedProcess:
    paths = [str(ROOT)] + ([str(extra_path)] if extra_path else [])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}
    return subprocess.run(
        [sys.executable, "-m", "eprpipe", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
