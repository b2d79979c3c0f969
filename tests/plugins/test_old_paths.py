"""Plugins and scripts written against eprpipe 0.1's import paths keep working, with a warning."""

from __future__ import annotations

import pytest
from torch_free import needs_torch, run_without_torch

OLD_PATHS = {  # old module -> (name, where the name lives now)
    "eprpipe.registry": ("ArchitectureSpec", "eprpipe.plugins.registry"),
    "eprpipe.datasets": ("DatasetSpec", "eprpipe.data.datasets"),
}


@pytest.mark.parametrize("old", sorted(OLD_PATHS))
def test_an_old_path_is_the_new_module_and_says_where_it_moved(old: str) -> None:
    name, new = OLD_PATHS[old]
    code = f"""
    import importlib, warnings
    import eprpipe

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        from {old} import {name}
    assert {name} is getattr(importlib.import_module("{new}"), "{name}") is eprpipe.{name}
    messages = [str(w.message) for w in caught if w.category is DeprecationWarning]
    assert messages == ["{old} moved to {new}; import {name} from eprpipe"], messages
    """
    done = run_without_torch(code)
    assert done.returncode == 0, done.stderr


@needs_torch
def test_the_old_training_path_is_the_training_face() -> None:
    import subprocess
    import sys

    code = (
        "import warnings\n"
        "warnings.simplefilter('error', DeprecationWarning)\n"
        "try:\n"
        "    import eprpipe.api\n"
        "except DeprecationWarning as warning:\n"
        "    print(warning)\n"
        "warnings.simplefilter('ignore', DeprecationWarning)\n"
        "from eprpipe.api import compress_module\n"
        "import eprpipe.train\n"
        "assert compress_module is eprpipe.train.compress_module\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "eprpipe.api moved to eprpipe.train.api" in done.stdout
