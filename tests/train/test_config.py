"""Training choices: one enumeration and whitelist per mode, every default once, in TrainConfig."""

from __future__ import annotations

import dataclasses
import inspect
import io
import json

import pytest
import torch
from stripes import CLASSES, SPEC, SmallConvNet, stripes

from eprpipe.errors import EprError
from eprpipe.train.api import compress_module, compress_registered
from eprpipe.train.checkpoint import identity_of
from eprpipe.train.config import (
    DEFAULTS,
    Decoder,
    Prior,
    RateEstimator,
    Schedule,
    TrainConfig,
)
from eprpipe.train.reparam import EPRModel, RdftDecoder


@pytest.mark.parametrize(
    ("choice", "unknown", "message"),
    [
        (Decoder, "wavelet", "unknown decoder 'wavelet'; choose one of auto, rdft, sq"),
        (Prior, "gaussian", "unknown prior 'gaussian'; choose one of factorized, logistic"),
        (Schedule, "linear", "unknown schedule 'linear'; choose one of cosine, constant"),
        (RateEstimator, "exact", "unknown rate estimator 'exact'; choose one of noise, ste, round"),
    ],
)
def test_each_mode_has_one_whitelist(choice, unknown: str, message: str) -> None:
    for member in choice:
        assert choice.parse(member.value) is member and choice.parse(member) is member
    with pytest.raises(EprError) as caught:
        choice.parse(unknown)
    assert str(caught.value) == message


def test_modes_read_as_the_strings_files_and_checkpoints_spell() -> None:
    assert str(Decoder.SQ) == f"{Decoder.SQ}" == "sq" and Decoder.SQ == "sq"
    assert json.dumps({"prior": Prior.LOGISTIC}) == '{"prior": "logistic"}'


def test_config_takes_names_and_checks_them_when_built() -> None:
    config = TrainConfig(decoder="sq", prior="logistic", schedule="constant", rate_estimator="ste")
    assert (config.decoder, config.prior) == (Decoder.SQ, Prior.LOGISTIC)
    assert (config.schedule, config.rate_estimator) == (Schedule.CONSTANT, RateEstimator.STE)
    assert dataclasses.replace(config, decoder="rdft").decoder is Decoder.RDFT
    with pytest.raises(EprError, match="unknown schedule 'linear'"):
        TrainConfig(schedule="linear")
    with pytest.raises(EprError, match="unknown decoder 'wavelet'"):
        dataclasses.replace(config, decoder="wavelet")


@pytest.mark.parametrize("init_step", [0.0, -0.1, float("nan"), float("inf")])
def test_the_initial_step_must_be_positive(init_step: float) -> None:
    with pytest.raises(EprError, match="initial step must be a finite number > 0"):
        TrainConfig(init_step=init_step).validate()


def test_a_model_built_without_a_config_uses_the_config_defaults() -> None:
    parameters = inspect.signature(EPRModel).parameters
    for name in ("decoder", "prior", "init_step"):
        assert parameters[name].default == getattr(DEFAULTS, name)
    model = EPRModel(SmallConvNet())
    assert isinstance(model.tensors[0].decoder, RdftDecoder)  # conv.weight, 3×3 kernels


def test_checkpoint_identity_is_that_of_eprpipe_0_1() -> None:
    """What a 0.1 run (decoder, prior and initial step beside the config) stored, read from a
    checkpoint it wrote: a checkpoint of 0.1 resumes, and `torch.load(weights_only=True)`
    reads the identity back (it holds strings, not enumerations)."""
    config = TrainConfig(epochs=4, lam=0.5, decoder="sq", prior="logistic", device="cpu")
    identity = identity_of(
        config, architecture="lenet-300-100", dataset="digits", baseline=True, train_examples=1437
    )
    assert identity == {
        "epochs": 4, "batch_size": 128, "lam": 0.5, "lr": 0.05, "decoder_lr": 0.001,
        "prior_lr": 0.001, "plain_lr": 0.001, "schedule": "cosine", "rate_estimator": "noise",
        "augmentation": None, "bf16": False, "seed": 0, "architecture": "lenet-300-100",
        "dataset": "digits", "decoder": "sq", "prior": "logistic",
        "init_step": 0.01831563888873418, "baseline": True, "train_examples": 1437,
    }  # fmt: skip
    assert all(type(value) in (str, int, float, bool, type(None)) for value in identity.values())
    buffer = io.BytesIO()
    torch.save(identity, buffer)
    buffer.seek(0)
    assert torch.load(buffer, weights_only=True) == identity


@pytest.mark.parametrize("moved", ["decoder", "prior", "init_step"])
def test_keywords_that_moved_into_the_config_are_a_clear_type_error(tmp_path, moved) -> None:
    value = {"decoder": "sq", "prior": "logistic", "init_step": 0.01}[moved]
    with pytest.raises(TypeError, match=rf"{moved}= is no longer a keyword of compress_module"):
        compress_module(
            SmallConvNet(), stripes(32, 0), stripes(32, 1), tmp_path / "m.epr", input_spec=SPEC,
            classes=CLASSES, config=TrainConfig(), **{moved: value},
        )  # fmt: skip
    with pytest.raises(TypeError, match=rf"pass config=TrainConfig\({moved}=\.\.\.\)"):
        compress_registered(
            "lenet5-caffe", "digits", tmp_path / "m.epr", config=DEFAULTS, **{moved: value}
        )
    with pytest.raises(TypeError, match="unexpected keyword argument 'decoders'"):
        compress_module(
            SmallConvNet(), stripes(32, 0), stripes(32, 1), tmp_path / "m.epr", input_spec=SPEC,
            classes=CLASSES, config=TrainConfig(), decoders="sq",
        )  # fmt: skip
    assert not list(tmp_path.iterdir())
