"""Does a frequency-domain decoder help 1-D and 3-D convolution kernels, as it helps 2-D ones?

The RDFT decoder (a separable real DFT per kernel with one learned step per frequency) was
measured to help k×k kernels. This measures the same transform on Conv1d and Conv3d kernels
(`decoder="auto"`, "frequency" below) against the scalar decoder (`decoder="sq"`): a plainly
trained model is wrapped both ways and trained on with the same λ values, steps and batches.
The table gives the rate estimate (bits under the learned density at the rounded latents),
the latents' information under each group's own histogram (what a static table per group
needs: the coder's floor, whatever density training learned) and the test error.
The frequency decoder went into the format (rank 3 and 5 rdft records, format 1.1) because it
won here.

    python tools/bench_kernel_decoders.py --out tools/results/kernel_decoders
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_own_loop as own

from eprpipe.train import wrap


class WideSignalConv(nn.Module):
    """Two Conv1d layers with 7-tap kernels on a 1-D signal."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv1d(1, 32, 7, padding=3), nn.ReLU(), nn.MaxPool1d(2),
            nn.Conv1d(32, 64, 7, padding=3), nn.ReLU(), nn.AdaptiveAvgPool1d(1), nn.Flatten(),
        )  # fmt: skip
        self.head = nn.Linear(64, 3)

    def forward(self, signal: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(signal))


class VolumeConv(nn.Module):
    """Two Conv3d layers with 3×3×3 kernels on a small volume."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv3d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool3d(2),
            nn.Conv3d(16, 32, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool3d(1), nn.Flatten(),
        )  # fmt: skip
        self.head = nn.Linear(32, 3)

    def forward(self, volume: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(volume))


def volume_batch(g: torch.Generator, n: int, size: int = 10) -> own.Batch:
    """A bright line along one of the three axes, at a random place, in noise: its axis."""
    axis = torch.randint(0, 3, (n,), generator=g)
    volumes = 0.5 * torch.randn(n, size, size, size, generator=g)
    a, b = torch.randint(1, size - 1, (2, n), generator=g)
    for i in range(n):
        index = [a[i], b[i]]
        index.insert(int(axis[i]), slice(None))
        volumes[(i, *index)] += 2.0
    return (volumes.unsqueeze(1),), axis


EXAMPLES = {
    "conv1d": own.Example("conv1d", WideSignalConv, own.signal_batch, own.cross_entropy,
                          own.error, "error", 0.0),
    "conv3d": own.Example("conv3d", VolumeConv, volume_batch, own.cross_entropy, own.error,
                          "error", 0.0),
}  # fmt: skip


@dataclass
class Row:
    model: str
    decoder: str
    lam: float
    kernel_parameters: int
    bits: float
    bits_per_parameter: float
    empirical_bits: float  # each group's latents under their own histogram: the coder's floor
    test_error: float
    float_error: float


def measure(example: own.Example, lams: list[float], steps: int, epr_steps: int) -> list[Row]:
    torch.manual_seed(0)
    trained = example.build()
    own.train(trained, example, steps, seed=0, progress=True)
    float_error = own.torch_metric(trained, example)
    rows = []
    for decoder in ("sq", "frequency"):
        for lam in lams:
            module = copy.deepcopy(trained)
            wrapped = wrap(module, decoder="sq" if decoder == "sq" else "auto")
            own.train(wrapped, example, epr_steps, seed=1, lam=lam, progress=True)
            wrapped.eval()
            kernels = sum(p.numel() for n, p in trained.named_parameters() if p.ndim >= 3)
            bits = float(wrapped.rate_bits().detach())
            rows.append(
                Row(example.name, decoder, lam, kernels, bits, bits / wrapped.num_parameters(),
                    wrapped.histogram_bits(), own.torch_metric(wrapped, example), float_error)
            )  # fmt: skip
            print(rows[-1], flush=True)
    return rows


def table(rows: list[Row]) -> str:
    lines = [
        "| model | decoder | λ | bits (estimate) | bits/param | empirical bits | test error "
        "| float error |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r.model} | {r.decoder} | {r.lam:g} | {r.bits:,.0f} | {r.bits_per_parameter:.3f} "
            f"| {r.empirical_bits:,.0f} | {r.test_error:.2%} | {r.float_error:.2%} |"
        )
    return "\n".join(lines)


def plot(rows: list[Row], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = sorted({r.model for r in rows})
    figure, axes = plt.subplots(1, len(models), figsize=(5 * len(models), 4), squeeze=False)
    for axis, model in zip(axes[0], models, strict=True):
        for decoder, marker in (("sq", "o"), ("frequency", "s")):
            points = sorted((r.empirical_bits / 8, r.test_error) for r in rows
                            if r.model == model and r.decoder == decoder)  # fmt: skip
            axis.plot(*zip(*points, strict=True), marker=marker, label=decoder)
        axis.set_xlabel("latents under their own histograms (bytes)")
        axis.set_ylabel("test error")
        axis.set_title(model)
        axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--epr-steps", type=int, default=600)
    parser.add_argument("--lambdas", type=float, nargs="+", default=[0.01, 0.05, 0.2])
    parser.add_argument("--only", nargs="*", choices=sorted(EXAMPLES), default=None)
    args = parser.parse_args(argv)
    rows = [
        row
        for name in args.only or EXAMPLES
        for row in measure(EXAMPLES[name], args.lambdas, args.steps, args.epr_steps)
    ]
    print(table(rows))
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        command = f"`python tools/bench_kernel_decoders.py {' '.join(sys.argv[1:])}`"
        (args.out / "results.md").write_text(f"{command}\n\n{table(rows)}\n")
        (args.out / "results.json").write_text(json.dumps([asdict(r) for r in rows], indent=1))
        plot(rows, args.out / "results.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
