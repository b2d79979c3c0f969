"""What the built-in loop's two paths share: the input and result descriptions, the plain
baseline run, the manifest's training section and onnxruntime's share of the machine."""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from torch import nn

from eprpipe.deploy.evaluate import EvalResult
from eprpipe.format import container
from eprpipe.format.atomic import write_atomically
from eprpipe.train.buffers import BufferChoice
from eprpipe.train.checkpoint import Checkpointer
from eprpipe.train.config import TrainConfig
from eprpipe.train.distributed import World
from eprpipe.train.export import INPUT_NAME
from eprpipe.train.loader import cores_per_process
from eprpipe.train.loop import Data, History, task_metric, train_plain
from eprpipe.train.tasks import Task

HELD_OUT_EXAMPLES = 1000  # training examples the untrained floats' grid is judged on


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
    histogram_bits: float | None = None  # the latents under their own per-group histograms
    buffers: BufferChoice | None = None  # how the untrained float tensors were stored
    metric: TaskScore | None = None  # the task's own metric, by name

    @property
    def bits_per_parameter(self) -> float:
        return 8 * self.sizes.payload_bytes / self.num_parameters

    @property
    def ratio(self) -> float:
        return self.float32_bytes / self.sizes.payload_bytes


def baseline_metric(
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


def evaluation_threads(world: World) -> int | None:
    """onnxruntime threads: the process's share of the machine under torchrun, else its default."""
    return cores_per_process() if world.distributed else None


def training_manifest(config: TrainConfig) -> dict:
    return {
        "lambda": config.lam,
        "epochs": config.epochs,
        "batch_size": config.batch_size,
        "decoder": config.decoder.value,
        "prior": config.prior.value,
        "seed": config.seed,
        "augmentation": config.augmentation,
    }


def publish(output: Path, data: bytes, world: World, run: Checkpointer | None) -> None:
    """Write the file once (every process computed the same bytes), drop the checkpoint it
    replaces, and let every process leave together."""
    if world.is_main:
        write_atomically(output, data)
    if run:
        run.remove()
    world.barrier()
