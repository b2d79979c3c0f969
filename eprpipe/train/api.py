"""The Python API: compress any torch.nn.Module into an .epr file and report what it costs.

`compress_module` trains a module with the built-in loop on arrays, for any task (a classifier,
a regression, the user's own loss and metric; `eprpipe.train.tasks`), with any inputs and
targets; `compress_registered` resolves an architecture and a dataset through the plugins
first. An image classifier described by an `InputSpec` gets today's format 1.0 file; any other
model the general format 1.1 file (`eprpipe.train.face.contents_for`). The reported metric is
always that of the ONNX model decoded, without torch, from the bytes that are written.
"""

from __future__ import annotations

import copy
import dataclasses
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from torch import nn

from eprpipe import __version__
from eprpipe.data.datasets import ImageFiles, Prepared, classes_of, fit, part_of
from eprpipe.deploy.evaluate import EvalResult, evaluate_split, predict
from eprpipe.errors import EprError
from eprpipe.format import container
from eprpipe.format.atomic import write_atomically
from eprpipe.format.graph import build_onnx
from eprpipe.format.manifest import check_manifest
from eprpipe.plugins.manager import get_architecture, get_dataset
from eprpipe.train.buffers import BufferChoice, compact_buffers
from eprpipe.train.checkpoint import Checkpointer, CheckpointPolicy, identity_of
from eprpipe.train.config import RateEstimator, TrainConfig
from eprpipe.train.distributed import World, assemble, init_world, own_range, sum_over_processes
from eprpipe.train.export import INPUT_NAME, OUTPUT_NAME, weightless_graph
from eprpipe.train.face import contents_for, wrap
from eprpipe.train.interface import Normalization, bind_inputs
from eprpipe.train.loader import FileData, cores_per_process
from eprpipe.train.loop import (
    Data,
    History,
    TensorData,
    sum_floats,
    task_metric,
    train_epr,
    train_plain,
)
from eprpipe.train.paths import check_writable
from eprpipe.train.records import tensor_records, untrained_state
from eprpipe.train.reparam import EPRModel
from eprpipe.train.scoring import metric_of, model_arrays, outputs_of, per_example
from eprpipe.train.tasks import Classification, Task, manifest_of, task_from
from eprpipe.train.weights import load_into

HELD_OUT_EXAMPLES = 1000
HELD_OUT_BYTES = 256 << 20  # outputs of the held-out examples kept at once (general path)
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


@dataclass(frozen=True)
class TaskScore:
    """The task's metric of the decoded model on the test data, and of the plain baseline."""

    name: str
    value: float
    baseline: float | None
    higher_is_better: bool
    examples: int

    def manifest(self) -> dict:
        return dataclasses.asdict(self)


@dataclass
class CompressResult:
    path: Path
    sizes: container.SizeBreakdown
    evaluation: EvalResult | None  # a classifier's top-1 counts (None for other tasks)
    baseline_error: float | None  # a classifier's baseline top-1 error
    num_parameters: int
    float32_bytes: int
    wall_seconds: float
    history: History = field(repr=False)
    rate_estimate_bits: float
    buffers: BufferChoice | None = None  # how the untrained float tensors were stored
    metric: TaskScore | None = None  # the task's own metric, by name

    @property
    def bits_per_parameter(self) -> float:
        return 8 * self.sizes.payload_bytes / self.num_parameters

    @property
    def ratio(self) -> float:
        return self.float32_bytes / self.sizes.payload_bytes


def _baseline_metric(
    net: nn.Module,
    train: Data,
    test: Data,
    config: TrainConfig,
    run: Checkpointer | None,
    task: Task,
) -> float:
    """The task's metric of a copy of `net` trained plainly with the same recipe (or as a run
    saved)."""
    phase = "baseline training"
    done = run.finished(phase) if run else None
    if done is not None:
        return float(done["error"])  # the metric, under the key runs have always saved it
    reference = copy.deepcopy(net)
    last = train_plain(reference, train, test, config, run, task).epochs[-1].test_metric
    value = task_metric(reference, test, task) if last is None else last
    if run:
        run.finish(phase, {"error": value})
    return value


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
    train: Prepared | tuple[Any, Any],
    test: Prepared | tuple[Any, Any],
    output: Path,
    *,
    config: TrainConfig,
    input_spec: InputSpec | None = None,
    classes: Sequence[str] | None = None,
    task: Task | str | None = None,
    loss_fn: Callable[[Any, torch.Tensor], torch.Tensor] | None = None,
    metric_fn: Callable[[Any, torch.Tensor], object] | None = None,
    metric_name: str | None = None,
    higher_is_better: bool = False,
    input_names: Sequence[str] | None = None,
    output_names: Sequence[str] | None = None,
    dynamic_axes: Mapping[str, Mapping[int, str]] | None = None,
    preprocessing: Mapping[str, Normalization] | None = None,
    metadata: Mapping[str, str] | None = None,
    baseline: bool = True,
    architecture: str = "custom",
    dataset: str = "custom",
    checkpoint: CheckpointPolicy | None = None,
    compact: bool = True,
    workers: int | None = None,
    **unknown: object,
) -> CompressResult:
    """Train `net` with EPR on `train` for its task, write `output`, score the decoded file.

    `train` and `test` are (inputs, targets): inputs one array or tensor, or a tuple of them
    (the module's positional arguments: float features, int64 token ids, images, any rank,
    examples along axis 0), targets what the task's loss takes (int64 labels, float regression
    targets, any shape). The task is `task` (a `Task`, or "classification", "regression",
    "none"), or the user's `loss_fn(outputs, targets)` (a scalar batch mean) and
    `metric_fn(outputs, targets)` (a batch mean or a (sum, count) pair, named `metric_name`,
    lower is better unless `higher_is_better`); nothing at all is classification over
    `classes`. `preprocessing` ({input name: Normalization}) normalizes inputs for training and
    goes into the graph, so the file's model takes raw inputs; uint8 inputs are pixels, scaled
    to [0, 1] first. `input_names`, `output_names`, `dynamic_axes` and `metadata` are those of
    `eprpipe.train.save`.

    An image classifier given with `input_spec` and `classes` ((images, labels) arrays: uint8
    or float32 in [0, 1], NCHW, int labels; or `ImageFiles` fitted to the input, streamed from
    disk through `workers` decoding processes) is written as a format 1.0 file, as always;
    every other model as a format 1.1 file with its inputs, outputs and task.

    The module is modified in place (its parameters become latent parametrizations). With a
    `checkpoint` policy the run saves itself as it goes and, with `resume`, continues a run
    that was stopped; the checkpoint is removed once `output` is written. With `compact`,
    float tensors EPR does not train (BatchNorm statistics) are quantized where that keeps the
    outputs on the last HELD_OUT_EXAMPLES training examples (the task's `changed`; see
    eprpipe.train.buffers). Every training choice (decoder, prior, initial step, …) is a field
    of `config`.
    """
    _refuse_moved("compress_module", unknown)
    for name in unknown:
        raise TypeError(f"compress_module() got an unexpected keyword argument {name!r}")
    resolved = task_from(
        task, loss_fn, metric_fn, metric_name=metric_name, higher_is_better=higher_is_better,
        classes=classes,
    )  # fmt: skip
    general = {
        "input_names": input_names, "output_names": output_names, "dynamic_axes": dynamic_axes,
        "preprocessing": preprocessing, "metadata": metadata,
    }  # fmt: skip
    common = {
        "config": config, "baseline": baseline, "architecture": architecture, "dataset": dataset,
        "checkpoint": checkpoint, "compact": compact,
    }  # fmt: skip
    if (
        input_spec is not None
        and classes is not None
        and _image_classifier(train, resolved, general)
    ):
        return _compress_images(
            net, train, test, Path(output), input_spec=input_spec, classes=tuple(classes),
            workers=workers, **common,
        )  # fmt: skip
    if isinstance(train, ImageFiles) or isinstance(test, ImageFiles):
        raise EprError(
            "image files stream only for an image classifier given with input_spec= and "
            "classes= and no loss_fn, metric_fn or general options; pass arrays otherwise"
        )
    return _compress_any(
        net, train, test, Path(output), task=resolved, input_spec=input_spec, **general, **common
    )


def _image_classifier(train: object, task: Task, general: Mapping[str, object]) -> bool:
    """Whether a model given with an InputSpec and classes is the image classifier format 1.0
    describes and eprpipe always wrote: the built-in classification task, one batch of images,
    none of the general path's options."""
    if type(task) is not Classification or any(v is not None for v in general.values()):
        return False
    if isinstance(train, ImageFiles):
        return True
    images = train[0] if isinstance(train, tuple) and len(train) == 2 else None
    return isinstance(images, np.ndarray) and images.ndim == 4


def _compress_images(
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
) -> CompressResult:
    """Today's image classifier: format 1.0, top-1 error of the decoded model."""
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
    baseline_error = (
        _baseline_metric(net, train_data, test_data, config, run, Classification())
        if baseline
        else None
    )
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
        "training": _training_manifest(config),
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
        metric=TaskScore("error", evaluation.error, baseline_error, False, evaluation.total),
    )


def _compress_any(
    net: nn.Module,
    train: tuple[Any, Any],
    test: tuple[Any, Any],
    output: Path,
    *,
    task: Task,
    config: TrainConfig,
    input_spec: InputSpec | None,
    input_names: Sequence[str] | None,
    output_names: Sequence[str] | None,
    dynamic_axes: Mapping[str, Mapping[int, str]] | None,
    preprocessing: Mapping[str, Normalization] | None,
    metadata: Mapping[str, str] | None,
    baseline: bool,
    architecture: str,
    dataset: str,
    checkpoint: CheckpointPolicy | None,
    compact: bool,
) -> CompressResult:
    """Any module, inputs, targets and task: a format 1.1 file scored by the task's metric."""
    started = time.perf_counter()
    check_writable(output)
    config.validate()
    train_inputs, train_targets = _arrays(train, "train")
    test_inputs, test_targets = _arrays(test, "test")
    _check_alike(train_inputs, test_inputs)
    names = list(input_names) if input_names is not None else default_input_names(net, train_inputs)
    declared = _declared(names, preprocessing, input_spec)
    world, device = init_world(config.device)
    config = dataclasses.replace(config, device=device)
    torch.manual_seed(config.seed)
    net = net.to(config.device)
    positions = {names.index(name): norm for name, norm in declared.items()}
    train_data = TensorData.from_arrays(train_inputs, train_targets, config.device, positions)
    test_data = TensorData.from_arrays(test_inputs, test_targets, config.device, positions)

    run = Checkpointer(checkpoint, identity_of(
        config, architecture=architecture, dataset=dataset, baseline=baseline,
        train_examples=len(train_targets), task=task.kind, metric=task.metric_name,
    )) if checkpoint else None  # fmt: skip
    baseline_value = (
        _baseline_metric(net, train_data, test_data, config, run, task) if baseline else None
    )
    model = wrap(net, decoder=config.decoder, prior=config.prior, init_step=config.init_step)
    history = train_epr(model, train_data, test_data, config, run, task)
    with torch.no_grad():
        rate_estimate = float(model.rate_bits(RateEstimator.ROUND))
    examples = tuple(torch.from_numpy(x[:2]) for x in train_inputs)  # raw: the graph normalizes
    contents = contents_for(
        model, examples, input_names=names, output_names=output_names,
        dynamic_axes=dynamic_axes, preprocessing=declared, task=manifest_of(task),
        metadata=metadata, extra={
            "producer": f"eprpipe {__version__}", "architecture": architecture,
            "dataset": dataset, "training": _training_manifest(config),
        },
    )  # fmt: skip
    threads = _evaluation_threads(world)
    buffer_choice = None
    if compact:
        contents, buffer_choice = _compact(contents, train_inputs, task, threads, str(output))
    data, sizes = container.encode_container(contents)
    decoded, _ = container.decode_container(data, source=str(output))
    own = own_range(len(test_targets), world)
    part = metric_of(
        build_onnx(decoded), tuple(x[own] for x in test_inputs), test_targets[own], task,
        threads, str(output),
    )  # fmt: skip
    total, count = sum_floats(list(part), world, config.device)
    score = TaskScore(
        task.metric_name, total / count, baseline_value, task.higher_is_better, len(test_targets)
    )
    metrics: dict[str, Any] = {"task_metric": score.manifest(), "dataset": dataset}
    evaluation = None
    if task.metric_name == "error" and task.kind == "classification":
        evaluation = EvalResult(correct=round(count - total), total=round(count))
        metrics.update(test_error=score.value, test_examples=len(test_targets))
        metrics["baseline_test_error"] = baseline_value
    data, sizes = container.with_manifest(data, sizes, {**contents.manifest, "metrics": metrics})
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
        baseline_error=baseline_value if evaluation is not None else None,
        num_parameters=num_parameters,
        float32_bytes=4 * num_parameters,
        wall_seconds=time.perf_counter() - started,
        history=history,
        rate_estimate_bits=rate_estimate,
        buffers=buffer_choice,
        metric=score,
    )


def _compact(
    contents: container.EprContents,
    train_inputs: tuple[np.ndarray, ...],
    task: Task,
    threads: int | None,
    source: str,
) -> tuple[container.EprContents, BufferChoice]:
    """`contents` with the untrained float tensors on the coarsest grid that keeps the decoded
    model's outputs on the last training examples (the task's `changed`).

    As many of HELD_OUT_EXAMPLES as keep their outputs within HELD_OUT_BYTES (a language
    model's logits are large). Every process runs all of them: the same choice everywhere
    without gathering float outputs, for a cost small next to training.
    """

    def outputs(records: list[container.TensorRecord], count: int) -> tuple[np.ndarray, ...]:
        model = build_onnx(dataclasses.replace(contents, tensors=records))
        return outputs_of(model, tuple(x[-count:] for x in train_inputs), threads, source)

    one = sum(output.nbytes for output in outputs(contents.tensors, 1))
    count = max(1, min(HELD_OUT_EXAMPLES, len(train_inputs[0]), HELD_OUT_BYTES // max(one, 1)))
    records, choice = compact_buffers(
        contents.tensors, lambda records: per_example(outputs(records, count)), task.changed
    )
    return dataclasses.replace(contents, tensors=records), choice


def _arrays(split: object, which: str) -> tuple[tuple[np.ndarray, ...], np.ndarray]:
    """(inputs, targets) as numpy arrays the model takes (`scoring.model_arrays`): integer
    targets int64, float ones float32."""
    if not isinstance(split, (tuple, list)) or len(split) != 2:
        raise EprError(f"{which} must be (inputs, targets), got {type(split).__name__}")
    inputs, targets = split
    several = isinstance(inputs, (tuple, list))
    arrays = tuple(
        model_arrays(x, f"{which} input {i}") for i, x in enumerate(inputs if several else [inputs])
    )
    labels = model_arrays(targets, f"{which} targets")
    if labels.dtype.kind in "iub" and labels.dtype != np.bool_:
        labels = labels.astype(np.int64)
    elif labels.dtype.kind == "f":
        labels = labels.astype(np.float32)
    if not arrays or any(len(x) != len(labels) for x in arrays):
        sizes = [len(x) for x in arrays]
        raise EprError(
            f"{which}: inputs hold {sizes} examples and targets {len(labels)}: every input "
            "and the targets need the examples along axis 0"
        )
    if not len(labels):
        raise EprError(f"{which} holds no examples")
    return arrays, labels


def default_input_names(net: nn.Module, inputs: tuple[np.ndarray, ...]) -> list[str]:
    """The names `eprpipe.train.save` gives the inputs by default: the forward's arguments."""
    return list(bind_inputs(net, tuple(torch.from_numpy(x[:1]) for x in inputs), None).names)


def _check_alike(train: tuple[np.ndarray, ...], test: tuple[np.ndarray, ...]) -> None:
    """Train and test inputs are the same arguments: count, dtypes, ranks."""
    if len(train) != len(test):
        raise EprError(f"train has {len(train)} inputs, test {len(test)}")
    for index, (a, b) in enumerate(zip(train, test, strict=True)):
        if a.dtype != b.dtype or a.ndim != b.ndim:
            raise EprError(
                f"input {index} is {a.dtype} of rank {a.ndim} in train but {b.dtype} of rank "
                f"{b.ndim} in test"
            )


def _declared(
    names: Sequence[str],
    preprocessing: Mapping[str, Normalization] | None,
    input_spec: InputSpec | None,
) -> dict[str, Normalization]:
    """The normalization of each input that declares one, by input name; an InputSpec's is
    that of the one input."""
    declared = dict(preprocessing or {})
    if input_spec is not None:
        if declared or len(names) != 1:
            raise EprError(
                "input_spec= describes one image input; give the normalization of several "
                "inputs (or of any other input) by preprocessing={name: Normalization}"
            )
        declared = {names[0]: Normalization(tuple(input_spec.mean), tuple(input_spec.std), 1)}
    unknown = sorted(set(declared) - set(names))
    if unknown:
        raise EprError(
            f"preprocessing names {unknown}, which are no inputs; the inputs are {list(names)}"
        )
    return declared


def _training_manifest(config: TrainConfig) -> dict:
    return {
        "lambda": config.lam,
        "epochs": config.epochs,
        "batch_size": config.batch_size,
        "decoder": config.decoder.value,
        "prior": config.prior.value,
        "seed": config.seed,
        "augmentation": config.augmentation,
    }


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
