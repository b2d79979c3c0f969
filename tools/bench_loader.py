"""How fast image files reach training: JPEG decoding and ImageNet views, per worker count.

Writes ImageNet-like JPEGs (500×375, quality 90, smooth random content, in class folders) to
a temporary directory, then streams them through `eprpipe.train.loader.FileData` as training does
(random-resized-crop-flip to 224×224, batches of 64) with 0, 1, … N decoding worker processes,
and through the torch-free evaluation path (resize 256, centre crop 224, decoding threads).
Prints images per second; compare with what the training step consumes. Example:

    python tools/bench_loader.py --images 512 --workers 0 1 2
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from eprpipe.data.datasets import prepare_files
from eprpipe.data.imagefiles import TRAIN_VIEW, class_folder_split
from eprpipe.deploy.evaluate import file_batches
from eprpipe.train.distributed import World
from eprpipe.train.loader import FileData

SIZE = (375, 500)  # the most common ImageNet image size (height, width)
CLASSES = 8


def write_images(root: Path, count: int, seed: int = 0) -> None:
    """`count` JPEGs with smooth, photo-like content (a random field, upsampled), 8 classes."""
    rng = np.random.default_rng(seed)
    for index in range(count):
        folder = root / f"class{index % CLASSES}"
        folder.mkdir(parents=True, exist_ok=True)
        coarse = rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)
        image = Image.fromarray(coarse, "RGB").resize(SIZE[::-1], Image.Resampling.BICUBIC)
        noisy = np.asarray(image, np.int16) + rng.integers(-12, 13, (*SIZE, 3))
        Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8), "RGB").save(
            folder / f"{index:06d}.JPEG", quality=90
        )


def _rate(count: int, seconds: float) -> str:
    return f"{count / seconds:8.1f} img/s"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        started = time.perf_counter()
        write_images(root, args.images)
        files = prepare_files(class_folder_split(root, "bench"), (3, 224, 224))
        megabytes = sum(Path(p).stat().st_size for p in files.paths) / 2**20
        print(
            f"{len(files)} JPEGs of {SIZE[1]}×{SIZE[0]}, {megabytes / len(files) * 1024:.0f} KiB "
            f"each on average (written in {time.perf_counter() - started:.1f} s)"
        )
        plan = [
            torch.arange(start, min(start + args.batch_size, len(files)))
            for start in range(0, len(files), args.batch_size)
        ]
        for workers in args.workers:
            data = FileData(files, (0.5,) * 3, (0.25,) * 3, "cpu", workers)
            started = time.perf_counter()
            count = sum(
                len(labels) for _, labels in data.batches(plan, 0, TRAIN_VIEW, (0, 1), World())
            )
            seconds = time.perf_counter() - started
            print(f"training view, {workers} worker process(es): {_rate(count, seconds)}")
        for threads in sorted({1, max(args.workers)}):
            started = time.perf_counter()
            count = sum(len(batch) for batch in file_batches(files, threads))
            seconds = time.perf_counter() - started
            print(f"evaluation view, {threads} thread(s):        {_rate(count, seconds)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
