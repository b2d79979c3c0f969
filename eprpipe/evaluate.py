"""Accuracy of an ONNX model under onnxruntime, without torch: the numbers we report."""

from __future__ import annotations

import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import onnx
import onnxruntime as ort
from tqdm import tqdm

from eprpipe.datasets import ImageFiles, Prepared, as_float

EVAL_BATCH = 1000
FILE_BATCH = 250  # images decoded at a time from files: 250 × 3 × 224 × 224 floats is 150 MB
PROGRESS_DELAY_S = 2.0  # an evaluation that ends sooner prints no bar


@dataclass(frozen=True)
class EvalResult:
    correct: int
    total: int

    @property
    def error(self) -> float:
        return 1.0 - self.correct / self.total


def session(model: onnx.ModelProto, threads: int | None = None) -> ort.InferenceSession:
    """An onnxruntime CPU session; `threads` caps its intra-op threads (None: its default, one
    per core), for processes that share a machine."""
    options = ort.SessionOptions()
    options.log_severity_level = 3
    if threads is not None:
        options.intra_op_num_threads = threads
    return ort.InferenceSession(
        model.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )


def progress_bar(total: int, description: str, enabled: bool) -> tqdm:
    """A bar (rate, ETA) on stderr for an evaluation of `total` images, shown only once it has
    run for PROGRESS_DELAY_S: ImageNet's 50,000 images take minutes, a digits split a blink."""
    return tqdm(
        total=total,
        desc=description,
        unit="img",
        delay=PROGRESS_DELAY_S,
        disable=not enabled,
        leave=False,
        dynamic_ncols=True,
    )


def _classify(
    model: onnx.ModelProto,
    batches: Iterator[np.ndarray],
    total: int,
    threads: int | None = None,
    progress: bool = False,
) -> np.ndarray:
    runner = session(model, threads)
    input_name = runner.get_inputs()[0].name
    classes = []
    with progress_bar(total, "evaluating (onnxruntime)", progress) as bar:
        for batch in batches:
            classes.append(runner.run(None, {input_name: batch})[0].argmax(1))
            bar.update(len(batch))
    return np.concatenate(classes) if classes else np.zeros(0, dtype=np.int64)


def predict(
    model: onnx.ModelProto,
    images: np.ndarray,
    threads: int | None = None,
    progress: bool = False,
) -> np.ndarray:
    """Top-1 class of each image (uint8 0..255 or float32 in [0, 1], NCHW), 1,000 at a time."""
    return _classify(
        model,
        (
            np.ascontiguousarray(as_float(images[start : start + EVAL_BATCH]))
            for start in range(0, len(images), EVAL_BATCH)
        ),
        len(images),
        threads,
        progress,
    )


def file_batches(files: ImageFiles, threads: int) -> Iterator[np.ndarray]:
    """The evaluation view of every file, in order, decoded by `threads` threads (Pillow
    releases the GIL while it decodes and resizes)."""
    order = np.arange(len(files))
    with ThreadPoolExecutor(max_workers=threads) as pool:
        for start in range(0, len(order), FILE_BATCH):
            chunks = np.array_split(order[start : start + FILE_BATCH], threads)
            parts = pool.map(files.read_batch, [chunk for chunk in chunks if len(chunk)])
            yield as_float(np.concatenate(list(parts)))


def predict_files(
    model: onnx.ModelProto,
    files: ImageFiles,
    threads: int | None = None,
    progress: bool = False,
) -> np.ndarray:
    """Top-1 class of every image of an on-disk split, decoded a batch at a time by `threads`
    threads (None: one per core) while onnxruntime classifies with as many."""
    batches = file_batches(files, threads or os.cpu_count() or 1)
    return _classify(model, batches, len(files), threads, progress)


def evaluate_model(
    model: onnx.ModelProto,
    images: np.ndarray,
    labels: np.ndarray,
    threads: int | None = None,
    progress: bool = False,
) -> EvalResult:
    """Top-1 accuracy on `images` (uint8 or float32 in [0, 1], NCHW)."""
    correct = int((predict(model, images, threads, progress) == labels).sum())
    return EvalResult(correct=correct, total=len(labels))


def evaluate_split(
    model: onnx.ModelProto,
    split: Prepared,
    threads: int | None = None,
    progress: bool = False,
) -> EvalResult:
    """Top-1 accuracy on a prepared split, in memory or on disk, on `threads` threads (None:
    one per core), with a progress bar when asked for and the work lasts."""
    if isinstance(split, ImageFiles):
        correct = int((predict_files(model, split, threads, progress) == split.labels).sum())
        return EvalResult(correct=correct, total=len(split))
    return evaluate_model(model, *split, threads=threads, progress=progress)
