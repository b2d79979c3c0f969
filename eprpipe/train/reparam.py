"""Entropy Penalized Reparameterization of any torch.nn.Module.

Every parameter tensor θ becomes a latent tensor φ of the same shape plus a tiny parameter
decoder: θ = f(round(φ)). The task loss sees round(φ) through a straight-through gradient; the
rate term sees φ + U(-1/2, 1/2). The parametrizations use torch.nn.utils.parametrize, so the
wrapped module keeps its own forward and its own state_dict names for the weights it produces.
"""

from __future__ import annotations

import contextlib
import fnmatch
import functools
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.utils import parametrize

from eprpipe.errors import EprError
from eprpipe.format.coding import empirical_bits
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
    The same separable transform decodes 1-D and 3-D kernels (rank 3 and 5 rdft records,
    format 1.1), the Kronecker product of the per-side bases.
    """

    def __init__(self, kernel_size: tuple[int, ...], init_step: float):
        super().__init__()
        self.log_steps = nn.Parameter(torch.full(tuple(kernel_size), math.log(init_step)))
        # B_hᵀ C B_w of every kernel is one product of its flattened coefficients with
        # kron(B_h, B_w) (scaled by the steps): one matrix multiplication per tensor and step.
        kron = functools.reduce(np.kron, [rdft_basis(k) for k in kernel_size])
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


class SharedDecode(nn.Module):
    """The parametrization of a second owner of a tied parameter: the first owner's decoder.

    Its original is the same latent Parameter, so the two modules decode one latent tensor
    (coded once). The identity `right_inverse` leaves the latents as they are.
    """

    def __init__(self, decoder: ScalarDecoder | RdftDecoder):
        super().__init__()
        self.decoder = decoder

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        return self.decoder(latent)

    def right_inverse(self, latent: torch.Tensor) -> torch.Tensor:
        return latent


class Float16Storage(nn.Module):
    """A parameter kept out of EPR but stored as float16: training sees the stored values."""

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return ste_float16(weight)


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


@dataclass
class StoredParameter:
    """A parameter left out of EPR (`exclude`): stored verbatim as float32 or float16."""

    name: str
    module: nn.Module
    attribute: str
    dtype: str

    def value(self) -> torch.Tensor:
        return getattr(self.module, self.attribute).detach()


MAX_KERNEL_SIDE = 64  # the format's bound on each side of an rdft kernel (spec 6)


def _uses_rdft(param: torch.Tensor, decoder: Decoder) -> bool:
    """The frequency decoder for convolution kernels with more than one tap: 2-D kernels
    under "rdft" (files any 1.x reader reads), 1-D, 2-D and 3-D ones under "auto" (rank 3
    and 5 records need format 1.1; measured to help by tools/bench_kernel_decoders.py)."""
    ranks = {Decoder.RDFT: (4,), Decoder.AUTO: (3, 4, 5)}.get(decoder, ())
    kernel = param.shape[2:]
    return param.ndim in ranks and math.prod(kernel) > 1 and max(kernel) <= MAX_KERNEL_SIDE


def _latent_init_scale(latent: torch.Tensor) -> float:
    return max(float(latent.detach().abs().float().mean()) * 2.0, 1.0)


STORED_DTYPES = ("float32", "float16")


def owners_of_parameters(net: nn.Module) -> dict[int, list[str]]:
    """Every name of each floating-point parameter, by identity, the canonical name first.

    A parameter held by two modules (a tied embedding and output projection) has two names;
    `named_parameters()` yields the first, which is the one the file stores.
    """
    owners: dict[int, list[str]] = {}
    for name, param in net.named_parameters(remove_duplicate=False):
        if param.dtype.is_floating_point:
            owners.setdefault(id(param), []).append(name)
    return owners


def is_parametrization_state(name: str) -> bool:
    """Whether a state_dict name belongs to a parametrization (a latent, a decoder step)."""
    return name.startswith("parametrizations.") or ".parametrizations." in name


def _excluded(name: str, patterns: tuple[str, ...]) -> bool:
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns)


def _split_name(net: nn.Module, name: str) -> tuple[nn.Module, str]:
    module_name, _, attribute = name.rpartition(".")
    return net.get_submodule(module_name), attribute


class EPRModel(nn.Module):
    """Wraps a module so that every parameter tensor is reparameterized and entropy penalized.

    :param net: any module; its parameters are replaced in place by latent parametrizations.
    :param decoder: `Decoder.AUTO` (frequency-domain decoder for 1-D, 2-D and 3-D convolution
        kernels, scalar elsewhere), `Decoder.RDFT` (for k×k kernels only) or `Decoder.SQ`, or
        the string naming one; the default is TrainConfig's.
    :param prior: `Prior.FACTORIZED` (Ballé et al. 2018) or `Prior.LOGISTIC`, or its name.
    :param init_step: every decoder step at the start.
    :param exclude: parameter-name patterns (fnmatch, e.g. "*.bias", "head.*") left out of EPR
        and stored verbatim as `exclude_dtype` ("float32" or "float16").
    """

    def __init__(
        self,
        net: nn.Module,
        *,
        decoder: Decoder | str = DEFAULTS.decoder,
        prior: Prior | str = DEFAULTS.prior,
        init_step: float = DEFAULTS.init_step,
        exclude: tuple[str, ...] | list[str] = (),
        exclude_dtype: str = "float32",
    ):
        super().__init__()
        decoder, prior = Decoder.parse(decoder), Prior.parse(prior)
        if exclude_dtype not in STORED_DTYPES:
            raise EprError(f"exclude_dtype must be float32 or float16, got {exclude_dtype!r}")
        patterns = (exclude,) if isinstance(exclude, str) else tuple(exclude)
        self.decoder_kind, self.prior_kind = decoder, prior
        self.net = net
        self.tensors: list[ReparameterizedTensor] = []
        self.stored: list[StoredParameter] = []
        group_ids, scales = [], []
        for names in owners_of_parameters(net).values():
            name = names[0]
            module, attribute = _split_name(net, name)
            if _excluded(name, patterns):
                self._store(names, exclude_dtype)
                continue
            param = getattr(module, attribute)
            if _uses_rdft(param, decoder):
                param_decoder: ScalarDecoder | RdftDecoder = RdftDecoder(param.shape[2:], init_step)
            else:
                param_decoder = ScalarDecoder(init_step)
            param_decoder.to(param.device)
            parametrize.register_parametrization(module, attribute, param_decoder)
            for alias in names[1:]:
                parametrize.register_parametrization(
                    *_split_name(net, alias), SharedDecode(param_decoder)
                )
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

    def _store(self, names: list[str], dtype: str) -> None:
        """Leave a parameter out of EPR; as float16, every owner sees the stored values."""
        module, attribute = _split_name(self.net, names[0])
        if dtype == "float16":
            storage = Float16Storage()
            for name in names:
                parametrize.register_parametrization(*_split_name(self.net, name), storage)
        self.stored.append(StoredParameter(names[0], module, attribute, dtype))

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """The wrapped forward, with every weight decoded once before it starts.

        Decoding at each layer's first use would put a few small single-threaded operations
        between every two convolutions, long enough for the worker threads to go idle; decoded
        up front they run back to back, and their backward nodes run together at the end.
        """
        with parametrize.cached():
            for tensor in self.tensors:
                getattr(tensor.module, tensor.attribute)
            return self.net(*args, **kwargs)

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

    def rate_loss(self) -> torch.Tensor:
        """The differentiable rate term in bits per parameter, to add (times λ) to a loss.

        In training mode the density is evaluated under uniform noise (the paper's proxy); in
        eval mode at the rounded latents with a straight-through gradient (what is coded).
        """
        estimator = RateEstimator.NOISE if self.training else RateEstimator.STE
        return self.rate_bits(estimator) / self.num_parameters()

    def latent_parameters(self) -> Iterator[nn.Parameter]:
        return (t.latent for t in self.tensors)

    def decoder_parameters(self) -> Iterator[nn.Parameter]:
        for tensor in self.tensors:
            yield from tensor.decoder.parameters()

    def prior_parameters(self) -> Iterator[nn.Parameter]:
        return self.prior.parameters()

    def stored_parameters(self) -> Iterator[nn.Parameter]:
        """The parameters left out of EPR (`exclude`), trained as plain floats."""
        for stored in self.stored:
            parametrized = parametrize.is_parametrized(stored.module, stored.attribute)
            if parametrized:
                yield getattr(stored.module.parametrizations, stored.attribute).original
            else:
                yield getattr(stored.module, stored.attribute)

    def param_groups(
        self,
        lr: float = DEFAULTS.lr,
        decoder_lr: float = DEFAULTS.decoder_lr,
        prior_lr: float = DEFAULTS.prior_lr,
        stored_lr: float = DEFAULTS.plain_lr,
    ) -> list[dict]:
        """Optimizer parameter groups, each at its own learning rate, for any torch optimizer.

        Latents move in units of their quantization step, so their rate (`lr`) is far larger
        than a float weight's; decoder steps and densities are small sets of floats.
        """
        groups = [
            {"name": "latents", "params": list(self.latent_parameters()), "lr": lr},
            {"name": "decoders", "params": list(self.decoder_parameters()), "lr": decoder_lr},
            {"name": "prior", "params": list(self.prior_parameters()), "lr": prior_lr},
            {"name": "stored", "params": list(self.stored_parameters()), "lr": stored_lr},
        ]
        return [group for group in groups if group["params"]]

    @torch.no_grad()
    def histogram_bits(self) -> float:
        """Σ over density groups of the rounded latents' information under their own histogram:
        what a static table per group needs (the coder's floor before masks), whatever
        density training learned. The report sets the training estimate beside it."""
        total = 0.0
        for tensor in self.tensors:
            latents = torch.round(tensor.latent).to(torch.int64).cpu().numpy()
            columns = latents.reshape(-1, tensor.decoder.num_groups).T
            total += sum(empirical_bits(column) for column in columns)
        return total

    @torch.no_grad()
    def integer_latents(self) -> dict[str, np.ndarray]:
        """round(φ) per tensor name, as int64 arrays."""
        return {t.name: torch.round(t.latent).to(torch.int64).cpu().numpy() for t in self.tensors}

    @torch.no_grad()
    def decoded_state(self) -> dict[str, torch.Tensor]:
        """The weights the file decodes to, under the plain module's state_dict names."""
        state = {
            name: value
            for name, value in self.net.state_dict().items()
            if not is_parametrization_state(name)
        }
        for module_name, module in self.net.named_modules(remove_duplicate=False):
            if parametrize.is_parametrized(module):
                for attribute in module.parametrizations:
                    name = f"{module_name}.{attribute}" if module_name else attribute
                    state[name] = getattr(module, attribute).detach()
        return state
