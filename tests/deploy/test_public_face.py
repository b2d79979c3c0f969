"""`import eprpipe`: an explicit, documented, torch-free face whose examples run.

Each public function's docstring carries a short example; they run here as doctests, in a
temporary directory that sees the repository's spec/ (the examples read the golden vectors).
"""

from __future__ import annotations

import doctest
import importlib
import inspect
import json
from pathlib import Path

import pytest
from torch_free import run_without_torch

import eprpipe

ROOT = Path(__file__).resolve().parents[2]
IMPLEMENTATIONS = ["eprpipe", "eprpipe.format.api", "eprpipe.deploy.api"]
FUNCTIONS = ["info", "validate", "decode", "write_onnx", "load_weights", "session", "evaluate"]


def test_all_is_explicit_and_every_name_resolves() -> None:
    assert eprpipe.__all__ == sorted(set(eprpipe.__all__))
    assert set(FUNCTIONS) <= set(eprpipe.__all__)
    for name in eprpipe.__all__:
        assert getattr(eprpipe, name) is not None, name
        assert name in dir(eprpipe)
    with pytest.raises(AttributeError, match="no attribute 'compress'"):
        eprpipe.compress  # noqa: B018  training lives in eprpipe.train


@pytest.mark.parametrize("name", FUNCTIONS)
def test_every_public_function_has_an_example(name: str) -> None:
    doc = inspect.getdoc(getattr(eprpipe, name)) or ""
    assert ">>> import eprpipe" in doc and f"eprpipe.{name}(" in doc, name


@pytest.mark.parametrize("module", IMPLEMENTATIONS)
def test_the_examples_run(module: str, tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "spec").symlink_to(ROOT / "spec")
    monkeypatch.chdir(tmp_path)
    result = doctest.testmod(importlib.import_module(module), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0 and result.attempted > 0


def test_reading_and_decoding_load_neither_torch_nor_onnxruntime() -> None:
    """onnxruntime comes in with `session` (or `evaluate`), and not before."""
    code = f"""
    import json, sys, tempfile
    from pathlib import Path
    import eprpipe
    vector = {str(ROOT / "spec" / "vectors" / "valid" / "conv-rdft.epr")!r}
    eprpipe.info(vector), eprpipe.validate(vector), eprpipe.load_weights(vector)
    eprpipe.write_onnx(vector, Path(tempfile.mkdtemp()) / "conv.onnx")
    before = "onnxruntime" in sys.modules
    eprpipe.session(vector)
    print(json.dumps([before, "onnxruntime" in sys.modules]))
    """
    done = run_without_torch(code, timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == [False, True]


def test_the_training_face_resolves_its_names() -> None:
    pytest.importorskip("torch")
    import eprpipe.train

    for name in eprpipe.train.__all__:
        assert getattr(eprpipe.train, name) is not None, name
