"""Test helper: run Python code in a fresh interpreter where importing torch fails.

The deploy path (decode, evaluate, dataset loaders) must work on machines without torch;
these tests prove it by making every ``import torch`` raise inside the child process.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

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

    ``env`` adds environment variables; the repository root is put on PYTHONPATH first.
    """
    paths = [str(ROOT), env.pop("PYTHONPATH", "")]
    environment = {**os.environ, **env, "PYTHONPATH": os.pathsep.join(filter(None, paths))}
    program = BLOCK_TORCH + textwrap.dedent(code) + CHECK_NO_TORCH
    return subprocess.run(
        [sys.executable, "-c", program],
        env=environment,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
