"""Magnitude pruning with a fine-tune, on scikit-learn's bundled digits with a small conv net."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from eprpipe.data.datasets import prepare
from eprpipe.errors import EprError
from eprpipe.plugins.manager import get_dataset
from eprpipe.train.loop import TensorData, TrainConfig, error_rate, train_plain
from eprpipe.train.pruning import prunable, prune_and_finetune, zero_fraction

SPARSITY = 0.9
FINETUNE = TrainConfig(epochs=1, batch_size=32, plain_lr=1e-3, eval_every=0, progress=False)


class DigitNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 8, 3, padding=1)
        self.fc1 = nn.Linear(8 * 8 * 8, 32)
        self.fc2 = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hidden = torch.relu(self.fc1(torch.relu(self.conv(x)).flatten(1)))
        return self.fc2(hidden)


@pytest.fixture(scope="module")
def digits() -> tuple[TensorData, TensorData]:
    spec = get_dataset("digits")
    train, test = (prepare(spec.load(split), (1, 8, 8)) for split in ("train", "test"))
    return (
        TensorData.from_numpy(*train, spec.mean, spec.std, "cpu"),
        TensorData.from_numpy(*test, spec.mean, spec.std, "cpu"),
    )


@pytest.fixture(scope="module")
def dense_state(digits: tuple[TensorData, TensorData]) -> dict[str, torch.Tensor]:
    """A DigitNet trained plainly to about 3 % test error, once for all tests."""
    torch.manual_seed(0)
    net = DigitNet()
    config = TrainConfig(epochs=3, batch_size=32, plain_lr=3e-3, eval_every=0, progress=False)
    train_plain(net, *digits, config)
    return {name: value.clone() for name, value in net.state_dict().items()}


def trained(state: dict[str, torch.Tensor]) -> DigitNet:
    net = DigitNet()
    net.load_state_dict(state)
    return net


def test_global_pruning_zeroes_exactly_the_smallest_weights_and_keeps_them_zero(
    digits: tuple[TensorData, TensorData], dense_state: dict[str, torch.Tensor]
) -> None:
    net = trained(dense_state)
    before = {name: weight.detach().clone() for name, weight in net.named_parameters()}
    weights = ["conv.weight", "fc1.weight", "fc2.weight"]
    magnitudes = torch.cat([before[name].abs().flatten() for name in weights])
    count = round(SPARSITY * magnitudes.numel())
    threshold = magnitudes.sort().values[count - 1]

    result = prune_and_finetune(net, *digits, SPARSITY, FINETUNE)

    assert result.module is net and result.sparsity == count / magnitudes.numel()
    assert zero_fraction(net) == result.sparsity
    for name in weights:
        weight = net.get_parameter(name).detach()
        chosen = before[name].abs() <= threshold
        assert torch.equal(weight == 0, chosen), name  # the same zeros after the fine-tune
        assert not torch.equal(weight[~chosen], before[name][~chosen])  # the others trained
    for name in ("conv.bias", "fc1.bias", "fc2.bias"):
        assert int((net.get_parameter(name) == 0).sum()) == 0


def test_the_result_is_a_plain_module_whose_zeros_are_in_its_state_dict(
    digits: tuple[TensorData, TensorData], dense_state: dict[str, torch.Tensor]
) -> None:
    result = prune_and_finetune(trained(dense_state), *digits, SPARSITY, FINETUNE)
    state = result.module.state_dict()
    assert sorted(state) == sorted(dense_state)  # no weight_orig, no weight_mask
    plain = trained(state)
    assert zero_fraction(plain) == result.sparsity
    assert error_rate(plain, digits[1]) == result.error


def test_layer_scope_prunes_every_layer_to_the_sparsity(
    digits: tuple[TensorData, TensorData], dense_state: dict[str, torch.Tensor]
) -> None:
    net = trained(dense_state)
    prune_and_finetune(net, *digits, 0.5, FINETUNE, scope="layer")
    for layer, name in prunable(net):
        weight = getattr(layer, name)
        assert int((weight == 0).sum()) == round(0.5 * weight.numel())


def test_fine_tuning_recovers_the_accuracy_pruning_lost(
    digits: tuple[TensorData, TensorData], dense_state: dict[str, torch.Tensor]
) -> None:
    dense_error = error_rate(trained(dense_state), digits[1])
    result = prune_and_finetune(trained(dense_state), *digits, 0.95, FINETUNE)
    assert result.pruned_error > dense_error + 0.05  # pruning this far hurts ...
    assert result.error < result.pruned_error - 0.05  # ... and the fine-tune wins most back
    assert np.isclose(result.sparsity, 0.95, atol=1e-4)


@pytest.mark.parametrize("sparsity", [-0.1, 1.0, float("nan")])
def test_a_sparsity_outside_zero_to_one_is_refused(
    digits: tuple[TensorData, TensorData], sparsity: float
) -> None:
    with pytest.raises(EprError, match="sparsity"):
        prune_and_finetune(DigitNet(), *digits, sparsity, FINETUNE)


def test_an_unknown_scope_is_refused(digits: tuple[TensorData, TensorData]) -> None:
    with pytest.raises(EprError, match="scope"):
        prune_and_finetune(DigitNet(), *digits, 0.5, FINETUNE, scope="row")
