"""The Python API on a module no plugin registered: conv (RDFT), BatchNorm buffers, dense."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from stripes import SmallConvNet, stripes

from eprpipe.deploy.evaluate import session
from eprpipe.format.api import decode
from eprpipe.format.container import read_epr
from eprpipe.train.api import InputSpec, compress_module
from eprpipe.train.loop import TrainConfig


@pytest.fixture(scope="module")
def compressed(tmp_path_factory):
    torch.manual_seed(0)
    net = SmallConvNet()
    path = tmp_path_factory.mktemp("api") / "small.epr"
    result = compress_module(
        net, stripes(512, 0), stripes(256, 1), path,
        input_spec=InputSpec(shape=(1, 6, 6), mean=(0.5,), std=(0.25,)),
        classes=("horizontal", "vertical"),
        config=TrainConfig(epochs=4, batch_size=32, lam=0.1, decoder="rdft", progress=False),
        baseline=False,
    )  # fmt: skip
    return net, path, result


def test_every_state_dict_tensor_is_in_the_file(compressed):
    _, path, result = compressed
    contents, _ = read_epr(path)
    names = {record.name: record for record in contents.tensors}
    expected = set(SmallConvNet().state_dict())
    assert set(names) == expected
    assert names["conv.weight"].decoder.__class__.__name__ == "RdftDecoderParams"
    # A buffer: quantized on a grid if that kept the held-out predictions (eprpipe.train.buffers).
    assert (names["bn.running_var"].decoder is None) == (result.buffers.bits is None)
    assert names["bn.num_batches_tracked"].raw.dtype == np.int64


def test_decoded_onnx_matches_torch_with_the_decoded_weights(compressed):
    _, path, result = compressed
    assert result.evaluation.error < 0.2
    model = decode(path)
    weights = {init.name: onnx.numpy_helper.to_array(init) for init in model.graph.initializer}
    reference = SmallConvNet().eval()
    reference.load_state_dict(
        {k: torch.from_numpy(np.array(weights[k])) for k in reference.state_dict() if k in weights},
        strict=False,
    )
    images, _ = stripes(64, 2)
    normalized = torch.from_numpy((images - 0.5) / 0.25)
    with torch.no_grad():
        expected = reference(normalized).numpy()
    runner = session(model)
    got = runner.run(None, {runner.get_inputs()[0].name: images})[0]
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


def test_info_counts_only_trained_tensors_as_parameters(compressed):
    from eprpipe.report import info_json, info_report

    _, path, result = compressed
    contents, sizes = read_epr(path)
    assert contents.manifest["untrained_tensors"] == [
        "bn.num_batches_tracked", "bn.running_mean", "bn.running_var",
    ]  # fmt: skip
    rows = {row["name"]: row for row in info_json(contents, sizes)["tensors"]}
    assert not rows["bn.running_var"]["trained"] and rows["conv.weight"]["trained"]
    text = info_report(path, contents, sizes)
    untrained = sum(rows[n]["payload_bytes"] for n in contents.manifest["untrained_tensors"])
    assert f"of which untrained {untrained:>6,} B   (3 tensors" in text
    assert f"{8 * sizes.payload_bytes / result.num_parameters:.4f} bits/param" in text
