"""The deployment path: .epr → ONNX → onnxruntime, with numpy, onnx and onnxruntime only.

Nothing here may import torch: the import contracts in pyproject.toml forbid it, and the CI job
without torch runs this wing's tests in an environment where torch is not installed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TypeGuard

import onnx

from eprpipe.data.datasets import Shape3
from eprpipe.deploy.evaluate import (
    DEFAULT_RUN_LIMITS,
    EvalResult,
    RunLimits,
    classifier,
    evaluate_loaded,
    images_per_batch,
)
from eprpipe.errors import EprError, FormatError
from eprpipe.format.container import EprContents, read_epr
from eprpipe.format.graph import build_onnx, parse_graph
from eprpipe.format.limits import DEFAULT_LIMITS, ReadLimits
from eprpipe.format.manifest import MINOR_1_1, check_manifest, input_shape, inputs, task
from eprpipe.format.sources import open_regular
from eprpipe.plugins.manager import get_dataset

MAX_ONNX_BYTES = 2**31


def load_onnx(path: Path) -> onnx.ModelProto:
    """Read an ONNX file without letting onnx follow external-data references.

    Only a regular file is read, and no further than the size it had when opened: a FIFO
    would block and /dev/zero would never end.
    """
    path = Path(path)
    with open_regular(path) as source:
        if source.size > MAX_ONNX_BYTES:
            raise EprError(
                f"{path}: {source.size:,} bytes is larger than the {MAX_ONNX_BYTES:,} allowed"
            )
        try:
            data = source.read(0, source.size)
        except FormatError as error:  # it shrank while read: not an .epr defect with a code
            raise EprError(str(error)) from None
    try:
        return parse_graph(data)
    except FormatError as error:
        raise EprError(f"{path}: {error}") from None


Declared = tuple[int | None, ...] | None  # a manifest's input.shape, batch entry first


def declared_input_shape(model: onnx.ModelProto, source: str) -> Declared:
    """input.shape from an ONNX file's `eprpipe.input` metadata, or None if it has none.

    Nothing checked this metadata when the file was read, so it gets the manifest's checks.
    """
    text = next((e.value for e in model.metadata_props if e.key == "eprpipe.input"), None)
    if text is None:
        return None
    try:
        spec = json.loads(text)
    except (ValueError, RecursionError):
        raise EprError(f"{source}: metadata eprpipe.input is not JSON") from None
    problem = check_manifest({"input": spec})
    if problem:
        raise EprError(f"{source}: metadata eprpipe.{problem}")
    return input_shape({"input": spec})


def image_shape(model: onnx.ModelProto, declared: Declared, source: str) -> Shape3:
    """(C, H, W) to feed: the declared shape, else the graph input's fixed dims; either must
    agree with the graph, and one image must fit an evaluation batch."""
    dims = classifier(model, source).dims
    if declared is not None and len(declared) != 4:
        raise EprError(
            f"{source} is not an image classifier: its input shape has {len(declared)} "
            "entries, not [batch, channels, height, width]"
        )
    if declared is not None and dims is not None:
        clash = [i for i in range(1, 4) if dims[i] is not None and dims[i] != declared[i]]
        if clash:
            raise EprError(
                f"{source}: the graph input's dims {list(dims[1:])} differ from the declared "
                f"input shape {list(declared[1:])}"
            )
    shape = declared[1:] if declared is not None else dims[1:] if dims is not None else ()
    if not _is_image_shape(shape):
        raise EprError(f"{source}: cannot tell the (C, H, W) input shape the model takes")
    images_per_batch(shape)
    return shape


def _is_image_shape(shape: tuple[int | None, ...]) -> TypeGuard[Shape3]:
    """Three positive dims (C, H, W): what a batch of images is built from."""
    return len(shape) == 3 and all(isinstance(d, int) and d >= 1 for d in shape)


def _model_and_shape(path: Path, limits: ReadLimits) -> tuple[onnx.ModelProto, Declared]:
    """The runnable model and the input shape its file declares (None: the file has none)."""
    if path.suffix == ".onnx":
        model = load_onnx(path)
        return model, declared_input_shape(model, str(path))
    contents, _ = read_epr(path, limits=limits)
    if contents.minor >= MINOR_1_1:
        declared = scored_image_shape(contents, str(path))
        return build_onnx(contents), declared
    return build_onnx(contents), input_shape(contents.manifest)


def scored_image_shape(contents: EprContents, source: str) -> Declared:
    """The input shape of a format 1.1 file that eval can score, symbolic dims as None: its
    task is classification and its one input a float32 [batch, C, H, W] tensor (the graph
    already normalizes it). Any other 1.1 file is one clear EprError."""
    kind = task(contents.manifest, contents.minor)
    declared = inputs(contents.manifest, contents.minor)
    if (
        kind is not None
        and kind.kind == "classification"
        and declared is not None
        and len(declared) == 1
        and declared[0].dtype == "float32"
        and len(declared[0].shape) == 4
    ):
        return tuple(None if isinstance(d, str) else d for d in declared[0].shape)
    shown = (
        "not declared"
        if declared is None
        else ", ".join(f"{s.name!r} {s.dtype} {list(s.shape)}" for s in declared)
    )
    raise EprError(
        f"{source}: eval scores image classifiers (task classification, one float32 input "
        f"[batch, channels, height, width]); this file's task is "
        f"{kind.kind if kind is not None else 'not declared'} and its inputs are {shown}"
    )


def evaluate_file(
    path: Path,
    dataset: str,
    data_dir: Path | None,
    limits: ReadLimits = DEFAULT_LIMITS,
    progress: bool = False,
    *,
    run_limits: RunLimits = DEFAULT_RUN_LIMITS,
) -> tuple[EvalResult, str]:
    """Test error of an .epr file or ONNX model on a registered dataset's test split (with a
    progress bar on stderr, if asked for, once the evaluation lasts), onnxruntime held to
    `run_limits` (memory for its tensors, wall time)."""
    path = Path(path)
    model, declared = _model_and_shape(path, limits)
    shape = image_shape(model, declared, str(path))
    split = get_dataset(dataset).load("test", data_dir)
    result = evaluate_loaded(
        model, split, shape, progress=progress, source=str(path), limits=run_limits
    )
    return result, "test images"
