"""docs/plugin-example is a plugin distribution that installs and works as the docs say.

pip builds it from its pyproject.toml (offline: no build isolation, no dependencies fetched)
and installs it into a temporary target, never into the environment running the tests; a
child eprpipe with that target on its path finds it through its entry point, like any plugin
installed next to eprpipe. The folder is removed afterwards, even when a test fails.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from cli_runner import run_eprpipe
from torch_free import PACKAGE_HOME

import eprpipe

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "docs" / "plugin-example"
DISTRIBUTION = "eprpipe-bars"


def _not_installed_here() -> bool:
    try:
        importlib.metadata.distribution(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        return True
    return False


@pytest.fixture(scope="module")
def installed() -> Iterator[Path]:
    """The folder pip installed the example into (the package and its .dist-info)."""
    pytest.importorskip("setuptools", minversion="77")  # its build backend, used offline
    assert _not_installed_here()
    with tempfile.TemporaryDirectory(prefix="eprpipe-plugin-example-") as folder:
        source, target = Path(folder) / "source", Path(folder) / "site"
        # A copy: the build writes build/ and an .egg-info next to the sources.
        shutil.copytree(EXAMPLE, source, ignore=shutil.ignore_patterns("build", "*.egg-info"))
        pip = [sys.executable, "-m", "pip", "install", "--no-build-isolation", "--no-deps"]
        pip += ["--no-index", "--no-cache-dir", "--disable-pip-version-check", "--quiet"]
        done = subprocess.run(
            [*pip, "--target", str(target), str(source)],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        yield target
    assert _not_installed_here()


def _child(code: str, site: Path) -> object:
    """What `code` prints as JSON, run by a fresh interpreter that sees the installed plugin."""
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(PACKAGE_HOME), str(site)])},
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_the_distribution_declares_its_entry_point_and_dependency(installed: Path) -> None:
    (found,) = [
        dist
        for dist in importlib.metadata.distributions(path=[str(installed)])
        if dist.metadata["Name"] == DISTRIBUTION
    ]
    assert [(e.group, e.name, e.value) for e in found.entry_points] == [
        ("eprpipe", "bars", "eprpipe_bars.plugin")
    ]
    assert any(re.match(r"eprpipe\b(?!\[)", requirement) for requirement in found.requires)
    assert (installed / "eprpipe_bars" / "plugin.py").read_bytes() == (
        EXAMPLE / "eprpipe_bars" / "plugin.py"
    ).read_bytes()


def test_eprpipe_plugins_lists_what_it_provides(installed: Path) -> None:
    done = run_eprpipe(["plugins"], extra_path=installed)
    assert done.returncode == 0, done.stderr
    assert re.search(r"^dataset\s+bars\s+eprpipe-bars 0\.1\.0\s", done.stdout, re.M), done.stdout
    if importlib.util.find_spec("torch") is not None:
        row = r"^architecture\s+bars-cnn\s+eprpipe-bars 0\.1\.0\s"
        assert re.search(row, done.stdout, re.M), done.stdout


def test_the_factory_builds_the_class_count_it_is_given(installed: Path) -> None:
    """eprpipe calls factory(num_classes=...) with the dataset's count, whatever the spec says."""
    pytest.importorskip("torch")
    code = """
import json, torch
from eprpipe.plugins import get_architecture
spec = get_architecture("bars-cnn")
logits = spec.factory(num_classes=7)(torch.zeros(2, *spec.input_shape))
print(json.dumps([list(spec.input_shape), spec.num_classes, list(logits.shape)]))
"""
    assert _child(code, installed) == [[3, 16, 16], 4, [2, 7]]


def test_compress_takes_shape_from_the_architecture_and_the_rest_from_the_dataset(
    installed: Path,
) -> None:
    pytest.importorskip("torch")
    output = installed.parent / "bars.epr"
    args = ["compress", "bars-cnn", "--dataset", "bars", "--epochs", "1", "--no-baseline"]
    done = run_eprpipe([*args, "--quiet", "-o", str(output)], extra_path=installed)
    assert done.returncode == 0, done.stderr
    code = """
import json
from eprpipe.plugins import get_dataset
spec = get_dataset("bars")
print(json.dumps([list(spec.classes), list(spec.mean), list(spec.std)]))
"""
    classes, mean, std = _child(code, installed)
    manifest = eprpipe.info(output).manifest
    assert manifest["input"]["shape"] == [None, 3, 16, 16]  # the architecture's input_shape
    assert manifest["input"]["normalization"]["mean"] == mean  # the dataset's statistics
    assert manifest["input"]["normalization"]["std"] == std
    assert manifest["output"]["classes"] == classes  # the dataset's classes
    assert eprpipe.decode(output).graph.output[0].type.tensor_type.shape.dim[1].dim_value == 4
    done = run_eprpipe(["eval", str(output), "--dataset", "bars"], extra_path=installed)
    assert done.returncode == 0 and "of 256 bars test images wrong" in done.stdout, done.stderr
