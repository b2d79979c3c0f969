"""Train-time batch augmentations, named by `eprpipe.data.datasets.DatasetSpec.augmentation`.

They work on a normalized float batch (N, C, H, W) where it already lives (CPU or CUDA), with
whole-batch tensor operations and no loop over images, so augmenting costs little next to a
training step. All randomness comes from the caller's generator, so a seeded run repeats.
Training-side only: this module imports torch, and the deploy and eval path never needs it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial

import torch

from eprpipe.errors import EprError

Share = Callable[[torch.Tensor], torch.Tensor]
# (images, generator, fill, draws, share) → augmented images; see `augment`.
Augmentation = Callable[[torch.Tensor, torch.Generator, torch.Tensor, int, Share], torch.Tensor]


def crop_flip(
    images: torch.Tensor, fill: torch.Tensor, offsets: torch.Tensor, flips: torch.Tensor, pad: int
) -> torch.Tensor:
    """Pad each image by ``pad`` pixels of ``fill`` (C,), crop at ``offsets``, mirror if flipped.

    ``offsets`` is (N, 2) int64 (top, left) in 0..2·pad of the padded image, ``flips`` (N,) bool.
    The padded batch is never built: every output pixel gathers its source pixel, and pixels
    whose source lies in the padding take ``fill``. Offset (pad, pad) without flip is identity.
    """
    n, c, height, width = images.shape
    rows = torch.arange(height, device=images.device)
    cols = torch.arange(width, device=images.device)
    source_rows = rows + (offsets[:, :1] - pad)  # (N, H)
    # Flipping after the crop reads crop column W-1-j for output column j.
    cols = torch.where(flips[:, None], width - 1 - cols, cols)
    source_cols = cols + (offsets[:, 1:] - pad)  # (N, W)
    inside = ((source_rows >= 0) & (source_rows < height))[:, :, None] & (
        (source_cols >= 0) & (source_cols < width)
    )[:, None, :]  # (N, H, W)
    index = (
        source_rows.clamp(0, height - 1)[:, :, None] * width
        + source_cols.clamp(0, width - 1)[:, None, :]
    )
    gathered = images.reshape(n, c, height * width).gather(
        2, index.reshape(n, 1, height * width).expand(n, c, height * width)
    )
    return torch.where(inside[:, None], gathered.reshape(n, c, height, width), fill[:, None, None])


def random_crop(
    images: torch.Tensor,
    generator: torch.Generator,
    fill: torch.Tensor,
    draws: int,
    share: Share,
    pad: int,
    flip: bool,
) -> torch.Tensor:
    """torchvision's RandomCrop(size, padding=pad), then RandomHorizontalFlip() if `flip`.

    Offsets are uniform in 0..2·pad on both axes and each image flips with probability 1/2.
    They are drawn on the generator's device (the trainer's generator is usually a CPU one) and
    then moved, so a seed gives the same augmentation on CPU and CUDA.
    """
    device = generator.device
    offsets = share(torch.randint(0, 2 * pad + 1, (draws, 2), generator=generator, device=device))
    if flip:
        flips = share(torch.randint(0, 2, (draws,), generator=generator, device=device).bool())
    else:
        flips = torch.zeros(len(offsets), dtype=torch.bool, device=device)
    return crop_flip(images, fill, offsets.to(images.device), flips.to(images.device), pad)


AUGMENTATIONS: dict[str, Augmentation] = {
    "crop4-flip": partial(random_crop, pad=4, flip=True),  # natural images (CIFAR)
    "shift2": partial(random_crop, pad=2, flip=False),  # digits and text: a mirror is another glyph
}


def augment(
    name: str,
    images: torch.Tensor,
    generator: torch.Generator,
    *,
    mean: Sequence[float],
    std: Sequence[float],
    draws: int | None = None,
    share: Share | None = None,
) -> torch.Tensor:
    """Apply augmentation ``name`` to a normalized batch; ``mean``/``std`` are the dataset's.

    torchvision pads the raw image with black before normalizing, so padding here is the value
    a black pixel has after normalization, (0 − mean) / std per channel, computed in float32
    exactly as `eprpipe.train.TensorData` normalizes, not 0.

    With ``draws`` and ``share``, the random parameters are drawn for ``draws`` images (a whole
    global batch) and ``share`` picks the rows of this process's ``images``, so that an image's
    augmentation does not depend on how many processes share its batch.
    """
    try:
        transform = AUGMENTATIONS[name]
    except KeyError:
        raise EprError(
            f"unknown augmentation {name!r}; known: {', '.join(sorted(AUGMENTATIONS))}"
        ) from None
    if images.ndim != 4 or not images.is_floating_point() or images.shape[1] != len(mean):
        raise EprError(
            f"augmentation needs a float (N, {len(mean)}, H, W) batch, got {images.dtype} "
            f"{tuple(images.shape)}"
        )
    black = (torch.zeros(len(mean)) - torch.tensor(mean, dtype=torch.float32)) / torch.tensor(
        std, dtype=torch.float32
    )
    fill = black.to(images.device, images.dtype)
    if draws is None:
        return transform(images, generator, fill, len(images), lambda drawn: drawn)
    return transform(images, generator, fill, draws, share)
