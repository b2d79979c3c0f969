"""The alternatives to EPR measured on a trained float model (eprpipe.train.alternatives), and
bench_mnist.py --alternatives end to end, on scikit-learn's digits and tiny MNIST-like files."""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from idx_files import write_mnist_like
from torch import nn

from eprpipe.data.datasets import prepare
from eprpipe.deploy.evaluate import predict
from eprpipe.errors import EprError
from eprpipe.plugins.manager import get_dataset
from eprpipe.train.alternatives import (
    calibration_images,
    float_onnx,
    measure_alternatives,
    measure_nncodec,
)
from eprpipe.train.loop import TensorData, TrainConfig, error_rate, train_plain

ROOT = Path(__file__).resolve().parents[2]
NNCODEC_TOOL = str(ROOT / "tools" / "bench_nncodec.py")
NNCODEC_PYTHON = os.environ.get("EPRPIPE_NNCODEC_PYTHON")  # NNCodec's own venv, if there is one
SHAPE = (1, 8, 8)
CONFIG = TrainConfig(epochs=3, batch_size=32, eval_every=0, progress=False)


class DigitNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 8, 3, padding=1)
        self.fc = nn.Linear(8 * 8 * 8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.conv(x)).flatten(1))


@pytest.fixture(scope="module")
def trained() -> tuple[DigitNet, tuple, tuple, TensorData, TensorData]:
    spec = get_dataset("digits")
    train, test = (prepare(spec.load(split), SHAPE) for split in ("train", "test"))
    data = (
        TensorData.from_numpy(*train, spec.mean, spec.std, "cpu"),
        TensorData.from_numpy(*test, spec.mean, spec.std, "cpu"),
    )
    torch.manual_seed(0)
    net = DigitNet()
    train_plain(net, *data, CONFIG)
    return net, train, test, *data


def test_the_float_onnx_model_takes_pixels_and_classifies_like_the_module(trained) -> None:
    net, _, test, _, test_data = trained
    spec = get_dataset("digits")
    model, weights = float_onnx(net, SHAPE, spec.mean, spec.std)
    assert weights == ["conv.weight", "conv.bias", "fc.weight", "fc.bias"]
    classes = predict(model, test[0], threads=1)
    with torch.no_grad():
        expected = net.eval()(test_data.images).argmax(1).numpy()
    assert (classes == expected).mean() > 0.99
    error = 1 - (classes == test[1]).mean()
    assert abs(error - error_rate(net, test_data)) < 0.01


def test_calibration_images_are_a_seeded_sample_in_unit_range() -> None:
    images = np.arange(50, dtype=np.uint8).reshape(50, 1, 1, 1) * 5
    first, again = calibration_images(images, 10, 3), calibration_images(images, 10, 3)
    assert first.dtype == np.float32 and first.shape == (10, 1, 1, 1)
    assert np.array_equal(first, again) and len(np.unique(first)) == 10
    assert first.max() <= 1.0 and len(calibration_images(images, 500, 3)) == 50


def test_every_alternative_is_measured_on_the_test_images(trained) -> None:
    net, train, test, train_data, test_data = trained
    spec = get_dataset("digits")
    before = {k: v.clone() for k, v in net.state_dict().items()}
    finetune = TrainConfig(epochs=1, batch_size=32, eval_every=0, progress=False)
    rows = measure_alternatives(
        net, SHAPE, spec.mean, spec.std, train[0], test, (train_data, test_data), finetune,
        sparsities=(0.8,), calibration=100,
    )  # fmt: skip
    found = {row["variant"]: row for row in rows}
    assert set(found) >= {
        "float32", "float32+zstd", "float16", "float16+zstd", "uniform8", "uniform8+zstd",
        "uniform4", "uniform4+zstd", "ort-int8-dynamic", "ort-int8-static-per-channel",
        "pruned0.8+uniform8+zstd",
    }  # fmt: skip
    assert all(row["test_examples"] == len(test[1]) for row in rows)
    reference = found["float32"]["test_error"]
    assert abs(reference - error_rate(net, test_data)) < 0.01
    for name in ("float16", "uniform8+zstd", "ort-int8-static-per-channel"):
        assert abs(found[name]["test_error"] - reference) < 0.03, name
    pruned = found["pruned0.8+uniform8+zstd"]
    assert pruned["sparsity"] == pytest.approx(0.8, abs=0.01)
    assert pruned["payload_bytes"] < found["uniform8+zstd"]["payload_bytes"]
    assert all(torch.equal(v, before[k]) for k, v in net.state_dict().items())  # left as it was


def test_bench_mnist_measures_the_alternatives_beside_epr(tmp_path) -> None:
    data = write_mnist_like(tmp_path / "mnist", n_train=64, n_test=32)
    out = tmp_path / "bench"
    spec = importlib.util.spec_from_file_location("bench_mnist", ROOT / "tools" / "bench_mnist.py")
    tool = importlib.util.module_from_spec(spec)
    sys.modules["bench_mnist"] = tool  # dataclasses look their module up here
    spec.loader.exec_module(tool)
    args = ["--data-dir", str(data), "--out-dir", str(out), "--architectures", "lenet-300-100",
            "--lambdas", "0.5", "--epochs", "1", "--jobs", "1", "--seeds", "0", "1",
            "--alternatives", "--sparsities", "0.9", "--finetune-epochs", "1",
            "--calibration-images", "32"]  # fmt: skip
    assert tool.main(args) == 0
    rows = [json.loads(line) for line in (out / "runs.jsonl").read_text().splitlines()]
    assert {row["decoder"] for row in rows} == {"sq", "baseline", "alternative"}
    variants = {row["variant"] for row in rows if row["decoder"] == "alternative"}
    assert {"float16+zstd", "ort-int8-dynamic", "pruned0.9+uniform8+zstd"} <= variants
    assert all(row["test_examples"] == 32 for row in rows if row["decoder"] == "alternative")
    assert {row["seed"] for row in rows} == {0, 1}
    assert sorted(out.glob("*.epr")) == [
        out / "lenet-300-100_sq_lam0.5_s0.epr",
        out / "lenet-300-100_sq_lam0.5_s1.epr",
    ]
    table = (out / "results.md").read_text()
    assert (
        "| lenet-300-100 | sq | 0.5 | 1 | 0 |" in table
        and "| lenet-300-100 | sq | 0.5 | 1 | 1 |" in table
    )
    sizes = sorted(r["payload_bytes"] for r in rows if r["decoder"] == "sq")
    spread = f"{sum(sizes) / 2:,.0f} [{sizes[0]:,}, {sizes[1]:,}]"
    assert f"| lenet-300-100 | sq | 0.5 | 1 | 0, 1 | {spread} |" in table
    assert (
        "| lenet-300-100 | 0 | uniform4+zstd |" in table
        and "| lenet-300-100 | 1 | uniform4+zstd |" in table
    )
    assert "| lenet-300-100 | magnitude pruning + uniform8+zstd |" in table
    assert (out / "results.png").stat().st_size > 1000
    assert tool.main([*args, "--report-only"]) == 0
    assert (out / "results.md").read_text() == table


def test_bench_cifar_lists_the_alternatives_beside_epr(tmp_path) -> None:
    from cifar_files import fake_batches, write_folder

    data = write_folder(tmp_path / "cifar", fake_batches(per_batch=40, n_test=20))
    spec = importlib.util.spec_from_file_location("bench_cifar", ROOT / "tools" / "bench_cifar.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    results = tmp_path / "results"
    args = ["--data-dir", str(data), "--epochs", "1", "--repeats", "1", "--batch-size", "32",
            "--out", str(tmp_path / "r.epr"), "--results", str(results), "--quiet",
            "--alternatives", "--sparsities", "--calibration-images", "20"]  # fmt: skip
    assert tool.main(args) == 0
    row = json.loads((results / "bench_cifar_resnet20_lam0.2_e1.json").read_text())
    found = {r["variant"]: r for r in row["alternatives"]}
    assert {"float32", "uniform4+zstd", "ort-int8-static-per-channel"} <= set(found)
    assert not any(name.startswith("pruned") for name in found)  # no sparsities given
    assert all(r["test_examples"] == row["test_images"] == 20 for r in found.values())
    table = (results / "bench_cifar_resnet20_lam0.2_e1.md").read_text()
    assert "| EPR λ=0.2 |" in table and "| ort-int8-dynamic |" in table


@pytest.mark.skipif(
    importlib.util.find_spec("nncodec") is not None, reason="nncodec is installed here"
)
def test_nncodec_that_cannot_run_is_one_error_naming_why(trained) -> None:
    net, _, test, _, _ = trained
    spec = get_dataset("digits")
    with pytest.raises(EprError, match=r"NNCodec failed \(.*\): error: .*nncodec"):
        measure_nncodec(
            *float_onnx(net, SHAPE, spec.mean, spec.std),
            test,
            [sys.executable, NNCODEC_TOOL],
            [-32],
        )


@pytest.mark.skipif(NNCODEC_PYTHON is None, reason="set EPRPIPE_NNCODEC_PYTHON to NNCodec's venv")
def test_nncodec_rows_are_measured_on_the_decoded_weights(trained) -> None:
    net, _, test, _, test_data = trained
    spec = get_dataset("digits")
    model, weights = float_onnx(net, SHAPE, spec.mean, spec.std)
    rows = measure_nncodec(model, weights, test, [NNCODEC_PYTHON, NNCODEC_TOOL], [-38, -14])
    assert [row["variant"] for row in rows] == ["nncodec-qp-38", "nncodec-qp-14"]
    assert all(row["series"] == "NNCodec" and row["test_examples"] == len(test[1]) for row in rows)
    fine, coarse = rows
    assert coarse["payload_bytes"] < fine["payload_bytes"] < 4 * (8 * 9 + 8 + 512 * 10 + 10)
    assert abs(fine["test_error"] - error_rate(net, test_data)) < 0.02  # a fine step changes little


@pytest.mark.skipif(NNCODEC_PYTHON is None, reason="set EPRPIPE_NNCODEC_PYTHON to NNCodec's venv")
def test_pruned_weights_are_also_coded_by_nncodec(trained) -> None:
    net, train, test, train_data, test_data = trained
    spec = get_dataset("digits")
    finetune = TrainConfig(epochs=1, batch_size=32, eval_every=0, progress=False)
    rows = measure_alternatives(
        net, SHAPE, spec.mean, spec.std, train[0], test, (train_data, test_data), finetune,
        sparsities=(0.9,), calibration=50, nncodec=[NNCODEC_PYTHON, NNCODEC_TOOL],
        nncodec_qps=(-32,),
    )  # fmt: skip
    found = {row["variant"]: row for row in rows}
    pruned, plain = found["pruned0.9+nncodec-qp-32"], found["nncodec-qp-32"]
    assert pruned["series"] == "magnitude pruning + NNCodec" and plain["series"] == "NNCodec"
    assert pruned["sparsity"] == pytest.approx(0.9, abs=0.01)
    assert pruned["payload_bytes"] < plain["payload_bytes"]  # the zeros cost NNCodec little
    assert abs(pruned["test_error"] - found["pruned0.9+uniform8+zstd"]["test_error"]) < 0.03
