"""Entropy Penalized Reparameterization of any torch.nn.Module.

Every parameter tensor θ becomes a latent tensor φ of the same shape plus a tiny parameter
decoder: θ = f(round(φ)). The task loss sees round(φ) through a straight-through gradient; the
rate term sees φ + U(-1/2, 1/2). The parametrizations use torch.nn.utils.parametrize, so the
wrapped module keeps its own forward and its own state_dict names for the weights it produces.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.nn.utils import parametrize

from eprpipe.errors import EprError
from eprpipe.format.paramdecode import rdft_basis
from eprpipe.train.config import DEFAULTS, Decoder, Prior, RateEstimator
from eprpipe.train.priors import PRIORS, interpolated_bits


def ste_round(x: torch.Tensor) -> torch.Tensor:
    """round(x) forward, identity gradient backward."""
    return x + (torch.round(x) - x).detach()


def ste_float16(x: torch.Tensor) -> torch.Tensor:
    """Round to the nearest float16 forward (the container stores steps as float16)."""
    return x + (x.to(torch.float16).to(x.dtype) - x).detach()


def _full_precision(latent: torch.Tensor):
    """Decode weights in float32 even under autocast: training must see what the file decodes.
    (Entering an autocast context costs more than most decodes: skipped when none is active.)"""
    if torch.is_autocast_enabled(latent.device.type):
        return torch.autocast(latent.device.type, enabled=False)
    return contextlib.nullcontext()


class _RoundedDecode(torch.autograd.Function):
    """θ = round(φ) · float16(exp(log step)), or, with a basis, each kernel's rounded
    coefficients through the basis scaled by its steps, in one autograd node.

    The gradients are the straight-through ones of `ste_round` and `ste_float16` composed with
    the decode; one node per tensor instead of a dozen small operations and their backward
    nodes is most of what decoding every weight at every step costs.
    """

    @staticmethod
    def forward(ctx, latent, log_steps, basis):
        steps = log_steps.exp()
        steps16 = steps.to(torch.float16).to(steps.dtype)
        rounded = torch.round(latent)
        ctx.scalar = basis is None
        if ctx.scalar:
            ctx.save_for_backward(rounded, steps, steps16)
            return rounded * steps16
        scaled = steps16.reshape(-1, 1) * basis
        kernels = rounded.reshape(-1, basis.shape[0])
        ctx.save_for_backward(kernels, steps, basis, scaled)
        return (kernels @ scaled).reshape(latent.shape)

    @staticmethod
    def backward(ctx, grad):
        if ctx.scalar:
            rounded, steps, steps16 = ctx.saved_tensors
            return grad * steps16, (grad * rounded).sum() * steps, None
        kernels, steps, basis, scaled = ctx.saved_tensors
        grad_kernels = grad.reshape(-1, basis.shape[0])
        grad_scaled = kernels.T @ grad_kernels
        grad_steps = (grad_scaled * basis).sum(1).reshape(steps.shape) * steps
        return (grad_kernels @ scaled.T).reshape(grad.shape), grad_steps, None


class ScalarDecoder(nn.Module):
    """θ = step · φ̃ with one learned step per tensor (the paper's scalar decoder, "SQ")."""

    def __init__(self, init_step: float):
        super().__init__()
        self.log_step = nn.Parameter(torch.tensor(math.log(init_step)))

    def step(self) -> torch.Tensor:
        return ste_float16(self.log_step.exp())

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        with _full_precision(latent):
            return _RoundedDecode.apply(latent, self.log_step, None)

    def right_inverse(self, weight: torch.Tensor) -> torch.Tensor:
        return weight.detach() / self.step().detach()

    num_groups = 1  # the probability model has one group per tensor

    def group_of_elements(self, latent: torch.Tensor) -> torch.Tensor:
        """The group of each latent in memory order (flattened)."""
        return torch.zeros(latent.numel(), dtype=torch.long)


class RdftDecoder(nn.Module):
    """θ = B_hᵀ (step ⊙ φ̃) B_w per kernel: an orthonormal real 2-D DFT of k×k kernels.

    One learned step per frequency coefficient, shared by all in×out kernels of the layer.
    The basis comes from `eprpipe.format.paramdecode`, the arithmetic the decoded file uses.
    """

    def __init__(self, kernel_size: tuple[int, int], init_step: float):
        super().__init__()
        kh, kw = kernel_size
        self.log_steps = nn.Parameter(torch.full((kh, kw), math.log(init_step)))
        # B_hᵀ C B_w of every kernel is one product of its flattened coefficients with
        # kron(B_h, B_w) (scaled by the steps): one matrix multiplication per tensor and step.
        kron = np.kron(rdft_basis(kh), rdft_basis(kw))
        self.register_buffer("basis", torch.from_numpy(kron).float(), persistent=False)

    def steps(self) -> torch.Tensor:
        return ste_float16(self.log_steps.exp())

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        with _full_precision(latent):
            return _RoundedDecode.apply(latent, self.log_steps, self.basis)

    def right_inverse(self, weight: torch.Tensor) -> torch.Tensor:
        """The orthonormal basis inverts by its transpose: C = B_h W B_wᵀ per kernel."""
        kernels = weight.detach().reshape(-1, self.basis.shape[0]) @ self.basis.T
        return kernels.reshape(weight.shape) / self.steps().detach()

    @property
    def num_groups(self) -> int:
        """One group per frequency coefficient, shared by all kernels of the tensor."""
        return self.log_steps.numel()

    def group_of_elements(self, latent: torch.Tensor) -> torch.Tensor:
        """The group of each latent in memory order: its frequency, the fastest two axes."""
        return torch.arange(latent.numel()) % self.num_groups


@dataclass
class ReparameterizedTensor:
    """One parameter tensor of the wrapped module and what represents it."""

    name: str
    module: nn.Module
    attribute: str
    decoder: ScalarDecoder | RdftDecoder

    @property
    def latent(self) -> nn.Parameter:
        return getattr(self.module.parametrizations, self.attribute).original

    def numel(self) -> int:
        return self.latent.numel()


def _uses_rdft(param: torch.Tensor, decoder: Decoder) -> bool:
    return decoder is Decoder.RDFT and param.ndim == 4 and param.shape[2] * param.shape[3] > 1


def _latent_init_scale(latent: torch.Tensor) -> float:
    return max(float(latent.detach().abs().float().mean()) * 2.0, 1.0)


class EPRModel(nn.Module):
    """Wraps a module so that every parameter tensor is reparameterized and entropy penalized.

    :param net: any module; its parameters are replaced in place by latent parametrizations.
    :param decoder: `Decoder.RDFT` (frequency-domain decoder for k×k kernels, scalar elsewhere)
        or `Decoder.SQ`, or the string naming one; the default is TrainConfig's.
    :param prior: `Prior.FACTORIZED` (Ballé et al. 2018) or `Prior.LOGISTIC`, or its name.
    :param init_step: every decoder step at the start.
    """

    def __init__(
        self,
        net: nn.Module,
        *,
        decoder: Decoder | str = DEFAULTS.decoder,
        prior: Prior | str = DEFAULTS.prior,
        init_step: float = DEFAULTS.init_step,
    ):
        super().__init__()
        decoder, prior = Decoder.parse(decoder), Prior.parse(prior)
        self.net = net
        self.tensors: list[ReparameterizedTensor] = []
        group_ids, scales = [], []
        for name, param in list(net.named_parameters()):
            if not param.dtype.is_floating_point:
                continue
            module_name, _, attribute = name.rpartition(".")
            module = net.get_submodule(module_name)
            if _uses_rdft(param, decoder):
                param_decoder: ScalarDecoder | RdftDecoder = RdftDecoder(param.shape[2:], init_step)
            else:
                param_decoder = ScalarDecoder(init_step)
            param_decoder.to(param.device)
            parametrize.register_parametrization(module, attribute, param_decoder)
            latent = getattr(module.parametrizations, attribute).original
            first = len(scales)
            group_ids.append(first + param_decoder.group_of_elements(latent))
            scales += [_latent_init_scale(latent)] * param_decoder.num_groups
            self.tensors.append(ReparameterizedTensor(name, module, attribute, param_decoder))
        if not self.tensors:
            raise EprError("the module has no floating-point parameters to compress")
        device = self.tensors[0].latent.device
        # One density over every group of every tensor: the rate term is one batched evaluation.
        self.prior = PRIORS[prior](len(scales), init_scale=torch.tensor(scales)).to(device)
        group_of_latent = torch.cat(group_ids).to(device, torch.int32)  # what the rate gathers by
        self.register_buffer("group_ids", group_of_latent, persistent=False)

    def forward(self, *args: torch.Tensor) -> torch.Tensor:
        """The wrapped forward, with every weight decoded once before it starts.

        Decoding at each layer's first use would put a few small single-threaded operations
        between every two convolutions, long enough for the worker threads to go idle; decoded
        up front they run back to back, and their backward nodes run together at the end.
        """
        with parametrize.cached():
            for tensor in self.tensors:
                getattr(tensor.module, tensor.attribute)
            return self.net(*args)

    def num_parameters(self) -> int:
        return sum(t.numel() for t in self.tensors)

    def rate_bits(self, estimator: RateEstimator | str = RateEstimator.ROUND) -> torch.Tensor:
        """Σ −log2 q over all latents, as the training rate term or the report's estimate.

        "noise": q evaluated at φ + U(−½, ½), the paper's differentiable proxy. "ste": q at
        round(φ) with a straight-through gradient, the rate of what is actually coded.
        "round": q at round(φ), no gradient to the latents (for reports).
        """
        estimator = RateEstimator.parse(estimator)
        latents = torch.cat([t.latent.reshape(-1) for t in self.tensors])
        if estimator is RateEstimator.NOISE:
            latents = latents + torch.empty_like(latents).uniform_(-0.5, 0.5)
        elif estimator is RateEstimator.STE:
            latents = ste_round(latents)
        else:  # exact: integer values on a grid of one point per unit
            return interpolated_bits(self.prior, torch.round(latents).detach(), self.group_ids, 1)
        return interpolated_bits(self.prior, latents, self.group_ids)

    def latent_parameters(self) -> Iterator[nn.Parameter]:
        return (t.latent for t in self.tensors)

    def decoder_parameters(self) -> Iterator[nn.Parameter]:
        for tensor in self.tensors:
            yield from tensor.decoder.parameters()

    def prior_parameters(self) -> Iterator[nn.Parameter]:
        return self.prior.parameters()

    @torch.no_grad()
    def integer_latents(self) -> dict[str, np.ndarray]:
        """round(φ) per tensor name, as int64 arrays."""
        return {t.name: torch.round(t.latent).to(torch.int64).cpu().numpy() for t in self.tensors}
