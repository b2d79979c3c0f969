"""Tasks (loss, metric, what counts as a change) and the built-in loop on any tensors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from feature_models import TwoInputs, features
from torch import nn

from eprpipe.errors import EprError
from eprpipe.format.container import TensorRecord, decode_weights
from eprpipe.train.buffers import compact_buffers, quantize
from eprpipe.train.distributed import World
from eprpipe.train.interface import Normalization
from eprpipe.train.loop import TensorData, TrainConfig, error_rate, task_metric, train_plain
from eprpipe.train.tasks import (
    RELATIVE_TOLERANCE,
    Classification,
    Regression,
    relative_change,
    task_from,
)

CONFIG = TrainConfig(epochs=6, batch_size=32, progress=False, plain_lr=3e-2)


def test_flat_features_train_a_classifier() -> None:
    """(N, 64) features with a one-value normalization: was an IndexError in from_numpy."""
    rng = np.random.default_rng(0)
    x = rng.normal(0.5, 1, (256, 64)).astype(np.float32)
    y = (x[:, 0] > 0.5).astype(np.int64)
    data = TensorData.from_numpy(x, y, (0.5,), (1.0,), "cpu")
    assert data.images.shape == (256, 64)
    torch.testing.assert_close(data.images, torch.from_numpy(x - 0.5))
    net = nn.Sequential(nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 2))
    history = train_plain(net, data, data, CONFIG)
    assert history.epochs[-1].metric == "error"
    assert history.epochs[-1].test_error == error_rate(net, data) < 0.2


@pytest.mark.parametrize(
    ("shape", "axis", "count"),
    [((4, 6), 1, 6), ((4, 3, 5), 1, 3), ((4, 5, 3), 2, 3), ((4, 2, 3, 3), 1, 2), ((4, 6), 1, 1)],
)
def test_normalization_broadcasts_along_its_axis(shape, axis, count) -> None:
    x = np.random.default_rng(1).normal(0, 1, shape).astype(np.float32)
    mean, std = tuple(np.arange(count) + 0.5), tuple(np.arange(count) + 2.0)
    data = TensorData.from_arrays(x, np.zeros(4), "cpu", {0: Normalization(mean, std, axis)})
    expected = np.moveaxis((np.moveaxis(x, axis, -1) - mean) / std, -1, axis)
    np.testing.assert_allclose(data.inputs.numpy(), expected, rtol=1e-6)


def test_normalization_that_does_not_fit_is_refused() -> None:
    x = np.zeros((4, 6), np.float32)
    with pytest.raises(EprError, match="3 means for axis 1 of shape"):
        TensorData.from_arrays(x, np.zeros(4), "cpu", {0: Normalization((0,) * 3, (1,) * 3, 1)})
    with pytest.raises(EprError, match="only float inputs can be normalized"):
        TensorData.from_arrays(
            np.zeros((4, 6), np.int64), np.zeros(4), "cpu", {0: Normalization((0,), (1,))}
        )


def test_uint8_pixels_are_scaled_and_dtypes_kept() -> None:
    pixels = np.full((2, 1, 2, 2), 255, np.uint8)
    tokens = np.arange(6).reshape(2, 3)
    data = TensorData.from_arrays((pixels, tokens), np.array([0.5, 1.5]), "cpu")
    images, ids = data.inputs
    assert images.dtype == torch.float32 and float(images.max()) == 1.0
    assert ids.dtype == torch.int64 and data.targets.dtype == torch.float32


def test_augmentation_is_for_images_only() -> None:
    data = TensorData.from_arrays(np.zeros((8, 5), np.float32), np.zeros(8, np.int64), "cpu")
    with pytest.raises(EprError, match=r"transforms images \(one float \(N, C, H, W\) input\)"):
        data.check_augmentation("crop4-flip")
    with pytest.raises(EprError, match="inputs hold"):
        TensorData(torch.zeros(3, 2), torch.zeros(4))


def test_a_two_input_regression_trains_and_batches_shard() -> None:
    x, _ = features(256, 2)
    tokens = np.random.default_rng(3).integers(0, 10, (256, 5))
    y = (x[:, :1] - x[:, 1:2] + 2 * (tokens == 3).mean(1, keepdims=True)).astype(np.float32)
    data = TensorData.from_arrays((x, tokens), y, "cpu")
    plan = [torch.arange(8)]
    ((whole, _),) = data.batches(plan, 0, None, (0,), World())
    parts = [next(data.batches(plan, 0, None, (0,), World(rank, 2)))[0] for rank in (0, 1)]
    assert torch.equal(whole[1][0::2], parts[0][1]) and torch.equal(whole[1][1::2], parts[1][1])
    torch.manual_seed(0)
    net = TwoInputs()
    before = task_metric(net, data, Regression())
    history = train_plain(net, data, data, CONFIG, task=Regression())
    assert history.epochs[-1].metric == "mse" and history.epochs[-1].test_error is None
    assert history.epochs[-1].test_metric == task_metric(net, data, Regression()) < before / 2


def test_regression_loss_and_metric() -> None:
    output = torch.tensor([[1.0], [2.0], [4.0]])
    targets = torch.tensor([1.0, 3.0, 2.0])  # (N,) targets for an (N, 1) output: reshaped
    task = Regression()
    assert float(task.loss(output, targets)) == pytest.approx(5 / 3)
    assert task.metric((output, output), targets) == (5.0, 3)  # the first output is scored
    with pytest.raises(EprError, match="do not match the model's output"):
        task.loss(output, torch.zeros(6))


def test_classification_metric_and_change() -> None:
    logits = torch.tensor([[2.0, 1.0], [0.0, 3.0], [1.0, 0.0]])
    assert Classification().metric(logits, torch.tensor([0, 0, 0])) == (1.0, 3)
    exact = logits.numpy()
    trial = exact.copy()
    trial[2] = [0.0, 1.0]
    assert Classification().changed(exact, trial).tolist() == [False, False, True]


def test_relative_change_is_per_example_with_a_floor_for_small_outputs() -> None:
    exact = np.array([[3.0, 4.0], [0.0, 0.0], [6.0, 8.0]])
    trial = exact + np.array([[0.03, 0.0], [0.001, 0.0], [0.0, 0.05]])
    change = relative_change(exact, trial)
    rms = np.sqrt((25 + 0 + 100) / 3)  # 6.45: smaller outputs are measured against it
    np.testing.assert_allclose(change, [0.03 / rms, 0.001 / rms, 0.05 / 10])
    together = relative_change((exact, exact[:, :1]), (trial, exact[:, :1]))
    assert together[2] == pytest.approx(0.05 / np.sqrt(100 + 36))


def test_user_functions_make_a_task() -> None:
    def l1(outputs, targets):
        return (outputs - targets).abs().mean()

    task = task_from(loss_fn=l1)
    assert (task.kind, task.metric_name, task.higher_is_better) == ("none", "loss", False)
    out, target = torch.tensor([[1.0], [3.0]]), torch.tensor([[2.0], [2.0]])
    assert task.metric(out, target) == (2.0, 2)  # the batch mean, times the batch

    def within(outputs, targets):
        hits = ((outputs - targets).abs() < 0.5).sum()
        return hits, targets.numel()

    task = task_from("regression", metric_fn=within, higher_is_better=True)
    assert (task.kind, task.metric_name, task.higher_is_better) == ("regression", "within", True)
    assert float(task.loss(out, target)) == 1.0  # the regression's MSE
    assert task.metric(out, target) == (0.0, 2)
    named = task_from(loss_fn=l1, metric_fn=lambda o, t: 0.25, metric_name="mae")
    assert named.metric_name == "mae" and named.metric(out, target) == (0.5, 2)
    assert task_from(classes=["a", "b"]) == Classification(("a", "b"))
    assert task_from() == Classification() and task_from("regression") == Regression()


def test_bad_user_functions_and_tasks_are_named() -> None:
    task = task_from(loss_fn=lambda o, t: (o - t).abs())
    with pytest.raises(EprError, match=r"loss_fn must return a scalar tensor .* got \(2, 1\)"):
        task.loss(torch.zeros(2, 1), torch.ones(2, 1))
    task = task_from(loss_fn=lambda o, t: (o - t).abs().mean(), metric_fn=lambda o, t: "bad")
    with pytest.raises(EprError, match="metric_fn must be a number"):
        task.metric(torch.zeros(2, 1), torch.ones(2, 1))
    with pytest.raises(EprError, match="unknown task 'ranking'"):
        task_from("ranking")
    with pytest.raises(EprError, match="kind 'none' needs a loss_fn"):
        task_from("none")
    with pytest.raises(EprError, match="classes= goes with a classification task"):
        task_from("regression", classes=["a"])


def test_a_user_task_trains_in_the_loop() -> None:
    x, y = features(256, 4)
    data = TensorData.from_arrays(x, y, "cpu")

    def huber(outputs, targets):
        return nn.functional.huber_loss(outputs, targets)

    task = task_from(loss_fn=huber)
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 1))
    first = task_metric(net, data, task)
    history = train_plain(net, data, data, CONFIG, task=task)
    assert history.epochs[-1].metric == "loss" and history.epochs[-1].test_metric < first / 2


def _bn_records(net: nn.Module) -> list[TensorRecord]:
    return [
        TensorRecord(name, tuple(value.shape), "float32", None, None, value.numpy().copy())
        for name, value in net.state_dict().items()
        if "running" in name
    ]


def test_a_grid_that_moves_regression_outputs_too_far_is_refused() -> None:
    """The task's criterion on real outputs: the BatchNorm statistics of a regression MLP are
    quantized only on a grid whose outputs stay within RELATIVE_TOLERANCE."""
    x, _ = features(1000, 5)
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(8, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Linear(32, 1))
    with torch.no_grad():
        net[1].running_mean.normal_(0, 1)
        net[1].running_var.uniform_(0.5, 2)
    net.eval()
    state = {k: v.clone() for k, v in net.state_dict().items()}

    def outputs(records: list[TensorRecord]) -> np.ndarray:
        values = {r.name: torch.from_numpy(np.array(decode_weights(r))) for r in records}
        net.load_state_dict({**state, **values})
        with torch.no_grad():
            return net(torch.from_numpy(x)).numpy()

    records = _bn_records(net)
    chosen, choice = compact_buffers(records, outputs, Regression().changed)
    moved = relative_change(outputs(records), outputs(chosen))
    assert choice.bits == 12 and np.sum(moved > RELATIVE_TOLERANCE) == choice.changed <= 2
    ten_bits = [quantize(record, 10) for record in records]  # the next coarser grid: refused
    assert np.sum(relative_change(outputs(records), outputs(ten_bits)) > RELATIVE_TOLERANCE) > 100
    strict = Regression(tolerance=1e-9)
    kept, refused = compact_buffers(records, outputs, strict.changed)
    assert refused.bits is None and kept == records


def test_epoch_records_name_their_metric_and_read_old_checkpoints() -> None:
    from eprpipe.train.loop import EpochRecord

    old = {"epoch": 2, "loss": 0.5, "bits_per_parameter": 1.0, "test_error": 0.1, "seconds": 3.0}
    record = EpochRecord.from_saved(old)
    assert (record.metric, record.test_metric, record.test_error) == ("error", 0.1, 0.1)
    mse = EpochRecord(2, 0.5, 1.0, 0.25, 3.0, "mse")
    assert EpochRecord.from_saved(vars(mse)) == mse and mse.test_error is None
