"""Training data streamed from image files: decoding in worker processes, pinned memory.

In-memory datasets live whole on the training device (`eprpipe.train.TensorData`); data the
size of ImageNet cannot. Here each step's images are read and decoded by DataLoader workers
(Pillow, through the split's reader) while the device trains on the step before, arrive as
uint8 in pinned memory, are copied without blocking and normalized on the device.

The random training view of each image is drawn from a generator seeded by (run seed, epoch,
step, position in the global batch), not from worker or process state, so an image gets the
same view whatever the number of workers or processes, and a run continues exactly after
`--resume`.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from eprpipe.data.datasets import ImageFiles
from eprpipe.errors import EprError
from eprpipe.train.augment import AUGMENTATIONS
from eprpipe.train.distributed import World, own_range, share_positions

EVAL_BATCH = 250
PREFETCH_BATCHES = 4


def cores_per_process() -> int:
    """This process's share of the machine's cores among torchrun's LOCAL_WORLD_SIZE training
    processes (all of them alone), at least 1."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    processes = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    return max(1, (cores or 1) // max(1, processes))


def default_workers() -> int:
    """Decoding processes when the user names none: `cores_per_process`, at most 8."""
    return min(8, cores_per_process())


class _BatchReader(Dataset):
    """Maps one step's (indices, seed or None) to a uint8 image batch and int64 labels."""

    def __init__(self, files: ImageFiles) -> None:
        self.files = files

    def __getitem__(self, item: tuple[np.ndarray, tuple[int, ...] | None, slice, int]):
        """``item``: this process's indices, the step's seed (None: evaluation views), which
        positions of the global batch they hold, and the global batch's size."""
        indices, seed, positions, draws = item
        rngs = None
        if seed is not None:
            children = np.random.SeedSequence(seed).spawn(draws)[positions]
            rngs = [np.random.default_rng(child) for child in children]
        images = self.files.read_batch(indices, rngs)
        return torch.from_numpy(images), torch.from_numpy(self.files.labels[indices])


class FileData:
    """An `ImageFiles` split served batch by batch to a training loop on `device`."""

    def __init__(
        self,
        files: ImageFiles,
        mean: tuple[float, ...],
        std: tuple[float, ...],
        device: str | torch.device,
        workers: int | None = None,
    ) -> None:
        if files.size is None:
            raise EprError("image files need a size: pass the split through datasets.fit()")
        self.files = files
        self.device = torch.device(device)
        self.workers = default_workers() if workers is None else workers
        if self.workers < 0:
            raise EprError(f"workers must be ≥ 0, got {self.workers}")
        shape = (1, len(mean), 1, 1)
        self._mean = torch.tensor(mean, dtype=torch.float32).reshape(shape).to(self.device)
        self._std = torch.tensor(std, dtype=torch.float32).reshape(shape).to(self.device)

    def __len__(self) -> int:
        return len(self.files)

    def _stream(self, items: list) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        workers = min(self.workers, len(items))  # none for an empty plan (a resume at epoch end)
        loader = DataLoader(
            _BatchReader(self.files),
            batch_size=None,
            sampler=items,
            num_workers=workers,
            pin_memory=self.device.type == "cuda",
            prefetch_factor=PREFETCH_BATCHES if workers else None,
            # Its own generator: a DataLoader draws a seed when iterated, which must not move
            # the global one that training's rate noise comes from.
            generator=torch.Generator(),
        )
        for images, labels in loader:
            images = images.to(self.device, non_blocking=True).float().div_(255)
            yield (images - self._mean) / self._std, labels.to(self.device, non_blocking=True)

    def check_augmentation(self, name: str | None) -> None:
        """Files are augmented by their reader's random view, named by ``files.view``."""
        if name is None or name == self.files.view:
            return
        if name in AUGMENTATIONS:
            raise EprError(
                f"{name!r} transforms in-memory batches; image files are augmented by their "
                f"reader's random view ({self.files.view or 'this split has none'})"
            )
        raise EprError(
            f"unknown augmentation {name!r} for these image files; their reader makes "
            f"{self.files.view or 'no random view'}"
        )

    def batches(
        self,
        plan: Sequence[torch.Tensor],
        first_step: int,
        augmentation: str | None,
        key: tuple[int, ...],
        world: World,
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """This process's share of each global batch of `plan` (steps numbered from
        `first_step`), normalized; with `augmentation` (the view the split's reader makes),
        image i of a global batch gets the i-th generator spawned from `key` + step, whichever
        process reads it."""
        self.check_augmentation(augmentation)
        positions = share_positions(world)
        items = [
            (
                batch[positions].numpy(),
                (*key, step) if augmentation else None,
                positions,
                len(batch),
            )
            for step, batch in enumerate(plan, start=first_step)
        ]
        yield from self._stream(items)

    def eval_batches(self, world: World, batch_size: int = EVAL_BATCH):
        """This process's `own_range` of the split in order, evaluation view, normalized."""
        order = np.arange(len(self.files))[own_range(len(self.files), world)]
        whole = slice(None)
        items = [
            (order[i : i + batch_size], None, whole, 0) for i in range(0, len(order), batch_size)
        ]
        yield from self._stream(items)
