"""Test helpers for the torch-free side: run code where importing torch fails; skip without it.

The deploy path (decode, evaluate, dataset loaders) must work on machines without torch;
these tests prove it by making every ``import torch`` raise inside the child process.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import eprpipe

# Where the eprpipe under test lives: the checkout (editable install), or site-packages (the
# torch-free CI job installs it with `pip install .`). Child processes import the same one.
PACKAGE_HOME = Path(eprpipe.__file__).resolve().parents[1]

# For the tests that need torch beside ones that do not (a module that needs it throughout
# calls pytest.importorskip("torch") instead).
needs_torch = pytest.mark.skipif(
    importlib.util.find_spec("torch") is None, reason="torch is not installed"
)

BLOCK_TORCH = """
import sys

class _BlockTorch:
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ImportError(f"import of {name} blocked by test")
        return None

sys.meta_path.insert(0, _BlockTorch())
"""

CHECK_NO_TORCH = """
assert not any(module.split(".")[0] == "torch" for module in sys.modules), "torch was imported"
"""


def run_without_torch(
    code: str, timeout: float = 300, **env: str
) -> subprocess.CompletedProcess[str]:
    """Run ``code`` (dedented) with torch blocked, then check no torch module got loaded.

    ``env`` adds environment variables; `PACKAGE_HOME` is put on PYTHONPATH first, then the
    ``PYTHONPATH`` of ``env``, then the inherited one.
    """
    paths = [str(PACKAGE_HOME), env.pop("PYTHONPATH", ""), os.environ.get("PYTHONPATH", "")]
    environment = {**os.environ, **env, "PYTHONPATH": os.pathsep.join(filter(None, paths))}
    program = BLOCK_TORCH + textwrap.dedent(code) + CHECK_NO_TORCH
    return subprocess.run(
        [sys.executable, "-c", program],
        env=environment,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
