"""Run the eprpipe CLI in a child process, the way a user does."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from torch_free import PACKAGE_HOME


def run_eprpipe(args: list[str], extra_path: Path | None = None) -> subprocess.CompletedProcess:
    paths = [str(PACKAGE_HOME), str(extra_path or ""), os.environ.get("PYTHONPATH", "")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, paths))}
    return subprocess.run(
        [sys.executable, "-m", "eprpipe", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
