"""Accuracy of an ONNX model under onnxruntime, without torch: the numbers we report.

The model may come from a hostile file that `validate` accepts, so running it is bounded:
onnxruntime allocates from one arena of a fixed size (`--max-runtime-memory`) that the weights
must fit too, a run stops at a time limit if one is set (`--time-limit`), an input batch holds
at most MAX_BATCH_BYTES, every output is checked before it is used, and whatever onnxruntime
raises becomes one EprError.
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import onnx
import onnxruntime as ort
from google.protobuf.message import Message
from onnx import helper
from onnxruntime.capi import onnxruntime_pybind11_state as ort_state
from tqdm import tqdm

from eprpipe.data.datasets import ImageFiles, ImageSplit, Prepared, Shape3, as_float, fit, prepare
from eprpipe.errors import EprError
from eprpipe.format.graph import dims_of, runtime_inputs

EVAL_BATCH = 1000  # images per batch at most
FILE_BATCH = 250  # images decoded at a time from files, and at most MAX_BATCH_BYTES of them
MAX_BATCH_BYTES = 64 << 20  # float32 pixels of one input batch
DEFAULT_RUNTIME_MEMORY = 1 << 30  # onnxruntime's arena for the tensors a model computes
PROGRESS_DELAY_S = 2.0  # an evaluation that ends sooner prints no bar
ARENA_ONLY = (  # session options that keep onnxruntime's allocations inside the capped arena
    "session.use_env_allocators",
    "session.disable_prepacking",
    "session.use_device_allocator_for_initializers",
)
FLOAT_OUTPUTS = frozenset(
    {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE}
)

# Every exception onnxruntime raises: its own classes (they differ between versions), and the
# builtin ones pybind11 maps C++ exceptions to (std::bad_alloc is MemoryError).
ORT_ERRORS: tuple[type[BaseException], ...] = (
    *(
        value
        for value in vars(ort_state).values()
        if isinstance(value, type) and issubclass(value, Exception)
    ),
    RuntimeError,
    MemoryError,
    ValueError,
)


@dataclass(frozen=True)
class EvalResult:
    correct: int
    total: int

    @property
    def error(self) -> float:
        return 1.0 - self.correct / self.total


def _first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return lines[0][:300] if lines else type(error).__name__


class _Arena:
    """The memory cap onnxruntime's CPU sessions allocate from, registered once per value.

    The arena is shared by every session of the process. onnxruntime 1.18 refuses a second
    registration (the first cap stays); later versions replace the arena for later sessions.
    """

    lock = threading.Lock()
    registered: int | None = None

    @classmethod
    def cap(cls, max_bytes: int) -> None:
        with cls.lock:
            if cls.registered == max_bytes:
                return
            info = ort.OrtMemoryInfo(
                "Cpu", ort.OrtAllocatorType.ORT_ARENA_ALLOCATOR, 0, ort.OrtMemType.DEFAULT
            )
            try:
                ort.create_and_register_allocator(info, ort.OrtArenaCfg(max_bytes, -1, -1, -1))
            except ORT_ERRORS as error:
                held = "none" if cls.registered is None else f"{cls.registered >> 20} MiB"
                raise EprError(
                    f"onnxruntime {ort.__version__} cannot cap its memory at "
                    f"{max_bytes >> 20} MiB in this process (cap now: {held}): "
                    f"{_first_line(error)}"
                ) from None
            cls.registered = max_bytes


def _tensors(message: Message) -> Iterator[onnx.TensorProto]:
    """Every TensorProto in a model: initializers and constants, in subgraphs too."""
    if isinstance(message, onnx.TensorProto):
        yield message
        return
    for field, value in message.ListFields():
        if field.type == field.TYPE_MESSAGE:
            for item in [value] if isinstance(value, Message) else value:
                yield from _tensors(item)


def weight_bytes(model: onnx.ModelProto) -> int:
    """Bytes of the tensors a model holds, each rounded up to the 256 bytes onnxruntime's
    arena gives at least: what onnxruntime keeps in memory as weights and constants."""
    total = 0
    for tensor in _tensors(model):
        try:
            size = helper.tensor_dtype_to_np_dtype(tensor.data_type).itemsize
        except KeyError:
            size = 8
        total += -(-max(math.prod(tensor.dims) * size, 1) // 256) * 256
    return total


def session(
    model: onnx.ModelProto,
    threads: int | None = None,
    *,
    max_memory: int = DEFAULT_RUNTIME_MEMORY,
    source: str = "the model",
) -> ort.InferenceSession:
    """An onnxruntime CPU session whose tensors come from an arena of `max_memory` bytes;
    `threads` caps its intra-op threads (None: its default, one per core), for processes
    that share a machine.

    What would escape the arena is off. Constant folding runs when the session is made,
    outside it: a ConstantOfShape [32768, 32768] would take 4 GiB first. Prepacked weights are
    reserved in the arena without its limit check, and once they pass the limit (a [K, 1]
    MatMul weight packs to 16 times its size) the arena's free space wraps around and nothing
    is refused. Weights live outside the arena where onnxruntime allows it (1.18 reserves them
    in it, unchecked too), so a model whose weights alone reach `max_memory` is refused.
    """
    weights = weight_bytes(model)
    if weights >= max_memory:
        raise EprError(
            f"the weights of {source} take {weights / 2**20:,.1f} MiB, not less than the "
            f"{max_memory >> 20} MiB onnxruntime may use (raise --max-runtime-memory)"
        )
    _Arena.cap(max_memory)
    options = ort.SessionOptions()
    options.log_severity_level = 4  # its errors come back as exceptions; don't print them too
    for key in ARENA_ONLY:
        options.add_session_config_entry(key, "1")
    if threads is not None:
        options.intra_op_num_threads = threads
    try:
        return ort.InferenceSession(
            model.SerializeToString(),
            options,
            providers=["CPUExecutionProvider"],
            disabled_optimizers=["ConstantFolding"],
        )
    except ORT_ERRORS as error:
        within = f" within {max_memory >> 20} MiB (raise --max-runtime-memory)"
        raise EprError(
            f"onnxruntime cannot run {source}{within if _arena_exhausted(error) else ''}: "
            f"{_first_line(error)}"
        ) from None


@dataclass(frozen=True)
class Classifier:
    """What evaluation feeds and reads: the one input (its declared dims, None if unknown)
    and the first output."""

    input: str
    dims: tuple[int | None, ...] | None
    output: str


def classifier(model: onnx.ModelProto, source: str = "the model") -> Classifier:
    """The model's input and output, if it can be an image classifier: one float input of
    rank 4 and a floating-point first output of rank 2 (unknown ranks are checked when run)."""
    inputs, outputs = runtime_inputs(model.graph), model.graph.output
    if len(inputs) != 1 or not outputs:
        raise EprError(
            f"{source} is not an image classifier: it takes {len(inputs)} inputs and gives "
            f"{len(outputs)} outputs; eval feeds one batch of images and reads one output"
        )
    dims, out_dims = dims_of(inputs[0]), dims_of(outputs[0])
    if inputs[0].type.tensor_type.elem_type != onnx.TensorProto.FLOAT or (
        dims is not None and len(dims) != 4
    ):
        raise EprError(
            f"{source} is not an image classifier: input {inputs[0].name!r} is not a float "
            "tensor [batch, channels, height, width]"
        )
    if outputs[0].type.tensor_type.elem_type not in FLOAT_OUTPUTS or (
        out_dims is not None and len(out_dims) != 2
    ):
        raise EprError(
            f"{source} is not an image classifier: output {outputs[0].name!r} is not a float "
            "tensor [batch, classes]"
        )
    return Classifier(inputs[0].name, dims, outputs[0].name)


def images_per_batch(image_shape: tuple[int, ...], most: int = EVAL_BATCH) -> int:
    """How many float32 images of `image_shape` one batch holds: at most `most`, at most
    MAX_BATCH_BYTES; an image larger than that alone is an EprError."""
    size = 4 * math.prod(image_shape)
    if size > MAX_BATCH_BYTES:
        shown = "×".join(map(str, image_shape))
        raise EprError(
            f"one {shown} input takes {size / 2**20:,.0f} MiB of float32 pixels, more than "
            f"the {MAX_BATCH_BYTES >> 20} MiB an evaluation batch may hold"
        )
    return max(1, min(most, MAX_BATCH_BYTES // max(size, 1)))


def progress_bar(total: int, description: str, enabled: bool) -> tqdm:
    """A bar (rate, ETA) on stderr for an evaluation of `total` images, shown only once it has
    run for PROGRESS_DELAY_S: ImageNet's 50,000 images take minutes, a digits split a blink."""
    return tqdm(
        total=total,
        desc=description,
        unit="img",
        delay=PROGRESS_DELAY_S,
        disable=not enabled,
        leave=False,
        dynamic_ncols=True,
    )


def _arena_exhausted(error: BaseException) -> bool:
    """Whether a run failed for memory (the arena's cap, or the machine's), not the model."""
    text = str(error).lower()
    return isinstance(error, MemoryError) or any(
        sign in text for sign in ("available memory of", "bfc_arena", "failed to allocate memory")
    )


@dataclass(frozen=True)
class RunLimits:
    """What running a model from a file may cost: the model, not the file, decides how much
    it computes per image, so its memory and its time are capped here."""

    memory: int = DEFAULT_RUNTIME_MEMORY  # bytes onnxruntime may allocate for tensors
    seconds: float | None = None  # wall time for the whole evaluation; None: no limit


DEFAULT_RUN_LIMITS = RunLimits()


class _Deadline:
    """Stops onnxruntime mid-run once the evaluation's time is up (RunOptions.terminate, set
    from a timer thread): a graph can loop or allocate for as long as it likes per image."""

    def __init__(self, seconds: float | None, source: str) -> None:
        self.seconds, self.source = seconds, source
        self.end = None if seconds is None else time.monotonic() + seconds

    def check(self) -> None:
        if self.end is not None and time.monotonic() >= self.end:
            raise EprError(
                f"evaluating {self.source} stopped at the time limit of {self.seconds:g} s "
                "(--time-limit)"
            )

    def run(self, runner: ort.InferenceSession, output: str, feeds: dict) -> object:
        self.check()
        options = ort.RunOptions()
        options.log_severity_level = 4
        if self.end is None:
            return runner.run([output], feeds, options)[0]
        timer = threading.Timer(self.end - time.monotonic(), _terminate, (options,))
        timer.start()
        try:
            return runner.run([output], feeds, options)[0]
        finally:
            timer.cancel()


def _terminate(options: ort.RunOptions) -> None:
    options.terminate = True


class _Scorer:
    """Top-1 classes from one session, checking every output; a batch that exhausts the arena
    is run in halves, down to one image, and later batches keep the size that fitted."""

    def __init__(
        self,
        runner: ort.InferenceSession,
        io: Classifier,
        source: str,
        cap: int,
        deadline: _Deadline,
    ):
        self.runner, self.io, self.source, self.cap = runner, io, source, cap
        self.deadline = deadline
        self.most = EVAL_BATCH

    def top1(self, batch: np.ndarray) -> np.ndarray:
        parts, start = [], 0
        while start < len(batch):
            piece = batch[start : start + self.most]
            try:
                logits = self.deadline.run(self.runner, self.io.output, {self.io.input: piece})
            except ORT_ERRORS as error:
                self.deadline.check()
                self._shrink(error, len(piece))
                continue
            parts.append(self._classes(logits, len(piece)))
            start += len(piece)
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)

    def _shrink(self, error: BaseException, size: int) -> None:
        if not _arena_exhausted(error):
            raise EprError(f"onnxruntime cannot run {self.source}: {_first_line(error)}") from None
        if size == 1:
            raise EprError(
                f"onnxruntime cannot run {self.source} on one image within "
                f"{self.cap >> 20} MiB (raise --max-runtime-memory): {_first_line(error)}"
            ) from None
        self.most = size // 2

    def _classes(self, logits: object, size: int) -> np.ndarray:
        if (
            not isinstance(logits, np.ndarray)
            or logits.dtype.kind != "f"
            or logits.ndim != 2
            or logits.shape[0] != size
            or logits.shape[1] < 1
        ):
            got = (
                f"{logits.dtype} {list(logits.shape)}"
                if isinstance(logits, np.ndarray)
                else type(logits).__name__
            )
            raise EprError(
                f"{self.source}: output {self.io.output!r} is {got} for {size} images; a "
                f"classifier's must be float [{size}, classes]"
            )
        return logits.argmax(1)


def _classify(
    model: onnx.ModelProto,
    batches: Iterator[np.ndarray],
    total: int,
    threads: int | None = None,
    progress: bool = False,
    *,
    source: str = "the model",
    limits: RunLimits = DEFAULT_RUN_LIMITS,
) -> np.ndarray:
    io = classifier(model, source)
    deadline = _Deadline(limits.seconds, source)
    runner = session(model, threads, max_memory=limits.memory, source=source)
    scorer = _Scorer(runner, io, source, limits.memory, deadline)
    classes = []
    with progress_bar(total, "evaluating (onnxruntime)", progress) as bar:
        for batch in batches:
            classes.append(scorer.top1(batch))
            bar.update(len(batch))
    return np.concatenate(classes) if classes else np.zeros(0, dtype=np.int64)


def predict(
    model: onnx.ModelProto,
    images: np.ndarray,
    threads: int | None = None,
    progress: bool = False,
    *,
    source: str = "the model",
    limits: RunLimits = DEFAULT_RUN_LIMITS,
) -> np.ndarray:
    """Top-1 class of each image (uint8 0..255 or float32 in [0, 1], NCHW), up to 1,000 and
    64 MiB at a time."""
    step = images_per_batch(images.shape[1:])
    return _classify(
        model,
        (
            np.ascontiguousarray(as_float(images[start : start + step]))
            for start in range(0, len(images), step)
        ),
        len(images),
        threads,
        progress,
        source=source,
        limits=limits,
    )


def file_batches(files: ImageFiles, threads: int, batch: int = FILE_BATCH) -> Iterator[np.ndarray]:
    """The evaluation view of every file, in order, `batch` at a time, decoded by `threads`
    threads (Pillow releases the GIL while it decodes and resizes)."""
    order = np.arange(len(files))
    with ThreadPoolExecutor(max_workers=threads) as pool:
        for start in range(0, len(order), batch):
            chunks = np.array_split(order[start : start + batch], threads)
            parts = pool.map(files.read_batch, [chunk for chunk in chunks if len(chunk)])
            yield as_float(np.concatenate(list(parts)))


def predict_files(
    model: onnx.ModelProto,
    files: ImageFiles,
    threads: int | None = None,
    progress: bool = False,
    *,
    source: str = "the model",
    limits: RunLimits = DEFAULT_RUN_LIMITS,
) -> np.ndarray:
    """Top-1 class of every image of an on-disk split, decoded a batch at a time (FILE_BATCH
    images, at most 64 MiB) by `threads` threads (None: one per core) while onnxruntime
    classifies with as many."""
    step = images_per_batch((files.channels, *(files.size or (1, 1))), FILE_BATCH)
    batches = file_batches(files, threads or os.cpu_count() or 1, step)
    return _classify(model, batches, len(files), threads, progress, source=source, limits=limits)


def evaluate_model(
    model: onnx.ModelProto,
    images: np.ndarray,
    labels: np.ndarray,
    threads: int | None = None,
    progress: bool = False,
    *,
    source: str = "the model",
    limits: RunLimits = DEFAULT_RUN_LIMITS,
) -> EvalResult:
    """Top-1 accuracy on `images` (uint8 or float32 in [0, 1], NCHW)."""
    predicted = predict(model, images, threads, progress, source=source, limits=limits)
    return EvalResult(correct=int((predicted == labels).sum()), total=len(labels))


def evaluate_split(
    model: onnx.ModelProto,
    split: Prepared,
    threads: int | None = None,
    progress: bool = False,
    *,
    source: str = "the model",
    limits: RunLimits = DEFAULT_RUN_LIMITS,
) -> EvalResult:
    """Top-1 accuracy on a prepared split, in memory or on disk, on `threads` threads (None:
    one per core), with a progress bar when asked for and the work lasts."""
    if isinstance(split, ImageFiles):
        predicted = predict_files(model, split, threads, progress, source=source, limits=limits)
        return EvalResult(correct=int((predicted == split.labels).sum()), total=len(split))
    return evaluate_model(
        model, *split, threads=threads, progress=progress, source=source, limits=limits
    )


def fitted_batches(split: ImageSplit, shape: Shape3, batch: int) -> Iterator[np.ndarray]:
    """An in-memory split fitted to `shape` `batch` images at a time: the resized copy of a
    whole split would be as large as the shape a file declares makes it."""
    for start in range(0, len(split.labels), batch):
        part = ImageSplit(split.images[start : start + batch], split.labels[start : start + batch])
        yield np.ascontiguousarray(prepare(part, shape)[0])


def evaluate_loaded(
    model: onnx.ModelProto,
    split: ImageSplit | ImageFiles,
    shape: Shape3,
    threads: int | None = None,
    progress: bool = False,
    *,
    source: str = "the model",
    limits: RunLimits = DEFAULT_RUN_LIMITS,
) -> EvalResult:
    """Top-1 accuracy on a split as its dataset loaded it, fitted to the model's (C, H, W)
    input a batch at a time."""
    if isinstance(split, ImageFiles):
        return evaluate_split(
            model, fit(split, shape), threads, progress, source=source, limits=limits
        )
    batches = fitted_batches(split, shape, images_per_batch(shape))
    predicted = _classify(
        model, batches, len(split.labels), threads, progress, source=source, limits=limits
    )
    return EvalResult(correct=int((predicted == split.labels).sum()), total=len(split.labels))
