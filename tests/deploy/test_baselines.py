"""The baseline compressions (eprpipe.deploy.baselines) on a small float model built without
torch: stored sizes, decoded weights, and onnxruntime's quantized models running."""

from __future__ import annotations

import math

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import zstandard
from onnx import helper, numpy_helper

from eprpipe.deploy import baselines, evaluate
from eprpipe.format.testing.graphs import IR_VERSION, OPSET

CONV = (8, 1, 3, 3)  # out, in, kh, kw on 6 x 6 images: 8 x 4 x 4 = 128 features
CLASSES = 10


def _model(weights: dict[str, np.ndarray]) -> onnx.ModelProto:
    """x [n, 1, 6, 6] → Conv → Relu → Flatten → Gemm → Add(shift): a small image classifier.
    "shift" is a one-element constant: not a weight."""
    initializers = [numpy_helper.from_array(v, k) for k, v in weights.items()]
    initializers.append(numpy_helper.from_array(np.array([0.5], np.float32), "shift"))
    graph = helper.make_graph(
        [
            helper.make_node("Conv", ["x", "conv.weight", "conv.bias"], ["c"]),
            helper.make_node("Relu", ["c"], ["r"]),
            helper.make_node("Flatten", ["r"], ["f"]),
            helper.make_node("Gemm", ["f", "fc.weight", "fc.bias"], ["g"], transB=1),
            helper.make_node("Add", ["g", "shift"], ["y"]),
        ],
        "small",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [None, 1, 6, 6])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [None, CLASSES])],
        initializer=initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = IR_VERSION
    return model


def _random_weights(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    shapes = {
        "conv.weight": CONV,
        "conv.bias": (CONV[0],),
        "fc.weight": (CLASSES, CONV[0] * 16),
        "fc.bias": (CLASSES,),
    }
    return {name: rng.normal(0, 0.3, shape).astype(np.float32) for name, shape in shapes.items()}


def _compressible_weights() -> dict[str, np.ndarray]:
    """Mostly zeros and a few repeated values: what zstd must shrink."""
    weights = _random_weights(1)
    for name, values in weights.items():
        values[np.abs(values) < 0.4] = 0.0
        weights[name] = np.round(values, 1)
    return weights


def _initializer(model: onnx.ModelProto, name: str) -> np.ndarray:
    return next(numpy_helper.to_array(i) for i in model.graph.initializer if i.name == name)


def _by_name(variants: list[baselines.Variant]) -> dict[str, baselines.Variant]:
    return {variant.name: variant for variant in variants}


def _images(count: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).random((count, 1, 6, 6), dtype=np.float32)


def test_weights_are_float_initializers_of_more_than_one_element_in_graph_order() -> None:
    assert baselines.weight_names(_model(_random_weights())) == [
        "conv.weight",
        "conv.bias",
        "fc.weight",
        "fc.bias",
    ]


@pytest.mark.parametrize("bits", range(1, 9))
@pytest.mark.parametrize("count", [1, 7, 64, 101])
def test_packed_codes_take_bits_each_and_unpack_to_themselves(bits: int, count: int) -> None:
    codes = np.random.default_rng(bits * count).integers(0, 1 << bits, count).astype(np.uint8)
    packed = baselines.pack_codes(codes, bits)
    assert len(packed) == math.ceil(count * bits / 8)
    assert np.array_equal(baselines.unpack_codes(packed, bits, count), codes)


def test_codes_are_packed_msb_first() -> None:
    assert baselines.pack_codes(np.array([1, 2, 3]), 4) == bytes([0x12, 0x30])
    assert baselines.pack_codes(np.array([1, 0, 1]), 1) == bytes([0b10100000])


def test_float_payloads_are_the_stored_bytes() -> None:
    weights = _random_weights()
    elements = sum(v.size for v in weights.values())
    found = _by_name(baselines.float_variants(_model(weights)))
    assert found["float32"].payload_bytes == 4 * elements
    assert found["float16"].payload_bytes == 2 * elements
    for bits in (8, 4):
        stored = sum(8 + math.ceil(v.size * bits / 8) for v in weights.values())
        assert found[f"uniform{bits}"].payload_bytes == stored
    raw = b"".join(v.astype("<f4").tobytes() for v in weights.values())
    assert found["float32+zstd"].payload_bytes == len(
        zstandard.ZstdCompressor(level=19).compress(raw)
    )
    assert found["float32"].file_bytes == len(found["float32"].model.SerializeToString())
    assert found["float16"].file_bytes is None


def test_decoded_weights_are_within_half_a_step_of_the_originals() -> None:
    weights = _random_weights()
    found = _by_name(baselines.float_variants(_model(weights)))
    for name, values in weights.items():
        assert np.array_equal(_initializer(found["float32"].model, name), values)
        half = values.astype(np.float16).astype(np.float32)
        assert np.array_equal(_initializer(found["float16+zstd"].model, name), half)
        for bits in (8, 4):
            decoded = _initializer(found[f"uniform{bits}"].model, name)
            assert decoded.dtype == np.float32 and decoded.shape == values.shape
            step = (values.max() - values.min()) / ((1 << bits) - 1)
            error = np.abs(decoded - values).max()
            assert error <= step / 2 * (1 + 1e-5) + 1e-7
            assert error > 0  # the weights really went through the quantizer
            assert len(np.unique(decoded)) <= 1 << bits
    for variant in found.values():
        assert _initializer(variant.model, "shift")[0] == 0.5
        assert [n.op_type for n in variant.model.graph.node] == [
            "Conv",
            "Relu",
            "Flatten",
            "Gemm",
            "Add",
        ]


def test_a_constant_tensor_decodes_exactly() -> None:
    values = np.full((3, 5), -1.25, np.float32)
    for bits in (8, 4):
        stored = baselines.uniform_encode(values, bits)
        assert len(stored) == 8 + math.ceil(15 * bits / 8)
        assert np.array_equal(baselines.uniform_decode(stored, bits, (3, 5)), values)


def test_zstd_shrinks_compressible_weights() -> None:
    found = _by_name(baselines.float_variants(_model(_compressible_weights())))
    for name in ("float32", "float16", "uniform8", "uniform4"):
        assert found[f"{name}+zstd"].payload_bytes < found[name].payload_bytes / 2, name


def test_onnxruntime_int8_models_are_quantized_run_and_agree_with_the_float_model() -> None:
    weights = _random_weights()
    model = _model(weights)
    images = _images(256, seed=1)
    found = _by_name(baselines.ort_variants(model, _images(200, seed=2)))
    assert set(found) == {"ort-int8-dynamic", "ort-int8-static-per-channel"}
    reference = ort.InferenceSession(model.SerializeToString()).run(None, {"x": images})[0]
    float_classes = reference.argmax(1)
    float_raw = 4 * sum(v.size for v in weights.values())
    for name, variant in found.items():
        types = {i.name: i.data_type for i in variant.model.graph.initializer}
        int8 = {onnx.TensorProto.INT8, onnx.TensorProto.UINT8}
        for weight in ("conv.weight", "fc.weight"):  # stored as int8, the float copy gone
            stored = [t for n, t in types.items() if n.startswith(weight) and "quantized" in n]
            assert stored and set(stored) <= int8 and weight not in types, (name, weight)
        scales = {
            i.name: list(i.dims)
            for i in variant.model.graph.initializer
            if i.name.startswith(("conv.weight", "fc.weight")) and i.name.endswith("_scale")
        }
        if "per-channel" in name:  # one scale per output channel
            assert scales == {"conv.weight_scale": [CONV[0]], "fc.weight_scale": [CLASSES]}
        else:  # one per tensor
            assert len(scales) == 2 and all(dims == [] for dims in scales.values()), scales
        outputs = ort.InferenceSession(variant.model.SerializeToString()).run(None, {"x": images})
        assert np.abs(outputs[0] - reference).max() < 0.05 * np.abs(reference).max(), name
        same = (evaluate.predict(variant.model, images, threads=1) == float_classes).mean()
        assert same >= 0.9, (name, same)
        counted = b"".join(
            numpy_helper.to_array(i).tobytes()
            for i in variant.model.graph.initializer
            if i.name != "shift"
        )
        assert variant.payload_bytes == len(zstandard.ZstdCompressor(level=19).compress(counted))
        assert variant.payload_bytes < float_raw / 2, name
        assert variant.file_bytes == variant.model.ByteSize()


def test_decoded_float_variants_classify_like_the_float_model() -> None:
    model = _model(_random_weights())
    images = _images(256, seed=3)
    reference = evaluate.predict(model, images, threads=1)
    found = _by_name(baselines.float_variants(model))
    for name in ("float32", "float16", "uniform8"):
        same = (evaluate.predict(found[name].model, images, threads=1) == reference).mean()
        assert same >= (1.0 if name == "float32" else 0.95), (name, same)


def test_static_quantization_needs_calibration_images() -> None:
    with pytest.raises(baselines.EprError, match="calibrat"):
        baselines.ort_variants(_model(_random_weights()), np.zeros((0, 1, 6, 6), np.float32))
