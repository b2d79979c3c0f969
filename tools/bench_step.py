"""Time one training step with EPR against the same step without it, in the same run.

The ratio is what EPR costs per step; run it on an idle machine (it prints the torch thread
count it used). On a CPU the ratio moves by a few hundredths from run to run, so it can be
measured in several rounds, each with fresh models, and the median of their ratios printed
with their spread. Example:

    python tools/bench_step.py lenet5-caffe --threads 1
    python tools/bench_step.py resnet20 --threads 2 --rounds 5
    python tools/bench_step.py vgg16-cifar --device cuda
"""

from __future__ import annotations

import argparse
import statistics

import torch

from eprpipe.plugins.manager import get_architecture
from eprpipe.train.config import DEFAULTS, Decoder
from eprpipe.train.steptime import time_steps


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("architecture")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=30, help="timed steps of each kind")
    parser.add_argument("--rounds", type=int, default=1, help="measurements, each fresh")
    parser.add_argument(
        "--decoder", choices=[d.value for d in Decoder], default=DEFAULTS.decoder.value
    )
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    arch = get_architecture(args.architecture)
    images = torch.randn(args.batch_size, *arch.input_shape, device=args.device)
    labels = torch.randint(0, arch.num_classes, (args.batch_size,), device=args.device)

    ratios = []
    for _ in range(args.rounds):
        times = time_steps(arch.factory, images, labels, decoder=args.decoder, repeats=args.repeats)
        ratios.append(times.ratio)
        plain_s, epr_s = times.plain_seconds, times.epr_seconds
        print(
            f"{args.architecture}, batch {args.batch_size}, {args.device}, "
            f"{torch.get_num_threads()} thread(s): "
            f"plain step {1000 * plain_s:.1f} ms, EPR step ({args.decoder}) "
            f"{1000 * epr_s:.1f} ms, ratio {times.ratio:.2f}"
        )
    if args.rounds > 1:
        print(
            f"median ratio of {args.rounds} rounds {statistics.median(ratios):.3f} "
            f"(min {min(ratios):.3f}, max {max(ratios):.3f})"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
