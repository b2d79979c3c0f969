"""Your own model, loss and loop: six models that are not image classifiers, through wrap → save.

Each example is trained plainly in an ordinary PyTorch loop, then wrapped (starting from the
trained weights) and trained on with `loss + λ · rate_loss()`, saved as an .epr file, decoded
without torch and scored under onnxruntime on held-out data. The table gives payload bytes,
bits per parameter, the ratio to float32 and the task's metric before (plain float model) and
after (decoded model) compression; the plot draws the metric change against the bytes.

    python tools/bench_own_loop.py --out tools/results/own_loop
    python tools/bench_own_loop.py --steps 100 --epr-steps 100 --only gru   # a quick look

The examples (`EXAMPLES`) are also what tests/train/test_own_loop.py trains, for fewer steps.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

import eprpipe
from eprpipe.deploy.evaluate import session
from eprpipe.train import load_into, save, wrap

Batch = tuple[tuple[torch.Tensor, ...], Any]  # model inputs, targets


# --- the models -------------------------------------------------------------------------------


class RegressionMLP(nn.Module):
    """Flat features → one value."""

    def __init__(self, features: int = 8, width: int = 64):
        super().__init__()
        self.body = nn.Sequential(
            nn.Linear(features, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(),
            nn.Linear(width, 1),
        )  # fmt: skip

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.body(features)


class TokenTransformer(nn.Module):
    """int64 token ids → Embedding → one TransformerEncoderLayer → mean pooling → classes."""

    def __init__(self, vocab: int = 32, width: int = 32, classes: int = 2):
        super().__init__()
        self.embed = nn.Embedding(vocab, width)
        self.encoder = nn.TransformerEncoderLayer(
            width, nhead=4, dim_feedforward=2 * width, dropout=0.0, batch_first=True
        )
        self.head = nn.Linear(width, classes)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(self.embed(tokens)).mean(1))


class TwoInTwoOut(nn.Module):
    """Two inputs, two outputs: a shared trunk and one head per output."""

    def __init__(self, width: int = 32):
        super().__init__()
        self.trunk = nn.Sequential(nn.Linear(4 + 6, width), nn.Tanh())
        self.total = nn.Linear(width, 1)
        self.energy = nn.Linear(width, 1)

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        hidden = self.trunk(torch.cat([a, b], dim=1))
        return self.total(hidden), self.energy(hidden)


class TiedLM(nn.Module):
    """A next-token model whose output projection is its embedding (one tensor, two modules)."""

    def __init__(self, vocab: int = 32, width: int = 24):
        super().__init__()
        self.embed = nn.Embedding(vocab, width)
        self.mix = nn.Linear(width, width)
        self.head = nn.Linear(width, vocab, bias=False)
        self.head.weight = self.embed.weight

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.head(torch.tanh(self.mix(self.embed(tokens))))


class SignalConv(nn.Module):
    """A 1-D signal → two Conv1d layers → its waveform class."""

    def __init__(self, classes: int = 3):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv1d(1, 8, 5, padding=2), nn.ReLU(), nn.MaxPool1d(2),
            nn.Conv1d(8, 16, 5, padding=2), nn.ReLU(), nn.AdaptiveAvgPool1d(1), nn.Flatten(),
        )  # fmt: skip
        self.head = nn.Linear(16, classes)

    def forward(self, signal: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(signal))


class SequenceGRU(nn.Module):
    """A sequence of 3 features → GRU → its last state → one value."""

    def __init__(self, hidden: int = 16):
        super().__init__()
        self.gru = nn.GRU(3, hidden, batch_first=True)
        self.head = nn.Linear(hidden, 1)

    def forward(self, sequence: torch.Tensor) -> torch.Tensor:
        states, _ = self.gru(sequence)
        return self.head(states[:, -1])


# --- their data --------------------------------------------------------------------------------

FEATURE_MEAN, FEATURE_STD = 3.0, 2.0  # the raw features' scale; the model sees them normalized


def regression_batch(g: torch.Generator, n: int) -> Batch:
    z = torch.randn(n, 8, generator=g)
    return (z,), 0.5 * torch.sin(2 * z).sum(1, keepdim=True)


def token_batch(g: torch.Generator, n: int, length: int = 12) -> Batch:
    tokens = torch.randint(0, 32, (n, length), generator=g)
    return (tokens,), (tokens == 7).any(1).long()


def two_input_batch(g: torch.Generator, n: int) -> Batch:
    a, b = torch.randn(n, 4, generator=g), torch.randn(n, 6, generator=g)
    return (a, b), (a.sum(1, keepdim=True), (b**2).mean(1, keepdim=True))


def next_token_batch(g: torch.Generator, n: int, length: int = 10) -> Batch:
    tokens = torch.randint(0, 32, (n, length), generator=g)
    return (tokens,), (tokens * 5 + 3) % 32


def signal_batch(g: torch.Generator, n: int, length: int = 64) -> Batch:
    kind = torch.randint(0, 3, (n,), generator=g)
    frequency = 2 + 4 * torch.rand(n, 1, generator=g)
    phase = 2 * math.pi * torch.rand(n, 1, generator=g)
    t = torch.linspace(0, 1, length).unsqueeze(0)
    angle = 2 * math.pi * frequency * t + phase
    sine, square = torch.sin(angle), torch.sign(torch.sin(angle))
    saw = 2 * ((angle / (2 * math.pi)) % 1) - 1
    waves = torch.stack([sine, square, saw])[kind, torch.arange(n)]
    noisy = waves + 0.3 * torch.randn(n, length, generator=g)
    return (noisy.unsqueeze(1),), kind


def sequence_batch(g: torch.Generator, n: int, length: int = 16) -> Batch:
    x = torch.randn(n, length, 3, generator=g)
    return (x,), (x[..., 0].mean(1) - 0.5 * x[..., 1].amax(1)).unsqueeze(1)


# --- losses and metrics ------------------------------------------------------------------------


def mse(outputs: Any, targets: Any) -> torch.Tensor:
    if isinstance(outputs, tuple):
        return sum(F.mse_loss(o, t) for o, t in zip(outputs, targets, strict=True))
    return F.mse_loss(outputs, targets)


def cross_entropy(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(outputs.reshape(-1, outputs.shape[-1]), targets.reshape(-1))


def error(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return (outputs.argmax(-1) != targets).float().mean()


@dataclass(frozen=True)
class Example:
    """One model with its data, loss, metric, λ and how `save` describes it."""

    name: str
    build: Callable[[], nn.Module]
    batch: Callable[[torch.Generator, int], Batch]
    loss: Callable[[Any, Any], torch.Tensor]
    metric: Callable[[Any, Any], torch.Tensor]
    metric_name: str
    lam: float
    save_options: dict = field(default_factory=dict)
    exclude: tuple[str, ...] = ()


EXAMPLES = {
    example.name: example
    for example in (
        Example(
            "mlp-regression", RegressionMLP, regression_batch, mse, mse, "mse", 1.0,
            {
                "input_names": ["features"], "output_names": ["value"], "task": "regression",
                "preprocessing": {
                    "features": {"mean": [FEATURE_MEAN], "std": [FEATURE_STD], "axis": 1}
                },
            },
        ),
        Example(
            "transformer", TokenTransformer, token_batch, cross_entropy, error, "error", 0.3,
            {
                "input_names": ["tokens"], "output_names": ["logits"],
                "dynamic_axes": {"tokens": {0: "batch", 1: "length"}},
                "task": {"kind": "classification", "classes": ["absent", "present"]},
            },
        ),
        Example(
            "two-in-two-out", TwoInTwoOut, two_input_batch, mse, mse, "mse", 0.3,
            {"input_names": ["a", "b"], "output_names": ["total", "energy"], "task": "regression"},
        ),
        Example(
            "tied-lm", TiedLM, next_token_batch, cross_entropy, error, "error", 0.3,
            {
                "input_names": ["tokens"], "output_names": ["logits"],
                "dynamic_axes": {"tokens": {0: "batch", 1: "length"}}, "task": "classification",
            },
        ),
        Example(
            "conv1d", SignalConv, signal_batch, cross_entropy, error, "error", 0.3,
            {
                "input_names": ["signal"], "output_names": ["logits"],
                "task": {"kind": "classification", "classes": ["sine", "square", "sawtooth"]},
            },
        ),
        Example(
            "gru", SequenceGRU, sequence_batch, mse, mse, "mse", 0.01,
            {
                "input_names": ["sequence"], "output_names": ["value"],
                "dynamic_axes": {"sequence": {0: "batch", 1: "length"}}, "task": "regression",
            },
        ),
    )
}  # fmt: skip


# --- the user's own loop -----------------------------------------------------------------------


def raw_inputs(example: Example, inputs: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    """What the deployed model is fed: the inputs before the preprocessing save declared."""
    if "preprocessing" not in example.save_options:
        return inputs
    return tuple(x * FEATURE_STD + FEATURE_MEAN for x in inputs)


def train(
    model: nn.Module, example: Example, steps: int, *, seed: int, batch: int = 64,
    lam: float | None = None, progress: bool = False,
) -> float:  # fmt: skip
    """An ordinary training loop: Adam, the example's loss, plus λ · rate_loss() when wrapped.
    Returns the seconds it took."""
    wrapped = lam is not None
    groups = model.param_groups() if wrapped else [{"params": model.parameters(), "lr": 3e-3}]
    optimizer = torch.optim.Adam(groups)
    generator = torch.Generator().manual_seed(seed)
    model.train()
    started = time.perf_counter()
    for _ in tqdm(range(steps), desc=example.name, disable=not progress, leave=False):
        inputs, targets = example.batch(generator, batch)
        loss = example.loss(model(*inputs), targets)
        if wrapped:
            loss = loss + lam * model.rate_loss()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    model.eval()
    return time.perf_counter() - started


def test_batch(example: Example, n: int = 2000) -> Batch:
    return example.batch(torch.Generator().manual_seed(12345), n)


@torch.no_grad()
def torch_metric(model: nn.Module, example: Example) -> float:
    inputs, targets = test_batch(example)
    return float(example.metric(model(*inputs), targets))


def onnx_metric(path: Path, example: Example) -> float:
    """The metric of the file's decoded model under onnxruntime (decoded without torch)."""
    runner = session(eprpipe.decode(path))
    inputs, targets = test_batch(example)
    feeds = {
        value.name: x.numpy()
        for value, x in zip(runner.get_inputs(), raw_inputs(example, inputs), strict=True)
    }
    outputs = tuple(torch.from_numpy(o) for o in runner.run(None, feeds))
    return float(example.metric(outputs if len(outputs) > 1 else outputs[0], targets))


@dataclass
class Row:
    example: str
    parameters: int
    payload_bytes: int
    file_bytes: int
    bits_per_parameter: float
    ratio: float
    metric: str
    float_metric: float
    epr_metric: float
    plain_seconds: float
    epr_seconds: float


def measure(
    example: Example, directory: Path, *, steps: int, epr_steps: int, seed: int = 0,
    progress: bool = False,
) -> Row:  # fmt: skip
    """Plain training, then EPR from the trained weights, save, and the decoded model's metric."""
    torch.manual_seed(seed)
    model = example.build()
    plain_seconds = train(model, example, steps, seed=seed, progress=progress)
    float_metric = torch_metric(model, example)
    wrapped = wrap(model, exclude=example.exclude)
    epr_seconds = train(
        wrapped, example, epr_steps, seed=seed + 1, lam=example.lam, progress=progress
    )
    path = directory / f"{example.name}.epr"
    inputs, _ = example.batch(torch.Generator().manual_seed(7), 4)
    sizes = save(wrapped, path, inputs, **example.save_options)
    fresh = example.build()
    load_into(fresh, path)
    parameters = wrapped.num_parameters() + sum(p.numel() for p in wrapped.stored_parameters())
    return Row(
        example=example.name,
        parameters=parameters,
        payload_bytes=sizes.payload_bytes,
        file_bytes=path.stat().st_size,
        bits_per_parameter=8 * sizes.payload_bytes / parameters,
        ratio=4 * parameters / sizes.payload_bytes,
        metric=example.metric_name,
        float_metric=float_metric,
        epr_metric=onnx_metric(path, example),
        plain_seconds=plain_seconds,
        epr_seconds=epr_seconds,
    )


def step_seconds(
    model: nn.Module, example: Example, steps: int, *, lam: float | None, batch: int = 64
) -> float:
    """Median seconds of one training step (forward, loss, backward, Adam) after a warm-up."""
    groups = model.param_groups() if lam is not None else [{"params": model.parameters()}]
    optimizer = torch.optim.Adam(groups, lr=1e-3)
    generator = torch.Generator().manual_seed(0)
    times = []
    for step in range(steps + 5):
        inputs, targets = example.batch(generator, batch)
        started = time.perf_counter()
        loss = example.loss(model(*inputs), targets)
        if lam is not None:
            loss = loss + lam * model.rate_loss()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if step >= 5:
            times.append(time.perf_counter() - started)
    return float(np.median(times))


def rate_overhead(example: Example, steps: int = 200) -> dict[str, float]:
    """What EPR adds to a training step, in one run: the plain module's step, the wrapped
    module's step without and with the rate term (decoding every weight is in both)."""
    torch.manual_seed(0)
    plain = step_seconds(example.build(), example, steps, lam=None)
    wrapped = wrap(example.build())
    decode_only = step_seconds(wrapped, example, steps, lam=0.0)
    with_rate = step_seconds(wrapped, example, steps, lam=example.lam)
    return {
        "plain_ms": 1e3 * plain,
        "wrapped_ms": 1e3 * decode_only,
        "wrapped_with_rate_ms": 1e3 * with_rate,
        "ratio_with_rate_to_plain": with_rate / plain,
        "ratio_rate_term": with_rate / decode_only,
    }


def table(rows: list[Row]) -> str:
    lines = [
        "| model | parameters | payload B | file B | bits/param | × vs float32 | metric "
        "| float | EPR (decoded) | plain s | EPR s |",
        "|---|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|",
    ]  # fmt: skip
    for r in rows:
        lines.append(
            f"| {r.example} | {r.parameters:,} | {r.payload_bytes:,} | {r.file_bytes:,} | "
            f"{r.bits_per_parameter:.2f} | {r.ratio:.1f} | {r.metric} | {r.float_metric:.4f} | "
            f"{r.epr_metric:.4f} | {r.plain_seconds:.1f} | {r.epr_seconds:.1f} |"
        )
    return "\n".join(lines)


def plot(rows: list[Row], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 4))
    for r in rows:
        axes.scatter(r.payload_bytes, r.ratio)
        axes.annotate(r.example, (r.payload_bytes, r.ratio), fontsize=8)
    axes.set_xscale("log")
    axes.set_xlabel("payload bytes (log)")
    axes.set_ylabel("× smaller than float32")
    axes.set_title("Own-loop models: size after EPR")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None, help="write results.md/.json/.png here")
    parser.add_argument("--steps", type=int, default=1500, help="plain training steps")
    parser.add_argument("--epr-steps", type=int, default=1500, help="EPR training steps")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", nargs="*", choices=sorted(EXAMPLES), default=None)
    parser.add_argument(
        "--overhead", type=int, default=200, metavar="STEPS",
        help="time this many transformer steps plain, wrapped, and wrapped with rate_loss",
    )  # fmt: skip
    args = parser.parse_args(argv)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for name in args.only or EXAMPLES:
            row = measure(
                EXAMPLES[name], Path(scratch), steps=args.steps,
                epr_steps=args.epr_steps, seed=args.seed, progress=True,
            )  # fmt: skip
            rows.append(row)
            print(table([row]).splitlines()[-1], flush=True)
    print(table(rows))
    overhead = rate_overhead(EXAMPLES["transformer"], args.overhead) if args.overhead else {}
    if overhead:
        print("transformer step: " + ", ".join(f"{k} {v:.3f}" for k, v in overhead.items()))
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "results.md").write_text(
            f"`python tools/bench_own_loop.py {' '.join(sys.argv[1:])}`\n\n{table(rows)}\n\n"
            + "".join(f"- transformer step {k}: {v:.3f}\n" for k, v in overhead.items())
        )
        results = {"rows": [asdict(r) for r in rows], "transformer_step": overhead}
        (args.out / "results.json").write_text(json.dumps(results, indent=1))
        plot(rows, args.out / "results.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
