"""The vision plugin's networks: sizes, torchvision-compatible names, and a round trip each.

The ImageNet ResNets must load torchvision's weights as they are: the fixture
`data/torchvision_resnet_state_dicts.json` lists torchvision 0.28's state_dict names and shapes,
in order. (torchvision itself is not a test dependency; with it, the weights of its randomly
initialised resnet18/resnet50 loaded into these modules gave bit-identical eval outputs.)
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import onnx
import pytest

from eprpipe.deploy.evaluate import session
from eprpipe.format.api import decode
from eprpipe.plugins.manager import architectures, get_architecture

torch = pytest.importorskip("torch")

from eprpipe.train.api import InputSpec, compress_module  # noqa: E402
from eprpipe.train.loop import TrainConfig  # noqa: E402

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "torchvision_resnet_state_dicts.json"

# name → parameters with the registered number of classes
PARAMETER_COUNTS = {
    "vgg16-cifar": 14_987_722,
    "resnet20": 272_474,
    "resnet32": 466_906,
    "resnet56": 855_770,
    "resnet20-4": 4_327_754,
    "resnet18": 11_689_512,
    "resnet50": 25_557_032,
}


def _parameter_count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _build(name: str, num_classes: int | None = None) -> torch.nn.Module:
    spec = get_architecture(name)
    torch.manual_seed(0)
    return spec.factory(num_classes=num_classes or spec.num_classes)


def test_every_vision_architecture_is_registered():
    assert set(PARAMETER_COUNTS) <= set(architectures())


@pytest.mark.parametrize(("name", "count"), PARAMETER_COUNTS.items())
def test_parameter_count_is_the_one_described(name, count):
    assert _parameter_count(_build(name)) == count
    assert f"({count:,} parameters)" in get_architecture(name).description


@pytest.mark.parametrize("name", ["resnet18", "resnet50"])
def test_imagenet_resnet_state_dict_is_torchvisions(name):
    expected = json.loads(FIXTURE.read_text())[name]
    model = _build(name)
    assert [[key, list(value.shape)] for key, value in model.state_dict().items()] == expected

    generator = torch.Generator().manual_seed(1)
    weights = {
        key: torch.tensor(5) if key.endswith("num_batches_tracked")
        else torch.rand(shape, generator=generator)
        for key, shape in expected
    }  # fmt: skip
    model.load_state_dict(weights, strict=True)
    assert all(torch.equal(model.state_dict()[key], value) for key, value in weights.items())


def _widened(key: str, shape: list[int], width: int) -> list[int]:
    """A CIFAR ResNet tensor's shape at `width` times the channels of `shape`."""
    if key == "conv1.weight":  # the 3 input channels stay 3
        return [shape[0] * width, *shape[1:]]
    if key == "fc.weight":  # the classes stay
        return [shape[0], shape[1] * width]
    if key == "fc.bias" or not shape:
        return shape
    if len(shape) == 4:
        return [shape[0] * width, shape[1] * width, *shape[2:]]
    return [shape[0] * width]


def test_width_multiplier_scales_every_channel_count():
    narrow = _build("resnet20").state_dict()
    wide = _build("resnet20-4").state_dict()
    assert list(narrow) == list(wide)
    for key, tensor in narrow.items():
        assert list(wide[key].shape) == _widened(key, list(tensor.shape), 4), key
    assert [wide[f"layer{i}.0.bn1.weight"].numel() for i in (1, 2, 3)] == [64, 128, 256]


@pytest.mark.parametrize(("name", "blocks"), [("resnet20", 3), ("resnet32", 5), ("resnet56", 9)])
def test_cifar_resnet_depth(name, blocks):
    """6n + 2 layers: the first conv, 2 convs per block in 3 stages of n, the classifier."""
    model = _build(name)
    for stage in (1, 2, 3):
        assert len(getattr(model, f"layer{stage}")) == blocks
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size[0] == 3]
    assert len(convs) + 1 == 6 * blocks + 2
    shortcuts = [key for key in model.state_dict() if re.search(r"downsample\.0\.weight$", key)]
    assert shortcuts == ["layer2.0.downsample.0.weight", "layer3.0.downsample.0.weight"]


def test_vgg16_cifar_layers():
    model = _build("vgg16-cifar")
    convs = [m.out_channels for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs == [64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512]
    linears = [(m.in_features, m.out_features) for m in model.modules()
               if isinstance(m, torch.nn.Linear)]  # fmt: skip
    assert linears == [(512, 512), (512, 10)]


def test_cifar_resnet_refuses_depths_not_6n_plus_2():
    from eprpipe_builtins.vision_models import CifarResNet

    with pytest.raises(ValueError, match="6n"):
        CifarResNet(depth=21)


# One EPR step each (as many training images as the batch) keeps the round trips short: the
# cost of a step grows with the parameters (decoders, densities, Adam) more than with pixels.
# The ImageNet ResNets are compressed at 64×64 to save time; tests/test_architectures.py runs
# them at the full 224×224. ResNet-32 and -56 are ResNet-20 with more of the same blocks; their
# round trips would add ~13 s and nothing new.
ROUND_TRIP_SIZES = {
    "vgg16-cifar": 32,
    "resnet20": 32,
    "resnet20-4": 32,
    "resnet18": 64,
    "resnet50": 64,
}
CLASSES = 3
BATCH = 4


@pytest.fixture
def one_torch_thread():
    """Torch on one thread: on the 2-core machine, shared with other processes, two intra-op
    threads made these round trips ~5× slower (ResNet-50: 77 s against 15 s), not faster."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _images(n: int, size: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).random((n, 3, size, size), dtype=np.float32)


@pytest.mark.parametrize("name", ROUND_TRIP_SIZES)
@pytest.mark.usefixtures("one_torch_thread")
def test_compress_and_decode_round_trip(name, tmp_path):
    """One EPR step, then the torch-free decoder: onnxruntime on the decoded file computes what
    the torch module computes with the decoded weights (the export of each layer is right)."""
    size = ROUND_TRIP_SIZES[name]
    labels = np.arange(BATCH, dtype=np.int64) % CLASSES
    spec = InputSpec(shape=(3, size, size), mean=(0.49, 0.48, 0.45), std=(0.25, 0.24, 0.26))
    net = _build(name, CLASSES)
    reference = _build(name, CLASSES).eval()
    path = tmp_path / "m.epr"
    result = compress_module(
        net, (_images(BATCH, size, 0), labels), (_images(BATCH, size, 1), labels), path,
        input_spec=spec, classes=tuple("abc"),
        config=TrainConfig(epochs=1, batch_size=BATCH, progress=False), baseline=False,
    )  # fmt: skip
    assert result.num_parameters == _parameter_count(reference)

    model = decode(path)
    weights = {init.name: onnx.numpy_helper.to_array(init) for init in model.graph.initializer}
    missing, unexpected = reference.load_state_dict(
        {k: torch.from_numpy(np.array(weights[k])) for k in reference.state_dict() if k in weights},
        strict=False,
    )
    assert not unexpected and all(key.endswith("num_batches_tracked") for key in missing)

    images = _images(3, size, 2)
    mean = np.array(spec.mean, np.float32).reshape(1, 3, 1, 1)
    std = np.array(spec.std, np.float32).reshape(1, 3, 1, 1)
    with torch.no_grad():
        expected = reference(torch.from_numpy((images - mean) / std)).numpy()
    runner = session(model)
    got = runner.run(None, {runner.get_inputs()[0].name: images})[0]
    scale = float(np.abs(expected).max())
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4 * max(scale, 1.0))
