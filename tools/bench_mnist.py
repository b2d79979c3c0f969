"""Benchmark: both MNIST LeNets, both decoders, a few λ, on full MNIST.

Every error reported is that of the ONNX model decoded (without torch) from the written .epr
file, on all 10,000 MNIST test images. With --alternatives the float model trained for each
architecture also goes through what a user would do instead (float16, zstd, uniform 8/4-bit,
onnxruntime int8, magnitude pruning; eprpipe.train.alternatives), measured on the same images
by the same evaluation, in the same table and plot. Runs go in parallel worker processes (one
torch thread each); each finished run is appended to runs.jsonl at once, so an interrupted
benchmark keeps what it measured. Writes results.md (table) and results.png (size against error).
With --epr-start float, EPR starts from each seed's float model (the weights the alternatives
compress) instead of from scratch: the "compress a model you already trained" recipe.

    python tools/bench_mnist.py --data-dir ../shared/datasets/mnist
    python tools/bench_mnist.py --data-dir ../shared/datasets/mnist --alternatives --epochs 5
"""

from __future__ import annotations

import argparse
import io
import json
import os
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TextIO

import numpy as np
from tqdm import tqdm

from eprpipe.format.atomic import write_atomically
from eprpipe.train.alternative_options import add_alternative_options

NNCODEC_TOOL = Path(__file__).with_name("bench_nncodec.py")

# Published EPR points (Oktay et al. 2020, Table 1) and the best known LeNet5 result (MIRACLE).
PUBLISHED = {
    "lenet-300-100": [("EPR (paper)", 8.56, 1.9)],
    "lenet5-caffe": [("EPR (paper)", 2.84, 1.0), ("MIRACLE", 1.52, 0.96)],
}
DEFAULT_LAMBDAS = {"lenet-300-100": [0.1, 0.3, 0.5, 0.65], "lenet5-caffe": [0.5, 1.0, 2.0]}


@dataclass(frozen=True)
class Alternatives:
    """What the float model goes through besides EPR (None: nothing)."""

    sparsities: tuple[float, ...]
    finetune_epochs: int
    calibration_images: int
    nncodec: tuple[str, ...] | None  # the command that runs tools/bench_nncodec.py, if any
    nncodec_qps: tuple[int, ...]


@dataclass(frozen=True)
class Job:
    architecture: str
    decoder: str  # "rdft", "sq", or "baseline" for the uncompressed reference
    lam: float
    epochs: int
    seed: int
    start: str = "scratch"  # EPR's start: "scratch", or "float" (the seed's float model)

    def float_weights(self, out_dir: str) -> Path:
        """Where this job's (architecture, seed) float model is saved for EPR to start from."""
        return Path(out_dir) / f"{self.architecture}_float_s{self.seed}.safetensors"


def _save_weights(net, path: Path) -> None:
    from safetensors.torch import save

    state = {name: value.detach().contiguous() for name, value in net.state_dict().items()}
    write_atomically(path, save(state))


def _run_job(
    job: Job, data_dir: str, out_dir: str, alternatives: Alternatives | None = None
) -> list[dict]:
    """One benchmark run in a worker process (imports torch there, one thread): its rows."""
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
        # The float model sees the augmentation EPR's runs see (compress_registered's default).
        config = replace(config, augmentation=spec.augmentation)
        train = prepare(spec.load("train", Path(data_dir)), arch.input_shape)
        test = prepare(spec.load("test", Path(data_dir)), arch.input_shape)
        torch.manual_seed(job.seed)
        net = arch.factory(num_classes=len(spec.classes))
        train_data = TensorData.from_numpy(*train, spec.mean, spec.std, "cpu")
        test_data = TensorData.from_numpy(*test, spec.mean, spec.std, "cpu")
        train_plain(net, train_data, test_data, config)
        if job.start == "float":
            _save_weights(net, job.float_weights(out_dir))
        row = {
            **asdict(job),
            "test_error": error_rate(net, test_data),
            "seconds": time.perf_counter() - started,
        }
        if alternatives is None:
            return [row]
        from eprpipe.train.alternatives import measure_alternatives

        finetune = replace(config, epochs=alternatives.finetune_epochs)
        others = measure_alternatives(
            net, arch.input_shape, spec.mean, spec.std, train[0], test,
            (train_data, test_data), finetune, alternatives.sparsities,
            alternatives.calibration_images, nncodec=alternatives.nncodec,
            nncodec_qps=alternatives.nncodec_qps,
        )  # fmt: skip
        return [row, *({**asdict(job), **r, "decoder": "alternative"} for r in others)]
    tag = "_float" if job.start == "float" else ""
    path = Path(out_dir) / f"{job.architecture}_{job.decoder}_lam{job.lam:g}_s{job.seed}{tag}.epr"
    result = compress_registered(
        job.architecture,
        "mnist",
        path,
        data_dir=Path(data_dir),
        config=replace(config, decoder=job.decoder),
        baseline=False,
        init_from=job.float_weights(out_dir) if job.start == "float" else None,
    )
    sizes = result.sizes
    row = {
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
    return [row]


def make_jobs(args: argparse.Namespace) -> list[Job]:
    jobs = []
    for arch in args.architectures:
        # LeNet-300-100 has no k×k kernels: "rdft" would train exactly the "sq" model.
        decoders = ["sq"] if arch == "lenet-300-100" else args.decoders
        lambdas = args.lambdas or DEFAULT_LAMBDAS[arch]
        for seed in args.seeds:
            if not args.no_baseline:
                jobs.append(Job(arch, "baseline", 0.0, args.epochs, seed, args.epr_start))
            jobs += [
                Job(arch, d, lam, args.epochs, seed, args.epr_start)
                for d in decoders
                for lam in lambdas
            ]
    # Longest first keeps both workers busy to the end (a baseline with alternatives is long).
    return sorted(
        jobs,
        key=lambda j: (
            j.architecture != "lenet5-caffe",
            j.decoder == "baseline" and not args.alternatives,
        ),
    )


EPR_DECODERS = ("sq", "rdft")
EPR_SERIES = (*EPR_DECODERS, *(f"{decoder} from float" for decoder in EPR_DECODERS))
WITHIN_POINTS = (0.1, 0.3)  # error margins over the float model's for the summary table


def _epr_rows(rows: list[dict]) -> list[dict]:
    return [r for r in rows if r["decoder"] in EPR_DECODERS]


def _start(row: dict) -> str:
    """Where an EPR run started; rows from before --epr-start started from scratch."""
    return row.get("start", "scratch")


def _epr_series(row: dict) -> str:
    """An EPR run's curve: its decoder, and its start where that is the float model."""
    return row["decoder"] + (" from float" if _start(row) == "float" else "")


def _alternative_rows(rows: list[dict]) -> list[dict]:
    return [r for r in rows if r["decoder"] == "alternative"]


def _float_errors(rows: list[dict]) -> dict[tuple[str, int], float]:
    """Each (architecture, seed)'s float32 ONNX error: the reference of the margins."""
    return {
        (r["architecture"], r["seed"]): r["test_error"]
        for r in _alternative_rows(rows)
        if r["variant"] == "float32"
    }


def _spread(values: list[float], show: Callable[[float], str]) -> str:
    """The mean of `values` and, over more than one seed, their range: "5,747 [5,588, 5,842]"."""
    mean = sum(values) / len(values)
    if len(values) == 1:
        return show(mean)
    return f"{show(mean)} [{show(min(values))}, {show(max(values))}]"


def _bytes(value: float) -> str:
    return f"{value:,.0f}"


def _percent(value: float) -> str:
    return f"{100 * value:.2f} %"


def epr_table(rows: list[dict]) -> str:
    baselines = {
        (r["architecture"], r["seed"]): r["test_error"] for r in rows if r["decoder"] == "baseline"
    }
    lines = [
        "| model | decoder | λ | epochs | seed | test error (decoded ONNX) | uncompressed error "
        "| payload bytes | file bytes | bits/param | ratio vs float32 | latents / tables / "
        "decoders B | time |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    ordered = sorted(
        _epr_rows(rows), key=lambda r: (r["architecture"], _epr_series(r), r["lam"], r["seed"])
    )
    for r in ordered:
        base = baselines.get((r["architecture"], r["seed"]))
        lines.append(
            f"| {r['architecture']} | {_epr_series(r)} | {r['lam']:g} | {r['epochs']} "
            f"| {r['seed']} | {100 * r['test_error']:.2f} % "
            f"| {'' if base is None else f'{100 * base:.2f} %'} "
            f"| {r['payload_bytes']:,} | {r['file_bytes']:,} | {r['bits_per_parameter']:.4f} "
            f"| {r['ratio']:,.0f}× | {r['latent_bytes']:,} / {r['table_bytes']:,} / "
            f"{r['decoder_bytes']:,} | {r['seconds'] / 60:.1f} min |"
        )
    return "\n".join(lines)


def _by_setting(rows: list[dict]) -> dict[tuple, list[dict]]:
    """EPR rows grouped by everything but the seed."""
    groups: dict[tuple, list[dict]] = {}
    for r in _epr_rows(rows):
        key = (r["architecture"], _epr_series(r), r["lam"], r["epochs"])
        groups.setdefault(key, []).append(r)
    return dict(sorted(groups.items()))


def seeds_table(rows: list[dict]) -> str:
    """Each EPR setting's mean and range over its seeds: the numbers a headline may quote."""
    lines = [
        "| model | decoder | λ | epochs | seeds | payload bytes | test error (decoded ONNX) "
        "| time per run |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for (arch, decoder, lam, epochs), runs in _by_setting(rows).items():
        seeds = ", ".join(str(r["seed"]) for r in sorted(runs, key=lambda r: r["seed"]))
        lines.append(
            f"| {arch} | {decoder} | {lam:g} | {epochs} | {seeds} "
            f"| {_spread([r['payload_bytes'] for r in runs], _bytes)} "
            f"| {_spread([r['test_error'] for r in runs], _percent)} "
            f"| {_spread([r['seconds'] / 60 for r in runs], lambda m: f'{m:.1f}')} min |"
        )
    return "\n".join(lines)


def alternatives_table(rows: list[dict]) -> str:
    """Every alternative's size and error; sizes as ratios to the float32 weights' bytes."""
    float_bytes = {
        (r["architecture"], r["seed"]): r["payload_bytes"]
        for r in _alternative_rows(rows)
        if r["variant"] == "float32"
    }
    lines = [
        "| model | seed | alternative | payload bytes | file bytes | test error (ONNX) "
        "| float32 / payload |",
        "|---|---|---|---|---|---|---|",
    ]
    ordered = sorted(
        _alternative_rows(rows), key=lambda r: (r["architecture"], r["seed"], -r["payload_bytes"])
    )
    for r in ordered:
        reference = float_bytes.get((r["architecture"], r["seed"]))
        ratio = "" if reference is None else f"{reference / r['payload_bytes']:,.1f}×"
        file_bytes = "" if r["file_bytes"] is None else f"{r['file_bytes']:,}"
        lines.append(
            f"| {r['architecture']} | {r['seed']} | {r['variant']} | {r['payload_bytes']:,} "
            f"| {file_bytes} | {100 * r['test_error']:.2f} % | {ratio} |"
        )
    return "\n".join(lines)


def _smallest(rows: list[dict], most_error: float) -> int | None:
    sizes = [r["payload_bytes"] for r in rows if r["test_error"] <= most_error + 1e-12]
    return min(sizes) if sizes else None


def _paired_sizes(
    rows: list[dict], references: dict[int, float], arch: str, series: str, points: float
) -> list[tuple[int | None, int | None]]:
    """(alternative's, EPR's) smallest payload within `points` of the float model's error
    (`references`: seed → error; None where none is that close), for each seed of `arch`."""
    pairs = []
    for seed, reference in sorted(references.items()):
        of_seed = [r for r in rows if r["architecture"] == arch and r["seed"] == seed]
        ours = [r for r in _alternative_rows(of_seed) if r["series"] == series]
        pairs.append(
            (
                _smallest(ours, reference + points / 100),
                _smallest(_epr_rows(of_seed), reference + points / 100),
            )
        )
    return pairs


def _sizes_cell(sizes: list[int | None]) -> str:
    """Mean [min, max] of the seeds' sizes, and how many seeds had one if not all did."""
    found = [float(size) for size in sizes if size is not None]
    if not found:
        return "none"
    counted = "" if len(found) == len(sizes) else f" ({len(found)} of {len(sizes)} seeds)"
    return _spread(found, _bytes) + counted


def summary_table(rows: list[dict]) -> str:
    """Per alternative (series), its smallest payload within 0.1 and 0.3 points of the float
    model's error, EPR's smallest within the same, and their ratio: each seed against its own
    float model and EPR runs, then the mean [min, max] over the seeds where both have a point."""
    header = "| model | alternative |" + "".join(
        f" within {p:g} pt: payload B | EPR B | alternative / EPR |" for p in WITHIN_POINTS
    )
    lines = [header, "|---|---|" + "---|---|---|" * len(WITHIN_POINTS)]
    float_errors = _float_errors(rows)
    for arch in sorted({arch for arch, _ in float_errors}):
        references = {seed: error for (a, seed), error in float_errors.items() if a == arch}
        mine = [r for r in _alternative_rows(rows) if r["architecture"] == arch]
        for series in sorted({r["series"] for r in mine}):
            cells = []
            for points in WITHIN_POINTS:
                pairs = _paired_sizes(rows, references, arch, series, points)
                ratios = [a / b for a, b in pairs if a is not None and b is not None]
                ratio = _spread(ratios, lambda v: f"{v:,.1f}") if ratios else "-"
                cells.append(
                    f" {_sizes_cell([a for a, _ in pairs])} "
                    f"| {_sizes_cell([b for _, b in pairs])} | {ratio} |"
                )
            lines.append(f"| {arch} | {series} |" + "".join(cells))
    return "\n".join(lines)


def markdown(rows: list[dict]) -> str:
    parts = [epr_table(rows)]
    if any(len(runs) > 1 for runs in _by_setting(rows).values()):
        parts += ["Over seeds: mean [min, max].", seeds_table(rows)]
    if _alternative_rows(rows):
        references = ", ".join(
            f"{arch} seed {seed} {100 * error:.2f} %"
            for (arch, seed), error in sorted(_float_errors(rows).items())
        )
        parts += [
            "Alternatives to EPR on the same float model (trained with the `baseline` row's "
            "recipe), each evaluated as an ONNX model by onnxruntime on the same test images; "
            "payload bytes as `eprpipe.deploy.baselines` counts them.",
            alternatives_table(rows),
            f"Smallest payload within 0.1 and 0.3 points of the float32 model's error "
            f"({references}), against EPR's smallest within the same error, each seed against "
            f"its own float model; over seeds: mean [min, max].",
            summary_table(rows),
        ]
    return "\n\n".join(parts)


def _seed_means(runs: list[dict]) -> list[tuple[float, float, tuple, tuple]]:
    """One point per setting (λ, or the alternative's variant), averaged over its seeds: KB,
    error in %, and the (below, above) distances to the seeds' extremes for error bars."""
    groups: dict[object, list[dict]] = {}
    for r in runs:
        groups.setdefault(r.get("variant", r["lam"]), []).append(r)
    points = []
    for members in groups.values():
        kb = [r["payload_bytes"] / 1000 for r in members]
        errors = [100 * r["test_error"] for r in members]
        x, y = sum(kb) / len(kb), sum(errors) / len(errors)
        points.append((x, y, (x - min(kb), max(kb) - x), (y - min(errors), max(errors) - y)))
    return sorted(points)


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    measured = {r["architecture"] for r in rows}
    architectures = [arch for arch in PUBLISHED if arch in measured] or list(PUBLISHED)
    figure, axes = plt.subplots(
        1, len(architectures), figsize=(7 * len(architectures), 5.5), squeeze=False
    )
    # One colour and marker per series in every panel: EPR's decoders first, then the rest.
    series_names = [*EPR_SERIES, *sorted({r["series"] for r in _alternative_rows(rows)})]
    colours = plt.get_cmap("tab20").colors
    styles = {
        name: (
            colours[index % len(colours)],
            "osdD"[index] if index < len(EPR_SERIES) else "vX^<>phP*8"[index % 10],
        )
        for index, name in enumerate(series_names)
    }
    for ax, arch in zip(axes[0], architectures, strict=True):
        curves = [
            (f"eprpipe {name}", name, [r for r in _epr_rows(rows) if _epr_series(r) == name])
            for name in EPR_SERIES
        ]
        mine = [r for r in _alternative_rows(rows) if r["architecture"] == arch]
        curves += [
            (series, series, [r for r in mine if r["series"] == series])
            for series in sorted({r["series"] for r in mine})
        ]
        for label, style, runs in curves:
            points = _seed_means([r for r in runs if r["architecture"] == arch])
            if not points:
                continue
            colour, marker = styles[style]
            x, y, x_range, y_range = zip(*points, strict=True)
            ax.errorbar(
                x, y, xerr=np.array(x_range).T, yerr=np.array(y_range).T, marker=marker,
                color=colour, ls="-" if len(points) > 1 else "none", alpha=0.8, capsize=2,
                label=label,
            )  # fmt: skip
        for (label, kb, err), color in zip(PUBLISHED[arch], ("black", "red"), strict=False):
            ax.scatter([kb], [err], marker="*", s=150, color=color, label=label, zorder=3)
        floats = [
            r["test_error"]
            for r in rows
            if r["architecture"] == arch and r["decoder"] == "baseline"
        ]
        if floats:
            ax.axhline(
                100 * sum(floats) / len(floats), color="grey", ls="--", lw=1, label="uncompressed"
            )
        ax.set_xscale("log")
        ax.set_title(f"{arch} on MNIST (10,000 test images)")
        ax.set_xlabel("parameter payload (KB, 1 KB = 1000 B, log scale)")
        ax.set_ylabel("test error of the ONNX model run (%)")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7, ncol=2)
    figure.tight_layout()
    image = io.BytesIO()
    figure.savefig(image, format="png", dpi=120)
    write_atomically(path, image.getvalue())


def _waits_for(job: Job, jobs: list[Job]) -> Job | None:
    """The baseline job whose float model `job` starts from, if it is still to run."""
    if job.start != "float" or job.decoder == "baseline":
        return None
    return next(
        (
            j
            for j in jobs
            if j.decoder == "baseline" and (j.architecture, j.seed) == (job.architecture, job.seed)
        ),
        None,
    )


def run_jobs(
    jobs: list[Job], args: argparse.Namespace, alternatives: Alternatives | None, stream: TextIO
) -> None:
    """Run `jobs` in worker processes, each EPR run from a float model once that model is
    trained; append each finished job's rows to `stream` at once."""
    waiting = {job: _waits_for(job, jobs) for job in jobs}
    running: dict[Future, Job] = {}
    with (
        ProcessPoolExecutor(args.jobs) as pool,
        tqdm(total=len(jobs), unit="run", desc="benchmark") as bar,
    ):
        while waiting or running:
            for job in [j for j, before in waiting.items() if before is None]:
                del waiting[job]
                others = alternatives if job.decoder == "baseline" else None
                future = pool.submit(_run_job, job, str(args.data_dir), str(args.out_dir), others)
                running[future] = job
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                finished = running.pop(future)
                waiting = {j: None if b == finished else b for j, b in waiting.items()}
                for row in future.result():
                    stream.write(json.dumps(row) + "\n")
                    stream.flush()
                    tqdm.write(json.dumps(row))
                bar.update()


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
    parser.add_argument(
        "--seeds",
        nargs="+",
        type=int,
        default=[0],
        help="one run of everything per seed; the tables give the mean and range over them",
    )
    parser.add_argument("--jobs", type=int, default=max(1, (os.cpu_count() or 1)))
    parser.add_argument(
        "--no-baseline", action="store_true", help="skip the uncompressed reference models"
    )
    add_alternative_options(parser, finetune_epochs=2, subject="each baseline model")
    parser.add_argument(
        "--epr-start",
        choices=["scratch", "float"],
        default="scratch",
        help="EPR from scratch, or from each seed's float model (the baseline row's weights)",
    )
    parser.add_argument(
        "--report-only", action="store_true", help="only rebuild results.md/png from runs.jsonl"
    )
    args = parser.parse_args(argv)
    if args.alternatives and args.no_baseline:
        parser.error("--alternatives measures the baseline model: drop --no-baseline")
    if args.epr_start == "float" and args.no_baseline:
        parser.error("--epr-start float starts from the baseline model: drop --no-baseline")
    alternatives = (
        Alternatives(
            tuple(args.sparsities),
            args.finetune_epochs,
            args.calibration_images,
            None if args.nncodec_python is None else (str(args.nncodec_python), str(NNCODEC_TOOL)),
            tuple(args.nncodec_qps),
        )
        if args.alternatives
        else None
    )
    args.out_dir.mkdir(parents=True, exist_ok=True)
    log = args.out_dir / "runs.jsonl"
    if not args.report_only:
        with log.open("a") as stream:
            run_jobs(make_jobs(args), args, alternatives, stream)
    rows = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    table = markdown(rows)
    write_atomically(args.out_dir / "results.md", (table + "\n").encode())
    plot(rows, args.out_dir / "results.png")
    print(table)
    print(f"\nwrote {args.out_dir / 'results.md'} and {args.out_dir / 'results.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
