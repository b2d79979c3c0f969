"""The torch-free wings stay torch-free at run time, `import eprpipe` stays cheap, and an
installed copy (the CI job without torch) holds every module.

The import-linter contracts in pyproject.toml check the import graph; this checks what a fresh
interpreter really loads, lazy imports and plugin entry points included.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import pytest
from torch_free import PACKAGE_HOME, run_without_torch

# Every module of these packages is imported; none may load torch.
TORCH_FREE_WINGS = ["eprpipe.format", "eprpipe.data", "eprpipe.plugins", "eprpipe.deploy"]
# These modules only: the CLI and report load the rest on demand.
TORCH_FREE_MODULES = ["eprpipe", "eprpipe.cli", "eprpipe.report"]
# What the cheapest imports must not load either: a decoder needs no inference runtime.
NO_ONNXRUNTIME = {"eprpipe", "eprpipe.format"}


def _top_level_modules_loaded_by(name: str, *, whole_package: bool) -> set[str]:
    code = f"""
    import importlib, json, pkgutil, sys
    package = importlib.import_module({name!r})
    if {whole_package}:
        for module in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
            importlib.import_module(module.name)
    print(json.dumps(sorted({{module.split(".")[0] for module in sys.modules}})))
    """
    done = run_without_torch(code, timeout=120)
    assert done.returncode == 0, done.stderr
    return set(json.loads(done.stdout))


@pytest.mark.parametrize(
    ("name", "whole_package"),
    [(wing, True) for wing in TORCH_FREE_WINGS] + [(name, False) for name in TORCH_FREE_MODULES],
)
def test_importing_loads_no_torch(name: str, whole_package: bool) -> None:
    loaded = _top_level_modules_loaded_by(name, whole_package=whole_package)
    assert "torch" not in loaded
    if name in NO_ONNXRUNTIME:
        assert "onnxruntime" not in loaded


ROOT = Path(__file__).resolve().parents[2]
SOURCES = {"eprpipe": ROOT / "eprpipe", "eprpipe_builtins": ROOT / "plugins" / "eprpipe_builtins"}


@pytest.mark.skipif(PACKAGE_HOME == ROOT, reason="the checkout itself is under test")
@pytest.mark.parametrize("package", sorted(SOURCES))
def test_an_installed_copy_has_every_module_of_the_checkout(package: str) -> None:
    """`pip install .` (the torch-free CI job) ships what setuptools' package list names."""
    installed = Path(importlib.import_module(package).__file__).parent
    assert installed != SOURCES[package]
    modules = {str(path.relative_to(SOURCES[package])) for path in SOURCES[package].rglob("*.py")}
    missing = {module for module in modules if not (installed / module).is_file()}
    assert not missing, f"not installed (add to [tool.setuptools] packages): {sorted(missing)}"
