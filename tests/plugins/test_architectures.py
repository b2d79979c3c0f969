"""Every built-in architecture builds and runs; the LeNets match their published sizes."""

from __future__ import annotations

import pytest
from installed import builtin_names

from eprpipe.plugins.manager import get_architecture

torch = pytest.importorskip("torch")


def _parameter_count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("name", builtin_names("architecture"))
def test_architecture_builds_and_runs(name):
    spec = get_architecture(name)
    torch.manual_seed(0)
    model = spec.factory(num_classes=spec.num_classes)
    logits = model(torch.rand(3, *spec.input_shape))
    assert logits.shape == (3, spec.num_classes)
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize("name", builtin_names("architecture"))
def test_architecture_takes_num_classes(name):
    spec = get_architecture(name)
    assert spec.factory(num_classes=7)(torch.rand(2, *spec.input_shape)).shape == (2, 7)


@pytest.mark.parametrize(
    ("name", "count", "keys"),
    [
        ("lenet-300-100", 266_610, ["fc1", "fc2", "fc3"]),
        ("lenet5-caffe", 431_080, ["conv1", "conv2", "fc1", "fc2"]),
    ],
)
def test_lenet_sizes_and_state_dict_names(name, count, keys):
    model = get_architecture(name).factory()
    assert _parameter_count(model) == count
    assert list(model.state_dict()) == [f"{k}.{p}" for k in keys for p in ("weight", "bias")]


def test_lenet5_caffe_has_relu_only_after_fc1():
    """As in Caffe's prototxt, conv outputs reach the next layer unrectified."""
    torch.manual_seed(0)
    model = get_architecture("lenet5-caffe").factory()
    inputs = {}
    for name in ("conv2", "fc1", "fc2"):
        module = getattr(model, name)
        module.register_forward_hook(lambda m, args, out, name=name: inputs.update({name: args[0]}))
    model(torch.rand(4, 1, 28, 28))
    assert (inputs["conv2"] < 0).any() and (inputs["fc1"] < 0).any()
    assert (inputs["fc2"] >= 0).all()
