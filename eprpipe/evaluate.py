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


def evaluate_model(model: onnx.ModelProto, images: np.ndarray, labels: np.ndarray) -> EvalResult:
    """Top-1 accuracy on `images` (float32 in [0, 1], NCHW), in fixed batches of 1,000."""
    runner = session(model)
    input_name = runner.get_inputs()[0].name
    correct = 0
    for start in range(0, len(labels), EVAL_BATCH):
        batch = np.ascontiguousarray(images[start : start + EVAL_BATCH], dtype=np.float32)
        logits = runner.run(None, {input_name: batch})[0]
        correct += int((logits.argmax(1) == labels[start : start + EVAL_BATCH]).sum())
    return EvalResult(correct=correct, total=len(labels))
