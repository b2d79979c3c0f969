"""Train a registered architecture plainly (no EPR) and save its weights for `--init-from`.

The starting point of the "compress a model you already trained" recipe, for benchmarks:

    python tools/train_plain.py resnet20 --dataset cifar10 --data-dir ../shared/datasets/cifar10 \\
        --epochs 25 --out runs/resnet20_plain.safetensors
    eprpipe compress resnet20 --dataset cifar10 --data-dir ../shared/datasets/cifar10 \\
        --init-from runs/resnet20_plain.safetensors --lambda 1 --epochs 10 --no-baseline -o r20.epr

Same recipe as eprpipe's baseline (Adam, cosine schedule, the dataset's augmentation); prints
the test error per epoch and writes the state dict as safetensors, atomically.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import torch
from safetensors.torch import save

from eprpipe.data.datasets import fit
from eprpipe.format.atomic import write_atomically
from eprpipe.plugins.manager import get_architecture, get_dataset
from eprpipe.train.loop import TensorData, TrainConfig, error_rate, train_plain


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("architecture")
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--epochs", type=int, default=25)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    arch, spec = get_architecture(args.architecture), get_dataset(args.dataset)
    train = fit(spec.load("train", args.data_dir), arch.input_shape)
    test = fit(spec.load("test", args.data_dir), arch.input_shape)
    if not isinstance(train, tuple):
        parser.error("this tool trains on in-memory datasets only")
    config = TrainConfig(
        epochs=args.epochs, batch_size=args.batch_size, plain_lr=args.lr, seed=args.seed,
        progress=not args.quiet,
    )  # fmt: skip
    config = dataclasses.replace(config, augmentation=spec.augmentation)
    torch.manual_seed(args.seed)
    net = arch.factory(num_classes=len(spec.classes))
    started = time.perf_counter()
    history = train_plain(
        net,
        TensorData.from_numpy(*train, spec.mean, spec.std, "cpu"),
        test_data := TensorData.from_numpy(*test, spec.mean, spec.std, "cpu"),
        config,
    )
    for record in history.epochs:
        error = 100 * record.test_error
        print(f"epoch {record.epoch}: loss {record.loss:.4f}, test error {error:.2f} %")
    state = {name: value.detach().contiguous() for name, value in net.state_dict().items()}
    write_atomically(args.out, save(state))
    error = 100 * error_rate(net, test_data)
    print(
        f"{args.architecture} on {args.dataset}: test error {error:.2f} % "
        f"on {len(test_data):,} test images after {args.epochs} epochs "
        f"({(time.perf_counter() - started) / 60:.1f} min); wrote {args.out}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
