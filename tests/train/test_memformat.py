"""CPU training feeds image batches channels-last where the model takes them."""

from __future__ import annotations

import torch
from torch import nn

from eprpipe.train.loop import TensorData, TrainConfig, error_rate, train_epr, train_plain
from eprpipe.train.memformat import batch_format, in_format
from eprpipe.train.reparam import EPRModel


class ConvNet(nn.Module):
    def __init__(self, flatten_by_view: bool = False):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4 * 6 * 6, 2)
        self.flatten_by_view = flatten_by_view
        self.input_layouts: list[bool] = []  # channels-last or not, per training forward

    def forward(self, x):
        if self.training:
            self.input_layouts.append(x.is_contiguous(memory_format=torch.channels_last))
        h = torch.relu(self.bn(self.conv(x)))
        return self.fc(h.view(len(h), -1) if self.flatten_by_view else h.flatten(1))


def _data(n: int = 32) -> TensorData:
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(n, 3, 6, 6, generator=generator)
    return TensorData(images, (images[:, 0].mean((1, 2)) > 0).long())


def test_a_conv_net_gets_channels_last_and_a_view_net_keeps_its_layout() -> None:
    images = torch.randn(4, 3, 6, 6)
    assert batch_format(ConvNet(), images) == torch.channels_last
    # NHWC strides cannot be viewed as (N, C·H·W): the probe sees the error and backs off.
    assert batch_format(ConvNet(flatten_by_view=True), images) == torch.contiguous_format
    assert batch_format(nn.Linear(6, 2), torch.randn(4, 6)) == torch.contiguous_format


def test_the_probe_leaves_the_model_as_it_found_it() -> None:
    net = ConvNet()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    net.train()
    batch_format(net, torch.randn(4, 3, 6, 6) * 5 + 3)
    assert net.training
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())


def test_training_feeds_channels_last_batches_to_a_net_that_takes_them() -> None:
    data = _data()
    config = TrainConfig(epochs=1, batch_size=8, progress=False)
    net = ConvNet()
    train_plain(net, data, data, config)
    assert net.input_layouts and all(net.input_layouts)
    model = EPRModel(ConvNet())
    train_epr(model, data, data, config)
    assert model.net.input_layouts and all(model.net.input_layouts)


def test_a_net_that_cannot_take_them_still_trains_as_before() -> None:
    data = _data()
    net = ConvNet(flatten_by_view=True)
    train_plain(net, data, data, TrainConfig(epochs=1, batch_size=8, progress=False))
    assert net.input_layouts and not any(net.input_layouts)


def test_the_error_is_the_same_in_either_layout() -> None:
    data = _data(64)
    net = ConvNet().eval()
    nchw = error_rate(net, data, memory_format=torch.contiguous_format)
    assert error_rate(net, data, memory_format=torch.channels_last) == nchw
    assert in_format(torch.randn(2, 3), torch.channels_last).shape == (2, 3)
