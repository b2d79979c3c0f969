"""Checkpoints inside one process: an interrupted run with augmentation resumes exactly."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from stripes import SmallConvNet, stripes

from eprpipe.errors import EprError
from eprpipe.train import checkpoint as checkpoint_module
from eprpipe.train.api import InputSpec, compress_module
from eprpipe.train.checkpoint import CheckpointPolicy
from eprpipe.train.loop import TrainConfig

CONFIG = TrainConfig(
    epochs=3, batch_size=32, lam=0.1, decoder="rdft", augmentation="crop4-flip", progress=False
)


def _compress(path: Path, policy: CheckpointPolicy | None):
    torch.manual_seed(0)
    return compress_module(
        SmallConvNet(), stripes(256, 0), stripes(64, 1), path,
        input_spec=InputSpec(shape=(1, 6, 6), mean=(0.5,), std=(0.25,)),
        classes=("horizontal", "vertical"), config=CONFIG, baseline=True,
        checkpoint=policy,
    )  # fmt: skip


class _Crash(Exception):
    pass


def test_interrupted_run_with_augmentation_resumes_to_the_same_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _compress(tmp_path / "whole.epr", None)
    policy = CheckpointPolicy(tmp_path / "run.ckpt", every_steps=5, every_seconds=None)
    saves = []
    original = checkpoint_module.Checkpointer.save

    def save_then_crash(self, phase: str, state: dict) -> None:
        original(self, phase, state)
        saves.append(phase)
        if phase == "EPR training" and saves.count(phase) == 3:
            raise _Crash  # after the third EPR save, mid-epoch: the process dies here

    monkeypatch.setattr(checkpoint_module.Checkpointer, "save", save_then_crash)
    with pytest.raises(_Crash):
        _compress(tmp_path / "run.epr", policy)
    monkeypatch.undo()
    assert "baseline training" in saves and not (tmp_path / "run.epr").exists()
    resumed = CheckpointPolicy(policy.path, every_steps=5, every_seconds=None, resume=True)
    _compress(tmp_path / "run.epr", resumed)
    assert (tmp_path / "run.epr").read_bytes() == (tmp_path / "whole.epr").read_bytes()
    assert not policy.path.exists()


def test_augmentation_names_are_checked(tmp_path: Path) -> None:
    config = TrainConfig(augmentation="mixup", progress=False)
    with pytest.raises(EprError, match="unknown augmentation 'mixup'; known: crop4-flip"):
        compress_module(
            SmallConvNet(), stripes(64, 0), stripes(64, 1), tmp_path / "m.epr",
            input_spec=InputSpec(shape=(1, 6, 6), mean=(0.5,), std=(0.25,)),
            classes=("horizontal", "vertical"), config=config,
        )  # fmt: skip
