"""Fuzz case families aimed at the manifest: hostile JSON text (8), and typed lies in the keys
eprpipe's tools read, in canonical JSON so that they reach the typed checks (9)."""

from __future__ import annotations

import dataclasses
import json
import random
from collections.abc import Sequence

from eprpipe.format.testing.fuzz_seeds import Seed, fast_zstd
from eprpipe.format.testing.sections import canonical_json

# --- strategy 8: hostile manifests ----------------------------------------------------------

NORMALIZATIONS: tuple[object, ...] = (
    True, None, [], {}, {"mean": "x", "std": [1]}, {"mean": [1]}, {"std": [1]},
    {"mean": [1, 2, 3], "std": [1]}, {"mean": [], "std": []}, {"mean": [[1]], "std": [[1]]},
    {"mean": [None], "std": [1]}, {"mean": [1e308], "std": [1e-308]},
    {"mean": {"a": 1}, "std": [1]}, {"mean": [0.5, 0.5], "std": [0, 0]},
)  # fmt: skip
JSON_VALUES = (
    '"\\ud800"', '"\\udc00x"', "NaN", "Infinity", "-Infinity", "1e400", "-1e400", "1e-400",
    "9" * 4300, "9" * 4301, '"\\u0000"', "[" * 100 + "]" * 100, "[" * 5000 + "]" * 5000,
    '{"a":1,"a":2}', "[1,]", "tru", '"unterminated', "01", "-0", "1.0e+2",
)  # fmt: skip
WHOLE_TEXTS = (
    b"", b"[]", b"1", b'"x"', b"null", b"\xff",
    b'{"a":"\xc3"}', b"\xef\xbb\xbf{}", b'{"\\ud800":1}', b"{} ", b"{}{}",
)  # fmt: skip


def hostile_manifest(rng: random.Random, seed: Seed) -> bytes:
    """Manifest text: odd types where the decoder reads keys, and JSON edge cases."""
    manifest = json.loads(seed.manifest_json)
    variant = rng.choice(("input", "normalization", "types", "value", "whole", "format", "extra"))
    if variant == "input":
        manifest["input"] = rng.choice(([], "x", 1, None, True, {}, {"normalization": 1}))
    elif variant == "normalization":
        manifest.setdefault("input", {})["normalization"] = rng.choice(NORMALIZATIONS)
    elif variant == "types":
        key = rng.choice(("output", "metrics", "architecture", "dataset", "producer"))
        manifest[key] = rng.choice(([1, [2]], "x", None, {"a": {"b": []}}, 1.5, -1))
    elif variant == "value":  # "~" sorts last, so the text stays canonical around it
        return seed.manifest_json[:-1] + b',"~":' + rng.choice(JSON_VALUES).encode() + b"}"
    elif variant == "whole":
        return rng.choice(WHOLE_TEXTS)
    elif variant == "format":
        return json.dumps(manifest, indent=rng.choice((None, 1)), sort_keys=False).encode()
    else:
        manifest[rng.choice(("zz", "a", "é"))] = rng.choice((1, "v", [], {}))
    return canonical_json(manifest)


def manifests(rng: random.Random, seed: Seed, seeds: Sequence[Seed]) -> bytes:
    """Strategy 8: hostile manifest JSON in META, the frame and CRCs correct."""
    return seed.container.with_body(b"META", fast_zstd(hostile_manifest(rng, seed))).to_bytes()


# --- strategy 9: typed manifest lies --------------------------------------------------------

# Aimed at eprpipe/manifest.py's schema: each key's wrong types, and values on both sides of
# its bounds (shape entries 8/9 and 2**24 elements per example, 65536/65537 classes, 4096/4097
# channels, test_examples 2**53, test_error 0..1); the legal ones must survive every command.

HUGE = 10**30


def _tensor(
    name: object = "input", dtype: object = "float32", shape: object = None, **extra
) -> dict:
    """A 1.1 inputs/outputs entry; the default is the digits seed's image input."""
    return {"name": name, "dtype": dtype, "shape": ["N", 1, 8, 8] if shape is None else shape,
            **extra}  # fmt: skip


def _normalized(mean: object, std: object, axis: object) -> dict:
    return _tensor(preprocessing={"normalization": {"mean": mean, "std": std, "axis": axis}})


# Format 1.1's keys (checked only where the header says minor 1 or later; typed_manifest sets
# it on half its cases): their wrong types, both sides of their bounds (64 entries, 8 dims,
# 64-character dim names, 256 metadata members of 128-character keys and 65,536 bytes, 65,536
# classes), the relations (unique names, axis and mean against the shape, classes only for
# classification, tied aliases against the records) and lies against the graph (rule 11).
V11_LIES: tuple[tuple[tuple[str, ...], tuple[object, ...]], ...] = (
    (("inputs",), (
        5, "x", None, [], {}, [{}], [5], [_tensor()], [_tensor(), _tensor()],
        [_tensor(dtype="float64")], [_tensor(dtype="FLOAT")], [_tensor(dtype=1)],
        [_tensor(name="")], [_tensor(name=5)], [_tensor(name="other")],
        [_tensor(shape=[])], [_tensor(shape="N1x8x8")], [_tensor(shape=["N", 1, 8])],
        [_tensor(shape=["N", 1, 8, 9])], [_tensor(shape=[1, 1, 8, 8])],
        [_tensor(shape=["", 1, 8, 8])], [_tensor(shape=["n" * 64, 1, 8, 8])],
        [_tensor(shape=["n" * 65, 1, 8, 8])], [_tensor(shape=[None, 1, 8, 8])],
        [_tensor(shape=["N", 0, 8, 8])], [_tensor(shape=["N", -1, 8, 8])],
        [_tensor(shape=["N", 1.0, 8, 8])], [_tensor(shape=["N", True, 8, 8])],
        [_tensor(shape=["N", 1, 4096, 4097])], [_tensor(shape=["N", 1, 8, 8, 1, 1, 1, 1, 1])],
        [_tensor(shape=["N", 1, HUGE, 8])], [_tensor(name=f"i{i}") for i in range(65)],
        [_tensor(), _tensor(name="mask", dtype="bool", shape=["N"])],
        [_normalized([0.5], [0.25], 1)], [_normalized([0.5], [0.25], 4)],
        [_normalized([0.5, 0.5], [0.25, 0.25], 1)], [_normalized([0.5] * 8, [0.25] * 8, 3)],
        [_normalized([0.5], [0.25], -1)], [_normalized([0.5], [0.25], 8)],
        [_normalized([0.5], [0.25], 1.0)], [_normalized([0.5], [0], 1)],
        [_normalized([0.5], [0.25, 0.25], 1)], [_normalized([], [], 1)],
        [_normalized([1e39], [1], 0)], [_tensor(preprocessing=5)],
        [_tensor(preprocessing={"normalization": {"mean": [0.5], "std": [0.25]}})],
    )),
    (("outputs",), (
        5, None, [], [{}], [_tensor("logits", shape=["N", 10])],
        [_tensor("logits", shape=["N", 9])], [_tensor("logits", shape=["N"])],
        [_tensor("logits", dtype="int64", shape=["N", 10])], [_tensor("other", shape=["N", 10])],
        [_tensor("logits", shape=["N", 10]), _tensor("logits", shape=["N", 10])],
        [_tensor("logits", shape=["N", 10]), _tensor("extra", shape=[])],
        [_tensor("logits", shape=["N", "classes"])],
    )),
    (("task",), (
        5, "classification", None, {}, {"kind": "regression"}, {"kind": "none"},
        {"kind": "classification"}, {"kind": "classification", "classes": []},
        {"kind": "classification", "classes": [str(d) for d in range(10)]},
        {"kind": "classification", "classes": [str(d) for d in range(9)]},
        {"kind": "classification", "classes": ["c"] * 65537},
        {"kind": "regression", "classes": ["a"]}, {"kind": "none", "classes": ["a"]},
        {"kind": "detection"}, {"kind": 1}, {"classes": ["a"]},
    )),
    (("metadata",), (
        5, "x", None, [], {}, {"k": "v"}, {"k": 1}, {"k": None}, {"k": ["v"]}, {"": "v"},
        {"eprpipe.task": "x"}, {"eprpipe.": "x"}, {"EPRPIPE.x": "x"}, {"k" * 128: "v"},
        {"k" * 129: "v"}, {"k": "v" * 65535}, {"k": "v" * 65536}, {"k": "é" * 32767},
        {f"k{i}": "v" for i in range(256)}, {f"k{i}": "v" for i in range(257)},
        {"line\nbreak": "\u001b[31m"},
    )),
    (("tied_tensors",), (
        5, [], None, {}, {"alias": 1}, {"alias": "no-such-record"}, {"fc.weight": "fc.weight"},
        {"alias": "fc.weight"}, {"a": "fc.weight", "b": "fc.bias"}, {"": "fc.weight"},
    )),
    (("metrics", "task_metric"), (
        5, None, [], {}, {"name": "mse"}, {"value": 1.0}, {"name": "mse", "value": "1"},
        {"name": "mse", "value": 0.5}, {"name": "mse", "value": HUGE},
        {"name": "mse", "value": 1e308, "baseline": -1e308, "examples": 2**53},
        {"name": "mse", "value": 0.5, "examples": -1}, {"name": "mse", "value": 0.5,
         "examples": 2**53 + 1}, {"name": "acc", "value": 0.5, "higher_is_better": 1},
        {"name": "acc", "value": 0.5, "higher_is_better": True, "baseline": None},
        {"name": 5, "value": 0.5}, {"name": "\u001b]0;x\u0007", "value": 0.5},
    )),
)  # fmt: skip
TYPED_LIES: tuple[tuple[tuple[str, ...], tuple[object, ...]], ...] = (
    (("input",), (5, 0, -1, 1.5, "x", "", [], [1, 2], None, True)),
    (("input", "shape"), (
        "1x8x8", 8, None, {}, [], [None], [None] * 9, [None, 1, 8, 8, 1, 1, 1, 1, 1],
        [None, "one", "x", "y"], [None, "1", "8", "8"], [1, None, 8, 8], [None, None, 8, 8],
        [None, 1, 8, None], [None, 0, 8, 8], [None, 1, 0, 0], [None, 1, -28, 0],
        [None, -1, 8, 8], [None, 1, 100000, 100000], [None, 1, 30000, 30000],
        [None, 1, 1500, 1500], [None, 1, 8.0, 8], [None, 1.5, 8, 8], [None, 1, 8.5, 8],
        [None, True, 8, 8], [None, 1, False, 8], [None, 1, 2**63, 8], [None, 1, HUGE, 1],
        [None, [1], 8, 8], [None, {"c": 1}, 8, 8], [None, 1, 8, 8, 8], [None, 1, 8],
        [0, 1, 8, 8], [-1, 1, 8, 8], ["batch", 1, 8, 8], [None, 3, 8, 8], [None, 4096, 1, 1],
        [None, 1, 1, 1], [1, 1, 8, 8], [None, 1, 4096, 4096], [None, 1, 4097, 4096],
        [None, 1, 1, 1, 1, 1, 1, 1],
    )),
    (("input", "name"), (5, None, "", ["input"], "not-an-input")),
    (("input", "normalization"), (5, "x", [], {}, None, [0.5, 0.5], {"mean": 0.5, "std": 0.5})),
    (("input", "normalization", "mean"), (
        "x", 0.5, [], [1, 2], ["0.5"], [None], [True], [1e308], [-1e308], [[0.5]], [0.5] * 4096,
        [0.5] * 4097, [3.5e38], [HUGE],
    )),
    (("input", "normalization", "std"), (
        [0], [0.0], [-0.0], [-1], ["1"], [1e-46], [1e39], [], [1, 2], None, [True], [[1.0]],
    )),
    (("input", "dtype"), ("float64", "int8", 5, None, ["float32"])),
    (("input", "layout"), ("NHWC", 1, None, ["NCHW"])),
    (("input", "range"), ([1.0, 0.0], [0, 0], [0, 255], "0..1", [0.0], [None, 1], [0.0, 1e308])),
    (("output",), (5, "logits", [], None, True, [["a"]])),
    (("output", "classes"), (
        10, "0123456789", [], [1, 2, 3], [None], [["a"]], [True, False], {"0": "a"},
        ["a", "a"], [""], [str(d) for d in range(7)], [str(d) for d in range(11)],
        ["c"] * 65536, ["c"] * 65537,
    )),
    (("output", "kind"), ("probabilities", "embedding", 5, None, "", ["logits"])),
    (("output", "name"), (5, None, "", "not-an-output")),
    (("metrics",), ("x", 5, [], None, True, [0.1])),
    (("metrics", "test_error"), (
        "abc", "0.1", True, False, None, -0.1, 2.0, 1e308, -1e308, [0.1], {}, 5, HUGE, 0, 1,
        1.0000000000000002, 5e-324,
    )),
    (("metrics", "test_examples"), (
        "360", -1, 0, 1.5, True, None, 2**70, [360], 1e308, 2**53, 2**53 + 1,
    )),
    (("metrics", "dataset"), (5, None, [], {"a": 1}, "")),
    (("metrics", "baseline_test_error"), ("x", True, -1, 3.0, [], {}, None, 0)),
    (("untrained_tensors",), (
        "bn.running_mean", 5, [1, 2], [None], {}, [["a"]], ["no-such-tensor"], True, ["a", "a"],
    )),
    (("architecture",), (5, [], {}, None, "", "a" * 10000, "line\nbreak\u2028")),
    (("dataset",), (5, [], {}, None, "no-such-dataset")),
    (("producer",), (5, [], {}, None)),
    (("training",), ("x", 5, [], {"lambda": "x", "epochs": -1, "seed": 2**70})),
    *V11_LIES,
)  # fmt: skip
DELETIONS = (
    ("metrics", "test_examples"), ("metrics", "test_error"), ("metrics", "dataset"),
    ("input", "shape"), ("input", "name"), ("input", "normalization", "std"),
    ("output", "classes"), ("output", "kind"), ("task", "kind"), ("metrics", "task_metric", "name"),
)  # fmt: skip


def nested(depth: int, leaf: object) -> object:
    """`leaf` inside `depth` lists: garbage that parses and is canonical."""
    for _ in range(depth):
        leaf = [leaf]
    return leaf


def set_path(manifest: dict, path: Sequence[str], value: object) -> None:
    """manifest[path[0]]...[path[-1]] = value, making (or overwriting) dicts on the way."""
    node = manifest
    for key in path[:-1]:
        if not isinstance(node.get(key), dict):
            node[key] = {}
        node = node[key]
    node[path[-1]] = value


def delete_path(manifest: dict, path: Sequence[str]) -> None:
    """Remove the key at `path`, keeping its parents (a metrics object without test_examples)."""
    node = manifest
    for key in path[:-1]:
        child = node.get(key)
        if not isinstance(child, dict):
            return
        node = child
    node.pop(path[-1], None)


def typed_lie(rng: random.Random, manifest: dict) -> None:
    """One lie about a key a consumer reads: a wrong type or range, a missing member, garbage."""
    roll = rng.random()
    if roll < 0.75:
        path, values = rng.choice(TYPED_LIES)
        set_path(manifest, path, rng.choice(values))
    elif roll < 0.9:
        delete_path(manifest, rng.choice(DELETIONS))
    else:
        path = rng.choice(TYPED_LIES)[0]
        set_path(manifest, path, nested(rng.choice((2, 20, 200)), rng.choice((1, "x", None, {}))))


def typed_manifest(rng: random.Random, seed: Seed, seeds: Sequence[Seed]) -> bytes:
    """Strategy 9: 1-3 typed lies in the keys eprpipe's tools read (input, output, metrics,
    untrained_tensors, the 1.1 keys...), in canonical JSON so the case reaches the typed
    checks; half the cases say minor version 1 (the 1.1 keys checked), the others keep the
    seed's (in a 1.0 file they are free)."""
    manifest = json.loads(seed.manifest_json)
    for _ in range(rng.choice((1, 1, 1, 2, 3))):
        typed_lie(rng, manifest)
    container = seed.container
    if rng.random() < 0.5:
        container = dataclasses.replace(container, minor=rng.choice((1, 1, 2, 65535)))
    return container.with_body(b"META", fast_zstd(canonical_json(manifest))).to_bytes()
