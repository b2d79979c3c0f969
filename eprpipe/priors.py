"""Learned probability models for the latents: they put the entropy penalty on training.

Each model covers `groups` independent groups (a whole tensor, or one frequency coefficient of
an RDFT kernel) and returns the information content, in bits, of the latents it is given. The
coded file does not store these densities: the coder fits integer tables to the final latents
(see `eprpipe.tables`), which costs fewer bits of side information than any density here.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

_LOG2 = math.log(2.0)


def _bits_from_likelihood(likelihood: torch.Tensor) -> torch.Tensor:
    """Elementwise −log2 of a likelihood; the floor keeps gradients finite where q ≈ 0."""
    return -torch.log(likelihood.clamp_min(1e-9)) / _LOG2


class FactorizedDensity(nn.Module):
    """The non-parametric factorized density of Ballé et al. 2018 (ICLR), one per group.

    A small monotone network maps x to the logit of a CDF c(x); the probability of an integer
    latent is c(x + 1/2) - c(x - 1/2). It can take the spike-at-zero-plus-slab shape that trained
    latents have, which a one-scale logistic cannot.
    """

    def __init__(self, groups: int, init_scale: float = 10.0, filters: tuple[int, ...] = (3, 3, 3)):
        super().__init__()
        self.groups = groups
        widths = (1, *filters, 1)
        scale = init_scale ** (1.0 / (len(filters) + 1))
        self.matrices = nn.ParameterList()
        self.biases = nn.ParameterList()
        self.factors = nn.ParameterList()
        for i in range(len(filters) + 1):
            init = math.log(math.expm1(1.0 / scale / widths[i + 1]))
            self.matrices.append(nn.Parameter(torch.full((groups, widths[i + 1], widths[i]), init)))
            self.biases.append(nn.Parameter(torch.rand(groups, widths[i + 1], 1) - 0.5))
            if i < len(filters):
                self.factors.append(nn.Parameter(torch.zeros(groups, widths[i + 1], 1)))

    def _logits_cdf(self, x: torch.Tensor) -> torch.Tensor:
        """x: (groups, 1, n) -> logits of the CDF, same shape."""
        for i, (matrix, bias) in enumerate(zip(self.matrices, self.biases, strict=True)):
            x = torch.matmul(F.softplus(matrix), x) + bias
            if i < len(self.factors):
                x = x + torch.tanh(self.factors[i]) * torch.tanh(x)
        return x

    def bits(self, values: torch.Tensor) -> torch.Tensor:
        """Information content of `values` (groups, n) in bits, summed."""
        return self.bits_per_value(values).sum()

    def bits_per_value(self, values: torch.Tensor) -> torch.Tensor:
        """−log2 q(x) for each x in `values` (groups, n)."""
        x = values.unsqueeze(1)
        lower = self._logits_cdf(x - 0.5)
        upper = self._logits_cdf(x + 0.5)
        # Evaluate on the side of the median where the sigmoid is not saturated.
        sign = -torch.sign(lower + upper).detach()
        likelihood = (torch.sigmoid(sign * upper) - torch.sigmoid(sign * lower)).abs()
        return _bits_from_likelihood(likelihood).squeeze(1)


class LogisticDensity(nn.Module):
    """Zero-centred logistic with one learned scale per group: the cheap parametric prior."""

    def __init__(self, groups: int, init_scale: float = 10.0):
        super().__init__()
        self.log_scale = nn.Parameter(torch.full((groups, 1), math.log(init_scale)))

    def bits(self, values: torch.Tensor) -> torch.Tensor:
        """Information content of `values` (groups, n) in bits, summed."""
        return self.bits_per_value(values).sum()

    def bits_per_value(self, values: torch.Tensor) -> torch.Tensor:
        """−log2 q(x) for each x in `values` (groups, n)."""
        scale = self.log_scale.exp()
        upper = torch.sigmoid((values + 0.5) / scale)
        lower = torch.sigmoid((values - 0.5) / scale)
        return _bits_from_likelihood(upper - lower)


PRIORS: dict[str, type[nn.Module]] = {"factorized": FactorizedDensity, "logistic": LogisticDensity}


GRID_POINTS_PER_UNIT = 16


def interpolated_bits(
    density: nn.Module, values: torch.Tensor, per_unit: int = GRID_POINTS_PER_UNIT
) -> torch.Tensor:
    """Σ −log2 q(values) with q evaluated on a fine grid and interpolated linearly.

    Evaluating the density network at every latent dominates a training step; the grid spans
    only the latents' range, so this costs a gather and a lerp per latent instead. Gradients
    reach both the values (the slope between grid points) and the density (the grid values).
    """
    with torch.no_grad():
        low = torch.floor(values.min()) - 1.0
        high = torch.ceil(values.max()) + 1.0
    points = int((high - low).item()) * per_unit + 1
    if points >= values.shape[1]:
        return density.bits(values)
    grid = low + torch.arange(points, device=values.device, dtype=values.dtype) / per_unit
    grid_bits = density.bits_per_value(grid.expand(values.shape[0], -1))
    position = (values - low) * per_unit
    index = position.detach().floor().clamp(0, points - 2).long()
    fraction = position - index
    below = torch.gather(grid_bits, 1, index)
    above = torch.gather(grid_bits, 1, index + 1)
    return (below + (above - below) * fraction).sum()
