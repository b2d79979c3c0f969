"""Time one training step with EPR against the same step without it, in the same run.

The ratio is what EPR costs per step; run it on an idle machine (it prints the torch thread
count it used). Example:

    python tools/bench_step.py lenet5-caffe --threads 1
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from eprpipe.plugins import get_architecture
from eprpipe.reparam import EPRModel


def _time_steps(model: torch.nn.Module, step, repeats: int) -> float:
    """Median seconds of `step()` over `repeats` runs, after two warm-up steps."""
    for _ in range(2):
        step()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        step()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("architecture")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--decoder", choices=("rdft", "sq"), default="rdft")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    arch = get_architecture(args.architecture)
    images = torch.randn(args.batch_size, *arch.input_shape)
    labels = torch.randint(0, arch.num_classes, (args.batch_size,))

    def stepper(model: torch.nn.Module, with_rate: bool):
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
        parameters = sum(p.numel() for p in arch.factory().parameters())

        def step() -> None:
            loss = F.cross_entropy(model(images), labels)
            if with_rate:
                loss = loss + model.rate_bits("noise") / parameters
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

        return step

    plain = arch.factory()
    epr = EPRModel(arch.factory(), decoder=args.decoder)
    plain_s = _time_steps(plain, stepper(plain, False), args.repeats)
    epr_s = _time_steps(epr, stepper(epr, True), args.repeats)
    print(
        f"{args.architecture}, batch {args.batch_size}, {torch.get_num_threads()} thread(s): "
        f"plain step {1000 * plain_s:.1f} ms, EPR step ({args.decoder}) {1000 * epr_s:.1f} ms, "
        f"ratio {epr_s / plain_s:.2f}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
