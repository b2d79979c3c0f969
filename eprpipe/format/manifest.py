"""The manifest keys eprpipe's consumers read, with their types and ranges (spec/FORMAT.md 4.1).

The manifest is application data, but `info`, `decode` and `eval` read some of its keys. A file
whose manifest gives one of them a wrong type or range is rejected by every consumer when it is
read (`check_manifest`), so that no command can crash later on a file `validate` accepts. Every
described key is optional; keys not described here are free. Format 1.1 describes more keys
(`inputs`, `outputs`, `task`, `metadata`, `tied_tensors`, `metrics.task_metric`); they are
checked only in files whose header says minor version 1 or later, so every 1.0 file, in which
they are free, stays valid. The accessors read the described keys of a checked manifest, so
consumers never poke at raw dicts.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from itertools import repeat
from typing import Any, TypeGuard, cast

import numpy as np

from eprpipe.format.structures import MINOR_1_1

MAX_SHAPE_ENTRIES = 8
MAX_EXAMPLE_ELEMENTS = 2**24  # one example (the shape after the batch): evaluation batches them
MAX_CHANNELS = 4096  # normalization entries
MAX_CLASSES = 65536
MAX_EXAMPLES = 2**53  # test examples: every count up to it is exact as a binary64 value

MAX_TENSOR_SPECS = 64  # entries of inputs and of outputs
MAX_DIM_NAME = 64  # characters of a symbolic dimension
MAX_METADATA_MEMBERS = 256
MAX_METADATA_KEY = 128  # characters
MAX_METADATA_BYTES = 65536  # UTF-8 bytes of every key and value together
MAX_TIED_TENSORS = 65536
RESERVED_METADATA_PREFIX = "eprpipe."  # eprpipe's own ONNX metadata keys
DTYPES = ("float32", "float16", "int64", "int32", "bool")  # of inputs and outputs
TASK_KINDS = ("classification", "regression", "none")
MAX_FLOAT64 = float(np.finfo(np.float64).max)

_SHOWN_CHARS = 40

# A rule takes a JSON value and returns None, or what is wrong with it: the key path below the
# value (".key", "[index]", nothing for the value itself), then " must be ...". Paths are built
# only for the one problem reported, so checking a long array costs one call per entry.
Rule = Callable[[object], "str | None"]


def _show(value: object) -> str:
    """A JSON value as an error message shows it: short, ASCII, in JSON's own spelling."""
    if value is None or isinstance(value, bool | float):
        return json.dumps(value)
    if isinstance(value, int):
        return (
            str(value) if value.bit_length() <= 64 else f"an integer of {value.bit_length()} bits"
        )
    if isinstance(value, str):
        return json.dumps(value[:_SHOWN_CHARS]) + ("..." if len(value) > _SHOWN_CHARS else "")
    if isinstance(value, list):
        return f"an array of {len(value)} entries"
    return "an object"


def _is_number(value: object) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_integer(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _first(problems: Iterable[str | None]) -> str | None:
    return next((problem for problem in problems if problem), None)


def as_float32(value: int | float) -> float | None:
    """The value a consumer computes with: the nearest binary64, then the nearest binary32
    (what numpy does with a list of JSON numbers); None if that is not finite."""
    try:
        wide = float(value)
    except OverflowError:  # an integer beyond binary64
        return None
    with np.errstate(over="ignore"):
        narrow = np.float32(wide)
    return float(narrow) if np.isfinite(narrow) else None


# --- rules ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Text:
    """A JSON string."""

    def __call__(self, value: object) -> str | None:
        return None if isinstance(value, str) else f" must be a string, got {_show(value)}"


@dataclass(frozen=True)
class Integer:
    """A JSON integer (no fraction, no exponent; not a boolean) in [low, high]."""

    low: int
    high: int

    def __call__(self, value: object) -> str | None:
        if _is_integer(value) and self.low <= value <= self.high:
            return None
        return f" must be an integer from {self.low} to {self.high}, got {_show(value)}"


@dataclass(frozen=True)
class Number:
    """A JSON number (integer or not; not a boolean) in [low, high]; also null if nullable."""

    low: float
    high: float
    nullable: bool = False

    def __call__(self, value: object) -> str | None:
        if value is None and self.nullable:
            return None
        if _is_number(value) and self.low <= value <= self.high:
            return None
        null = " or null" if self.nullable else ""
        return f" must be a number from {self.low:g} to {self.high:g}{null}, got {_show(value)}"


@dataclass(frozen=True)
class Array:
    """A JSON array of min_items..max_items entries (no bound: None), each following `item`."""

    item: Rule
    min_items: int = 0
    max_items: int | None = None

    def __call__(self, value: object) -> str | None:
        if not isinstance(value, list):
            return f" must be an array, got {_show(value)}"
        too_many = self.max_items is not None and len(value) > self.max_items
        if len(value) < self.min_items or too_many:
            if self.max_items == self.min_items:
                return f" must have {self.min_items} entries, got {len(value)}"
            most = " or more" if self.max_items is None else f" to {self.max_items}"
            return f" must have {self.min_items}{most} entries, got {len(value)}"
        if isinstance(self.item, Text) and all(map(isinstance, value, repeat(str))):
            return None  # in C: lists of names can be millions long
        for index, entry in enumerate(value):
            problem = self.item(entry)
            if problem:
                return f"[{index}]{problem}"
        return None


@dataclass(frozen=True)
class Object:
    """A JSON object whose described members follow their rules; other members are free."""

    members: dict[str, Rule]
    required: tuple[str, ...] = ()

    def __call__(self, value: object) -> str | None:
        if not isinstance(value, dict):
            return f" must be an object, got {_show(value)}"
        missing = [key for key in self.required if key not in value]
        if missing:
            return f".{missing[0]} is missing; it is required when its object is present"
        return _first(
            f".{key}{problem}"
            for key, rule in self.members.items()
            if key in value and (problem := rule(value[key]))
        )


def _positive_integer(value: object) -> str | None:
    if _is_integer(value) and value >= 1:
        return None
    return f" must be a positive integer, got {_show(value)}"


def _number(value: object) -> str | None:
    return None if _is_number(value) else f" must be a number, got {_show(value)}"


def _anything(value: object) -> str | None:
    return None


@dataclass(frozen=True)
class Shape:
    """Entry 0 (the batch) null or a positive integer, the others positive integers, whose
    product (one example's elements) is at most `max_elements`: evaluation batches examples."""

    max_entries: int
    max_elements: int

    def __call__(self, value: object) -> str | None:
        problem = Array(_anything, 1, self.max_entries)(value)
        if problem:
            return problem
        batch, *dims = cast("list[Any]", value)  # an array, as checked above
        if batch is not None and _positive_integer(batch):
            return f"[0] must be null or a positive integer, got {_show(batch)}"
        for index, entry in enumerate(dims, 1):
            problem = _positive_integer(entry)
            if problem:
                return f"[{index}]{problem}"
        if math.prod(dims) > self.max_elements:
            return (
                f" declares {math.prod(dims):,} elements per example, "
                f"more than {self.max_elements:,}"
            )
        return None


@dataclass(frozen=True)
class Interval:
    """Two numbers [low, high] with low < high."""

    def __call__(self, value: object) -> str | None:
        problem = Array(_number, 2, 2)(value)
        bounds = cast("list[float]", value)  # two numbers, unless there is a problem
        if problem or bounds[0] < bounds[1]:
            return problem
        low, high = (_show(bound) for bound in bounds)
        return f" must be [low, high] with low < high, got [{low}, {high}]"


@dataclass(frozen=True)
class Float32s:
    """1..max_items numbers a consumer computes with as float32: each finite as float32 (and
    nonzero, if asked: a divisor)."""

    max_items: int
    nonzero: bool = False

    def __call__(self, value: object) -> str | None:
        problem = Array(_number, 1, self.max_items)(value)
        if problem:
            return problem
        for index, entry in enumerate(cast("list[float]", value)):  # numbers, as checked above
            narrow = as_float32(entry)
            if narrow is None or (self.nonzero and narrow == 0.0):
                what = "finite and nonzero" if self.nonzero else "finite"
                return f"[{index}] must be {what} as float32, got {_show(entry)}"
        return None


@dataclass(frozen=True)
class Choice:
    """One of a few strings."""

    values: tuple[str, ...]

    def __call__(self, value: object) -> str | None:
        if isinstance(value, str) and value in self.values:
            return None
        shown = ", ".join(json.dumps(choice) for choice in self.values)
        return f" must be one of {shown}, got {_show(value)}"


def _boolean(value: object) -> str | None:
    return None if isinstance(value, bool) else f" must be true or false, got {_show(value)}"


def _name(value: object) -> str | None:
    if isinstance(value, str) and value:
        return None
    return f" must be a non-empty string, got {_show(value)}"


def _dimension(value: object) -> str | None:
    """A size, or the name of a symbolic dimension such as "batch"."""
    if _is_integer(value) and value >= 1:
        return None
    if isinstance(value, str) and 1 <= len(value) <= MAX_DIM_NAME:
        return None
    return (
        " must be a positive integer or a name of 1 to "
        f"{MAX_DIM_NAME} characters, got {_show(value)}"
    )


@dataclass(frozen=True)
class TensorShape:
    """0..max_entries dims, each a size or a symbolic name; the sizes' product is bounded, so
    that one tensor of the declared shape (symbolic dims set to 1) can be allocated."""

    max_entries: int
    max_elements: int

    def __call__(self, value: object) -> str | None:
        problem = Array(_dimension, 0, self.max_entries)(value)
        if problem:
            return problem
        sizes = math.prod(d for d in cast("list[Any]", value) if not isinstance(d, str))
        if sizes > self.max_elements:
            return (
                f" declares {sizes:,} elements in its fixed dims, more than {self.max_elements:,}"
            )
        return None


@dataclass(frozen=True)
class Named:
    """An array of min_items..max_items objects, each following `item`, whose `name` members
    differ: a graph's inputs or outputs, fed and read by name."""

    item: Object
    min_items: int
    max_items: int

    def __call__(self, value: object) -> str | None:
        problem = Array(self.item, self.min_items, self.max_items)(value)
        if problem:
            return problem
        seen: set[str] = set()
        for index, entry in enumerate(cast("list[dict]", value)):
            if entry["name"] in seen:
                return f"[{index}].name {_show(entry['name'])} repeats an earlier entry's name"
            seen.add(entry["name"])
        return None


@dataclass(frozen=True)
class Metadata:
    """The user's free metadata: string values under keys that cannot pose as eprpipe's own
    ONNX metadata, bounded in count and in bytes (the decoded model carries every entry)."""

    def __call__(self, value: object) -> str | None:
        if not isinstance(value, dict):
            return f" must be an object, got {_show(value)}"
        if len(value) > MAX_METADATA_MEMBERS:
            return f" must have at most {MAX_METADATA_MEMBERS} members, got {len(value)}"
        size = 0
        for key, entry in value.items():
            if not 1 <= len(key) <= MAX_METADATA_KEY:
                return f" key {_show(key)} must have 1 to {MAX_METADATA_KEY} characters"
            if key.startswith(RESERVED_METADATA_PREFIX):
                return f" key {_show(key)} must not start with {_show(RESERVED_METADATA_PREFIX)}"
            if not isinstance(entry, str):
                return f".{key} must be a string, got {_show(entry)}"
            size += _utf8_bytes(key) + _utf8_bytes(entry)
        if size > MAX_METADATA_BYTES:
            return (
                f" holds {size:,} bytes of UTF-8 in its keys and values, "
                f"more than {MAX_METADATA_BYTES:,}"
            )
        return None


def _utf8_bytes(text: str) -> int:
    """UTF-8 length; a lone surrogate (which no file can hold) counts as its three bytes."""
    return len(text.encode("utf-8", "surrogatepass"))


@dataclass(frozen=True)
class Strings:
    """An object of at most max_members members whose values are strings."""

    max_members: int

    def __call__(self, value: object) -> str | None:
        if not isinstance(value, dict):
            return f" must be an object, got {_show(value)}"
        if len(value) > self.max_members:
            return f" must have at most {self.max_members:,} members, got {len(value):,}"
        return _first(
            f".{key} must be a string, got {_show(entry)}"
            for key, entry in value.items()
            if not isinstance(entry, str)
        )


# --- the schema -----------------------------------------------------------------------------

METRICS = Object(
    {
        "test_error": Number(0, 1),
        "baseline_test_error": Number(0, 1, nullable=True),
        "test_examples": Integer(0, MAX_EXAMPLES),
        "dataset": Text(),
    }
)

SCHEMA = Object(
    {
        "producer": Text(),
        "architecture": Text(),
        "dataset": Text(),
        "input": Object(
            {
                "name": Text(),
                "shape": Shape(MAX_SHAPE_ENTRIES, MAX_EXAMPLE_ELEMENTS),
                "dtype": Text(),
                "layout": Text(),
                "range": Interval(),
                "normalization": Object(
                    {
                        "mean": Float32s(MAX_CHANNELS),
                        "std": Float32s(MAX_CHANNELS, nonzero=True),
                        "applied": Text(),
                    },
                    required=("mean", "std"),
                ),
            }
        ),
        "output": Object(
            {"name": Text(), "kind": Text(), "classes": Array(Text(), 1, MAX_CLASSES)}
        ),
        "metrics": METRICS,
        "untrained_tensors": Array(Text()),
        "training": Object({}),
    }
)


# Added in format 1.1, checked in files of minor version 1 or later only (spec 4.1).

NORMALIZATION_1_1 = Object(
    {
        "mean": Float32s(MAX_CHANNELS),
        "std": Float32s(MAX_CHANNELS, nonzero=True),
        "axis": Integer(0, MAX_SHAPE_ENTRIES - 1),
    },
    required=("mean", "std", "axis"),
)
_TENSOR_MEMBERS: dict[str, Rule] = {
    "name": _name,
    "dtype": Choice(DTYPES),
    "shape": TensorShape(MAX_SHAPE_ENTRIES, MAX_EXAMPLE_ELEMENTS),
}
_TENSOR_REQUIRED = ("name", "dtype", "shape")
INPUT_1_1 = Object(
    {
        **_TENSOR_MEMBERS,
        "preprocessing": Object({"normalization": NORMALIZATION_1_1, "applied": Text()}),
    },
    required=_TENSOR_REQUIRED,
)
OUTPUT_1_1 = Object(_TENSOR_MEMBERS, required=_TENSOR_REQUIRED)
TASK_METRIC = Object(
    {
        "name": Text(),
        "value": Number(-MAX_FLOAT64, MAX_FLOAT64),
        "baseline": Number(-MAX_FLOAT64, MAX_FLOAT64, nullable=True),
        "higher_is_better": _boolean,
        "examples": Integer(0, MAX_EXAMPLES),
    },
    required=("name", "value"),
)
SCHEMA_1_1 = Object(
    {
        "inputs": Named(INPUT_1_1, 1, MAX_TENSOR_SPECS),
        "outputs": Named(OUTPUT_1_1, 1, MAX_TENSOR_SPECS),
        "task": Object(
            {"kind": Choice(TASK_KINDS), "classes": Array(Text(), 1, MAX_CLASSES)},
            required=("kind",),
        ),
        "metadata": Metadata(),
        "tied_tensors": Strings(MAX_TIED_TENSORS),
        "metrics": Object({"task_metric": TASK_METRIC}),
    }
)
KEYS_1_1 = ("inputs", "outputs", "task", "metadata", "tied_tensors")  # and metrics.task_metric


def _normalization_fits(manifest: dict) -> str | None:
    """mean and std pair up, and give one value per channel of the declared shape."""
    spec = manifest.get("input", {})
    normalization = spec.get("normalization")
    if normalization is None:
        return None
    channels, stds = len(normalization["mean"]), len(normalization["std"])
    if stds != channels:
        return f"input.normalization has {channels} mean and {stds} std entries; they must pair up"
    shape = spec.get("shape")
    if shape is None or (len(shape) >= 2 and shape[1] == channels):
        return None
    if len(shape) < 2:
        return "input.normalization is per channel, but input.shape has no channel entry [1]"
    return f"input.normalization has {channels} channels, but input.shape[1] is {shape[1]}"


def _preprocessing_fits(manifest: dict) -> str | None:
    """Each input's normalization pairs mean with std, along an axis its shape has, with one
    value for every entry of that axis (or one for all) where the axis has a fixed size."""
    for index, spec in enumerate(manifest.get("inputs", ())):
        normalization = spec.get("preprocessing", {}).get("normalization")
        if normalization is None:
            continue
        where = f"inputs[{index}].preprocessing.normalization"
        means, stds = len(normalization["mean"]), len(normalization["std"])
        if stds != means:
            return f"{where} has {means} mean and {stds} std entries; they must pair up"
        axis, shape = normalization["axis"], spec["shape"]
        if axis >= len(shape):
            return f"{where}.axis is {axis}, but inputs[{index}].shape has {len(shape)} entries"
        size = shape[axis]
        if isinstance(size, int) and means not in (1, size):
            return (
                f"{where} has {means} entries, but inputs[{index}].shape[{axis}] is {size} "
                "(one entry, or one per index of the axis)"
            )
    return None


def _normalized_once(manifest: dict) -> str | None:
    """1.0's input.normalization is prepended by the model builder; a 1.1 normalization is
    already in the graph. Both at once would normalize twice."""
    if "normalization" not in manifest.get("input", {}):
        return None
    for index, spec in enumerate(manifest.get("inputs", ())):
        if "normalization" in spec.get("preprocessing", {}):
            return (
                f"inputs[{index}].preprocessing.normalization is inside the graph, and "
                "input.normalization would be applied on top of it; declare one of them"
            )
    return None


def _classes_fit(manifest: dict) -> str | None:
    """Class names belong to a classification task only."""
    task = manifest.get("task")
    if task is not None and "classes" in task and task["kind"] != "classification":
        kind = _show(task["kind"])
        return f'task.classes is allowed only when task.kind is "classification", not {kind}'
    return None


RELATIONS = (_normalization_fits,)  # rules between keys, checked once every key has its type
RELATIONS_1_1 = (_preprocessing_fits, _normalized_once, _classes_fit)


def required_minor(manifest: dict) -> int:
    """The lowest minor version that defines every described key `manifest` uses: what a
    writer puts in the header (spec 4), so files without 1.1 keys stay 1.0 files."""
    metrics = manifest.get("metrics")
    uses_1_1 = any(key in manifest for key in KEYS_1_1) or (
        isinstance(metrics, dict) and "task_metric" in metrics
    )
    return MINOR_1_1 if uses_1_1 else 0


def check_manifest(manifest: object, minor: int = 0) -> str | None:
    """The first described key that breaks its rule, as a message that names its path, or None.

    `minor` is the file's version_minor: the 1.1 keys are described from minor 1 on, and free
    in a 1.0 file. E.g. "input.shape[2] must be a positive integer, got -28". Only the
    described keys are visited, so the check costs little beside the JSON parse.
    """
    if not isinstance(manifest, dict):
        return f"the manifest must be an object, got {_show(manifest)}"
    schemas, relations = [SCHEMA], list(RELATIONS)
    if minor >= MINOR_1_1:
        schemas.append(SCHEMA_1_1)
        relations += RELATIONS_1_1
    problem = _first(schema(manifest) for schema in schemas)
    if problem:
        return problem.removeprefix(".")
    return _first(relation(manifest) for relation in relations)


def check_tied_tensors(manifest: dict, minor: int, records: Iterable[str]) -> str | None:
    """Each alias of tied_tensors names a stored record and is not itself one (spec 4.1):
    checked where the records are known, after check_manifest passed."""
    aliases = tied_tensors(manifest, minor)
    if not aliases:
        return None
    names = set(records)
    for alias, target in aliases.items():
        if alias in names:
            return f"tied_tensors alias {_show(alias)} is a stored record; an alias is not stored"
        if target not in names:
            return f"tied_tensors alias {_show(alias)} names {_show(target)}, which is no record"
    return None


# --- accessors for consumers: they assume check_manifest passed -----------------------------


def input_shape(manifest: dict) -> tuple[int | None, ...] | None:
    """The declared input shape, batch entry first (None: any batch size), or None."""
    shape = manifest.get("input", {}).get("shape")
    return None if shape is None else tuple(shape)


def input_normalization(manifest: dict) -> tuple[list[float], list[float]] | None:
    """Per-channel (mean, std) to apply inside the graph, or None for no normalization."""
    normalization = manifest.get("input", {}).get("normalization")
    if normalization is None:
        return None
    return [float(v) for v in normalization["mean"]], [float(v) for v in normalization["std"]]


def classes(manifest: dict) -> list[str] | None:
    """The class names, in the order of the output's last axis, or None."""
    names = manifest.get("output", {}).get("classes")
    return None if names is None else list(names)


def declares_classification(manifest: dict) -> bool:
    """Whether the output is per-class logits (output.kind "logits"), which eval scores."""
    return manifest.get("output", {}).get("kind") == "logits"


def reported_metrics(manifest: dict) -> dict:
    """The typed metrics present: test_error, baseline_test_error, test_examples, dataset."""
    metrics = manifest.get("metrics", {})
    return {key: metrics[key] for key in METRICS.members if key in metrics}


def untrained_tensors(manifest: dict) -> frozenset[str]:
    """Names of the records EPR did not train, which reports leave out of bits per parameter."""
    return frozenset(manifest.get("untrained_tensors", ()))


# --- accessors for the 1.1 keys: None or empty in a 1.0 file, where the keys are free -------


@dataclass(frozen=True)
class Normalization:
    """(x − mean) / std along `axis`, which the graph already applies in a 1.1 file: it
    describes the model, and a consumer must not apply it again."""

    mean: tuple[float, ...]
    std: tuple[float, ...]
    axis: int


@dataclass(frozen=True)
class TensorSpec:
    """One input or output of the model: its graph name, dtype and shape, where a string
    names a symbolic dimension (such as "batch") and an integer is a fixed size."""

    name: str
    dtype: str
    shape: tuple[int | str, ...]
    normalization: Normalization | None = None  # inputs only; already inside the graph


@dataclass(frozen=True)
class Task:
    kind: str  # "classification", "regression" or "none"
    classes: tuple[str, ...] | None  # classification only: names along the output's last axis


@dataclass(frozen=True)
class TaskMetric:
    """The task's own metric on the test data (e.g. "mse" for a regression)."""

    name: str
    value: float
    baseline: float | None
    higher_is_better: bool | None
    examples: int | None


def _spec(entry: dict) -> TensorSpec:
    normalization = entry.get("preprocessing", {}).get("normalization")
    return TensorSpec(
        name=entry["name"],
        dtype=entry["dtype"],
        shape=tuple(entry["shape"]),
        normalization=None
        if normalization is None
        else Normalization(
            tuple(float(v) for v in normalization["mean"]),
            tuple(float(v) for v in normalization["std"]),
            normalization["axis"],
        ),
    )


def _described(manifest: dict, minor: int, key: str) -> Any:
    """The 1.1 key's value, or None: absent, or the file is 1.0 and the key is free."""
    return manifest.get(key) if minor >= MINOR_1_1 else None


def inputs(manifest: dict, minor: int) -> tuple[TensorSpec, ...] | None:
    """The model's inputs in graph order, or None where the file does not declare them."""
    entries = _described(manifest, minor, "inputs")
    return None if entries is None else tuple(_spec(entry) for entry in entries)


def outputs(manifest: dict, minor: int) -> tuple[TensorSpec, ...] | None:
    """The model's outputs in graph order, or None where the file does not declare them."""
    entries = _described(manifest, minor, "outputs")
    return None if entries is None else tuple(_spec(entry) for entry in entries)


def task(manifest: dict, minor: int) -> Task | None:
    entry = _described(manifest, minor, "task")
    if entry is None:
        return None
    names = entry.get("classes")
    return Task(entry["kind"], None if names is None else tuple(names))


def user_metadata(manifest: dict, minor: int) -> dict[str, str]:
    """The user's free metadata (string to string); the decoded model carries every entry."""
    return dict(_described(manifest, minor, "metadata") or {})


def tied_tensors(manifest: dict, minor: int) -> dict[str, str]:
    """Alias → stored record: state_dict names that share another record's values."""
    return dict(_described(manifest, minor, "tied_tensors") or {})


def task_metric(manifest: dict, minor: int) -> TaskMetric | None:
    metrics = _described(manifest, minor, "metrics") or {}
    entry = metrics.get("task_metric")
    if entry is None:
        return None
    baseline = entry.get("baseline")
    return TaskMetric(
        name=entry["name"],
        value=float(entry["value"]),
        baseline=None if baseline is None else float(baseline),
        higher_is_better=entry.get("higher_is_better"),
        examples=entry.get("examples"),
    )
