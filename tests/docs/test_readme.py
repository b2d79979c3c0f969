"""The README's Python examples run, as a user would paste them.

Each ```python block runs in a fresh interpreter in a temporary directory that sees the
repository's spec/ (the torch-free examples read the golden vectors). Blocks that need torch
skip where it is missing. A block right after `<!-- file: PATH -->` shows that file of the
repository and must equal it; the file itself is tested where it lives (the plugin example
by tests/plugins/test_plugin_example.py).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from torch_free import PACKAGE_HOME

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
BLOCK = re.compile(r"(?:<!-- file: (?P<file>\S+) -->\n)?```python\n(?P<code>.*?)^```", re.M | re.S)
NEEDS_TORCH = re.compile(r"^\s*(?:from|import) (?:torch|eprpipe\.train)\b", re.M)


def _blocks() -> list[tuple[str, str | None, str]]:
    """(id naming the README line, the file it shows or None, code) of every python block."""
    text = README.read_text()
    return [
        (f"README.md:{text.count(chr(10), 0, found.start()) + 1}", found["file"], found["code"])
        for found in BLOCK.finditer(text)
    ]


BLOCKS = _blocks()
RUNNABLE = [(name, code) for name, file, code in BLOCKS if file is None]
SHOWN_FILES = [(name, file, code) for name, file, code in BLOCKS if file is not None]


def test_the_readme_has_examples_of_both_faces() -> None:
    runnable = [code for _, code in RUNNABLE]
    assert any(NEEDS_TORCH.search(code) is None for code in runnable)
    assert any(NEEDS_TORCH.search(code) for code in runnable)


@pytest.mark.parametrize(("name", "code"), RUNNABLE, ids=[name for name, _ in RUNNABLE])
def test_example_runs(name: str, code: str, tmp_path: Path) -> None:
    if NEEDS_TORCH.search(code):
        pytest.importorskip("torch")
    (tmp_path / "spec").symlink_to(ROOT / "spec")
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "PYTHONPATH": str(PACKAGE_HOME)},
    )
    assert done.returncode == 0, f"{name}:\n{done.stderr}"
    assert done.stdout.strip(), f"{name} printed nothing"


@pytest.mark.parametrize(
    ("name", "file", "code"), SHOWN_FILES, ids=[name for name, _, _ in SHOWN_FILES]
)
def test_a_shown_file_is_the_file(name: str, file: str, code: str) -> None:
    assert code == (ROOT / file).read_text(), f"{name} differs from {file}"
