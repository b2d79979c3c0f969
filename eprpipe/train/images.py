"""The image classifier's path: format 1.0 files, as eprpipe has always written them.

Images (arrays or files streamed through loader workers) with integer labels, normalized by an
`InputSpec` that the model builder prepends; untrained float tensors judged by the predicted
classes of held-out training images; the decoded model's top-1 error on the test split.
"""

from __future__ import annotations

import copy
import dataclasses
import time
from pathlib import Path

import numpy as np
import onnx
import torch
from torch import nn

from eprpipe import __version__
from eprpipe.data.datasets import ImageFiles, Prepared, part_of
from eprpipe.deploy.evaluate import EvalResult, evaluate_split, predict
from eprpipe.errors import EprError
from eprpipe.format import container
from eprpipe.format.graph import build_onnx
from eprpipe.format.manifest import check_manifest
from eprpipe.train.buffers import compact_buffers
from eprpipe.train.checkpoint import Checkpointer, CheckpointPolicy, identity_of
from eprpipe.train.config import RateEstimator, TrainConfig
from eprpipe.train.distributed import World, assemble, init_world, own_range, sum_over_processes
from eprpipe.train.export import OUTPUT_NAME, weightless_graph
from eprpipe.train.loader import FileData
from eprpipe.train.loop import Data, TensorData, train_epr
from eprpipe.train.paths import check_writable
from eprpipe.train.records import tensor_records, untrained_state
from eprpipe.train.reparam import EPRModel
from eprpipe.train.runs import (
    HELD_OUT_EXAMPLES,
    CompressResult,
    InputSpec,
    TaskScore,
    baseline_metric,
    evaluation_threads,
    publish,
    training_manifest,
)
from eprpipe.train.tasks import Classification


def _training_data(split: Prepared, spec: InputSpec, device: str, workers: int | None) -> Data:
    """In-memory arrays go whole onto the device; image files stream through loader workers."""
    if isinstance(split, ImageFiles):
        return FileData(split, spec.mean, spec.std, device, workers)
    return TensorData.from_numpy(*split, spec.mean, spec.std, device)


def held_out_images(train: Prepared, world: World) -> tuple[np.ndarray, int]:
    """This process's `own_range` of HELD_OUT_EXAMPLES training images (evaluation view),
    uint8 or float32, and how many there are in all: the last ones of arrays (shuffled
    datasets), evenly spaced ones of files (listed class by class)."""
    if isinstance(train, ImageFiles):
        spread = np.linspace(0, len(train) - 1, min(len(train), HELD_OUT_EXAMPLES))
        chosen = np.unique(spread.round().astype(np.int64))
        return train.read_batch(chosen[own_range(len(chosen), world)]), len(chosen)
    chosen = train[0][-HELD_OUT_EXAMPLES:]
    return chosen[own_range(len(chosen), world)], len(chosen)


def _test_result(
    model_proto: onnx.ModelProto, test: Prepared, world: World, config: TrainConfig
) -> EvalResult:
    """Top-1 accuracy of the decoded model on the whole test split, each process classifying
    its `own_range` (rank 0 shows its part's progress)."""
    own = part_of(test, own_range(_examples(test), world))
    progress = config.progress and world.is_main
    part = evaluate_split(model_proto, own, evaluation_threads(world), progress)
    correct, total = sum_over_processes([part.correct, part.total], world, config.device)
    return EvalResult(correct=correct, total=total)


def _examples(split: Prepared) -> int:
    return len(split) if isinstance(split, ImageFiles) else len(split[1])


def compress_images(
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
        baseline_metric(net, train_data, test_data, config, run, Classification())
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
        "training": training_manifest(config),
        "untrained_tensors": sorted(buffers),  # not reparameterized: not counted as parameters
    }
    buffer_choice = None
    if compact:
        held_out, held_out_count = held_out_images(train, world)
        threads = evaluation_threads(world)

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
    publish(output, data, world, run)
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
        histogram_bits=model.histogram_bits(),
        buffers=buffer_choice,
        metric=TaskScore("error", evaluation.error, baseline_error, False, evaluation.total),
    )
