"""The deploy wing's public functions: `eprpipe.session` and `eprpipe.evaluate`, torch-free.

The classifier is built here without torch, as a second producer would: a nearest-class-mean
rule for scikit-learn's digits as one Gemm in a weightless ONNX graph (built with
`eprpipe.format.testing`), its weights as tensor records, written with the container's encoder.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime
import pytest
from onnx import helper

import eprpipe
from eprpipe.format.container import EprContents, TensorRecord, encode_container
from eprpipe.format.testing.graphs import model_bytes, value_info, weightless
from eprpipe.format.testing.records import raw
from eprpipe.plugins import get_dataset

ROOT = Path(__file__).resolve().parents[2]
DENSE = ROOT / "spec" / "vectors" / "valid" / "dense-masks.epr"
DIGITS = [str(digit) for digit in range(10)]


MEAN, STD = 0.5, 0.5  # the manifest's normalization: the graph computes (x - 0.5) / 0.5


def _normalized(images: np.ndarray) -> np.ndarray:
    return ((images - MEAN) / STD).reshape(len(images), -1)


def _nearest_mean_classifier() -> list[TensorRecord]:
    """Logits −|x − mean_c|² / 2 up to a term common to all classes: w = means, b = −|means|²/2,
    on normalized pixels."""
    train = get_dataset("digits").load("train", None)
    flat = _normalized(train.images)
    means = np.stack([flat[train.labels == digit].mean(0) for digit in range(10)])
    weights = means.astype(np.float32)
    bias = (-0.5 * (means**2).sum(1)).astype(np.float32)
    return [raw("fc.weight", weights), raw("fc.bias", bias)]


@pytest.fixture(scope="module")
def classifier(tmp_path_factory) -> Path:
    graph = helper.make_graph(
        [
            helper.make_node("Flatten", ["x"], ["f"]),
            helper.make_node("Gemm", ["f", "fc.weight", "fc.bias"], ["y"], transB=1),
        ],
        "nearest-mean",
        [value_info("x", ["batch", 1, 8, 8])],
        [value_info("y", ["batch", 10])],
        initializer=[weightless("fc.weight", (10, 64)), weightless("fc.bias", (10,))],
    )
    manifest = {
        "architecture": "nearest-mean",
        "input": {"shape": [None, 1, 8, 8], "normalization": {"mean": [MEAN], "std": [STD]}},
        "output": {"kind": "logits", "classes": DIGITS},
    }
    contents = EprContents(manifest, model_bytes(graph), _nearest_mean_classifier())
    path = tmp_path_factory.mktemp("classifier") / "nearest-mean.epr"
    path.write_bytes(encode_container(contents)[0])
    return path


def test_session_runs_a_decoded_file() -> None:
    runner = eprpipe.session(DENSE)
    assert isinstance(runner, onnxruntime.InferenceSession)
    x = np.random.default_rng(0).standard_normal((3, 24)).astype(np.float32)
    (y,) = runner.run(None, {"x": x})
    weights = eprpipe.load_weights(DENSE)
    # dense-masks.epr's graph is one Gemm: y = x @ weight.T + bias
    expected = x @ weights["fc.weight"].T + weights["fc.bias"]
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)


def test_session_takes_an_onnx_file_too(tmp_path: Path) -> None:
    onnx_path = eprpipe.write_onnx(DENSE, tmp_path / "dense.onnx")
    x = np.ones((1, 24), np.float32)
    from_onnx = eprpipe.session(onnx_path, threads=1).run(None, {"x": x})[0]
    np.testing.assert_array_equal(from_onnx, eprpipe.session(DENSE).run(None, {"x": x})[0])


def test_session_refuses_weights_larger_than_its_memory() -> None:
    with pytest.raises(eprpipe.EprError, match="MiB"):
        eprpipe.session(DENSE, max_memory=1024)


def _logits(classifier: Path, images: np.ndarray) -> np.ndarray:
    runner = eprpipe.session(classifier)
    return runner.run(None, {runner.get_inputs()[0].name: images})[0]


def test_session_normalizes_inside_the_graph(classifier: Path) -> None:
    """The manifest's mean and std are applied by the model: pixels in [0, 1] go in."""
    test = get_dataset("digits").load("test", None)
    weights = eprpipe.load_weights(classifier)
    expected = _normalized(test.images) @ weights["fc.weight"].T + weights["fc.bias"]
    np.testing.assert_allclose(_logits(classifier, test.images), expected, rtol=1e-4, atol=1e-4)


def test_evaluate_on_a_registered_dataset(classifier: Path, tmp_path: Path) -> None:
    result = eprpipe.evaluate(classifier, "digits")
    assert result.total == 360 and result.error < 0.15
    test = get_dataset("digits").load("test", None)
    logits = _logits(classifier, test.images)
    assert result.correct == int((logits.argmax(1) == test.labels).sum())
    onnx_path = eprpipe.write_onnx(classifier, tmp_path / "nearest-mean.onnx")
    assert eprpipe.evaluate(onnx_path, "digits", max_memory=64 << 20) == result


def test_evaluate_names_an_unknown_dataset(classifier: Path) -> None:
    with pytest.raises(eprpipe.PluginError, match="unknown dataset 'nope'"):
        eprpipe.evaluate(classifier, "nope")


def test_evaluate_refuses_a_file_that_is_no_classifier() -> None:
    with pytest.raises(eprpipe.EprError, match="not an image classifier"):
        eprpipe.evaluate(DENSE, "digits")
