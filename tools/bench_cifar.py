"""Compress resnet20 on CIFAR-10 on the CPU and report what the decoded ONNX model does.

    python tools/bench_cifar.py --data-dir ../shared/datasets/cifar10 --epochs 10 --lambda 0.2
    python tools/bench_cifar.py --data-dir ../shared/datasets/cifar10 --epochs 25 --lambda 3 \
        --init-from runs/resnet20_plain.safetensors      # from trained weights (train_plain.py)

With --alternatives, the float model (the --init-from weights, or one trained plainly for
--epochs) also goes through what a user would do instead of EPR (float16, zstd, uniform 8/4-bit,
onnxruntime int8, magnitude pruning; eprpipe.train.alternatives, the code bench_mnist.py uses),
measured on the same test images, listed beside EPR's row.

Prints, and writes as markdown and a PNG under --results: the file and payload size, bits per
parameter, the test error of the ONNX model decoded from the file (on the test images the
data holds: the shared copy has only the first 1,000 of the 10,000, which the table says), the
per-epoch history, and the time of one training step with EPR and without it, measured in
the same run on the same CIFAR batch before training starts.

GPU recipe (the paper's rows; needs a GPU, not run on the CPU machine):
    eprpipe compress vgg16-cifar --dataset cifar10 --data-dir DIR --device cuda \\
        --epochs 200 --batch-size 128 --lambda L -o vgg16.epr
    eprpipe compress resnet20-4 --dataset cifar10 --data-dir DIR --device cuda \\
        --epochs 200 --batch-size 128 --lambda L -o resnet20-4.epr
(paper: VGG-16 101 KB at 10.0 % error, ResNet-20-4 128 KB at 8.8 %; λ to be swept.)
"""

from __future__ import annotations

import argparse
import io
import json
from dataclasses import replace
from pathlib import Path

import torch

from eprpipe.data.datasets import prepare
from eprpipe.format.atomic import write_atomically
from eprpipe.plugins.manager import get_architecture, get_dataset
from eprpipe.train.alternative_options import add_alternative_options
from eprpipe.train.alternatives import measure_alternatives
from eprpipe.train.api import compress_registered
from eprpipe.train.augment import augment
from eprpipe.train.loop import TensorData, TrainConfig, train_plain
from eprpipe.train.steptime import StepTimes, time_steps
from eprpipe.train.weights import load_into


def measure_steps(architecture: str, data_dir: Path, batch_size: int, repeats: int) -> StepTimes:
    """EPR and plain step times on one augmented batch of real training images."""
    arch, spec = get_architecture(architecture), get_dataset("cifar10")
    images, labels = prepare(spec.load("train", data_dir), arch.input_shape)
    data = TensorData.from_numpy(
        images[:batch_size], labels[:batch_size], spec.mean, spec.std, "cpu"
    )
    batch = augment(
        "crop4-flip", data.images, torch.Generator().manual_seed(0), mean=spec.mean, std=spec.std
    )
    return time_steps(arch.factory, batch, data.labels, repeats=repeats)


def alternatives(args: argparse.Namespace, config: TrainConfig) -> list[dict]:
    """The alternatives' rows for the float model: the --init-from weights, or trained plainly
    with `config` (the dataset's augmentation) when none are given."""
    arch, spec = get_architecture(args.architecture), get_dataset("cifar10")
    train = prepare(spec.load("train", args.data_dir), arch.input_shape)
    test = prepare(spec.load("test", args.data_dir), arch.input_shape)
    data = (
        TensorData.from_numpy(*train, spec.mean, spec.std, "cpu"),
        TensorData.from_numpy(*test, spec.mean, spec.std, "cpu"),
    )
    config = replace(config, augmentation=spec.augmentation)
    torch.manual_seed(config.seed)
    net = arch.factory(num_classes=len(spec.classes))
    if args.init_from:
        load_into(net, args.init_from)
    else:
        train_plain(net, *data, config)
    finetune = replace(config, epochs=args.finetune_epochs)
    return measure_alternatives(
        net, arch.input_shape, spec.mean, spec.std, train[0], test, data, finetune,
        args.sparsities, args.calibration_images,
    )  # fmt: skip


def alternatives_markdown(row: dict) -> str:
    """EPR's row and every alternative's, largest first, on the same test images."""
    lines = [
        "| method | payload B | file B | test error (ONNX) | float32 / payload |",
        "|---|---|---|---|---|",
    ]
    float32 = next(r["payload_bytes"] for r in row["alternatives"] if r["variant"] == "float32")
    epr = {"variant": f"EPR λ={row['lam']:g}", **row}
    for r in sorted([epr, *row["alternatives"]], key=lambda r: -r["payload_bytes"]):
        file_bytes = "" if r["file_bytes"] is None else f"{r['file_bytes']:,}"
        lines.append(
            f"| {r['variant']} | {r['payload_bytes']:,} | {file_bytes} "
            f"| {100 * r['test_error']:.2f} % | {float32 / r['payload_bytes']:,.1f}× |"
        )
    start = row["alternatives_start"]
    return (
        f"\nAlternatives to EPR on the float model ({start}), each evaluated as an ONNX "
        f"model by onnxruntime on the same {row['test_images']:,} test images:\n\n"
        + "\n".join(lines)
        + "\n"
    )


def markdown(row: dict) -> str:
    history = "\n".join(
        f"| {e['epoch']} | {e['loss']:.4f} | {e['bits_per_parameter']:.4f} "
        f"| {100 * e['test_error']:.2f} % | {e['seconds']:.0f} s |"
        for e in row["history"]
    )
    return f"""# {row["architecture"]} on CIFAR-10, CPU, from {row["start"]}

| architecture | λ | epochs | test error (decoded ONNX) | test images | payload B | file B | bits/param | ratio vs float32 | EPR step / plain step | wall |
|---|---|---|---|---|---|---|---|---|---|---|
| {row["architecture"]} | {row["lam"]:g} | {row["epochs"]} | {100 * row["test_error"]:.2f} % | {row["test_images"]:,} | {row["payload_bytes"]:,} | {row["file_bytes"]:,} | {row["bits_per_parameter"]:.4f} | {row["ratio"]:.0f}× | {row["step_ratio"]:.3f} ({1000 * row["epr_step_s"]:.0f} / {1000 * row["plain_step_s"]:.0f} ms) | {row["wall_s"] / 60:.1f} min |

Test error on the {row["test_images"]:,} test images the data directory holds (the shared copy:
the first 1,000 of CIFAR-10's 10,000; standard error about ±0.9 points at 10 % error).
Torch threads: {row["threads"]}. Step times: median of {row["repeats"]} steps, batch
{row["batch_size"]}, measured in this run before training.

| epoch | loss | bits/param (training density) | test error (torch, rounded latents) | time |
|---|---|---|---|---|
{history}
""" + (alternatives_markdown(row) if "alternatives" in row else "")  # noqa: E501


def plot(row: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [e["epoch"] for e in row["history"]]
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    left.plot(epochs, [100 * e["test_error"] for e in row["history"]], marker="o")
    left.set_xlabel("epoch")
    left.set_ylabel("test error (%)")
    left.set_title(f"{row['architecture']} on CIFAR-10 from {row['start']}, λ = {row['lam']:g}")
    right.plot(epochs, [e["bits_per_parameter"] for e in row["history"]], marker="o")
    right.set_xlabel("epoch")
    right.set_ylabel("bits per parameter (training density)")
    right.set_title(f"final file: {row['payload_bytes'] / 1000:.1f} KB payload")
    for ax in (left, right):
        ax.grid(alpha=0.3)
    figure.tight_layout()
    image = io.BytesIO()
    figure.savefig(image, format="png", dpi=120)
    write_atomically(path, image.getvalue())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--architecture", default="resnet20")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--lambda", dest="lam", type=float, default=0.2)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=20, help="timed steps for the ratio")
    parser.add_argument("--out", type=Path, default=Path("runs/bench_cifar/resnet20.epr"))
    parser.add_argument("--results", type=Path, default=Path("tools/results"))
    parser.add_argument(
        "--init-from", type=Path, default=None, metavar="WEIGHTS", help="start from these weights"
    )
    add_alternative_options(
        parser,
        finetune_epochs=1,
        subject="the float model (--init-from, or trained plainly for --epochs)",
    )
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)

    steps = measure_steps(args.architecture, args.data_dir, args.batch_size, args.repeats)
    print(
        f"step time, batch {args.batch_size}, {torch.get_num_threads()} thread(s): plain "
        f"{1000 * steps.plain_seconds:.0f} ms, EPR {1000 * steps.epr_seconds:.0f} ms, "
        f"ratio {steps.ratio:.3f}"
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    config = TrainConfig(
        epochs=args.epochs, batch_size=args.batch_size, lam=args.lam, progress=not args.quiet
    )
    result = compress_registered(
        args.architecture, "cifar10", args.out, data_dir=args.data_dir, config=config,
        baseline=False, init_from=args.init_from,
    )  # fmt: skip
    sizes = result.sizes
    row = {
        "architecture": args.architecture,
        "start": f"weights {args.init_from.name}" if args.init_from else "scratch",
        "lam": args.lam,
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "threads": torch.get_num_threads(),
        "repeats": args.repeats,
        "test_error": result.evaluation.error,
        "test_images": result.evaluation.total,
        "payload_bytes": sizes.payload_bytes,
        "file_bytes": sizes.file_bytes,
        "bits_per_parameter": result.bits_per_parameter,
        "ratio": result.ratio,
        "plain_step_s": steps.plain_seconds,
        "epr_step_s": steps.epr_seconds,
        "step_ratio": steps.ratio,
        "wall_s": result.wall_seconds,
        "history": [
            {**vars(epoch), "test_error": epoch.test_error} for epoch in result.history.epochs
        ],
    }
    if args.alternatives:
        row["alternatives_start"] = (
            f"weights {args.init_from.name}" if args.init_from else f"trained {args.epochs} epochs"
        )
        row["alternatives"] = alternatives(args, config)
    args.results.mkdir(parents=True, exist_ok=True)
    start = "_init" if args.init_from else ""
    stem = f"bench_cifar_{args.architecture}{start}_lam{args.lam:g}_e{args.epochs}"  # λ: "0.1"
    write_atomically(args.results / f"{stem}.json", (json.dumps(row, indent=1) + "\n").encode())
    write_atomically(args.results / f"{stem}.md", markdown(row).encode())
    plot(row, args.results / f"{stem}.png")
    print(markdown(row))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
