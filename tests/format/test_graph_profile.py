"""The graph profile (spec 4.2) and a bounded evaluation: what an outside attacker sent.

Each hostile graph is put into a real container (the test vectors' base file with its GRPH
and META sections replaced) and run through the real CLI: `validate` names the broken
rule, and `decode` and `eval` fail with one error line, or succeed, never with a traceback. A
graph with no initializers needs none of the base file's records, which the profile allows.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from eprpipe.cli import main
from eprpipe.format.container import EprContents, encode_container
from eprpipe.format.testing.graphs import IR_VERSION, OPSET, weightless
from eprpipe.format.testing.records import raw
from eprpipe.format.testing.sections import canonical_json, replace_section, zstd
from eprpipe.format.testing.vectors import base_file
from eprpipe.plugins.manager import get_dataset

FLOAT, INT64 = TensorProto.FLOAT, TensorProto.INT64
DIGITS = [str(digit) for digit in range(10)]
CLASSIFIER = {"input": {"shape": [None, 1, 8, 8]}, "output": {"kind": "logits", "classes": DIGITS}}
IMAGE = ("x", FLOAT, ["batch", 1, 8, 8])
MEMORY_BOUND_MB = 384  # peak RSS of an eval that refuses a 4 GiB tensor (it takes ~170 MB)


def _value(value: tuple | onnx.ValueInfoProto) -> onnx.ValueInfoProto:
    """(name, element type, dims) as a tensor's value info; a ValueInfoProto as it is."""
    return (
        value if isinstance(value, onnx.ValueInfoProto) else helper.make_tensor_value_info(*value)
    )


def _model(
    nodes: list[onnx.NodeProto],
    inputs: list[tuple],
    outputs: list[tuple],
    *,
    opsets: tuple[tuple[str, int], ...] = (("", OPSET),),
    ir: int = IR_VERSION,
    initializers: tuple[onnx.TensorProto, ...] = (),
) -> bytes:
    graph = helper.make_graph(
        nodes,
        "attack",
        [_value(value) for value in inputs],
        [_value(value) for value in outputs],
        initializer=list(initializers),
    )
    opset_imports = [helper.make_opsetid(domain, version) for domain, version in opsets]
    model = helper.make_model(graph, opset_imports=opset_imports)
    model.ir_version = ir
    return model.SerializeToString()


def _flatten_to(output: tuple, *more: onnx.NodeProto, **options) -> bytes:
    """x [batch, 1, 8, 8] → Flatten → f [batch, 64], then `more` nodes, giving `output`."""
    nodes = [helper.make_node("Flatten", ["x"], ["f" if more else output[0]]), *more]
    return _model(nodes, [IMAGE], [output], **options)


def _epr(folder: Path, graph: bytes, manifest: dict = CLASSIFIER, name: str = "case") -> Path:
    data = replace_section(base_file(), b"GRPH", zstd(graph))
    data = replace_section(data, b"META", zstd(canonical_json(manifest)))
    path = folder / f"{name}.epr"
    path.write_bytes(data)
    return path


def _cli(capfd, *args: str) -> tuple[int, str, str]:
    """Exit code, stdout and stderr (onnxruntime's own log lines included)."""
    capfd.readouterr()
    code = main(list(args))
    out, err = capfd.readouterr()
    return code, out, err


def _one_error(code: int, err: str, command: str) -> str:
    assert code == 1 and "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"eprpipe {command}: error: "), err
    return lines[0]


def _eval(capfd, path: Path, *more: str) -> tuple[int, str, str]:
    return _cli(capfd, "eval", str(path), "--dataset", "digits", *more)


RELU = helper.make_node("Relu", ["f"], ["y"])
LOGITS = ("y", FLOAT, ["batch", 10])
INVALID = {  # name: (graph, manifest, code validate reports, words of its message)
    "opset-999": (_flatten_to(LOGITS, RELU, opsets=(("", 999),)), CLASSIFIER, "graph-invalid",
                  "opset version 999"),
    "opset-22": (_flatten_to(LOGITS, RELU, opsets=(("", 22),)), CLASSIFIER, "graph-invalid",
                 "opset version 22"),
    "ir-version-11": (_flatten_to(LOGITS, RELU, ir=11), CLASSIFIER, "graph-invalid",
                      "IR version 11"),
    "two-default-opsets": (_flatten_to(LOGITS, RELU, opsets=(("", 20), ("ai.onnx", 21))),
                           CLASSIFIER, "graph-invalid", "2 times"),
    "no-nodes-no-outputs": (_model([], [IMAGE], []), {}, "graph-invalid", "no output"),
    "sequence-output": (_model([helper.make_node("SequenceEmpty", [], ["s"])], [IMAGE],
                               [helper.make_tensor_sequence_value_info("s", FLOAT, None)]),
                        {}, "graph-invalid", "'s' is not a tensor of a known element type"),
    "node-in-ai.onnx": (_model([helper.make_node("Flatten", ["x"], ["y"], domain="ai.onnx")],
                               [IMAGE], [("y", FLOAT, ["batch", 64])]), {}, "graph-domain",
                        "default domain"),
    "argmax-as-logits": (_flatten_to(("y", INT64, ["batch"]),
                                     helper.make_node("ArgMax", ["f"], ["y"], keepdims=0)),
                         CLASSIFIER, "graph-mismatch", "not a FLOAT tensor [batch, classes]"),
    "64-logits-10-classes": (_flatten_to(("y", FLOAT, ["batch", 64]), RELU), CLASSIFIER,
                             "graph-mismatch", "64 classes, the manifest names 10"),
    "input-not-the-declared-shape": (
        _model([helper.make_node("Flatten", ["x"], ["y"])], [("x", FLOAT, ["b", 1, 28, 28])],
               [("y", FLOAT, ["b", 784])]), {**CLASSIFIER, "output": {"kind": "logits"}},
        "graph-mismatch", "input.shape"),
    "declared-output-shape-lies": (_flatten_to(LOGITS, RELU), {}, "graph-invalid",
                                   "ONNX checker"),
    "normalizing-a-flat-input": (
        _model([RELU], [("f", FLOAT, ["batch", 64])], [("y", FLOAT, ["batch", 64])]),
        {"input": {"normalization": {"mean": [0.5], "std": [0.25]}}}, "graph-mismatch",
        "[batch, 1, height, width]"),
    "input-of-10-gigapixels": (_flatten_to(LOGITS, RELU),
                               {**CLASSIFIER, "input": {"shape": [None, 1, 100000, 100000]}},
                               "bad-manifest", "input.shape"),
}  # fmt: skip


@pytest.mark.parametrize("name", INVALID)
def test_validate_names_the_rule_and_no_command_crashes(capfd, tmp_path, name: str) -> None:
    graph, manifest, rule, words = INVALID[name]
    path = _epr(tmp_path, graph, manifest)
    code, out, _ = _cli(capfd, "validate", str(path))
    assert code == 1 and f"[{rule}]" in out and words in out, out
    _one_error(*_cli(capfd, "decode", str(path), "-o", str(tmp_path / "m.onnx"))[::2], "decode")
    assert not (tmp_path / "m.onnx").exists()
    code, _, err = _eval(capfd, path)
    assert words in _one_error(code, err, "eval")


def _nearest_mean_classifier() -> tuple[np.ndarray, np.ndarray]:
    """A linear classifier of digits that works: logits −|x − mean_c|² / 2 up to a constant."""
    train = get_dataset("digits").load("train", None)
    flat = train.images.reshape(len(train.labels), -1)
    means = np.stack([flat[train.labels == digit].mean(0) for digit in range(10)])
    return means.astype(np.float32), (-0.5 * (means**2).sum(1)).astype(np.float32)


@pytest.fixture(scope="module")
def classifier_file(tmp_path_factory) -> Path:
    """A valid classifier: x → (x − 0) / 1 → Flatten → Gemm with weights from TENS records."""
    weights, bias = _nearest_mean_classifier()
    graph = _flatten_to(
        LOGITS,
        helper.make_node("Gemm", ["f", "w", "b"], ["y"], transB=1),
        initializers=(weightless("w", (10, 64)), weightless("b", (10,))),
    )
    manifest = {
        **CLASSIFIER,
        "input": {"shape": [None, 1, 8, 8], "normalization": {"mean": [0.0], "std": [1.0]}},
    }
    contents = EprContents(manifest, graph, [raw("w", weights), raw("b", bias)])
    path = tmp_path_factory.mktemp("classifier") / "nearest-mean.epr"
    path.write_bytes(encode_container(contents)[0])
    return path


def _test_error(out: str) -> float:
    return float(out.split(": test error ")[1].split(" %")[0])


def test_a_valid_classifier_still_evaluates_as_epr_and_as_onnx(capfd, tmp_path, classifier_file):
    code, out, _ = _cli(capfd, "validate", str(classifier_file))
    assert code == 0 and ": valid (" in out, out
    code, out, err = _eval(capfd, classifier_file)
    assert code == 0 and err == "" and _test_error(out) < 15, out + err
    onnx_path = tmp_path / "nearest-mean.onnx"
    assert _cli(capfd, "decode", str(classifier_file), "-o", str(onnx_path))[0] == 0
    code, onnx_out, _ = _eval(capfd, onnx_path)
    assert code == 0 and _test_error(onnx_out) == _test_error(out)


@pytest.mark.parametrize(
    "metadata, words",
    [
        ("5", "eprpipe.input must be an object"),
        ('{"shape":[null,"one","x","y"]}', "input.shape[1] must be a positive integer"),
        ('{"shape":[null,1,-28,0]}', "input.shape[2] must be a positive integer"),
        ('{"shape":[null,1,8', "is not JSON"),
        ('{"shape":[null,1,8,8,1]}', "not an image classifier"),
    ],
)
def test_untrusted_onnx_metadata_is_an_error_line(
    capfd, tmp_path, classifier_file, metadata: str, words: str
) -> None:
    onnx_path = tmp_path / "lying.onnx"
    assert _cli(capfd, "decode", str(classifier_file), "-o", str(onnx_path))[0] == 0
    model = onnx.load(str(onnx_path))
    for entry in model.metadata_props:
        if entry.key == "eprpipe.input":
            entry.value = metadata
    onnx_path.write_bytes(model.SerializeToString())
    assert words in _one_error(*_eval(capfd, onnx_path)[::2], "eval")


def test_ai_onnx_spells_the_default_domain_in_opset_imports(capfd, tmp_path) -> None:
    """onnx 1.16's checker knows only "", later ones both: the model builder names it ""."""
    path = _epr(tmp_path, _flatten_to(("y", FLOAT, ["batch", 64]), RELU,
                                      opsets=(("ai.onnx", 21),)), {})  # fmt: skip
    code, out, _ = _cli(capfd, "validate", str(path))
    assert code == 0, out
    onnx_path = tmp_path / "model.onnx"
    assert _cli(capfd, "decode", str(path), "-o", str(onnx_path))[0] == 0
    opsets = onnx.load(str(onnx_path)).opset_import
    assert [(opset.domain, opset.version) for opset in opsets] == [("", 21)]
    code, out, err = _eval(capfd, path)  # no input.shape: the graph gives [batch, 1, 8, 8]
    assert code == 0 and ": test error " in out, err


def _reshape_to_one_row() -> bytes:
    """Declares logits [batch, classes] but gives [1, 64 × batch]: no check can see it before
    onnxruntime runs it."""
    shape = helper.make_node(
        "Constant", [], ["s"], value=numpy_helper.from_array(np.array([1, -1], np.int64))
    )
    return _flatten_to(("y", FLOAT, ["batch", "classes"]), shape,
                       helper.make_node("Reshape", ["f", "s"], ["y"]))  # fmt: skip


@pytest.mark.parametrize(
    "graph, manifest, words",
    [
        (_reshape_to_one_row(), {**CLASSIFIER, "output": {"kind": "logits"}},
         "output 'y' is float32 [1, 23040] for 360 images"),
        (_flatten_to(("y", INT64, ["batch"]), helper.make_node("ArgMax", ["f"], ["y"], keepdims=0)),
         {"input": CLASSIFIER["input"]}, "not an image classifier"),
        (_model([helper.make_node("Identity", ["x"], ["y"])], [("x", FLOAT, ["b", 64])],
                [("y", FLOAT, ["b", 64])]), {}, "not an image classifier"),
    ],
    ids=["output-of-the-wrong-shape", "int64-argmax-output", "flat-input"],
)  # fmt: skip
def test_valid_files_that_are_no_classifier_are_an_error_line(
    capfd, tmp_path, graph: bytes, manifest: dict, words: str
) -> None:
    path = _epr(tmp_path, graph, manifest)
    code, out, _ = _cli(capfd, "validate", str(path))
    assert code == 0, out
    assert words in _one_error(*_eval(capfd, path)[::2], "eval")


def _constant_of_shape(shape: list[int]) -> list[onnx.NodeProto]:
    dims = numpy_helper.from_array(np.array(shape, np.int64))
    ones = helper.make_tensor("one", FLOAT, [1], [1.0])
    return [
        helper.make_node("Constant", [], ["dims"], value=dims),
        helper.make_node("ConstantOfShape", ["dims"], ["big"], value=ones),
    ]


def _sums_into_logits(values: list[str], axes: list[int]) -> list[onnx.NodeProto]:
    """y = Flatten(x) + the sum of each of `values` over `axes`, as [batch, 64] logits."""
    axes_value = numpy_helper.from_array(np.array(axes, np.int64))
    nodes = [helper.make_node("Constant", [], ["axes"], value=axes_value)]
    total = "f"
    for value in values:
        nodes.append(helper.make_node("ReduceSum", [value, "axes"], [f"{value}_sum"], keepdims=1))
        nodes.append(helper.make_node("Add", [total, f"{value}_sum"], [f"{value}_plus"]))
        total = f"{value}_plus"
    nodes[-1].output[0] = "y"
    return nodes


def _per_image(name: str, width: int) -> list[onnx.NodeProto]:
    """`name` = zeros [batch, width]: activations that grow with the batch."""
    width_value = numpy_helper.from_array(np.array([width], np.int64))
    return [
        helper.make_node("Shape", ["x"], [f"{name}_batch"], end=1),
        helper.make_node("Constant", [], [f"{name}_width"], value=width_value),
        helper.make_node("Concat", [f"{name}_batch", f"{name}_width"], [f"{name}_dims"], axis=0),
        helper.make_node("ConstantOfShape", [f"{name}_dims"], [name],
                         value=helper.make_tensor("zero", FLOAT, [1], [0.0])),
    ]  # fmt: skip


def _container(folder: Path, nodes: list[onnx.NodeProto], weights: dict[str, np.ndarray]) -> Path:
    """A logits classifier whose `weights` come from TENS records."""
    initializers = tuple(weightless(name, value.shape) for name, value in weights.items())
    graph = _model(nodes, [IMAGE], [("y", FLOAT, ["batch", 64])], initializers=initializers)
    manifest = {**CLASSIFIER, "output": {"kind": "logits"}}
    records = [raw(name, value) for name, value in weights.items()]
    path = folder / "weighted.epr"
    path.write_bytes(encode_container(EprContents(manifest, graph, records))[0])
    return path


def _measured(args: list[str]) -> tuple[int, str, str, int]:
    """Exit code, stdout, stderr and peak RSS (MB) of `eprpipe ARGS` in a fresh process.

    The peak is VmHWM, the high-water mark of the process's own memory: ru_maxrss carries the
    parent's RSS across fork and exec, so a large pytest process would inflate it.
    """
    script = textwrap.dedent(f"""
        import sys
        from eprpipe.cli import main
        code = main({args!r})
        status = open("/proc/self/status").read().split("VmHWM:")[1].split()[0]
        print("maxrss", int(status) // 1024)
        sys.exit(code)
    """)
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    stdout, _, peak = done.stdout.rpartition("maxrss ")
    return done.returncode, stdout, done.stderr, int(peak)


@pytest.mark.parametrize(
    "dims, cap",
    [([32768, 32768], None), ([12000, 12000], "256")],
    ids=["4-GiB-run", "576-MB-folded-constant"],
)
def test_a_huge_constant_of_shape_is_refused_within_the_memory_cap(
    capfd, tmp_path, dims: list[int], cap: str | None
) -> None:
    """The attacker's 4 GiB tensor, and one onnxruntime's constant folding (if on) would make
    when the session is created, outside the arena (it folds up to about 1 GiB)."""
    nodes = [
        helper.make_node("Flatten", ["x"], ["f"]),
        *_constant_of_shape(dims),
        *_sums_into_logits(["big"], [0, 1]),
    ]
    path = _epr(tmp_path, _model(nodes, [IMAGE], [("y", FLOAT, ["batch", 64])]),
                {**CLASSIFIER, "output": {"kind": "logits"}})  # fmt: skip
    assert _cli(capfd, "validate", str(path))[0] == 0
    flag = ["--max-runtime-memory", cap] if cap else []
    code, _, err, peak = _measured(["eval", str(path), "--dataset", "digits", *flag])
    words = f"within {cap or 1024} MiB (raise --max-runtime-memory)"
    assert words in _one_error(code, err, "eval")
    assert peak < MEMORY_BOUND_MB


def test_a_10_gigapixel_input_is_refused_before_any_image_is_made(capfd, tmp_path) -> None:
    manifest = {**CLASSIFIER, "input": {"shape": [None, 1, 100000, 100000]}}
    path = _epr(tmp_path, _flatten_to(LOGITS, RELU), manifest)
    assert "input.shape" in _one_error(*_eval(capfd, path)[::2], "eval")


def test_batches_that_exhaust_the_cap_run_in_halves(capfd, tmp_path) -> None:
    """1.2 MB of activations per image: 360 images do not fit 64 MiB, 45 do. Weights of
    2 MiB do not fit 1 MiB at all: refused before onnxruntime sees them."""
    nodes = [
        helper.make_node("Flatten", ["x"], ["f"]),
        *_per_image("big", 300000),
        helper.make_node("Gemm", ["f", "w"], ["wide"], transB=1),
        *_sums_into_logits(["big", "wide"], [1]),
    ]
    weights = np.random.default_rng(0).standard_normal((8192, 64)).astype(np.float32)
    path = _container(tmp_path, nodes, {"w": weights})
    code, out, err, peak = _measured(
        ["eval", str(path), "--dataset", "digits", "--max-runtime-memory", "64"]
    )
    assert code == 0 and ": test error " in out and err == "", err
    assert peak < MEMORY_BOUND_MB
    error = _one_error(*_eval(capfd, path, "--max-runtime-memory", "1")[::2], "eval")
    assert "take 2.0 MiB, not less than the 1 MiB onnxruntime may use" in error


def test_prepacked_weights_do_not_lift_the_cap(tmp_path) -> None:
    """One image needs 3 MiB, more than the 2 MiB cap. A [65536, 1] MatMul weight of 256 KiB
    that onnxruntime prepacked would take 4 MiB of the arena unchecked, and the arena would
    then refuse nothing: the image would run."""
    nodes = [
        helper.make_node("Flatten", ["x"], ["f"]),
        *_per_image("rows", 65536),
        helper.make_node("MatMul", ["rows", "w"], ["packed"]),
        *_per_image("big", 3 << 18),
        *_sums_into_logits(["packed", "big"], [1]),
    ]
    path = _container(tmp_path, nodes, {"w": np.ones((65536, 1), np.float32)})
    code, _, err, _ = _measured(
        ["eval", str(path), "--dataset", "digits", "--max-runtime-memory", "2"]
    )
    assert "on one image within 2 MiB (raise --max-runtime-memory)" in _one_error(code, err, "eval")


def test_an_onnx_fifo_is_refused_without_blocking(capfd, tmp_path) -> None:
    fifo = tmp_path / "model.onnx"
    os.mkfifo(fifo)

    def blocked(*_: object) -> None:
        raise AssertionError("eval blocked on a FIFO")

    previous = signal.signal(signal.SIGALRM, blocked)
    signal.alarm(10)
    try:
        code, _, err = _eval(capfd, fifo)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    assert "a FIFO" in _one_error(code, err, "eval")


def test_the_strict_checker_accepts_what_the_exporter_writes() -> None:
    """build_onnx runs the checker with full_check: it must pass the graphs eprpipe exports,
    with the classification profile their manifest declares. resnet20 has most of the
    operators (Conv, BatchNormalization, Add, ReduceMean, Gemm); test_every_command's demo file
    covers LeNet5."""
    torch = pytest.importorskip("torch")
    from eprpipe.format.graph import build_onnx
    from eprpipe.plugins.manager import get_architecture
    from eprpipe.train.export import weightless_graph

    spec = get_architecture("resnet20")
    net = spec.factory(num_classes=spec.num_classes)
    state = {name: tensor.detach().numpy() for name, tensor in net.state_dict().items()}
    with torch.no_grad():
        graph = weightless_graph(net, spec.input_shape, set(state))
    channels = spec.input_shape[0]
    manifest = {
        "input": {
            "shape": [None, *spec.input_shape],
            "normalization": {"mean": [0.5] * channels, "std": [0.25] * channels},
        },
        "output": {"kind": "logits", "classes": [str(c) for c in range(spec.num_classes)]},
    }
    records = [raw(name, values) for name, values in state.items()]
    model = build_onnx(EprContents(manifest, graph, records))
    assert model.graph.output[0].name == "logits"


def test_an_onnx_file_onnxruntime_cannot_load_is_an_error_line(capfd, tmp_path) -> None:
    """eval runs .onnx files without the checker: onnxruntime's refusal is the error."""
    graph = _flatten_to(LOGITS, helper.make_node("NoSuchOperator", ["f"], ["y"]))
    path = tmp_path / "unknown-operator.onnx"
    path.write_bytes(graph)
    error = _one_error(*_eval(capfd, path)[::2], "eval")
    assert error.startswith(f"eprpipe eval: error: onnxruntime cannot run {path}: ")
    assert "NoSuchOperator" in error


def _endless_loop() -> bytes:
    """y = Flatten(x) + 1, added 10**12 times by a Loop: a few bytes that compute forever."""
    body = helper.make_graph(
        [
            helper.make_node("Identity", ["cond_in"], ["cond_out"]),
            helper.make_node("Add", ["v_in", "one"], ["v_out"]),
        ],
        "body",
        [
            helper.make_tensor_value_info("i", TensorProto.INT64, []),
            helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
            helper.make_tensor_value_info("v_in", FLOAT, ["batch", 64]),
        ],
        [
            helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
            helper.make_tensor_value_info("v_out", FLOAT, ["batch", 64]),
        ],
        [helper.make_tensor("one", FLOAT, [], [1.0])],
    )
    count = numpy_helper.from_array(np.array(10**12, np.int64))
    go = numpy_helper.from_array(np.array(True))
    return _flatten_to(
        ("y", FLOAT, ["batch", 64]),
        helper.make_node("Constant", [], ["count"], value=count),
        helper.make_node("Constant", [], ["go"], value=go),
        helper.make_node("Loop", ["count", "go", "f"], ["y"], body=body),
    )


def test_a_model_that_computes_forever_stops_at_the_time_limit(capfd, tmp_path) -> None:
    """The file is valid and small; only the time limit bounds what running it costs."""
    import time

    path = _epr(tmp_path, _endless_loop(), {**CLASSIFIER, "output": {"kind": "logits"}})
    assert _cli(capfd, "validate", str(path))[0] == 0
    began = time.monotonic()
    code, _, err = _eval(capfd, path, "--time-limit", "1.5")
    assert time.monotonic() - began < 10
    assert "stopped at the time limit of 1.5 s (--time-limit)" in _one_error(code, err, "eval")
    code, _, err = _eval(capfd, path, "--time-limit", "0")
    assert "--time-limit must be a positive" in _one_error(code, err, "eval")
