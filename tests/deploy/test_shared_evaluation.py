"""Evaluation of one process's share of a split with onnxruntime: parts, sums, progress bar.

Torch-free; the training side of shared evaluation is tests/train/test_train_evaluation.py.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from eprpipe.data.datasets import ImageFiles, part_of
from eprpipe.deploy import evaluate


def test_part_of_takes_examples_of_arrays_and_files_without_reading() -> None:
    images = np.arange(40, dtype=np.float32).reshape(10, 1, 2, 2)
    labels = np.arange(10) % 2
    part_images, part_labels = part_of((images, labels), slice(3, 7))
    assert np.array_equal(part_images, images[3:7]) and np.array_equal(part_labels, labels[3:7])

    def never_read(*_):
        raise AssertionError("part_of must not decode files")

    files = ImageFiles(tuple(f"{i}.png" for i in range(10)), labels, ("h", "v"), never_read)
    part = part_of(files, slice(3, 7))
    assert part.paths == files.paths[3:7] and np.array_equal(part.labels, labels[3:7])


def _linear_onnx() -> onnx.ModelProto:
    """(N, 1, 2, 2) → Flatten → MatMul (4 × 3): three classes, enough to evaluate."""
    weights = numpy_helper.from_array(np.eye(4, 3, dtype=np.float32), "weights")
    graph = helper.make_graph(
        [
            helper.make_node("Flatten", ["x"], ["flat"]),
            helper.make_node("MatMul", ["flat", "weights"], ["y"]),
        ],
        "linear",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [None, 1, 2, 2])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [None, 3])],
        [weights],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_a_lasting_evaluation_shows_a_bar_with_its_rate(monkeypatch, capsys) -> None:
    images = np.random.default_rng(0).uniform(0, 1, (2500, 1, 2, 2)).astype(np.float32)
    labels = images.reshape(-1, 4)[:, :3].argmax(1)
    monkeypatch.setattr(evaluate, "PROGRESS_DELAY_S", 0.0)
    quiet = evaluate.evaluate_split(_linear_onnx(), (images, labels))
    assert quiet.correct == 2500 and capsys.readouterr().err == ""
    shown = evaluate.evaluate_split(_linear_onnx(), (images, labels), progress=True)
    assert shown == quiet
    bar = capsys.readouterr().err
    assert "evaluating (onnxruntime)" in bar and "/2500" in bar and "img/s" in bar


def test_a_short_evaluation_prints_no_bar(capsys) -> None:
    images = np.zeros((10, 1, 2, 2), np.float32)
    evaluate.evaluate_split(_linear_onnx(), (images, np.zeros(10, np.int64)), progress=True)
    assert capsys.readouterr().err == ""


def test_a_process_with_no_examples_to_evaluate_counts_nothing() -> None:
    """More processes than test images: some parts are empty, and add zero to the sums."""
    images = np.zeros((3, 1, 2, 2), np.float32)
    labels = np.zeros(3, np.int64)
    empty = part_of((images, labels), slice(0, 0))  # rank 0's share of 3 among 4
    assert evaluate.evaluate_split(_linear_onnx(), empty) == evaluate.EvalResult(0, 0)
