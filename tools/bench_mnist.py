"""Benchmark: both MNIST LeNets, both decoders, a few λ, on full MNIST.

Every error reported is that of the ONNX model decoded (without torch) from the written .epr
file, on all 10,000 MNIST test images. Runs go in parallel worker processes (one torch thread
each); each finished run is appended to runs.jsonl at once, so an interrupted benchmark keeps
what it measured. Writes results.md (table) and results.png (size against error).

    python tools/bench_mnist.py --data-dir ../shared/datasets/mnist
"""

from __future__ import annotations

import argparse
import json
import os
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from tqdm import tqdm

# Published EPR points (Oktay et al. 2020, Table 1) and the best known LeNet5 result (MIRACLE).
PUBLISHED = {
    "lenet-300-100": [("EPR (paper)", 8.56, 1.9)],
    "lenet5-caffe": [("EPR (paper)", 2.84, 1.0), ("MIRACLE", 1.52, 0.96)],
}
DEFAULT_LAMBDAS = {"lenet-300-100": [0.1, 0.2, 0.4], "lenet5-caffe": [0.25, 0.5, 1.0]}


@dataclass(frozen=True)
class Job:
    architecture: str
    decoder: str  # "rdft", "sq", or "baseline" for the uncompressed reference
    lam: float
    epochs: int
    seed: int


def _run_job(job: Job, data_dir: str, out_dir: str) -> dict:
    """One benchmark run in a worker process (imports torch there, one thread)."""
    import torch

    torch.set_num_threads(1)
    from eprpipe.data.datasets import prepare
    from eprpipe.plugins.manager import get_architecture, get_dataset
    from eprpipe.train.api import compress_registered
    from eprpipe.train.loop import TensorData, TrainConfig, error_rate, train_plain

    started = time.perf_counter()
    config = TrainConfig(epochs=job.epochs, lam=job.lam, seed=job.seed, progress=False)
    if job.decoder == "baseline":
        arch, spec = get_architecture(job.architecture), get_dataset("mnist")
        train = prepare(spec.load("train", Path(data_dir)), arch.input_shape)
        test = prepare(spec.load("test", Path(data_dir)), arch.input_shape)
        torch.manual_seed(job.seed)
        net = arch.factory(num_classes=len(spec.classes))
        train_data = TensorData.from_numpy(*train, spec.mean, spec.std, "cpu")
        test_data = TensorData.from_numpy(*test, spec.mean, spec.std, "cpu")
        train_plain(net, train_data, test_data, config)
        return {
            **asdict(job),
            "test_error": error_rate(net, test_data),
            "seconds": time.perf_counter() - started,
        }
    path = Path(out_dir) / f"{job.architecture}_{job.decoder}_lam{job.lam:g}.epr"
    result = compress_registered(
        job.architecture,
        "mnist",
        path,
        data_dir=Path(data_dir),
        config=replace(config, decoder=job.decoder),
        baseline=False,
    )
    sizes = result.sizes
    return {
        **asdict(job),
        "file": str(path),
        "test_error": result.evaluation.error,
        "test_examples": result.evaluation.total,
        "payload_bytes": sizes.payload_bytes,
        "file_bytes": sizes.file_bytes,
        "latent_bytes": sizes.latent_bytes,
        "table_bytes": sizes.table_bytes,
        "decoder_bytes": sizes.decoder_bytes,
        "graph_bytes": sizes.graph_bytes,
        "bits_per_parameter": result.bits_per_parameter,
        "ratio": result.ratio,
        "num_parameters": result.num_parameters,
        "seconds": time.perf_counter() - started,
    }


def make_jobs(args: argparse.Namespace) -> list[Job]:
    jobs = []
    for arch in args.architectures:
        if not args.no_baseline:
            jobs.append(Job(arch, "baseline", 0.0, args.epochs, args.seed))
        # LeNet-300-100 has no k×k kernels: "rdft" would train exactly the "sq" model.
        decoders = ["sq"] if arch == "lenet-300-100" else args.decoders
        lambdas = args.lambdas or DEFAULT_LAMBDAS[arch]
        jobs += [Job(arch, d, lam, args.epochs, args.seed) for d in decoders for lam in lambdas]
    # Longest first keeps both workers busy to the end.
    return sorted(jobs, key=lambda j: (j.architecture != "lenet5-caffe", j.decoder == "baseline"))


def markdown(rows: list[dict]) -> str:
    baselines = {r["architecture"]: r["test_error"] for r in rows if r["decoder"] == "baseline"}
    lines = [
        "| model | decoder | λ | epochs | test error (decoded ONNX) | uncompressed error "
        "| payload bytes | file bytes | bits/param | ratio vs float32 | latents / tables / "
        "decoders B | time |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    compressed = [r for r in rows if r["decoder"] != "baseline"]
    for r in sorted(compressed, key=lambda r: (r["architecture"], r["decoder"], r["lam"])):
        base = baselines.get(r["architecture"])
        lines.append(
            f"| {r['architecture']} | {r['decoder']} | {r['lam']:g} | {r['epochs']} "
            f"| {100 * r['test_error']:.2f} % "
            f"| {'' if base is None else f'{100 * base:.2f} %'} "
            f"| {r['payload_bytes']:,} | {r['file_bytes']:,} | {r['bits_per_parameter']:.4f} "
            f"| {r['ratio']:,.0f}× | {r['latent_bytes']:,} / {r['table_bytes']:,} / "
            f"{r['decoder_bytes']:,} | {r['seconds'] / 60:.1f} min |"
        )
    return "\n".join(lines)


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for ax, arch in zip(axes, ("lenet-300-100", "lenet5-caffe"), strict=True):
        for decoder, marker in (("sq", "o"), ("rdft", "s")):
            points = sorted(
                (r["payload_bytes"] / 1000, 100 * r["test_error"])
                for r in rows
                if r["architecture"] == arch and r["decoder"] == decoder
            )
            if points:
                ax.plot(*zip(*points, strict=True), marker=marker, label=f"eprpipe {decoder}")
        for (label, kb, err), color in zip(PUBLISHED[arch], ("black", "red"), strict=False):
            ax.scatter([kb], [err], marker="*", s=150, color=color, label=label, zorder=3)
        for r in rows:
            if r["architecture"] == arch and r["decoder"] == "baseline":
                ax.axhline(100 * r["test_error"], color="grey", ls="--", lw=1, label="uncompressed")
        ax.set_title(f"{arch} on MNIST (10,000 test images)")
        ax.set_xlabel("parameter payload (KB, 1 KB = 1000 B)")
        ax.set_ylabel("test error of the decoded ONNX model (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--out-dir", type=Path, default=Path("runs/bench_mnist"))
    parser.add_argument("--architectures", nargs="+", default=["lenet-300-100", "lenet5-caffe"])
    parser.add_argument("--decoders", nargs="+", default=["rdft", "sq"])
    parser.add_argument(
        "--lambdas",
        nargs="+",
        type=float,
        default=None,
        help="override the per-architecture λ grid",
    )
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--jobs", type=int, default=max(1, (os.cpu_count() or 1)))
    parser.add_argument(
        "--no-baseline", action="store_true", help="skip the uncompressed reference models"
    )
    parser.add_argument(
        "--report-only", action="store_true", help="only rebuild results.md/png from runs.jsonl"
    )
    args = parser.parse_args(argv)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    log = args.out_dir / "runs.jsonl"
    if not args.report_only:
        jobs = make_jobs(args)
        with ProcessPoolExecutor(args.jobs) as pool, log.open("a") as stream:
            futures = {
                pool.submit(_run_job, job, str(args.data_dir), str(args.out_dir)): job
                for job in jobs
            }
            for future in tqdm(
                as_completed(futures), total=len(futures), unit="run", desc="benchmark"
            ):
                row = future.result()
                stream.write(json.dumps(row) + "\n")
                stream.flush()
                tqdm.write(json.dumps(row))
    rows = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    table = markdown(rows)
    (args.out_dir / "results.md").write_text(table + "\n")
    plot(rows, args.out_dir / "results.png")
    print(table)
    print(f"\nwrote {args.out_dir / 'results.md'} and {args.out_dir / 'results.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
