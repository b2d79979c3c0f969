"""compress → .epr → decode (torch-free) → onnxruntime, through the CLI, on the bundled digits."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from torch_free import run_without_torch

from eprpipe.cli import main
from eprpipe.format.container import read_epr

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def compressed(tmp_path_factory) -> tuple[Path, str]:
    """One short real compression of LeNet-300-100 on digits, shared by the tests below."""
    out = tmp_path_factory.mktemp("e2e") / "digits.epr"
    args = [
        "compress",
        "lenet-300-100",
        "--dataset",
        "digits",
        "--epochs",
        "3",
        "--lambda",
        "0.5",
        "--decoder",
        "sq",
        "-o",
        str(out),
        "--quiet",
    ]
    import contextlib
    import io

    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        assert main(args) == 0
    return out, buffer.getvalue()


def test_compress_prints_sizes_and_decoded_error(compressed):
    path, printed = compressed
    assert path.exists()
    assert "parameter payload" in printed
    assert "bits/param" in printed and "smaller than float32" in printed
    assert "decoded ONNX model" in printed and "uncompressed model" in printed
    assert "wall time" in printed
    contents, sizes = read_epr(path)
    assert sizes.file_bytes == path.stat().st_size
    names = {t.name for t in contents.tensors}
    assert names == {f"fc{i}.{k}" for i in (1, 2, 3) for k in ("weight", "bias")}


def test_decode_and_eval_without_torch_match_reported_error(compressed, tmp_path):
    path, _ = compressed
    contents, _ = read_epr(path)
    reported = contents.manifest["metrics"]["test_error"]
    onnx_path = tmp_path / "model.onnx"
    code = f"""
from eprpipe.cli import main
assert main(["validate", {str(path)!r}]) == 0
assert main(["info", {str(path)!r}]) == 0
assert main(["decode", {str(path)!r}, "-o", {str(onnx_path)!r}]) == 0
assert main(["eval", {str(path)!r}, "--dataset", "digits", "--time-limit", "60"]) == 0
from eprpipe.deploy.decode import evaluate_file
for source in ({str(path)!r}, {str(onnx_path)!r}):
    result, _ = evaluate_file(source, "digits", None)
    print(repr(result.error))
assert "torch" not in sys.modules
"""
    done = run_without_torch(code)
    assert done.returncode == 0, done.stderr
    errors = [float(line) for line in done.stdout.strip().splitlines()[-2:]]
    assert errors == [reported, reported]


def test_decoded_onnx_is_one_self_describing_file(compressed, tmp_path):
    path, _ = compressed
    onnx_path = tmp_path / "model.onnx"
    assert main(["decode", str(path), "-o", str(onnx_path)]) == 0
    model = onnx.load(str(onnx_path))
    onnx.checker.check_model(model, full_check=True)
    assert not any(
        init.data_location == onnx.TensorProto.EXTERNAL for init in model.graph.initializer
    )
    meta = {entry.key: entry.value for entry in model.metadata_props}
    input_spec = json.loads(meta["eprpipe.input"])
    assert input_spec["shape"] == [None, 1, 28, 28]
    assert input_spec["range"] == [0.0, 1.0]
    assert input_spec["normalization"]["mean"] and input_spec["normalization"]["std"]
    assert json.loads(meta["eprpipe.output"])["classes"] == [str(d) for d in range(10)]


def test_decoded_weights_equal_the_file_arithmetic(compressed):
    path, _ = compressed
    from eprpipe.format.api import decode
    from eprpipe.format.container import decode_weights

    contents, _ = read_epr(path)
    model = decode(path)
    weights = {init.name: onnx.numpy_helper.to_array(init) for init in model.graph.initializer}
    for record in contents.tensors:
        np.testing.assert_array_equal(weights[record.name], decode_weights(record))


def test_info_lists_every_tensor(compressed, capsys):
    path, _ = compressed
    assert main(["info", str(path)]) == 0
    out = capsys.readouterr().out
    for name in ("fc1.weight", "fc3.bias", "bits/param", "parameter payload"):
        assert name in out
    assert main(["info", str(path), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert sum(t["latent_bytes"] for t in data["tensors"]) == data["sizes"]["latents"]


def test_coded_size_is_within_one_percent_of_the_ideal(compressed, capsys):
    path, _ = compressed
    assert main(["info", str(path), "--json"]) == 0
    tensors = json.loads(capsys.readouterr().out)["tensors"]
    large = [t for t in tensors if t["symbols"] >= 10_000 and t["latent_bytes"] > 0]
    assert large, "the test model should have tensors of 10,000+ parameters"
    for tensor in large:
        # One range-coder stream per record: its flush adds at most two 32-bit words.
        slack = 64
        assert 8 * tensor["latent_bytes"] <= 1.01 * tensor["ideal_bits"] + slack, tensor["name"]
        assert tensor["ideal_bits"] >= tensor["empirical_bits"] - 1e-6
