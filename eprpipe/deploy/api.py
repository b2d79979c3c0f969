"""The deploy wing's public functions: run a decoded model under onnxruntime, and measure it on
a registered dataset (`import eprpipe` exports them; onnxruntime loads with this module).

Both take an .epr file or an ONNX file and hold onnxruntime to a memory cap, because a valid
file's graph decides how much it computes.
"""

from __future__ import annotations

import os
from pathlib import Path

import onnx
import onnxruntime as ort

from eprpipe.deploy.decode import evaluate_file, load_onnx
from eprpipe.deploy.evaluate import DEFAULT_RUNTIME_MEMORY, EvalResult, RunLimits
from eprpipe.deploy.evaluate import session as bounded_session
from eprpipe.format.api import decode
from eprpipe.format.limits import DEFAULT_LIMITS, ReadLimits

PathLike = str | os.PathLike


def _model(path: Path, limits: ReadLimits) -> onnx.ModelProto:
    """The runnable model: an ONNX file as it is, an .epr file decoded."""
    return load_onnx(path) if path.suffix == ".onnx" else decode(path, limits=limits)


def session(
    path: PathLike,
    *,
    threads: int | None = None,
    max_memory: int = DEFAULT_RUNTIME_MEMORY,
    limits: ReadLimits = DEFAULT_LIMITS,
) -> ort.InferenceSession:
    """An onnxruntime CPU session on an .epr file (decoded first) or an ONNX file.

    Its tensors come from one arena of `max_memory` bytes (the weights must take less);
    `threads` caps its intra-op threads (None: one per core). Feed it what the manifest's
    `input` declares.

        >>> import eprpipe, numpy as np
        >>> runner = eprpipe.session("spec/vectors/valid/dense-masks.epr")
        >>> [(value.name, value.shape) for value in runner.get_inputs()]
        [('x', ['n', 24])]
        >>> runner.run(None, {"x": np.ones((2, 24), np.float32)})[0].shape
        (2, 24)
    """
    path = Path(path)
    return bounded_session(_model(path, limits), threads, max_memory=max_memory, source=str(path))


def evaluate(
    path: PathLike,
    dataset: str,
    *,
    data_dir: PathLike | None = None,
    max_memory: int = DEFAULT_RUNTIME_MEMORY,
    time_limit: float | None = None,
    limits: ReadLimits = DEFAULT_LIMITS,
    progress: bool = False,
) -> EvalResult:
    """Top-1 accuracy of an .epr file's decoded model (or an ONNX model) on the test split of
    a registered dataset, under onnxruntime, the images fitted to the model's declared input.

    `max_memory` bytes for onnxruntime's tensors, `time_limit` seconds for the whole run
    (None: none); `data_dir` as `eprpipe compress --data-dir`.

        >>> import eprpipe
        >>> result = eprpipe.evaluate("demo.epr", "digits")  # doctest: +SKIP
        >>> print(f"test error {result.error:.2%} on {result.total} images")  # doctest: +SKIP
    """
    result, _ = evaluate_file(
        Path(path),
        dataset,
        None if data_dir is None else Path(data_dir),
        limits,
        progress,
        run_limits=RunLimits(max_memory, time_limit),
    )
    return result
