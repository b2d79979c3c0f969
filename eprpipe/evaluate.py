"""Accuracy of an ONNX model under onnxruntime, without torch: the numbers we report."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
import onnxruntime as ort

EVAL_BATCH = 1000


@dataclass(frozen=True)
class EvalResult:
    correct: int
    total: int

    @property
    def error(self) -> float:
        return 1.0 - self.correct / self.total


def session(model: onnx.ModelProto) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(
        model.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )


def predict(model: onnx.ModelProto, images: np.ndarray) -> np.ndarray:
    """Top-1 class of each image (float32 in [0, 1], NCHW), in fixed batches of 1,000."""
    runner = session(model)
    input_name = runner.get_inputs()[0].name
    classes = []
    for start in range(0, len(images), EVAL_BATCH):
        batch = np.ascontiguousarray(images[start : start + EVAL_BATCH], dtype=np.float32)
        classes.append(runner.run(None, {input_name: batch})[0].argmax(1))
    return np.concatenate(classes) if classes else np.zeros(0, dtype=np.int64)


def evaluate_model(model: onnx.ModelProto, images: np.ndarray, labels: np.ndarray) -> EvalResult:
    """Top-1 accuracy on `images` (float32 in [0, 1], NCHW)."""
    correct = int((predict(model, images) == labels).sum())
    return EvalResult(correct=correct, total=len(labels))
