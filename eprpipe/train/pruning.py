"""Magnitude pruning with a brief fine-tune: the baseline a user would try before EPR.

The weights (not the biases) of every Linear and convolution layer are pruned by magnitude to
the asked sparsity, then the network is fine-tuned with `train_plain` while the masks hold the
pruned weights at zero, and the masks are made permanent: the result is a plain module whose
weights contain the zeros, ready for any quantizer and entropy coder.

Global by default (one magnitude threshold over all pruned weights): the layers with most
redundancy lose most. Measured on LeNet-300-100 (3 plain epochs on MNIST, 2.39 % error, then
3 fine-tune epochs at lr 1e-3), test error global / per layer: 2.07 / 2.57 % at 90 % sparsity,
2.49 / 4.08 % at 95 %, 3.60 / 11.93 % at 98 %. `scope="layer"` prunes each layer to the same
sparsity, which never empties a small layer.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn
from torch.nn.utils import prune

from eprpipe.errors import EprError
from eprpipe.train.config import Choice
from eprpipe.train.loop import Data, History, TrainConfig, error_rate, train_plain


class PruningScope(Choice):
    """Where one magnitude threshold applies: over all pruned weights, or within each layer."""

    GLOBAL = "global"
    LAYER = "layer"


@dataclass
class Pruned:
    """A pruned, fine-tuned module and what pruning and fine-tuning did to its test error."""

    module: nn.Module  # the same module, pruned in place, with plain weight parameters
    sparsity: float  # zeros / weights over the pruned weights, as measured after fine-tuning
    pruned_error: float  # test error right after pruning, before fine-tuning
    error: float  # test error after fine-tuning
    history: History


def prunable(module: nn.Module) -> list[tuple[nn.Module, str]]:
    """The (layer, "weight") pairs pruning touches: every Linear and convolution layer."""
    kinds = (nn.Linear, nn.modules.conv._ConvNd)
    return [(layer, "weight") for layer in module.modules() if isinstance(layer, kinds)]


def zero_fraction(module: nn.Module) -> float:
    """The fraction of exact zeros among the weights `prunable` names."""
    weights = [getattr(layer, name) for layer, name in prunable(module)]
    zeros = sum(int((weight == 0).sum()) for weight in weights)
    return zeros / sum(weight.numel() for weight in weights)


def prune_and_finetune(
    module: nn.Module,
    train: Data,
    test: Data,
    sparsity: float,
    config: TrainConfig,
    scope: PruningScope | str = PruningScope.GLOBAL,
) -> Pruned:
    """Prune `module`'s weights by magnitude to `sparsity` (the fraction set to zero, rounded to
    whole weights: of all pruned weights with `scope="global"`, of each layer's with "layer"),
    fine-tune it for `config.epochs` epochs at `config.plain_lr` with the zeros held, and make
    the zeros permanent.

    The masks are torch's pruning reparametrization (weight = weight_orig · mask on every
    forward pass), so the optimizer's updates never reach a pruned weight.
    """
    if not 0.0 <= sparsity < 1.0:
        raise EprError(f"sparsity must be in [0, 1), got {sparsity}")
    scope = PruningScope.parse(scope)
    layers = prunable(module)
    if not layers:
        raise EprError("the module has no Linear or convolution layer to prune")
    if scope is PruningScope.GLOBAL:
        prune.global_unstructured(layers, pruning_method=prune.L1Unstructured, amount=sparsity)
    else:
        for layer, name in layers:
            prune.l1_unstructured(layer, name, amount=sparsity)
    pruned_error = error_rate(module, test)
    history = train_plain(module, train, test, config)
    for layer, name in layers:
        prune.remove(layer, name)
    error = history.epochs[-1].test_error
    if error is None:
        error = error_rate(module, test)
    return Pruned(module, zero_fraction(module), pruned_error, error, history)
