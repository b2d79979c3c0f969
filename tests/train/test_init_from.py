"""--init-from: compress weights a user already has, read without unpickling anything."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from eprpipe.cli import main
from eprpipe.errors import EprError
from eprpipe.format.container import decode_weights, read_epr
from eprpipe.plugins.manager import get_architecture
from eprpipe.train.api import compress_registered
from eprpipe.train.loop import TrainConfig
from eprpipe.train.weights import load_into, read_state_dict


@pytest.fixture()
def weights() -> dict[str, torch.Tensor]:
    torch.manual_seed(1)
    net = get_architecture("lenet-300-100").factory(num_classes=10)
    return {name: value.detach().clone() for name, value in net.state_dict().items()}


def test_safetensors_and_torch_state_dicts_read_alike(tmp_path: Path, weights) -> None:
    save_file(weights, str(tmp_path / "w.safetensors"))
    torch.save({"state_dict": {f"module.{k}": v for k, v in weights.items()}}, tmp_path / "w.pt")
    for name in ("w.safetensors", "w.pt"):
        state = read_state_dict(tmp_path / name)
        assert state.keys() == weights.keys()
        assert all(torch.equal(state[k], weights[k]) for k in weights)
    net = get_architecture("lenet-300-100").factory(num_classes=10)
    load_into(net, tmp_path / "w.pt")
    assert all(torch.equal(net.state_dict()[k], weights[k]) for k in weights)


def test_weights_that_do_not_fit_are_named(tmp_path: Path, weights) -> None:
    weights["fc1.weight"] = weights["fc1.weight"][:10]
    weights["extra"] = torch.zeros(2)
    del weights["fc3.bias"]
    torch.save(weights, tmp_path / "w.pt")
    net = get_architecture("lenet-300-100").factory(num_classes=10)
    with pytest.raises(EprError) as info:
        load_into(net, tmp_path / "w.pt")
    message = str(info.value)
    assert "missing: fc3.bias" in message and "unexpected: extra" in message
    assert "fc1.weight (10, 784) (model: (300, 784))" in message


def test_a_pickle_that_runs_code_is_refused(tmp_path: Path) -> None:
    class Exploit:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'pwned'}",))

    (tmp_path / "w.pt").write_bytes(pickle.dumps({"fc1.weight": Exploit()}, protocol=2))
    with pytest.raises(EprError, match="cannot read weights"):
        read_state_dict(tmp_path / "w.pt")
    assert not (tmp_path / "pwned").exists()
    with pytest.raises(EprError, match="no file"):
        read_state_dict(tmp_path / "absent.safetensors")


def test_compression_starts_from_the_given_weights(tmp_path: Path, weights) -> None:
    """With every learning rate at 0 the file holds the given weights, quantized."""
    save_file(weights, str(tmp_path / "w.safetensors"))
    config = TrainConfig(
        epochs=1, lr=0.0, decoder_lr=0.0, prior_lr=0.0, decoder="sq", progress=False
    )
    compress_registered(
        "lenet-300-100",
        "digits",
        tmp_path / "m.epr",
        config=config,
        init_from=tmp_path / "w.safetensors",
        baseline=False,
    )
    contents, _ = read_epr(tmp_path / "m.epr")
    for record in contents.tensors:
        decoded = decode_weights(record)
        half_step = 0.5 * float(record.decoder.step) * (1 + 1e-3)
        assert np.abs(decoded - weights[record.name].numpy()).max() <= half_step, record.name


def test_cli_option(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["compress", "lenet-300-100", "--dataset", "digits", "-o", str(tmp_path / "m.epr")]
    assert main([*args, "--init-from", str(tmp_path / "none.pt"), "--quiet"]) == 1
    assert "--init-from: no file" in capsys.readouterr().err
