"""What a training run is told: the modes it can choose from and `TrainConfig`, their one home.

Torch-free (torch is imported only to check a CUDA device), so that the CLI can show these
defaults in `eprpipe compress --help` without loading the training stack. Each mode is an
enumeration whose values are the strings the CLI, manifests and checkpoints spell; a string
is checked against its enumeration once, when a `TrainConfig` (or an `EPRModel`) is built.

    >>> TrainConfig(decoder="sq").decoder is Decoder.SQ
    True
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from enum import Enum
from typing import TypeVar

from eprpipe.errors import EprError

C = TypeVar("C", bound="Choice")


class Choice(str, Enum):
    """A mode named by a string; `parse` is the one check of a name against its whitelist."""

    def __str__(self) -> str:
        return self.value

    @classmethod
    def parse(cls: type[C], value: object) -> C:
        """The member called `value` (a member or its string); EprError listing the others."""
        try:
            return cls(value)
        except ValueError:
            label = re.sub(r"(?<!^)(?=[A-Z])", " ", cls.__name__).lower()
            known = ", ".join(member.value for member in cls)
            raise EprError(f"unknown {label} {value!r}; choose one of {known}") from None


class Decoder(Choice):
    """How latents become weights: RDFT for k×k kernels (scalar elsewhere), or scalar only.

    "auto" picks per tensor what was measured to help (tools/bench_kernel_decoders.py): the
    RDFT decoder for 1-D, 2-D and 3-D convolution kernels, scalar steps elsewhere. Files with
    1-D or 3-D kernels coded that way need format 1.1; "rdft" keeps to 2-D kernels.
    """

    AUTO = "auto"
    RDFT = "rdft"
    SQ = "sq"


class Prior(Choice):
    """The learned density of the rate term: Ballé et al.'s factorized one, or a logistic."""

    FACTORIZED = "factorized"
    LOGISTIC = "logistic"


class Schedule(Choice):
    """How the learning rates move over the run: a cosine decay to zero, or not at all."""

    COSINE = "cosine"
    CONSTANT = "constant"


class RateEstimator(Choice):
    """Where the rate term evaluates the density (see `EPRModel.rate_bits`)."""

    NOISE = "noise"
    STE = "ste"
    ROUND = "round"


_CHOICES = {
    "decoder": Decoder,
    "prior": Prior,
    "schedule": Schedule,
    "rate_estimator": RateEstimator,
}


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides a training run. Defaults suit the MNIST LeNets on a CPU.

    The mode fields accept their enumeration's members or the strings naming them.
    """

    epochs: int = 20
    batch_size: int = 128
    lam: float = 0.5
    lr: float = 0.05
    decoder_lr: float = 1e-3
    prior_lr: float = 1e-3
    plain_lr: float = 1e-3
    schedule: Schedule = Schedule.COSINE
    rate_estimator: RateEstimator = RateEstimator.NOISE
    decoder: Decoder = Decoder.RDFT
    prior: Prior = Prior.FACTORIZED
    init_step: float = math.exp(-4.0)  # every decoder step at the start
    augmentation: str | None = None  # see Data.check_augmentation
    bf16: bool = False  # forward pass under bfloat16 autocast; rate term and updates in float32
    eval_every: int = 1  # test error after every N-th epoch and the last; 0: only the final one
    seed: int = 0
    device: str = "cpu"
    progress: bool = True

    def __post_init__(self) -> None:
        for name, choice in _CHOICES.items():
            object.__setattr__(self, name, choice.parse(getattr(self, name)))

    def validate(self) -> None:
        if self.epochs < 1 or self.batch_size < 1:
            raise EprError("epochs and batch size must be at least 1")
        if self.eval_every < 0:
            raise EprError(
                f"eval_every must be ≥ 0 (0: no test error during training), got {self.eval_every}"
            )
        if self.lam < 0 or not math.isfinite(self.lam):
            raise EprError(f"λ must be a finite number ≥ 0, got {self.lam}")
        if not (self.init_step > 0 and math.isfinite(self.init_step)):
            raise EprError(f"the initial step must be a finite number > 0, got {self.init_step}")
        if self.device.startswith("cuda"):
            import torch

            if not torch.cuda.is_available():
                raise EprError("--device cuda asked for, but torch sees no CUDA device")


DEFAULTS = TrainConfig()  # what a run not told otherwise uses: model builders and the CLI read it
