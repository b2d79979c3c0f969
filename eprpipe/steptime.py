"""What EPR costs per training step: the same step timed with and without it, in one run.

Both steps see the same batch, optimizer and thread count; the EPR step adds the latent
parametrizations (decoding every weight) and the rate term. Used by tools/bench_step.py and
tools/bench_cifar.py, which print the ratio next to the results it explains.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from eprpipe.reparam import EPRModel


@dataclass(frozen=True)
class StepTimes:
    plain_seconds: float  # median of the timed steps
    epr_seconds: float

    @property
    def ratio(self) -> float:
        return self.epr_seconds / self.plain_seconds


def _median_seconds(step: Callable[[], None], repeats: int) -> float:
    for _ in range(2):  # warm-up: allocator, kernels, lazy state
        step()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        step()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def _stepper(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, rate_weight: float):
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)

    def step() -> None:
        loss = F.cross_entropy(model(images), labels)
        if rate_weight:
            loss = loss + rate_weight * model.rate_bits("noise")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def time_steps(
    factory: Callable[[], nn.Module],
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    decoder: str = "rdft",
    repeats: int = 20,
) -> StepTimes:
    """Median step time of `factory()` plainly and under EPR, on the same batch."""
    torch.manual_seed(0)
    plain = factory().to(images.device)
    epr = EPRModel(factory().to(images.device), decoder=decoder)
    rate_weight = 1.0 / epr.num_parameters()
    plain_seconds = _median_seconds(_stepper(plain, images, labels, 0.0), repeats)
    epr_seconds = _median_seconds(_stepper(epr, images, labels, rate_weight), repeats)
    return StepTimes(plain_seconds, epr_seconds)
