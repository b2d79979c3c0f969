"""`eval` on format 1.1 files: an image classifier (task classification, one float32
[batch, C, H, W] input) is scored as before, its declared normalization already in the graph
and not applied again; any other 1.1 file is one clear error naming its task and inputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

import eprpipe
from eprpipe.cli import main
from eprpipe.format.container import EprContents, encode_container
from eprpipe.format.testing.graphs import model_bytes, value_info, weightless
from eprpipe.format.testing.records import raw
from eprpipe.plugins import get_dataset

ROOT = Path(__file__).resolve().parents[2]
POOLED = ROOT / "spec" / "vectors" / "valid" / "v11-pooled-embedding.epr"
MEAN, STD = 0.5, 0.5
DIGITS = [str(digit) for digit in range(10)]


def _records() -> list:
    """A nearest-mean digits classifier on normalized pixels (as in test_running_api)."""
    train = get_dataset("digits").load("train", None)
    flat = ((train.images - MEAN) / STD).reshape(len(train.images), -1)
    means = np.stack([flat[train.labels == digit].mean(0) for digit in range(10)])
    bias = (-0.5 * (means**2).sum(1)).astype(np.float32)
    return [raw("fc.weight", means.astype(np.float32)), raw("fc.bias", bias)]


def _graph(dtype: int = TensorProto.FLOAT) -> bytes:
    """x → (x − 0.5) / 0.5 → Flatten → Gemm: the normalization exported into the graph."""
    constants = [
        numpy_helper.from_array(np.full((1, 1, 1, 1), MEAN, np.float32), "pre_mean"),
        numpy_helper.from_array(np.full((1, 1, 1, 1), STD, np.float32), "pre_std"),
    ]
    cast = [helper.make_node("Cast", ["x"], ["xf"], to=TensorProto.FLOAT)]
    source = "xf" if dtype != TensorProto.FLOAT else "x"
    graph = helper.make_graph(
        [
            *(cast if dtype != TensorProto.FLOAT else []),
            helper.make_node("Sub", [source, "pre_mean"], ["c"]),
            helper.make_node("Div", ["c", "pre_std"], ["n"]),
            helper.make_node("Flatten", ["n"], ["f"]),
            helper.make_node("Gemm", ["f", "fc.weight", "fc.bias"], ["y"], transB=1),
        ],
        "nearest-mean-1.1",
        [value_info("x", ["batch", 1, 8, 8], dtype)],
        [value_info("y", ["batch", 10])],
        initializer=[*constants, weightless("fc.weight", (10, 64)), weightless("fc.bias", (10,))],
    )
    return model_bytes(graph)


def _manifest(dtype: str = "float32", kind: str = "classification") -> dict:
    normalization = {"mean": [MEAN], "std": [STD], "axis": 1}
    task = {"kind": kind, "classes": DIGITS} if kind == "classification" else {"kind": kind}
    return {
        "architecture": "nearest-mean",
        "inputs": [
            {
                "name": "x",
                "dtype": dtype,
                "shape": ["batch", 1, 8, 8],
                "preprocessing": {"normalization": normalization},
            }
        ],
        "outputs": [{"name": "y", "dtype": "float32", "shape": ["batch", 10]}],
        "task": task,
    }


def _write(path: Path, manifest: dict, graph: bytes) -> Path:
    path.write_bytes(encode_container(EprContents(manifest, graph, _records()))[0])
    assert eprpipe.validate(path).valid
    return path


def test_a_1_1_image_classifier_is_scored_and_normalized_once(tmp_path: Path) -> None:
    path = _write(tmp_path / "v11.epr", _manifest(), _graph())
    result = eprpipe.evaluate(path, "digits")
    test = get_dataset("digits").load("test", None)
    (logits,) = eprpipe.session(path).run(None, {"x": test.images.astype(np.float32)})
    assert result.total == 360 and result.error < 0.15
    assert result.correct == int((logits.argmax(1) == test.labels).sum())
    # normalizing a second time would move every pixel: the scores would differ
    doubled = ((test.images - MEAN) / STD).astype(np.float32)
    (twice,) = eprpipe.session(path).run(None, {"x": doubled})
    assert not np.allclose(twice, logits)


@pytest.mark.parametrize(
    ("manifest", "graph", "says"),
    [
        (_manifest(kind="regression"), _graph(), "task is regression"),
        (_manifest(kind="none"), _graph(), "task is none"),
        (_manifest("int32"), _graph(TensorProto.INT32), "inputs are 'x' int32"),
        ({"architecture": "x", "metadata": {"k": "v"}}, _graph(), "task is not declared and its "
         "inputs are not declared"),
        ({**_manifest(), "inputs": None}, _graph(), "its inputs are not declared"),
    ],
)  # fmt: skip
def test_any_other_1_1_file_is_one_clear_error(tmp_path: Path, manifest, graph, says, capsys):
    if manifest.get("inputs", ()) is None:
        del manifest["inputs"]
    path = _write(tmp_path / "other.epr", manifest, graph)
    with pytest.raises(eprpipe.EprError, match="eval scores image classifiers") as error:
        eprpipe.evaluate(path, "digits")
    assert says in str(error.value)
    assert main(["eval", str(path), "--dataset", "digits"]) == 1
    captured = capsys.readouterr()
    (line,) = captured.err.strip().splitlines()
    assert line.startswith("eprpipe eval: error: ") and says in line and captured.out == ""


def test_the_regression_vector_is_refused_by_name(capsys) -> None:
    assert main(["eval", str(POOLED), "--dataset", "digits"]) == 1
    err = capsys.readouterr().err
    assert (
        "task is regression and its inputs are 'tokens' int64 ['batch', 'seq'], 'mask' bool" in err
    )
