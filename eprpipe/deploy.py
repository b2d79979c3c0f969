"""The deployment path: .epr → ONNX → onnxruntime, with numpy, onnx and onnxruntime only.

Nothing here may import torch; tests/test_torch_free.py runs it with torch made unimportable.
"""

from __future__ import annotations

import json
from pathlib import Path

import onnx

from eprpipe.atomic import write_atomically
from eprpipe.container import read_epr
from eprpipe.datasets import fit
from eprpipe.errors import EprError, FormatError
from eprpipe.evaluate import EvalResult, evaluate_split
from eprpipe.limits import DEFAULT_LIMITS, ReadLimits
from eprpipe.onnx_build import build_onnx, parse_graph
from eprpipe.plugins import get_dataset

MAX_ONNX_BYTES = 2**31


def decode_file(path: Path, limits: ReadLimits = DEFAULT_LIMITS) -> onnx.ModelProto:
    """An .epr file → a self-contained ONNX model with its weights decoded from the latents."""
    contents, _ = read_epr(path, limits=limits)
    return build_onnx(contents)


def save_onnx(model: onnx.ModelProto, path: Path, *, inputs: tuple[Path, ...] = ()) -> None:
    """Write the model as one file, atomically."""
    write_atomically(path, model.SerializeToString(), inputs=inputs)


def load_onnx(path: Path) -> onnx.ModelProto:
    """Read an ONNX file without letting onnx follow external-data references."""
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > MAX_ONNX_BYTES:
            raise EprError(f"{path}: {size:,} bytes is larger than the {MAX_ONNX_BYTES:,} allowed")
        data = path.read_bytes()
    except OSError as error:
        raise EprError(f"cannot read {path}: {error.strerror}") from None
    try:
        return parse_graph(data)
    except FormatError as error:
        raise EprError(f"{path}: {error}") from None


def model_input_shape(model: onnx.ModelProto) -> tuple[int, int, int]:
    """(C, H, W) the model takes: from eprpipe's metadata, else from the graph's input."""
    for entry in model.metadata_props:
        if entry.key == "eprpipe.input":
            shape = json.loads(entry.value).get("shape")
            if shape and len(shape) == 4:
                return tuple(int(d) for d in shape[1:])
    dims = model.graph.input[0].type.tensor_type.shape.dim
    if len(dims) != 4 or not all(d.HasField("dim_value") for d in dims[1:]):
        raise EprError("cannot tell the model's (C, H, W) input shape")
    return tuple(d.dim_value for d in dims[1:])


def evaluate_file(
    path: Path,
    dataset: str,
    data_dir: Path | None,
    limits: ReadLimits = DEFAULT_LIMITS,
    progress: bool = False,
) -> tuple[EvalResult, str]:
    """Test error of an .epr file or ONNX model on a registered dataset's test split (with a
    progress bar on stderr, if asked for, once the evaluation lasts)."""
    path = Path(path)
    model = load_onnx(path) if path.suffix == ".onnx" else decode_file(path, limits)
    spec = get_dataset(dataset)
    test = fit(spec.load("test", data_dir), model_input_shape(model))
    return evaluate_split(model, test, progress=progress), "test images"
