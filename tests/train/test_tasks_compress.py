"""compress_module on any task and tensors: a format 1.1 file scored by the task's metric."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from feature_models import TwoInputs, features
from torch import nn

import eprpipe
from eprpipe.errors import EprError
from eprpipe.format.container import read_epr
from eprpipe.train.api import compress_module
from eprpipe.train.interface import Normalization
from eprpipe.train.loop import TrainConfig, task_metric

CONFIG = TrainConfig(epochs=4, batch_size=64, lam=0.01, progress=False)


def pretrained(
    net: nn.Module, inputs: tuple[np.ndarray, ...], targets: np.ndarray, loss
) -> nn.Module:
    """`net` after 150 plain Adam steps: EPR then compresses a trained model, as users do."""
    tensors = [torch.from_numpy(x) for x in inputs]
    expected = torch.from_numpy(targets)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-2)
    generator = torch.Generator().manual_seed(0)
    for _ in range(150):
        rows = torch.randint(0, len(expected), (64,), generator=generator)
        optimizer.zero_grad()
        loss(net(*(x[rows] for x in tensors)), expected[rows]).backward()
        optimizer.step()
    return net


def decoded_outputs(path, *inputs: np.ndarray) -> list[np.ndarray]:
    runner = eprpipe.session(path)
    names = [value.name for value in runner.get_inputs()]
    return runner.run(None, dict(zip(names, inputs, strict=True)))


@pytest.fixture(scope="module")
def regression(tmp_path_factory):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(8, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Linear(32, 1))
    train, test = features(1024, 0), features(512, 1)
    pretrained(net, train[:1], train[1], nn.functional.mse_loss)
    path = tmp_path_factory.mktemp("regression") / "mlp.epr"
    result = compress_module(
        net, train, test, path, task="regression", config=CONFIG,
        metadata={"target": "sin(x0 + x1)"},
    )  # fmt: skip
    return net, path, test, result


def test_a_regression_mlp_reports_the_decoded_models_mse(regression) -> None:
    net, path, (x, y), result = regression
    assert result.evaluation is None and result.baseline_error is None
    score = result.metric
    assert (score.name, score.higher_is_better, score.examples) == ("mse", False, 512)
    (decoded,) = decoded_outputs(path, x)
    assert score.value == pytest.approx(np.mean((decoded - y).astype(np.float64) ** 2), rel=1e-12)
    net.eval()
    with torch.no_grad():
        torch_mse = float(nn.functional.mse_loss(net(torch.from_numpy(x)), torch.from_numpy(y)))
    assert score.value == pytest.approx(torch_mse, rel=1e-3)
    assert score.value < 0.7 * float(np.var(y))  # it learned something
    assert result.history.epochs[-1].metric == "mse"


def test_the_regression_file_is_format_1_1_with_its_task(regression) -> None:
    _, path, _, result = regression
    contents, _ = read_epr(path)
    manifest = contents.manifest
    assert contents.version_minor == 1 and eprpipe.validate(path).valid
    assert manifest["task"] == {"kind": "regression"}
    assert manifest["inputs"] == [{"name": "input", "dtype": "float32", "shape": ["batch", 8]}]
    assert manifest["metadata"] == {"target": "sin(x0 + x1)"}
    metric = manifest["metrics"]["task_metric"]
    assert metric == {
        "name": "mse", "value": result.metric.value, "baseline": result.metric.baseline,
        "higher_is_better": False, "examples": 512,
    }  # fmt: skip
    assert "test_error" not in manifest["metrics"]
    # BatchNorm statistics: quantized only where the outputs moved by under the tolerance
    assert result.buffers.examples == 1000 and result.buffers.changed <= 2


def test_a_classifier_on_flat_features_with_preprocessing(tmp_path) -> None:
    """Flat (N, 64) features were an IndexError; the normalization now goes into the graph."""
    rng = np.random.default_rng(0)
    x = rng.normal(3.0, 2.0, (768, 64)).astype(np.float32)
    y = (x[:, :4].sum(1) > 12).astype(np.int64)
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 2))
    pretrained(net, ((x[:512] - 3) / 2,), y[:512], nn.functional.cross_entropy)
    path = tmp_path / "flat.epr"
    result = compress_module(
        net, (x[:512], y[:512]), (x[512:], y[512:]), path, classes=("low", "high"),
        preprocessing={"input": Normalization((3.0,), (2.0,), 1)}, config=CONFIG,
    )  # fmt: skip
    (logits,) = decoded_outputs(path, x[512:])  # raw features: the graph normalizes
    error = float(np.mean(logits.argmax(1) != y[512:]))
    assert result.evaluation.error == result.metric.value == pytest.approx(error)
    assert error < 0.15 and result.evaluation.total == 256
    manifest = read_epr(path)[0].manifest
    assert manifest["task"] == {"kind": "classification", "classes": ["low", "high"]}
    assert manifest["metrics"]["test_error"] == error
    assert manifest["metrics"]["task_metric"]["name"] == "error"
    assert manifest["inputs"][0]["preprocessing"]["normalization"]["mean"] == [3.0]


def test_user_loss_and_metric_on_a_two_input_model(tmp_path) -> None:
    x, _ = features(768, 2)
    tokens = np.random.default_rng(3).integers(0, 10, (768, 5))
    y = (x[:, :1] - x[:, 1:2] + 2 * (tokens == 3).mean(1, keepdims=True)).astype(np.float32)

    def huber(outputs, targets):
        return nn.functional.huber_loss(outputs, targets)

    def mae(outputs, targets):
        return (outputs - targets).abs().mean()

    torch.manual_seed(0)
    net = pretrained(TwoInputs(), (x[:512], tokens[:512]), y[:512], nn.functional.mse_loss)
    path = tmp_path / "two.epr"
    result = compress_module(
        net, ((x[:512], tokens[:512]), y[:512]), ((x[512:], tokens[512:]), y[512:]), path,
        loss_fn=huber, metric_fn=mae, config=CONFIG, baseline=False,
    )  # fmt: skip
    (decoded,) = decoded_outputs(path, x[512:], tokens[512:])
    assert result.metric.name == "mae" and result.metric.baseline is None
    assert result.metric.value == pytest.approx(float(np.abs(decoded - y[512:]).mean()), rel=1e-6)
    manifest = read_epr(path)[0].manifest
    assert manifest["task"] == {"kind": "none"}
    assert [(i["name"], i["dtype"]) for i in manifest["inputs"]] == [
        ("x", "float32"), ("tokens", "int64"),
    ]  # fmt: skip
    assert result.history.epochs[-1].metric == "mae"


def test_a_metric_given_as_sum_and_count_matches_the_torch_loop(tmp_path) -> None:
    x, y = features(640, 4)

    def within(outputs, targets):  # higher is better: the share within 0.25 of the target
        return float(((outputs - targets).abs() < 0.25).sum()), targets.numel()

    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 1))
    pretrained(net, (x[:512],), y[:512], nn.functional.mse_loss)
    result = compress_module(
        net, (x[:512], y[:512]), (x[512:], y[512:]), tmp_path / "m.epr", task="regression",
        metric_fn=within, higher_is_better=True, config=CONFIG,
    )  # fmt: skip
    assert result.metric.higher_is_better and result.metric.name == "within"
    assert 0.0 <= result.metric.value <= 1.0 and result.metric.baseline is not None
    assert result.history.epochs[-1].test_metric == pytest.approx(result.metric.value, abs=0.02)


def test_bad_data_and_options_are_refused_before_training(tmp_path) -> None:
    x, y = features(64, 0)
    net = nn.Linear(8, 1)
    path = tmp_path / "m.epr"
    with pytest.raises(EprError, match=r"inputs hold \[64\] examples and targets 32"):
        compress_module(net, (x, y[:32]), (x, y), path, task="regression", config=CONFIG)
    unknown = {"x": Normalization((0.0,), (1.0,))}
    with pytest.raises(EprError, match=r"preprocessing names \['x'\], which are no inputs"):
        compress_module(
            net, (x, y), (x, y), path, task="regression", preprocessing=unknown, config=CONFIG
        )
    with pytest.raises(EprError, match="train has 1 inputs, test 2"):
        compress_module(net, (x, y), ((x, x), y), path, task="regression", config=CONFIG)
    with pytest.raises(EprError, match="augmentation 'crop4-flip' transforms images"):
        compress_module(
            net, (x, y), (x, y), path, task="regression",
            config=TrainConfig(epochs=1, augmentation="crop4-flip", progress=False),
        )  # fmt: skip
    assert not list(tmp_path.iterdir())


def test_the_torch_metric_of_the_loop_is_the_tasks(regression) -> None:
    from eprpipe.train.loop import TensorData
    from eprpipe.train.tasks import Regression

    net, _, (x, y), result = regression
    data = TensorData.from_arrays(x, y, "cpu")
    assert result.history.epochs[-1].test_metric == pytest.approx(
        task_metric(net, data, Regression()), rel=1e-6
    )
