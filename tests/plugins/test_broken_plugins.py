"""A broken third-party plugin costs one line on stderr and a "broken" row, nothing else.

Each test installs real distributions (a dist-info with entry_points.txt) on a directory put
on PYTHONPATH of a fresh `eprpipe` process, as pip would leave them.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
from cli_runner import run_eprpipe
from torch_free import needs_torch, run_without_torch
from toy_plugin import write_toy_plugin

VECTOR = Path(__file__).resolve().parents[2] / "spec" / "vectors" / "valid" / "conv-rdft.epr"

BROKEN = {
    # distribution -> (entry point, module files, what the one line must say)
    "missing": ("gone", {}, "ModuleNotFoundError: No module named 'eprpipe_missing'"),
    "raising": (
        "boom",
        {"eprpipe_raising.py": "raise RuntimeError('not configured:\\n  set TOKEN first')\n"},
        "RuntimeError: not configured: set TOKEN first",
    ),
    "misspelled": (
        "typo",
        {
            "eprpipe_misspelled.py": textwrap.dedent(
                """
                from eprpipe import hookimpl

                @hookimpl
                def register_dataset(register):
                    pass
                """
            )
        },
        "unknown hook 'register_dataset'",
    ),
}


def write_broken_plugin(site: Path, kind: str) -> tuple[str, str]:
    """Install distribution ``eprpipe_<kind>`` whose entry point cannot be loaded; returns
    the entry point's name and the words its error must contain."""
    entry_point, files, error = BROKEN[kind]
    dist_info = site / f"eprpipe_{kind}-0.3.dist-info"
    dist_info.mkdir(parents=True)
    (dist_info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: eprpipe_{kind}\nVersion: 0.3\n"
    )
    (dist_info / "entry_points.txt").write_text(f"[eprpipe]\n{entry_point} = eprpipe_{kind}\n")
    for name, text in files.items():
        (site / name).write_text(text)
    return entry_point, error


def _only_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    return lines[0]


@pytest.mark.parametrize("kind", sorted(BROKEN))
def test_plugins_lists_a_broken_plugin_and_says_so_in_one_line(tmp_path: Path, kind: str) -> None:
    entry_point, error = write_broken_plugin(tmp_path, kind)
    done = run_eprpipe(["plugins"], tmp_path)
    assert done.returncode == 0, done.stderr
    line = _only_line(done.stderr)
    for words in (f"'{entry_point}'", f"eprpipe_{kind} 0.3", f"(eprpipe_{kind})", error):
        assert words in line, line
    rows = [row.split() for row in done.stdout.splitlines()]
    broken = [row for row in rows if row[0] == "broken"]
    assert len(broken) == 1 and broken[0][1:4] == ["-", f"eprpipe_{kind}", "0.3"]
    assert error in " ".join(broken[0])
    assert next(row[:3] for row in rows if "digits" in row) == ["dataset", "digits", "eprpipe"]


def test_broken_plugins_are_reported_to_python_callers_without_torch(tmp_path: Path) -> None:
    for kind in BROKEN:
        write_broken_plugin(tmp_path, kind)
    code = """
    import json
    from eprpipe.plugins.manager import broken_plugins, datasets

    names = sorted(datasets())
    print(json.dumps([[b.plugin, b.distribution, b.version, b.target] for b in broken_plugins()]))
    """
    done = run_without_torch(code, PYTHONPATH=str(tmp_path))
    assert done.returncode == 0, done.stderr
    assert sorted(json.loads(done.stdout)) == sorted(
        [entry_point, f"eprpipe_{kind}", "0.3", f"eprpipe_{kind}"]
        for kind, (entry_point, _, _) in BROKEN.items()
    )
    assert len(done.stderr.strip().splitlines()) == len(BROKEN)  # once each, not per call


@needs_torch
def test_compress_works_beside_a_broken_plugin(tmp_path: Path) -> None:
    """A working third-party plugin and a broken one side by side: compress uses the first."""
    site = write_toy_plugin(tmp_path / "site")
    _, error = write_broken_plugin(site, "raising")
    out = tmp_path / "toy.epr"
    args = ["compress", "toy-mlp", "--dataset", "toy-blobs", "--epochs", "1", "--no-baseline"]
    done = run_eprpipe([*args, "--quiet", "-o", str(out)], site)
    assert done.returncode == 0, done.stderr
    assert error in _only_line(done.stderr) and out.exists()


def test_commands_without_plugins_do_not_load_them(tmp_path: Path) -> None:
    write_broken_plugin(tmp_path, "missing")
    done = run_eprpipe(["info", str(VECTOR)], tmp_path)
    assert done.returncode == 0 and done.stderr == "", done.stderr
