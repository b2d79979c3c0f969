"""The same checks on every device torch sees: the CPU always, CUDA where there is a GPU.

On a GPU machine (see tools/gpu_check.sh) these run the CUDA paths: training with the data
on the device, bfloat16 autocast, pinned-memory streaming of image files and on-device
augmentation; each must give what the CPU gives, and the file must decode to what trained.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from stripes import FLIP, SPEC, SmallConvNet, as_files, as_uint8, stripes

from eprpipe.format.container import decode_weights, read_epr
from eprpipe.format.validate import validate_file
from eprpipe.train.api import InputSpec, compress_module
from eprpipe.train.augment import augment
from eprpipe.train.distributed import World
from eprpipe.train.loader import FileData
from eprpipe.train.loop import TensorData, TrainConfig

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
CONFIG = TrainConfig(epochs=3, batch_size=32, lam=0.1, decoder="rdft", progress=False)


@pytest.mark.parametrize("bf16", [False, True])
@pytest.mark.parametrize("device", DEVICES)
def test_training_decodes_what_it_trained(tmp_path: Path, device: str, bf16: bool) -> None:
    """bfloat16 for the forward pass only: the weights stay the file's float32 decode."""
    torch.manual_seed(0)
    net = SmallConvNet()
    config = dataclasses.replace(CONFIG, device=device, bf16=bf16)
    result = compress_module(
        net, stripes(256, 0), stripes(64, 1), tmp_path / "m.epr",
        input_spec=InputSpec(shape=(1, 6, 6), mean=(0.5,), std=(0.25,)),
        classes=("horizontal", "vertical"), config=config, baseline=False,
    )  # fmt: skip
    assert result.evaluation.error < 0.2
    assert validate_file(tmp_path / "m.epr").valid
    records = {record.name: record for record in read_epr(tmp_path / "m.epr")[0].tensors}
    with torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=bf16):
        for name, weight in (("conv.weight", net.conv.weight), ("fc.weight", net.fc.weight)):
            assert weight.dtype == torch.float32 and weight.device.type == device
            decoded = decode_weights(records[name])
            np.testing.assert_allclose(weight.detach().cpu().numpy(), decoded, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("device", DEVICES)
def test_augmented_batches_match_the_cpu(device: str) -> None:
    train = as_uint8(stripes(128, 0))
    plan = [torch.randperm(128, generator=torch.Generator().manual_seed(1))[:40]]
    on_cpu = TensorData.from_numpy(*train, SPEC.mean, SPEC.std, "cpu")
    on_device = TensorData.from_numpy(*train, SPEC.mean, SPEC.std, device)
    ((expected, _),) = on_cpu.batches(plan, 0, "crop4-flip", (0, 1), World())
    ((images, labels),) = on_device.batches(plan, 0, "crop4-flip", (0, 1), World())
    assert images.device.type == device and labels.device.type == device
    assert torch.equal(images.cpu(), expected)
    out = augment(
        "crop4-flip", images, torch.Generator().manual_seed(3), mean=SPEC.mean, std=SPEC.std
    )
    assert out.device.type == device


@pytest.mark.parametrize("device", DEVICES)
def test_streamed_files_arrive_on_the_device(tmp_path: Path, device: str) -> None:
    """On CUDA the loader pins its batches and copies them without blocking."""
    files = as_files(as_uint8(stripes(64, 0)), tmp_path / "files")
    plan = [torch.arange(0, 64, 3), torch.arange(1, 64, 5)]
    on_cpu = FileData(files, SPEC.mean, SPEC.std, "cpu", 0)
    on_device = FileData(files, SPEC.mean, SPEC.std, device, 2)
    expected = list(on_cpu.batches(plan, 0, FLIP, (0, 1), World()))
    got = list(on_device.batches(plan, 0, FLIP, (0, 1), World()))
    for (images, labels), (want_images, want_labels) in zip(got, expected, strict=True):
        assert images.device.type == device
        assert torch.equal(images.cpu(), want_images) and torch.equal(labels.cpu(), want_labels)
