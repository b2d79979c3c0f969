"""The Python API: compress any torch.nn.Module into an .epr file and report what it costs.

`compress_module` works on a module plus numpy arrays; `compress_registered` resolves an
architecture and a dataset through the plugins first. The reported test error is always that
of the ONNX model decoded, without torch, from the bytes that are written.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
import torch
from torch import nn

from eprpipe import __version__
from eprpipe.data.datasets import ImageFiles, Prepared, classes_of, fit, part_of
from eprpipe.deploy.evaluate import EvalResult, evaluate_split, predict
from eprpipe.errors import EprError
from eprpipe.format import container
from eprpipe.format.atomic import check_output_path, write_atomically
from eprpipe.format.graph import build_onnx
from eprpipe.format.manifest import check_manifest
from eprpipe.plugins.manager import get_architecture, get_dataset
from eprpipe.train.buffers import BufferChoice, compact_buffers
from eprpipe.train.checkpoint import Checkpointer, CheckpointPolicy, identity_of
from eprpipe.train.config import RateEstimator, TrainConfig
from eprpipe.train.distributed import World, assemble, init_world, own_range, sum_over_processes
from eprpipe.train.export import INPUT_NAME, OUTPUT_NAME, weightless_graph
from eprpipe.train.loader import FileData, cores_per_process
from eprpipe.train.loop import (
    Data,
    History,
    TensorData,
    error_rate,
    train_epr,
    train_plain,
)
from eprpipe.train.records import tensor_records, untrained_state
from eprpipe.train.reparam import EPRModel
from eprpipe.train.weights import load_into

HELD_OUT_EXAMPLES = 1000
MOVED_TO_CONFIG = ("decoder", "prior", "init_step")  # keywords of 0.1, TrainConfig fields now


@dataclass(frozen=True)
class InputSpec:
    """What the network's input is: shape without batch, pixel range, per-channel normalization."""

    shape: tuple[int, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def manifest(self) -> dict:
        return {
            "name": INPUT_NAME,
            "shape": [None, *self.shape],
            "dtype": "float32",
            "layout": "NCHW",
            "range": [0.0, 1.0],
            "normalization": {
                "mean": list(self.mean),
                "std": list(self.std),
                "applied": "inside the graph: (input - mean) / std",
            },
        }


@dataclass
class CompressResult:
    path: Path
    sizes: container.SizeBreakdown
    evaluation: EvalResult
    baseline_error: float | None
    num_parameters: int
    float32_bytes: int
    wall_seconds: float
    history: History = field(repr=False)
    rate_estimate_bits: float
    buffers: BufferChoice | None = None  # how the untrained float tensors were stored

    @property
    def bits_per_parameter(self) -> float:
        return 8 * self.sizes.payload_bytes / self.num_parameters

    @property
    def ratio(self) -> float:
        return self.float32_bytes / self.sizes.payload_bytes


def check_writable(path: Path, inputs: tuple[Path, ...] = ()) -> None:
    """Fail before training, not after, when the output cannot be written: a missing or
    read-only directory, or a target write_atomically refuses (a device, a FIFO, an input)."""
    check_output_path(path, inputs=inputs)
    parent = path.resolve().parent
    if not parent.is_dir():
        raise EprError(f"cannot write {path}: directory {parent} does not exist")
    if not os.access(parent, os.W_OK):
        raise EprError(f"cannot write {path}: directory {parent} is not writable")


def _baseline_error(
    net: nn.Module,
    train: Data,
    test: Data,
    config: TrainConfig,
    run: Checkpointer | None,
) -> float:
    """Test error of a copy of `net` trained plainly with the same recipe (or as a run saved)."""
    phase = "baseline training"
    done = run.finished(phase) if run else None
    if done is not None:
        return float(done["error"])
    reference = copy.deepcopy(net)
    last = train_plain(reference, train, test, config, run).epochs[-1].test_error
    error = error_rate(reference, test) if last is None else last
    if run:
        run.finish(phase, {"error": error})
    return error


def _training_data(split: Prepared, spec: InputSpec, device: str, workers: int | None) -> Data:
    """In-memory arrays go whole onto the device; image files stream through loader workers."""
    if isinstance(split, ImageFiles):
        return FileData(split, spec.mean, spec.std, device, workers)
    return TensorData.from_numpy(*split, spec.mean, spec.std, device)


def _held_out_images(train: Prepared, world: World) -> tuple[np.ndarray, int]:
    """This process's `own_range` of HELD_OUT_EXAMPLES training images (evaluation view),
    uint8 or float32, and how many there are in all: the last ones of arrays (shuffled
    datasets), evenly spaced ones of files (listed class by class)."""
    if isinstance(train, ImageFiles):
        spread = np.linspace(0, len(train) - 1, min(len(train), HELD_OUT_EXAMPLES))
        chosen = np.unique(spread.round().astype(np.int64))
        return train.read_batch(chosen[own_range(len(chosen), world)]), len(chosen)
    chosen = train[0][-HELD_OUT_EXAMPLES:]
    return chosen[own_range(len(chosen), world)], len(chosen)


def _evaluation_threads(world: World) -> int | None:
    """onnxruntime threads: the process's share of the machine under torchrun, else its default."""
    return cores_per_process() if world.distributed else None


def _test_result(
    model_proto: onnx.ModelProto, test: Prepared, world: World, config: TrainConfig
) -> EvalResult:
    """Top-1 accuracy of the decoded model on the whole test split, each process classifying
    its `own_range` (rank 0 shows its part's progress)."""
    own = part_of(test, own_range(_examples(test), world))
    progress = config.progress and world.is_main
    part = evaluate_split(model_proto, own, _evaluation_threads(world), progress)
    correct, total = sum_over_processes([part.correct, part.total], world, config.device)
    return EvalResult(correct=correct, total=total)


def _examples(split: Prepared) -> int:
    return len(split) if isinstance(split, ImageFiles) else len(split[1])


def _refuse_moved(function: str, keywords: dict[str, object]) -> None:
    """A TypeError that says where a keyword of 0.1 went, before any work is done."""
    for name in MOVED_TO_CONFIG:
        if name in keywords:
            raise TypeError(
                f"{name}= is no longer a keyword of {function}(): it is a TrainConfig field, "
                f"so pass config=TrainConfig({name}=...)"
            )


def compress_module(
    net: nn.Module,
    train: Prepared,
    test: Prepared,
    output: Path,
    *,
    input_spec: InputSpec,
    classes: tuple[str, ...],
    config: TrainConfig,
    baseline: bool = True,
    architecture: str = "custom",
    dataset: str = "custom",
    checkpoint: CheckpointPolicy | None = None,
    compact: bool = True,
    workers: int | None = None,
    **unknown: object,
) -> CompressResult:
    """Train `net` with EPR on `train`, write `output`.

    `train` and `test` are (images, labels) arrays (images uint8 or float32 in [0, 1], NCHW;
    int labels) or `ImageFiles` fitted to the input (`eprpipe.data.datasets.fit`), which stream
    from disk through `workers` decoding processes (default:
    `eprpipe.train.loader.default_workers`).

    The module is modified in place (its parameters become latent parametrizations). With a
    `checkpoint` policy the run saves itself as it goes and, with `resume`, continues a run
    that was stopped; the checkpoint is removed once `output` is written. With `compact`,
    float tensors EPR does not train (BatchNorm statistics) are quantized where that keeps the
    predictions on the last HELD_OUT_EXAMPLES training examples (see eprpipe.train.buffers).
    Every training choice (decoder, prior, initial step, …) is a field of `config`.
    """
    _refuse_moved("compress_module", unknown)
    for name in unknown:
        raise TypeError(f"compress_module() got an unexpected keyword argument {name!r}")
    started = time.perf_counter()
    output = Path(output)
    check_writable(output)
    config.validate()
    problem = check_manifest({"input": input_spec.manifest(), "output": {"classes": list(classes)}})
    if problem is not None:
        raise EprError(f"cannot describe this model in a manifest: {problem}")
    world, device = init_world(config.device)
    config = dataclasses.replace(config, device=device)
    torch.manual_seed(config.seed)
    net = net.to(config.device)
    plain = copy.deepcopy(net)
    train_data = _training_data(train, input_spec, config.device, workers)
    test_data = _training_data(test, input_spec, config.device, workers)

    run = Checkpointer(checkpoint, identity_of(
        config, architecture=architecture, dataset=dataset, baseline=baseline,
        train_examples=_examples(train),
    )) if checkpoint else None  # fmt: skip
    baseline_error = _baseline_error(net, train_data, test_data, config, run) if baseline else None
    model = EPRModel(net, decoder=config.decoder, prior=config.prior, init_step=config.init_step)
    history = train_epr(model, train_data, test_data, config, run)
    with torch.no_grad():
        rate_estimate = float(model.rate_bits(RateEstimator.ROUND))
    buffers = untrained_state(net)
    records = tensor_records(model, buffers)
    names = {record.name for record in records}
    graph = weightless_graph(plain.cpu(), input_spec.shape, names)
    manifest = {
        "producer": f"eprpipe {__version__}",
        "architecture": architecture,
        "dataset": dataset,
        "input": input_spec.manifest(),
        "output": {"name": OUTPUT_NAME, "kind": "logits", "classes": list(classes)},
        "training": {
            "lambda": config.lam,
            "epochs": config.epochs,
            "batch_size": config.batch_size,
            "decoder": config.decoder.value,
            "prior": config.prior.value,
            "seed": config.seed,
            "augmentation": config.augmentation,
        },
        "untrained_tensors": sorted(buffers),  # not reparameterized: not counted as parameters
    }
    buffer_choice = None
    if compact:
        held_out, held_out_count = _held_out_images(train, world)
        threads = _evaluation_threads(world)

        def held_out_predictions(candidates: list[container.TensorRecord]) -> np.ndarray:
            model_proto = build_onnx(container.EprContents(manifest, graph, candidates))
            part = predict(model_proto, held_out, threads)
            return assemble(part, held_out_count, world, config.device)

        records, buffer_choice = compact_buffers(records, held_out_predictions)
    contents = container.EprContents(manifest=manifest, graph=graph, tensors=records)
    data, sizes = container.encode_container(contents)
    decoded, _ = container.decode_container(data, source=str(output))
    evaluation = _test_result(build_onnx(decoded), test, world, config)
    manifest["metrics"] = {
        "test_error": evaluation.error,
        "test_examples": evaluation.total,
        "dataset": dataset,
        "baseline_test_error": baseline_error,
    }
    data, sizes = container.with_manifest(data, sizes, manifest)  # the tensors stay as coded
    if world.is_main:  # one writer; every process computed the same contents
        write_atomically(output, data)
    if run:
        run.remove()
    world.barrier()
    num_parameters = model.num_parameters()
    return CompressResult(
        path=output,
        sizes=sizes,
        evaluation=evaluation,
        baseline_error=baseline_error,
        num_parameters=num_parameters,
        float32_bytes=4 * num_parameters,
        wall_seconds=time.perf_counter() - started,
        history=history,
        rate_estimate_bits=rate_estimate,
        buffers=buffer_choice,
    )


def compress_registered(
    architecture: str,
    dataset: str,
    output: Path,
    *,
    data_dir: Path | None = None,
    config: TrainConfig,
    init_from: Path | None = None,
    augment: bool = True,
    **options,
) -> CompressResult:
    """Compress a registered architecture on a registered dataset (what the CLI runs).

    `init_from` names weights the architecture already has (safetensors or a torch state
    dict): EPR then starts from them, which is how a trained model is compressed. The
    dataset's train-time augmentation is used unless `augment` is False. `options` are
    `compress_module`'s.
    """
    _refuse_moved("compress_registered", options)
    arch = get_architecture(architecture)
    spec = get_dataset(dataset)
    check_writable(Path(output), inputs=(init_from,) if init_from else ())
    train = fit(spec.load("train", data_dir), arch.input_shape)
    test = fit(spec.load("test", data_dir), arch.input_shape)
    classes = classes_of(spec, train)
    if augment and config.augmentation is None and spec.augmentation:
        config = dataclasses.replace(config, augmentation=spec.augmentation)
    torch.manual_seed(config.seed)
    net = arch.factory(num_classes=len(classes))
    if init_from is not None:
        load_into(net, init_from)
    input_spec = InputSpec(shape=tuple(arch.input_shape), mean=spec.mean, std=spec.std)
    return compress_module(
        net,
        train,
        test,
        Path(output),
        input_spec=input_spec,
        classes=classes,
        config=config,
        architecture=architecture,
        dataset=dataset,
        **options,
    )
