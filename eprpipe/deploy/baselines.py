"""What a user would do instead of EPR: the baseline compressions of a trained float model.

A user deciding whether to adopt eprpipe compares it with float16, zstd, uniform k-bit weights
and onnxruntime's own int8 quantization, so the benchmarks measure those on the same model and
the same test images. Every variant comes with the ONNX model its error is measured on:

- "float32", "float16", "uniform8", "uniform4" (and each "+zstd"): the weights as stored, then
  decoded back to float32 into the same graph, the honest "stored small, run as float" model.
- "ort-int8-dynamic" and "ort-int8-static-per-channel": onnxruntime.quantization's own int8
  models (dynamic; static QDQ per channel, MinMax-calibrated on training images), run as they
  are. Both start from onnxruntime's recommended pre-processing (`quant_pre_process`: its graph
  optimizations, which fold BatchNormalization into convolutions, and ONNX shape inference;
  its symbolic shape inference is skipped, as it fails on torch's exported Constant nodes).

What `payload_bytes` counts, with "+zstd" meaning the same bytes compressed by zstd level 19
as one stream:

- float32 / float16: 4 / 2 bytes per weight element, the tensors concatenated in graph order.
- uniformK: per tensor its offset and step (two little-endian float32, 8 bytes), then its
  codes packed to K bits each, MSB first, padded to a whole byte (ceil(K × elements / 8)).
- onnxruntime: the raw little-endian bytes of every initializer of the quantized model
  (quantized weights, scales, zero points, int32 or float biases, activation scales and zero
  points) except the float graph's own non-weight constants, concatenated in the quantized
  graph's order; always zstd -19 compressed.

"Weights" are the tensors named by `weights`; by default every float initializer with more
than one element (the graph's parameters, biases included; not scalars such as an epsilon).
`file_bytes` is the size of the ONNX file the variant's model is as a file (float32 and the
onnxruntime models); None where the stored form is not a runnable file.

Torch-free: numpy, onnx, onnxruntime and zstandard only.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import zstandard
from onnx import numpy_helper
from onnxruntime.quantization import (
    CalibrationDataReader,
    QuantFormat,
    quant_pre_process,
    quantize_dynamic,
    quantize_static,
)

from eprpipe.errors import EprError
from eprpipe.format.graph import runtime_inputs

ZSTD_LEVEL = 19
UNIFORM_BITS = (8, 4)
CALIBRATION_BATCH = 100  # images per calibration batch fed to onnxruntime
FLOAT_TYPES = frozenset({onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE})


@dataclass(frozen=True)
class Variant:
    """One baseline: its size (see the module docstring) and the model its error comes from."""

    name: str
    payload_bytes: int
    file_bytes: int | None
    model: onnx.ModelProto


def zstd(data: bytes) -> int:
    """Size of `data` compressed by zstd level 19 (one frame, no dictionary)."""
    return len(zstandard.ZstdCompressor(level=ZSTD_LEVEL).compress(data))


def weight_names(model: onnx.ModelProto) -> list[str]:
    """The default weights: float initializers with more than one element, in graph order."""
    return [
        init.name
        for init in model.graph.initializer
        if init.data_type in FLOAT_TYPES and int(np.prod(init.dims)) > 1
    ]


def weight_arrays(model: onnx.ModelProto, weights: Sequence[str]) -> dict[str, np.ndarray]:
    """The float32 values of the named initializers, in graph order."""
    wanted = set(weights)
    arrays = {
        init.name: numpy_helper.to_array(init).astype(np.float32)
        for init in model.graph.initializer
        if init.name in wanted
    }
    missing = wanted - set(arrays)
    if missing:
        raise EprError(f"the model has no initializers named {sorted(missing)}")
    return arrays


def with_weights(model: onnx.ModelProto, arrays: dict[str, np.ndarray]) -> onnx.ModelProto:
    """A copy of `model` with the named initializers replaced, each keeping its data type."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    for init in copy.graph.initializer:
        if init.name in arrays:
            dtype = onnx.helper.tensor_dtype_to_np_dtype(init.data_type)
            init.CopyFrom(numpy_helper.from_array(arrays[init.name].astype(dtype), init.name))
    return copy


def pack_codes(codes: np.ndarray, bits: int) -> bytes:
    """Unsigned codes below 2**bits, `bits` bits each, MSB first, padded to a whole byte."""
    if not 1 <= bits <= 8:
        raise EprError(f"codes are 1 to 8 bits wide, not {bits}")
    as_bits = np.unpackbits(codes.astype(np.uint8).reshape(-1, 1), axis=1)[:, 8 - bits :]
    return np.packbits(as_bits.reshape(-1)).tobytes()


def unpack_codes(data: bytes, bits: int, count: int) -> np.ndarray:
    """The `count` codes `pack_codes` stored in `data`."""
    as_bits = np.unpackbits(np.frombuffer(data, np.uint8))[: count * bits].reshape(count, bits)
    padded = np.zeros((count, 8), np.uint8)
    padded[:, 8 - bits :] = as_bits
    return np.packbits(padded, axis=1).reshape(-1)


def uniform_encode(values: np.ndarray, bits: int) -> bytes:
    """One tensor on a uniform grid of 2**bits levels from its minimum to its maximum: offset
    and step as float32 (what the decoder reads), then the packed codes."""
    flat = values.astype(np.float64).reshape(-1)
    levels = (1 << bits) - 1
    low = np.float32(flat.min() if flat.size else 0.0)
    step = np.float32((flat.max() - low) / levels if flat.size else 0.0)
    if step > 0:
        codes = np.clip(np.rint((flat - float(low)) / float(step)), 0, levels)
    else:
        codes = np.zeros(flat.size)
    header = np.array([low, step], dtype="<f4").tobytes()
    return header + pack_codes(codes.astype(np.uint8), bits)


def uniform_decode(data: bytes, bits: int, shape: tuple[int, ...]) -> np.ndarray:
    """The float32 tensor of `shape` that `uniform_encode` stored in `data`."""
    low, step = np.frombuffer(data[:8], dtype="<f4").astype(np.float64)
    codes = unpack_codes(data[8:], bits, int(np.prod(shape)))
    return (low + codes.astype(np.float64) * step).astype(np.float32).reshape(shape)


def _decoded_variants(
    name: str,
    stored: list[bytes],
    decoded: dict[str, np.ndarray],
    model: onnx.ModelProto,
    is_file: bool = False,
) -> list[Variant]:
    """The raw and the "+zstd" variant of one stored form; both decode to the same model,
    which is the stored form as a file too when `is_file` (float32)."""
    raw = b"".join(stored)
    run = with_weights(model, decoded)
    return [
        Variant(name, len(raw), run.ByteSize() if is_file else None, run),
        Variant(f"{name}+zstd", zstd(raw), None, run),
    ]


def float_variants(model: onnx.ModelProto, weights: Sequence[str] | None = None) -> list[Variant]:
    """float32, float16, uniform8 and uniform4 weights, each raw and zstd -19 compressed."""
    arrays = weight_arrays(model, weight_names(model) if weights is None else weights)
    variants = []
    for name, dtype in (("float32", "<f4"), ("float16", "<f2")):
        stored = [values.astype(dtype).tobytes() for values in arrays.values()]
        decoded = {
            key: np.frombuffer(data, dtype).astype(np.float32).reshape(values.shape)
            for (key, values), data in zip(arrays.items(), stored, strict=True)
        }
        variants += _decoded_variants(name, stored, decoded, model, is_file=name == "float32")
    for bits in UNIFORM_BITS:
        stored = [uniform_encode(values, bits) for values in arrays.values()]
        decoded = {
            key: uniform_decode(data, bits, values.shape)
            for (key, values), data in zip(arrays.items(), stored, strict=True)
        }
        variants += _decoded_variants(f"uniform{bits}", stored, decoded, model)
    return variants


def quantized_payload(quantized: onnx.ModelProto, constants: set[str]) -> int:
    """zstd -19 size of a quantized model's initializers, less the float graph's own
    non-weight `constants` (they are in every variant's graph alike)."""
    raw = b"".join(
        numpy_helper.to_array(init).tobytes()
        for init in quantized.graph.initializer
        if init.name not in constants
    )
    return zstd(raw)


class _Calibration(CalibrationDataReader):
    """onnxruntime's calibration reader over images, CALIBRATION_BATCH at a time, once."""

    def __init__(self, input_name: str, images: np.ndarray):
        self.batches = iter(
            {input_name: np.ascontiguousarray(images[start : start + CALIBRATION_BATCH])}
            for start in range(0, len(images), CALIBRATION_BATCH)
        )

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self.batches, None)


def ort_variants(
    model: onnx.ModelProto, calibration: np.ndarray, weights: Sequence[str] | None = None
) -> list[Variant]:
    """onnxruntime's int8 quantizations of `model`: dynamic (int8 weights, activations
    quantized at run time) and static QDQ, per channel, calibrated on `calibration` (float32
    images, as the model's input takes them)."""
    named = set(weight_names(model) if weights is None else weights)
    constants = {init.name for init in model.graph.initializer} - named
    inputs = runtime_inputs(model.graph)
    if len(inputs) != 1 or not len(calibration):
        raise EprError(
            f"static quantization calibrates a model of one input on images; this one has "
            f"{len(inputs)} inputs and {len(calibration)} calibration images"
        )
    reader = _Calibration(inputs[0].name, calibration)
    with tempfile.TemporaryDirectory(prefix="eprpipe-baselines-") as folder:
        source, prepared, dynamic, static = (
            Path(folder) / f"{name}.onnx" for name in ("float", "prepared", "dynamic", "static")
        )
        onnx.save(model, source)
        quant_pre_process(source, prepared, skip_symbolic_shape=True)
        quantize_dynamic(prepared, dynamic)
        quantize_static(prepared, static, reader, quant_format=QuantFormat.QDQ, per_channel=True)
        models = {
            "ort-int8-dynamic": onnx.load(dynamic),
            "ort-int8-static-per-channel": onnx.load(static),
        }
    return [
        Variant(name, quantized_payload(quantized, constants), quantized.ByteSize(), quantized)
        for name, quantized in models.items()
    ]


def variants(
    model: onnx.ModelProto, calibration: np.ndarray, weights: Sequence[str] | None = None
) -> list[Variant]:
    """Every baseline of a float32 model whose weights are initializers."""
    return [*float_variants(model, weights), *ort_variants(model, calibration, weights)]
