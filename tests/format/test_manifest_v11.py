"""Format 1.1, the general manifest (spec 4, 4.1 "added in 1.1", 4.2 rules 11 and 12): the new
keys are checked only in files whose header says minor 1 or later, writers set that minor
exactly when the manifest uses them, the graph must match what they declare, and the decoded
model, `info` and `load_weights` carry what they say. Written from the spec, as an attacker."""

from __future__ import annotations

import copy
import json
import struct
from pathlib import Path

import onnx
import pytest
import zstandard
from onnx import TensorProto

import eprpipe
from eprpipe.errors import EprError, FormatError
from eprpipe.format.container import (
    EprContents,
    decode_container,
    encode_container,
    with_manifest,
)
from eprpipe.format.graph import build_onnx
from eprpipe.format.manifest import (
    MAX_METADATA_BYTES,
    check_manifest,
    inputs,
    required_minor,
    task,
    task_metric,
    tied_tensors,
    user_metadata,
)
from eprpipe.format.testing.sections import (
    Container,
    canonical_json,
    replace_section,
    section_offset,
    zstd,
)
from eprpipe.format.testing.vectors import base_file, normalized_classifier, pooled_embedding
from eprpipe.format.validate import validate_bytes
from eprpipe.report import info_json, info_report

VECTORS = Path(__file__).resolve().parents[2] / "spec" / "vectors"


def entry(name: str = "x", dtype: str = "float32", shape: list | None = None, **extra) -> dict:
    return {"name": name, "dtype": dtype, "shape": ["batch", 3] if shape is None else shape,
            **extra}  # fmt: skip


def normalized(mean: list, std: list, axis: int, shape: list) -> dict:
    return entry(shape=shape, preprocessing={"normalization": {"mean": mean, "std": std,
                                                               "axis": axis}})  # fmt: skip


BROKEN = [
    ("inputs-not-array", {"inputs": {}}, "inputs must be an array, got an object"),
    ("inputs-empty", {"inputs": []}, "inputs must have 1 to 64 entries, got 0"),
    ("inputs-65", {"inputs": [entry(f"x{i}") for i in range(65)]}, "1 to 64 entries, got 65"),
    ("name-missing", {"inputs": [{"dtype": "bool", "shape": []}]}, "inputs[0].name is missing"),
    ("name-empty", {"inputs": [entry("")]}, 'inputs[0].name must be a non-empty string, got ""'),
    ("dtype-float64", {"inputs": [entry(dtype="float64")]}, 'inputs[0].dtype must be one of'),
    ("dtype-missing", {"outputs": [{"name": "y", "shape": []}]}, "outputs[0].dtype is missing"),
    ("shape-missing", {"outputs": [{"name": "y", "dtype": "bool"}]}, "outputs[0].shape is"),
    ("duplicate-input", {"inputs": [entry("a"), entry("a", "bool")]},
     'inputs[1].name "a" repeats an earlier entry\'s name'),
    ("duplicate-output", {"outputs": [entry("y"), entry("y")]}, "outputs[1].name"),
    ("shape-9", {"inputs": [entry(shape=[1] * 9)]}, "inputs[0].shape must have 0 to 8 entries"),
    ("dim-zero", {"inputs": [entry(shape=["b", 0])]}, "inputs[0].shape[1] must be a positive"),
    ("dim-null", {"inputs": [entry(shape=[None, 3])]}, "inputs[0].shape[0] must be a positive"),
    ("dim-float", {"inputs": [entry(shape=["b", 3.0])]}, "inputs[0].shape[1] must be"),
    ("dim-bool", {"inputs": [entry(shape=["b", True])]}, "inputs[0].shape[1] must be"),
    ("dim-name-empty", {"inputs": [entry(shape=[""])]}, "inputs[0].shape[0] must be"),
    ("dim-name-65", {"inputs": [entry(shape=["n" * 65])]}, "inputs[0].shape[0] must be"),
    ("elements", {"inputs": [entry(shape=["b", 4096, 4097])]}, "16,781,312 elements"),
    ("preprocessing-not-object", {"inputs": [entry(preprocessing=[])]},
     "inputs[0].preprocessing must be an object"),
    ("axis-missing", {"inputs": [entry(preprocessing={"normalization": {"mean": [1],
                                                                         "std": [1]}})]},
     "inputs[0].preprocessing.normalization.axis is missing"),
    ("axis-past-rank", {"inputs": [normalized([0.5], [0.5], 2, ["b", 3])]},
     "inputs[0].preprocessing.normalization.axis is 2, but inputs[0].shape has 2 entries"),
    ("axis-negative", {"inputs": [normalized([0.5], [0.5], -1, ["b", 3])]}, "axis must be"),
    ("mean-std-pair", {"inputs": [normalized([0.5, 0.5], [0.5], 1, ["b", 2])]}, "pair up"),
    ("mean-vs-dim", {"inputs": [normalized([0.5, 0.5], [1, 1], 1, ["b", 3])]},
     "has 2 entries, but inputs[0].shape[1] is 3"),
    ("std-zero", {"inputs": [normalized([0.5], [0], 1, ["b", 3])]}, "nonzero as float32"),
    ("outputs-preprocessing-free", {"outputs": [entry(dtype="int8")]}, "outputs[0].dtype"),
    ("normalized-twice", {"input": {"normalization": {"mean": [0.5], "std": [0.5]}},
                          "inputs": [normalized([0.5], [0.5], 1, ["b", 1])]},
     "inputs[0].preprocessing.normalization is inside the graph, and input.normalization"),
    ("task-not-object", {"task": "classification"}, "task must be an object"),
    ("task-kind-missing", {"task": {"classes": ["a"]}}, "task.kind is missing"),
    ("task-kind-unknown", {"task": {"kind": "detection"}}, "task.kind must be one of"),
    ("classes-for-regression", {"task": {"kind": "regression", "classes": ["a"]}},
     'task.classes is allowed only when task.kind is "classification", not "regression"'),
    ("classes-empty", {"task": {"kind": "classification", "classes": []}}, "1 to 65536"),
    ("classes-65537", {"task": {"kind": "classification", "classes": ["c"] * 65537}},
     "task.classes must have 1 to 65536 entries"),
    ("metadata-array", {"metadata": []}, "metadata must be an object"),
    ("metadata-reserved", {"metadata": {"eprpipe.input": "{}"}},
     'metadata key "eprpipe.input" must not start with "eprpipe."'),
    ("metadata-value-number", {"metadata": {"k": 1}}, "metadata.k must be a string, got 1"),
    ("metadata-key-empty", {"metadata": {"": "v"}}, "must have 1 to 128 characters"),
    ("metadata-key-129", {"metadata": {"k" * 129: "v"}}, "must have 1 to 128 characters"),
    ("metadata-257", {"metadata": {f"k{i}": "" for i in range(257)}}, "at most 256 members"),
    ("metadata-bytes", {"metadata": {"k": "v" * MAX_METADATA_BYTES}}, "65,537 bytes of UTF-8"),
    ("metadata-utf8-bytes", {"metadata": {"k": "é" * 32768}}, "65,537 bytes of UTF-8"),
    ("tied-not-object", {"tied_tensors": ["a"]}, "tied_tensors must be an object"),
    ("tied-value-number", {"tied_tensors": {"a": 1}}, "tied_tensors.a must be a string, got 1"),
    ("metric-not-object", {"metrics": {"task_metric": 0.5}}, "metrics.task_metric must be"),
    ("metric-name-missing", {"metrics": {"task_metric": {"value": 1}}}, ".name is missing"),
    ("metric-value-text", {"metrics": {"task_metric": {"name": "mse", "value": "1"}}},
     "metrics.task_metric.value must be a number"),
    ("metric-value-huge", {"metrics": {"task_metric": {"name": "mse", "value": 10**400}}},
     "metrics.task_metric.value must be a number"),
    ("metric-better-number", {"metrics": {"task_metric": {"name": "a", "value": 1,
                                                          "higher_is_better": 1}}},
     "higher_is_better must be true or false, got 1"),
    ("metric-examples-negative", {"metrics": {"task_metric": {"name": "a", "value": 1,
                                                              "examples": -1}}},
     "examples must be an integer from 0 to 9007199254740992"),
]  # fmt: skip

KEPT = [
    ("one-input", {"inputs": [entry()]}),
    ("scalar-input", {"inputs": [entry(shape=[])]}),
    ("64-inputs", {"inputs": [entry(f"x{i}") for i in range(64)]}),
    ("8-dims", {"inputs": [entry(shape=["a", "b", 1, 1, 1, 1, 1, 1])]}),
    ("dim-name-64", {"inputs": [entry(shape=["n" * 64])]}),
    ("elements-2^24", {"inputs": [entry(shape=["b", 4096, 4096])]}),
    ("every-dtype", {"outputs": [entry(f"y{i}", d) for i, d in
                                 enumerate(("float32", "float16", "int64", "int32", "bool"))]}),
    ("same-name-input-and-output", {"inputs": [entry("x")], "outputs": [entry("x")]}),
    ("mean-one-for-all", {"inputs": [normalized([0.5], [0.5], 1, ["b", 3])]}),
    ("mean-per-index", {"inputs": [normalized([0.1, 0.2, 0.3], [1, 2, 3], 1, ["b", 3])]}),
    ("mean-symbolic-axis", {"inputs": [normalized([0.1, 0.2], [1, 2], 1, ["b", "c"])]}),
    ("mean-last-axis", {"inputs": [normalized([0.1] * 4, [1] * 4, 2, ["b", "t", 4])]}),
    ("task-none", {"task": {"kind": "none"}}),
    ("task-classification-unnamed", {"task": {"kind": "classification"}}),
    ("classes-65536", {"task": {"kind": "classification", "classes": ["c"] * 65536}}),
    ("metadata-256", {"metadata": {f"k{i}": "" for i in range(256)}}),
    ("metadata-key-128", {"metadata": {"k" * 128: "v"}}),
    ("metadata-bytes-exact", {"metadata": {"k": "v" * (MAX_METADATA_BYTES - 1)}}),
    ("metadata-upper-case-prefix", {"metadata": {"EPRPIPE.x": "v", "eprpipe": "v"}}),
    ("tied-empty", {"tied_tensors": {}}),
    ("metric-minimal", {"metrics": {"task_metric": {"name": "mse", "value": 0}}}),
    ("metric-full", {"metrics": {"task_metric": {"name": "mse", "value": -1e308,
                                                 "baseline": None, "higher_is_better": False,
                                                 "examples": 2**53}}}),
]  # fmt: skip


# --- the check on its own -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("manifest", "problem"), [c[1:] for c in BROKEN], ids=[c[0] for c in BROKEN]
)
def test_a_broken_1_1_key_is_named_in_a_1_1_file_and_free_in_a_1_0_file(manifest, problem):
    found = check_manifest(manifest, 1)
    assert found is not None and problem in found, found
    assert check_manifest(manifest, 2) == found  # later minors describe the keys too
    assert check_manifest(manifest) is None  # minor 0: free keys, as 1.0 says
    assert check_manifest(manifest, 0) is None


@pytest.mark.parametrize("manifest", [c[1] for c in KEPT], ids=[c[0] for c in KEPT])
def test_kept_1_1_keys_pass(manifest: dict) -> None:
    assert check_manifest(manifest, 1) is None
    assert required_minor(manifest) == 1


def test_the_minor_a_writer_needs() -> None:
    assert required_minor({}) == 0
    assert required_minor({"input": {}, "output": {}, "metrics": {"test_error": 0.5}}) == 0
    for key in ("inputs", "outputs", "task", "metadata", "tied_tensors"):
        assert required_minor({key: None}) == 1, key
    assert required_minor({"metrics": {"task_metric": {}}}) == 1
    assert required_minor({"metrics": 5}) == 0  # 1.0 rejects it anyway


def test_accessors_are_empty_in_a_1_0_file() -> None:
    manifest = {"inputs": "junk", "task": 5, "metadata": [], "tied_tensors": 1,
                "metrics": {"task_metric": "x"}}  # fmt: skip
    assert check_manifest(manifest, 0) is None
    assert inputs(manifest, 0) is None and task(manifest, 0) is None
    assert user_metadata(manifest, 0) == {} and tied_tensors(manifest, 0) == {}
    assert task_metric(manifest, 0) is None


# --- the header's minor version -------------------------------------------------------------


def minor_of(data: bytes) -> int:
    return struct.unpack_from("<H", data, 10)[0]


def manifest_of(data: bytes) -> dict:
    return json.loads(zstandard.ZstdDecompressor().decompress(Container.of(data).body(b"META")))


def test_writers_set_minor_1_exactly_when_a_1_1_key_is_used() -> None:
    v11 = pooled_embedding()
    assert minor_of(v11) == 1 and minor_of(normalized_classifier()) == 1
    assert minor_of(base_file()) == 0
    contents, sizes = decode_container(v11)
    assert contents.version_minor == 1 and contents.minor == 1
    plain = {"architecture": "pooled-embedding"}
    data, sizes_10 = with_manifest(v11, sizes, plain)
    assert minor_of(data) == 0 and decode_container(data)[0].version_minor == 0
    again, _ = with_manifest(data, sizes_10, contents.manifest)
    assert again == v11  # back to 1.1, byte for byte
    assert encode_container(EprContents(plain, contents.graph, contents.tensors))[0] == data


def test_in_memory_contents_follow_their_manifest() -> None:
    contents, _ = decode_container(pooled_embedding())
    fresh = EprContents(contents.manifest, contents.graph, contents.tensors)
    assert fresh.version_minor is None and fresh.minor == 1
    broken = copy.deepcopy(contents.manifest)
    broken["inputs"][0]["shape"] = ["batch", 7]
    with pytest.raises(FormatError) as error:  # the builder applies rule 11 to it
        build_onnx(EprContents(broken, contents.graph, contents.tensors))
    assert error.value.code == "graph-mismatch"


def test_the_writer_refuses_what_a_1_1_reader_would() -> None:
    contents, sizes = decode_container(pooled_embedding())
    for key, value, needle in (
        ("metadata", {"eprpipe.x": "y"}, 'must not start with "eprpipe."'),
        ("tied_tensors", {"alias": "missing"}, 'names "missing", which is no record'),
        ("tied_tensors", {"fc.weight": "embed.weight"}, '"fc.weight" is a stored record'),
        ("tied_tensors", 5, "tied_tensors must be an object"),
    ):
        manifest = {**contents.manifest, key: value}
        with pytest.raises(EprError, match="cannot write this manifest") as error:
            encode_container(EprContents(manifest, contents.graph, contents.tensors))
        assert needle in str(error.value)
        with pytest.raises(EprError, match=needle.replace(".", r"\.")):
            with_manifest(pooled_embedding(), sizes, manifest)


def test_a_1_0_file_with_junk_in_the_1_1_keys_stays_valid_and_decodes(tmp_path: Path) -> None:
    junk = {"architecture": "dense-masks", "inputs": "junk", "outputs": [{"name": 5}],
            "task": {"kind": "detection"}, "metadata": {"eprpipe.input": 1},
            "tied_tensors": {"fc.weight": "nothing"}, "metrics": {"task_metric": []}}  # fmt: skip
    data = replace_section(base_file(), b"META", zstd(canonical_json(junk)))
    assert minor_of(data) == 0
    assert validate_bytes(data).valid
    path = tmp_path / "junk-1.0.epr"
    path.write_bytes(data)
    summary = eprpipe.info(path)
    assert summary.inputs is None and summary.task is None and summary.metadata == {}
    model = eprpipe.decode(path)
    assert [p.key for p in model.metadata_props] == [
        "eprpipe.input", "eprpipe.output", "eprpipe.architecture", "eprpipe.metrics"
    ]  # fmt: skip
    assert sorted(eprpipe.load_weights(path)) == ["fc.bias", "fc.weight"]
    # the same bytes under a 1.1 header are refused, at the first byte of META
    box = Container.of(data)
    for minor in (1, 2, 65535):
        bumped = Container(box.major, minor, box.alignment, box.flags, box.sections).to_bytes()
        report = validate_bytes(bumped)
        assert [(v.code, v.section, v.offset) for v in report.violations] == [
            ("bad-manifest", "META", section_offset(bumped, b"META"))
        ], minor


# --- tied tensors ---------------------------------------------------------------------------


def with_manifest_edit(data: bytes, **changes: object) -> bytes:
    manifest = {**manifest_of(data), **changes}
    return replace_section(data, b"META", zstd(canonical_json(manifest)))


@pytest.mark.parametrize(
    ("aliases", "needle"),
    [
        ({"head.weight": "nothing"}, 'alias "head.weight" names "nothing", which is no record'),
        ({"fc.weight": "embed.weight"}, 'alias "fc.weight" is a stored record'),
        ({"a": "embed.weight", "b": "a"}, 'alias "b" names "a", which is no record'),
    ],
)
def test_tied_aliases_are_checked_against_the_records(aliases: dict, needle: str) -> None:
    data = with_manifest_edit(pooled_embedding(), tied_tensors=aliases)
    with pytest.raises(FormatError) as error:
        decode_container(data)
    assert error.value.code == "bad-manifest" and needle in error.value.message
    assert error.value.offset == section_offset(data, b"META")
    report = validate_bytes(data)
    assert [v.code for v in report.violations] == ["bad-manifest"]


def test_load_weights_gives_every_alias_its_records_array(tmp_path: Path) -> None:
    path = VECTORS / "valid" / "v11-pooled-embedding.epr"
    weights = eprpipe.load_weights(path)
    assert sorted(weights) == ["embed.weight", "fc.weight", "head.weight"]
    assert weights["head.weight"] is weights["embed.weight"]
    index = json.loads((VECTORS / "vectors.json").read_text())
    (listed,) = [v for v in index["valid"] if v["file"] == "valid/v11-pooled-embedding.epr"]
    assert listed["tied_aliases"] == {"head.weight": "embed.weight"}
    assert "head.weight" not in [t["name"] for t in listed["tensors"]]


# --- rules 11 and 12: the graph against the declared interface ------------------------------


def graph_of(data: bytes) -> onnx.ModelProto:
    return onnx.load_from_string(decode_container(data)[0].graph)


def with_graph(data: bytes, model: onnx.ModelProto) -> bytes:
    return replace_section(data, b"GRPH", zstd(model.SerializeToString()))


def mismatch_of(data: bytes) -> str:
    report = validate_bytes(data)
    assert [(v.code, v.section, v.offset) for v in report.violations] == [
        ("graph-mismatch", "GRPH", None)
    ], report.violations
    return report.violations[0].message


def test_the_v11_vectors_satisfy_rules_11_and_12() -> None:
    for make in (pooled_embedding, normalized_classifier):
        assert validate_bytes(make()).valid


@pytest.mark.parametrize(
    ("edit", "needle"),
    [
        (lambda m: m["inputs"].reverse(), "graph input 0 is 'tokens'"),
        (lambda m: m["inputs"].pop(), "declares 1 inputs, the graph has 2"),
        (lambda m: m["inputs"][0].update(name="ids"), "inputs[0] is 'ids'"),
        (lambda m: m["inputs"][0].update(dtype="int32"), "(int32 ['batch', 'seq'])"),
        (lambda m: m["inputs"][1].update(dtype="float32"), "graph input 1 is 'mask' (BOOL"),
        (lambda m: m["inputs"][0].update(shape=["batch"]), "inputs[0] is 'tokens'"),
        (lambda m: m["inputs"][0].update(shape=["batch", "seq", "x"]), "inputs[0]"),
        (lambda m: m["inputs"][0].update(shape=["batch", 7]), "['batch', 7]"),
        (lambda m: m["outputs"][0].update(shape=["batch", 2]), "graph output 0 is 'value'"),
        (lambda m: m["outputs"][0].update(shape=["batch", "one"]), None),  # symbolic: any dim
        (lambda m: m["outputs"][0].update(dtype="float16"), "graph output 0"),
        (lambda m: m["outputs"].append(entry("extra")), "declares 2 outputs, the graph has 1"),
        (
            lambda m: m.update(task={"kind": "classification", "classes": ["a", "b"]}),
            "the first graph output has 1 classes, the task names 2",
        ),
        (lambda m: m.update(task={"kind": "classification", "classes": ["a"]}), None),
    ],
)
def test_rule_11_the_graph_has_exactly_the_declared_inputs_and_outputs(edit, needle) -> None:
    manifest = manifest_of(pooled_embedding())
    edit(manifest)
    data = replace_section(pooled_embedding(), b"META", zstd(canonical_json(manifest)))
    if needle is None:
        assert validate_bytes(data).valid
    else:
        assert needle in mismatch_of(data)


def test_rule_11_a_declared_size_needs_a_fixed_graph_dim() -> None:
    data = normalized_classifier()
    model = graph_of(data)
    dim = model.graph.input[0].type.tensor_type.shape.dim[2]
    dim.dim_param = "height"  # the manifest says 4
    assert "graph input 0 is 'image'" in mismatch_of(with_graph(data, model))
    model = graph_of(data)
    model.graph.input[0].type.tensor_type.ClearField("shape")  # rank unknown
    assert "of unknown rank" in mismatch_of(with_graph(data, model))


def test_rule_12_the_classifier_output_is_float_with_one_score_per_class() -> None:
    data = normalized_classifier()
    fewer = with_manifest_edit(data, task={"kind": "classification", "classes": ["a", "b"]})
    assert "has 3 classes, the task names 2" in mismatch_of(fewer)
    manifest = manifest_of(data)
    del manifest["outputs"]  # rule 12 holds without rule 11
    model = graph_of(data)
    model.graph.output[0].type.tensor_type.elem_type = TensorProto.INT64
    integer = replace_section(with_graph(data, model), b"META", zstd(canonical_json(manifest)))
    message = mismatch_of(integer)
    assert "the task is classification, but the first output is 'logits' (INT64" in message


def test_rules_11_and_12_do_not_apply_in_a_1_0_file() -> None:
    manifest = manifest_of(pooled_embedding())
    manifest["inputs"][0]["shape"] = ["batch", 7]
    manifest["task"] = {"kind": "classification", "classes": ["a", "b"]}
    manifest.pop("tied_tensors")
    box = Container.of(pooled_embedding()).with_body(b"META", zstd(canonical_json(manifest)))
    as_1_0 = Container(box.major, 0, box.alignment, box.flags, box.sections).to_bytes()
    assert validate_bytes(as_1_0).valid


# --- what the decoded model, info and load_weights carry ------------------------------------


def test_the_decoded_model_carries_names_and_metadata() -> None:
    model = eprpipe.decode(VECTORS / "valid" / "v11-pooled-embedding.epr")
    props = {entry.key: entry.value for entry in model.metadata_props}
    manifest = manifest_of(pooled_embedding())
    assert json.loads(props["eprpipe.inputs"]) == manifest["inputs"]
    assert json.loads(props["eprpipe.outputs"]) == manifest["outputs"]
    assert json.loads(props["eprpipe.task"]) == {"kind": "regression"}
    for key, value in manifest["metadata"].items():
        assert props[key] == value
    assert [value.name for value in model.graph.input] == ["tokens", "mask"]
    assert [value.name for value in model.graph.output] == ["value"]


def test_a_1_0_file_gets_the_metadata_it_always_got() -> None:
    model = eprpipe.decode(VECTORS / "valid" / "dense-masks.epr")
    assert [p.key for p in model.metadata_props] == [
        "eprpipe.input", "eprpipe.output", "eprpipe.architecture", "eprpipe.producer"
    ]  # fmt: skip


def test_the_declared_normalization_is_not_applied_twice() -> None:
    """The classifier's graph already normalizes; the builder adds no node of its own."""
    import numpy as np

    path = VECTORS / "valid" / "v11-normalized-classifier.epr"
    model = eprpipe.decode(path)
    assert [node.op_type for node in model.graph.node] == ["Sub", "Div", "Flatten", "Gemm"]
    weights = eprpipe.load_weights(path)
    image = np.linspace(0, 1, 16, dtype=np.float32).reshape(1, 1, 4, 4)
    expected = ((image.reshape(1, 16) - 0.5) / 0.25) @ weights["fc.weight"].T + weights["fc.bias"]
    (logits,) = eprpipe.session(path).run(None, {"image": image})
    np.testing.assert_allclose(logits, expected, rtol=1e-5, atol=1e-6)


def test_info_exposes_and_prints_the_1_1_keys() -> None:
    path = VECTORS / "valid" / "v11-pooled-embedding.epr"
    summary = eprpipe.info(path)
    assert summary.format_version == "1.1"
    assert [(s.name, s.dtype, s.shape) for s in summary.inputs or ()] == [
        ("tokens", "int64", ("batch", "seq")), ("mask", "bool", ("batch", "seq"))
    ]  # fmt: skip
    assert summary.task is not None and summary.task.kind == "regression"
    assert summary.tied_tensors == {"head.weight": "embed.weight"}
    assert summary.task_metric is not None and summary.task_metric.name == "mse"
    assert summary.metadata["note"] == "ünïcode ✓"
    contents, sizes = decode_container(path.read_bytes())
    text = info_report(path, contents, sizes)
    for line in (
        "task   regression",
        "input  tokens: int64 [batch, seq]",
        "input  mask: bool [batch, seq]",
        "output value: float32 [batch, 1]",
        "reported mse 0.125 (100 test examples, uncompressed 0.0625, lower is better)",
        "metadata author, licence, note",
    ):
        assert line in text.splitlines(), (line, text)
    assert info_json(contents, sizes)["format_version"] == "1.1"
    classifier = VECTORS / "valid" / "v11-normalized-classifier.epr"
    contents, sizes = decode_container(classifier.read_bytes())
    text = info_report(classifier, contents, sizes)
    assert "task   classification (3 classes)" in text
    assert (
        "input  image: float32 [batch, 1, 4, 4] (normalized inside the graph along axis 1)" in text
    )


def test_info_escapes_what_a_hostile_1_1_manifest_says() -> None:
    data = with_manifest_edit(
        pooled_embedding(),
        metadata={"\x1b[2Jkey": "v"},
        metrics={"task_metric": {"name": "\x1b]0;x\x07", "value": 1}},
    )
    contents, sizes = decode_container(data)
    text = info_report(Path("f.epr"), contents, sizes)
    assert "\x1b" not in text and "\x07" not in text
    assert "metadata \\x1b[2Jkey" in text
