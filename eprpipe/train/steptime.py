"""What EPR costs per training step: the same step timed with and without it, in one run.

Both steps see the same batch, thread count and the optimizers training uses; the EPR step
adds the latent parametrizations (decoding every weight) and the rate term. The two kinds of
step alternate, so a load that comes and goes on a shared machine slows both alike instead of
skewing the ratio. Used by tools/bench_step.py and tools/bench_cifar.py.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from eprpipe.train.allocator import keep_freed_memory
from eprpipe.train.config import DEFAULTS, Decoder, RateEstimator, TrainConfig
from eprpipe.train.loop import epr_optimizer, plain_optimizer
from eprpipe.train.memformat import batch_format, in_format
from eprpipe.train.reparam import EPRModel


@dataclass(frozen=True)
class StepTimes:
    plain_seconds: float  # median of the timed steps
    epr_seconds: float

    @property
    def ratio(self) -> float:
        return self.epr_seconds / self.plain_seconds


def _seconds(step: Callable[[], None], device: torch.device) -> float:
    """Wall time of one step; on a GPU, from an idle device until its queued work is done."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    started = time.perf_counter()
    step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - started


def _stepper(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    images: torch.Tensor,
    labels: torch.Tensor,
    rate_weight: float,
):
    def step() -> None:
        loss = F.cross_entropy(model(images), labels)
        if rate_weight:
            loss = loss + rate_weight * model.rate_bits(RateEstimator.NOISE)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def time_steps(
    factory: Callable[[], nn.Module],
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    decoder: Decoder | str = DEFAULTS.decoder,
    repeats: int = 20,
) -> StepTimes:
    """Median step time of `factory()` plainly and under EPR, on the same batch."""
    keep_freed_memory()  # as training does
    torch.manual_seed(0)
    plain = factory().to(images.device)
    epr = EPRModel(factory().to(images.device), decoder=decoder)
    images = in_format(images, batch_format(plain, images))  # the layout training would use
    config = TrainConfig(device=str(images.device))  # the optimizers training uses
    plain_step = _stepper(plain, plain_optimizer(plain, config), images, labels, 0.0)
    rate_weight = 1.0 / epr.num_parameters()
    epr_step = _stepper(epr, epr_optimizer(epr, config), images, labels, rate_weight)
    for _ in range(2):  # warm-up: allocator, kernels, lazy state
        plain_step()
        epr_step()
    device = images.device
    times = [(_seconds(plain_step, device), _seconds(epr_step, device)) for _ in range(repeats)]
    plain_times, epr_times = zip(*times, strict=True)
    return StepTimes(statistics.median(plain_times), statistics.median(epr_times))
