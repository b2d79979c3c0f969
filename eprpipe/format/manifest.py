"""The manifest keys eprpipe's consumers read, with their types and ranges (spec/FORMAT.md 4.1).

The manifest is application data, but `info`, `decode` and `eval` read some of its keys. A file
whose manifest gives one of them a wrong type or range is rejected by every consumer when it is
read (`check_manifest`), so that no command can crash later on a file `validate` accepts. Every
described key is optional; keys not described here are free. The accessors read the described
keys of a checked manifest, so consumers never poke at raw dicts.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from itertools import repeat
from typing import Any, TypeGuard, cast

import numpy as np

MAX_SHAPE_ENTRIES = 8
MAX_EXAMPLE_ELEMENTS = 2**24  # one example (the shape after the batch): evaluation batches them
MAX_CHANNELS = 4096  # normalization entries
MAX_CLASSES = 65536
MAX_EXAMPLES = 2**53  # test examples: every count up to it is exact as a binary64 value

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


RELATIONS = (_normalization_fits,)  # rules between keys, checked once every key has its type


def check_manifest(manifest: object) -> str | None:
    """The first described key that breaks its rule, as a message that names its path, or None.

    E.g. "input.shape[2] must be a positive integer, got -28". Only the described keys are
    visited, so the check costs little beside the JSON parse.
    """
    if not isinstance(manifest, dict):
        return f"the manifest must be an object, got {_show(manifest)}"
    problem = SCHEMA(manifest)
    if problem:
        return problem.removeprefix(".")
    return _first(relation(manifest) for relation in RELATIONS)


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
