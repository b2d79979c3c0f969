"""Single-stage EPR training: loss = task loss + λ · rate / number of parameters.

Convention: the task loss is the mean cross-entropy in nats per example; the rate is the
information content of all latents in bits under the learned densities, divided by the number
of parameters. So λ is "nats of task loss worth one bit per parameter"; useful values for the
MNIST LeNets lie around 0.1-2 (see DESIGN.md).
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from eprpipe.deploy.evaluate import progress_bar
from eprpipe.errors import EprError
from eprpipe.train.allocator import keep_freed_memory
from eprpipe.train.augment import AUGMENTATIONS, augment
from eprpipe.train.checkpoint import Checkpointer, restore_rng, rng_state
from eprpipe.train.config import Schedule, TrainConfig
from eprpipe.train.distributed import (
    World,
    current_world,
    own_range,
    shard,
    share_buffers,
    sum_over_processes,
)
from eprpipe.train.memformat import batch_format, in_format
from eprpipe.train.reparam import EPRModel


@dataclass
class EpochRecord:
    epoch: int
    loss: float
    bits_per_parameter: float
    test_error: float | None  # None: not evaluated after this epoch (TrainConfig.eval_every)
    seconds: float


@dataclass
class History:
    epochs: list[EpochRecord] = field(default_factory=list)


@dataclass(frozen=True)
class TensorData:
    """Images in [0, 1] already normalized for the network, and int64 labels, on a device."""

    images: torch.Tensor
    labels: torch.Tensor
    mean: tuple[float, ...] = ()  # the normalization applied, which augmentations need
    std: tuple[float, ...] = ()

    @classmethod
    def from_numpy(
        cls,
        images: np.ndarray,
        labels: np.ndarray,
        mean: tuple[float, ...],
        std: tuple[float, ...],
        device: str,
    ) -> TensorData:
        shape = (1, len(mean), 1, 1)
        mean_t = torch.tensor(mean, dtype=torch.float32).reshape(shape)
        std_t = torch.tensor(std, dtype=torch.float32).reshape(shape)
        if images.dtype == np.uint8:  # 0..255 pixels: the [0, 1] scale mean and std refer to
            images = images.astype(np.float32) / 255.0
        normalized = (torch.from_numpy(np.ascontiguousarray(images, np.float32)) - mean_t) / std_t
        labels_t = torch.from_numpy(labels.astype(np.int64)).to(device)
        return cls(normalized.to(device), labels_t, tuple(mean), tuple(std))

    def __len__(self) -> int:
        return len(self.labels)

    def check_augmentation(self, name: str | None) -> None:
        if name is not None and name not in AUGMENTATIONS:
            known = ", ".join(sorted(AUGMENTATIONS))
            raise EprError(f"unknown augmentation {name!r}; known: {known}")

    def batches(
        self,
        plan: Sequence[torch.Tensor],
        first_step: int,
        augmentation: str | None,
        key: tuple[int, ...],
        world: World,
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """This process's share of each global batch of `plan` (steps numbered from
        `first_step`), augmented on the device.

        The random draws are made for the whole global batch from a generator seeded by `key`
        + step, and each process applies its examples' draws: an example gets the same view
        however many processes share the batch.
        """
        for step, batch in enumerate(plan, start=first_step):
            indices = shard(batch, world).to(self.images.device)
            images = self.images[indices]
            if augmentation:
                generator = torch.Generator().manual_seed(step_seed((*key, step)))
                images = augment(
                    augmentation, images, generator, mean=self.mean, std=self.std,
                    draws=len(batch), share=lambda draws: shard(draws, world),
                )  # fmt: skip
            yield images, self.labels[indices]

    def eval_batches(
        self, world: World, batch_size: int = 1000
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        own = own_range(len(self), world)
        for start in range(own.start, own.stop, batch_size):
            stop = min(start + batch_size, own.stop)
            yield self.images[start:stop], self.labels[start:stop]


class Data(Protocol):
    """What the training loop needs of its data: `TensorData` or `eprpipe.train.loader.FileData`."""

    def __len__(self) -> int: ...

    def check_augmentation(self, name: str | None) -> None:
        """Raise EprError unless `batches` can apply augmentation `name` (None: none)."""

    def batches(
        self,
        plan: Sequence[torch.Tensor],
        first_step: int,
        augmentation: str | None,
        key: tuple[int, ...],
        world: World,
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]: ...

    def eval_batches(self, world: World) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """This process's `own_range` of the split, in order, normalized, in batches."""


def step_seed(key: tuple[int, ...]) -> int:
    """A 63-bit seed mixed from `key`: independent streams for every (seed, epoch, step)."""
    low, high = np.random.SeedSequence(key).generate_state(2)
    return (int(high) << 32 | int(low)) >> 1


@torch.no_grad()
def error_rate(
    model: nn.Module,
    data: Data,
    progress: bool = False,
    memory_format: torch.memory_format = torch.contiguous_format,
) -> float:
    """Top-1 error of `model` on `data`, in eval mode (rank 0 shows progress if asked for),
    with the images in `memory_format` (see `eprpipe.train.memformat`).

    Under torchrun each process classifies its own part of the data and the counts are summed;
    call `share_buffers` first so that every part sees the same BatchNorm statistics.
    """
    world = current_world()
    was_training = model.training
    model.eval()
    wrong = total = 0
    own = own_range(len(data), world)
    with progress_bar(own.stop - own.start, "evaluating", progress and world.is_main) as bar:
        for images, labels in data.eval_batches(world):
            logits = model(in_format(images, memory_format))
            wrong += int((logits.argmax(1) != labels).sum())
            total += len(labels)
            bar.update(len(labels))
    model.train(was_training)
    device = next(model.parameters()).device
    wrong, total = sum_over_processes([wrong, total], world, device)
    return wrong / total


def _schedule(optimizer: torch.optim.Optimizer, config: TrainConfig, steps: int):
    if config.schedule is Schedule.CONSTANT:
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: 0.5 * (1.0 + math.cos(math.pi * min(step / steps, 1.0)))
    )


def _steps_per_epoch(n: int, batch_size: int, world: World) -> int:
    """How many steps `_epoch_plan` gives, without drawing an order."""
    return n // batch_size + (1 if n % batch_size >= world.size else 0)


def _epoch_plan(
    n: int, batch_size: int, generator: torch.Generator, world: World
) -> list[torch.Tensor]:
    """The shuffled global batches of an epoch; each process later takes its share.

    A last batch too small to give every process an example is dropped (on all of them).
    """
    order = torch.randperm(n, generator=generator)
    batches = [order[start : start + batch_size] for start in range(0, n, batch_size)]
    return [batch for batch in batches if len(batch) >= world.size]


@dataclass
class _Progress:
    """Where a run stands: what a checkpoint must hold besides the module and optimizer."""

    epoch: int = 1
    steps_done_in_epoch: int = 0
    epoch_generator: torch.Tensor | None = None  # batch-order generator at the epoch's start
    loss_sum: float = 0.0
    bits_sum: float = 0.0


def _run(
    model: nn.Module,
    train: Data,
    test: Data,
    config: TrainConfig,
    optimizer: torch.optim.Optimizer,
    extra_loss,
    description: str,
    checkpoint: Checkpointer | None = None,
) -> History:
    """The shared loop: shuffled mini-batches, a schedule, a progress bar, an eval per epoch.

    With a `checkpoint`, the run saves its whole state when due and at its end, and continues
    from a saved state of the same phase (`description`) exactly where that state left off.
    Under torchrun each process trains on its share of every batch (see distributed.py).
    """
    world = current_world()
    if config.batch_size < world.size:
        raise EprError(f"batch size {config.batch_size} is smaller than {world.size} processes")
    train.check_augmentation(config.augmentation)
    keep_freed_memory()
    forward = _distributed(model, world, torch.device(config.device))
    generator = torch.Generator().manual_seed(config.seed)
    steps_per_epoch = _steps_per_epoch(len(train), config.batch_size, world)
    scheduler = _schedule(optimizer, config, config.epochs * steps_per_epoch)
    history = History()
    progress = _Progress()
    saved = checkpoint.phase_state(description) if checkpoint else None
    if saved is not None:
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        history.epochs = [EpochRecord(**record) for record in saved["history"]]
        progress = _Progress(**saved["progress"])
        generator.set_state(progress.epoch_generator)
        restore_rng(saved["rng"])

    def state() -> dict:
        return {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "history": [vars(record) for record in history.epochs],
            "progress": vars(progress),
            "rng": rng_state(),
        }

    bar = tqdm(
        total=config.epochs * steps_per_epoch,
        initial=(progress.epoch - 1) * steps_per_epoch + progress.steps_done_in_epoch,
        desc=description,
        unit="step",
        disable=not (config.progress and world.is_main),
        dynamic_ncols=True,
    )
    model.train()
    memory_format = None  # decided on the first batch
    for epoch in range(progress.epoch, config.epochs + 1):
        started = time.perf_counter()
        if epoch != progress.epoch or progress.epoch_generator is None:
            progress = _Progress(epoch=epoch, epoch_generator=generator.get_state())
        skip = progress.steps_done_in_epoch
        plan = _epoch_plan(len(train), config.batch_size, generator, world)
        key = (config.seed, epoch)
        for images, labels in train.batches(plan[skip:], skip, config.augmentation, key, world):
            if memory_format is None:
                memory_format = batch_format(model, images)
            images = in_format(images, memory_format)
            with _autocast(config, images.device):
                logits = forward(images)
            task = F.cross_entropy(logits.float(), labels)
            penalty, bits_per_parameter = extra_loss()
            loss = task + penalty
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            progress.loss_sum += float(loss.detach())
            progress.bits_sum += bits_per_parameter
            progress.steps_done_in_epoch += 1
            count = progress.steps_done_in_epoch
            bar.update(1)
            if count % 10 == 0:
                bar.set_postfix(
                    epoch=f"{epoch}/{config.epochs}",
                    loss=f"{progress.loss_sum / count:.4f}",
                    bpp=f"{progress.bits_sum / count:.4f}",
                )
            if checkpoint and checkpoint.due((epoch - 1) * steps_per_epoch + count):
                checkpoint.save(description, state())
        count = progress.steps_done_in_epoch
        share_buffers(model, world)
        evaluates = _evaluates_after(epoch, config)
        test_error = None
        if evaluates:
            layout = torch.contiguous_format if memory_format is None else memory_format
            test_error = error_rate(model, test, config.progress, layout)
        history.epochs.append(
            EpochRecord(
                epoch,
                progress.loss_sum / count,
                progress.bits_sum / count,
                test_error,
                time.perf_counter() - started,
            )
        )
        bar.set_postfix(
            epoch=f"{epoch}/{config.epochs}",
            loss=f"{progress.loss_sum / count:.4f}",
            bpp=f"{progress.bits_sum / count:.4f}",
            test_acc="-" if test_error is None else f"{100 * (1 - test_error):.2f}%",
        )
        model.train()
    bar.close()
    if checkpoint:
        checkpoint.save(description, state())
    return history


def _evaluates_after(epoch: int, config: TrainConfig) -> bool:
    """Whether the test error is measured after `epoch` (every `eval_every`-th, and the last)."""
    if config.eval_every == 0:
        return False
    return epoch % config.eval_every == 0 or epoch == config.epochs


def _autocast(config: TrainConfig, device: torch.device):
    """bfloat16 autocast for the network's forward pass when asked for, else a no-op.

    Autocast keeps the numerically delicate operations (batch norm, reductions) in float32;
    latents, decoders, densities and optimizer state stay float32 throughout.
    """
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=config.bf16)


def _distributed(model: nn.Module, world: World, device: torch.device) -> nn.Module:
    """The module to call for the forward pass: wrapped in DDP when there are several processes.

    DDP averages gradients over processes; the rate term is computed from the wrapped module's
    own parameters outside the forward pass, identically on every process, so its averaged
    gradient is the single-process one.
    """
    if not world.distributed:
        return model
    from torch.nn.parallel import DistributedDataParallel

    ids = [device] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids)


def _adam(groups: list[dict], device: str) -> torch.optim.Adam:
    """Adam with torch's fused kernel where it has one (CPU, CUDA): one pass over each tensor
    instead of a dozen, which on the CPU saves about a millisecond per resnet20 step."""
    fused = torch.device(device).type in ("cpu", "cuda") or None
    return torch.optim.Adam(groups, fused=fused)


def epr_optimizer(model: EPRModel, config: TrainConfig) -> torch.optim.Adam:
    """Latents, decoders and densities, each at its own learning rate."""
    return _adam(
        [
            {"params": list(model.latent_parameters()), "lr": config.lr},
            {"params": list(model.decoder_parameters()), "lr": config.decoder_lr},
            {"params": list(model.prior_parameters()), "lr": config.prior_lr},
        ],
        config.device,
    )


def plain_optimizer(net: nn.Module, config: TrainConfig) -> torch.optim.Adam:
    return _adam([{"params": list(net.parameters()), "lr": config.plain_lr}], config.device)


def train_epr(
    model: EPRModel,
    train: Data,
    test: Data,
    config: TrainConfig,
    checkpoint: Checkpointer | None = None,
) -> History:
    """Train latents, decoders and densities together; evaluation uses the rounded latents."""
    config.validate()
    torch.manual_seed(config.seed)
    optimizer = epr_optimizer(model, config)
    n = model.num_parameters()

    def rate_penalty() -> tuple[torch.Tensor, float]:
        bits_per_parameter = model.rate_bits(config.rate_estimator) / n
        return config.lam * bits_per_parameter, float(bits_per_parameter.detach())

    return _run(model, train, test, config, optimizer, rate_penalty, "EPR training", checkpoint)


def train_plain(
    net: nn.Module,
    train: Data,
    test: Data,
    config: TrainConfig,
    checkpoint: Checkpointer | None = None,
) -> History:
    """The uncompressed baseline: same data, epochs, batch and schedule, plain float weights."""
    config.validate()
    torch.manual_seed(config.seed)
    optimizer = plain_optimizer(net, config)
    zero = torch.zeros((), device=config.device)

    def no_penalty() -> tuple[torch.Tensor, float]:
        return zero, 32.0

    return _run(net, train, test, config, optimizer, no_penalty, "baseline training", checkpoint)
