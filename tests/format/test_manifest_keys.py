"""The manifest keys consumers read have types and ranges (spec 4.1): a file that breaks one is
rejected by every command with `bad-manifest` at the META section, one that keeps them is safe
for every command, and every manifest eprpipe writes keeps them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto
from torch_free import needs_torch

from eprpipe.cli import main
from eprpipe.format.container import EprContents, decode_container, encode_container, read_epr
from eprpipe.format.manifest import (
    check_manifest,
    classes,
    declares_classification,
    input_normalization,
    input_shape,
    reported_metrics,
    untrained_tensors,
)
from eprpipe.format.testing.graphs import identity_graph
from eprpipe.format.testing.records import raw
from eprpipe.format.testing.sections import canonical_json, replace_section, section_offset, zstd
from eprpipe.format.testing.vectors import base_file
from eprpipe.format.validate import validate_bytes
from eprpipe.report import info_json, info_report

VECTORS = Path(__file__).resolve().parents[2] / "spec" / "vectors"

SHAPE = [None, 3, 2, 2]
NORMALIZATION = {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}

# (case, manifest, the problem check_manifest names)
BROKEN = [
    # what the outside attacker found (issue 11)
    ("input-not-object", {"input": 5}, "input must be an object, got 5"),
    (
        "shape-of-strings",
        {"input": {"shape": [None, "one", "x", "y"]}},
        'input.shape[1] must be a positive integer, got "one"',
    ),
    (
        "shape-negative",
        {"input": {"shape": [None, 1, -28, 0]}},
        "input.shape[2] must be a positive integer, got -28",
    ),
    (
        "test-error-text",
        {"metrics": {"test_error": "abc"}},
        'metrics.test_error must be a number from 0 to 1, got "abc"',
    ),
    # one per rule: the text keys
    ("producer-number", {"producer": 1}, "producer must be a string, got 1"),
    ("architecture-null", {"architecture": None}, "architecture must be a string, got null"),
    ("dataset-array", {"dataset": []}, "dataset must be a string, got an array of 0 entries"),
    # input
    ("input-name-number", {"input": {"name": 3}}, "input.name must be a string, got 3"),
    ("input-dtype-bool", {"input": {"dtype": True}}, "input.dtype must be a string, got true"),
    (
        "input-layout-object",
        {"input": {"layout": {}}},
        "input.layout must be a string, got an object",
    ),
    (
        "shape-not-array",
        {"input": {"shape": "1x28x28"}},
        'input.shape must be an array, got "1x28x28"',
    ),
    ("shape-empty", {"input": {"shape": []}}, "input.shape must have 1 to 8 entries, got 0"),
    (
        "shape-nine",
        {"input": {"shape": [None] + [1] * 8}},
        "input.shape must have 1 to 8 entries, got 9",
    ),
    (
        "shape-batch-zero",
        {"input": {"shape": [0, 1]}},
        "input.shape[0] must be null or a positive integer, got 0",
    ),
    (
        "shape-null-channel",
        {"input": {"shape": [None, None]}},
        "input.shape[1] must be a positive integer, got null",
    ),
    (
        "shape-float",
        {"input": {"shape": [None, 1.0]}},
        "input.shape[1] must be a positive integer, got 1.0",
    ),
    (
        "shape-bool",
        {"input": {"shape": [None, True]}},
        "input.shape[1] must be a positive integer, got true",
    ),
    (
        "shape-huge-example",
        {"input": {"shape": [None, 1, 100000, 100000]}},
        "input.shape declares 10,000,000,000 elements per example, more than 16,777,216",
    ),
    (
        "shape-one-over",
        {"input": {"shape": [None, 2**24 + 1]}},
        "input.shape declares 16,777,217 elements per example, more than 16,777,216",
    ),
    (
        "range-reversed",
        {"input": {"range": [1.0, 0.0]}},
        "input.range must be [low, high] with low < high, got [1.0, 0.0]",
    ),
    (
        "range-empty-interval",
        {"input": {"range": [1, 1]}},
        "input.range must be [low, high] with low < high, got [1, 1]",
    ),
    ("range-one", {"input": {"range": [0.0]}}, "input.range must have 2 entries, got 1"),
    ("range-text", {"input": {"range": [0, "1"]}}, 'input.range[1] must be a number, got "1"'),
    ("range-bool", {"input": {"range": [False, 1]}}, "input.range[0] must be a number, got false"),
    # input.normalization
    (
        "normalization-array",
        {"input": {"normalization": [0.5, 0.25]}},
        "input.normalization must be an object, got an array of 2 entries",
    ),
    (
        "normalization-null",
        {"input": {"normalization": None}},
        "input.normalization must be an object, got null",
    ),
    (
        "normalization-without-std",
        {"input": {"normalization": {"mean": [0.5]}}},
        "input.normalization.std is missing; it is required when its object is present",
    ),
    (
        "mean-empty",
        {"input": {"normalization": {"mean": [], "std": []}}},
        "input.normalization.mean must have 1 to 4096 entries, got 0",
    ),
    (
        "mean-too-long",
        {"input": {"normalization": {"mean": [0.5] * 4097, "std": [1] * 4097}}},
        "input.normalization.mean must have 1 to 4096 entries, got 4097",
    ),
    (
        "mean-bool",
        {"input": {"normalization": {"mean": [True], "std": [1]}}},
        "input.normalization.mean[0] must be a number, got true",
    ),
    (
        "std-text",
        {"input": {"normalization": {"mean": [0], "std": ["1"]}}},
        'input.normalization.std[0] must be a number, got "1"',
    ),
    (
        "std-zero",
        {"input": {"normalization": {"mean": [0], "std": [0]}}},
        "input.normalization.std[0] must be finite and nonzero as float32, got 0",
    ),
    (
        "std-zero-as-float32",
        {"input": {"normalization": {"mean": [0], "std": [1e-50]}}},
        "input.normalization.std[0] must be finite and nonzero as float32, got 1e-50",
    ),
    (
        "mean-infinite-as-float32",
        {"input": {"normalization": {"mean": [3.5e38], "std": [1]}}},
        "input.normalization.mean[0] must be finite as float32, got 3.5e+38",
    ),
    (
        "mean-integer-beyond-binary64",
        {"input": {"normalization": {"mean": [10**400], "std": [1]}}},
        "input.normalization.mean[0] must be finite as float32, got an integer of 1329 bits",
    ),
    (
        "normalization-unpaired",
        {"input": {"normalization": {"mean": [0.5, 0.5], "std": [1]}}},
        "input.normalization has 2 mean and 1 std entries; they must pair up",
    ),
    (
        "normalization-wrong-channels",
        {"input": {"shape": SHAPE, "normalization": {"mean": [0.5], "std": [1]}}},
        "input.normalization has 1 channels, but input.shape[1] is 3",
    ),
    (
        "normalization-without-channel-axis",
        {"input": {"shape": [None], "normalization": {"mean": [0.5], "std": [1]}}},
        "input.normalization is per channel, but input.shape has no channel entry [1]",
    ),
    (
        "normalization-applied-number",
        {"input": {"normalization": {**NORMALIZATION, "applied": 1}}},
        "input.normalization.applied must be a string, got 1",
    ),
    # output
    ("output-text", {"output": "logits"}, 'output must be an object, got "logits"'),
    ("output-kind-number", {"output": {"kind": 1}}, "output.kind must be a string, got 1"),
    ("output-name-bool", {"output": {"name": False}}, "output.name must be a string, got false"),
    (
        "classes-object",
        {"output": {"classes": {"0": "zero"}}},
        "output.classes must be an array, got an object",
    ),
    (
        "classes-empty",
        {"output": {"classes": []}},
        "output.classes must have 1 to 65536 entries, got 0",
    ),
    (
        "classes-too-many",
        {"output": {"classes": ["c"] * 65537}},
        "output.classes must have 1 to 65536 entries, got 65537",
    ),
    (
        "classes-number",
        {"output": {"classes": ["0", 1]}},
        "output.classes[1] must be a string, got 1",
    ),
    # metrics
    ("metrics-array", {"metrics": [0.1]}, "metrics must be an object, got an array of 1 entries"),
    (
        "test-error-bool",
        {"metrics": {"test_error": True}},
        "metrics.test_error must be a number from 0 to 1, got true",
    ),
    (
        "test-error-negative",
        {"metrics": {"test_error": -0.1}},
        "metrics.test_error must be a number from 0 to 1, got -0.1",
    ),
    (
        "test-error-percent",
        {"metrics": {"test_error": 12.5}},
        "metrics.test_error must be a number from 0 to 1, got 12.5",
    ),
    (
        "test-error-null",
        {"metrics": {"test_error": None}},
        "metrics.test_error must be a number from 0 to 1, got null",
    ),
    (
        "baseline-text",
        {"metrics": {"baseline_test_error": "n/a"}},
        'metrics.baseline_test_error must be a number from 0 to 1 or null, got "n/a"',
    ),
    (
        "baseline-above-one",
        {"metrics": {"baseline_test_error": 2}},
        "metrics.baseline_test_error must be a number from 0 to 1 or null, got 2",
    ),
    (
        "examples-negative",
        {"metrics": {"test_examples": -1}},
        "metrics.test_examples must be an integer from 0 to 9007199254740992, got -1",
    ),
    (
        "examples-fraction",
        {"metrics": {"test_examples": 1797.0}},
        "metrics.test_examples must be an integer from 0 to 9007199254740992, got 1797.0",
    ),
    (
        "examples-beyond-2-53",
        {"metrics": {"test_examples": 2**53 + 1}},
        "metrics.test_examples must be an integer from 0 to 9007199254740992, got 9007199254740993",
    ),
    (
        "examples-bool",
        {"metrics": {"test_examples": False}},
        "metrics.test_examples must be an integer from 0 to 9007199254740992, got false",
    ),
    (
        "metrics-dataset-number",
        {"metrics": {"dataset": 5}},
        "metrics.dataset must be a string, got 5",
    ),
    # the rest
    (
        "untrained-text",
        {"untrained_tensors": "bn.running_mean"},
        'untrained_tensors must be an array, got "bn.running_mean"',
    ),
    (
        "untrained-number",
        {"untrained_tensors": ["bn.running_mean", 7]},
        "untrained_tensors[1] must be a string, got 7",
    ),
    (
        "training-array",
        {"training": [1, 2]},
        "training must be an object, got an array of 2 entries",
    ),
]

# Manifests that keep the rules: every key optional, undescribed keys free, bounds inclusive.
KEPT = [
    ("empty", {}),
    ("test-error-alone", {"metrics": {"test_error": 0.125}}),
    ("examples-alone", {"metrics": {"test_examples": 0}}),
    ("metrics-empty", {"metrics": {}}),
    (
        "metric-bounds",
        {"metrics": {"test_error": 1, "baseline_test_error": 0, "test_examples": 2**53}},
    ),
    ("baseline-null", {"metrics": {"test_error": 0.5, "baseline_test_error": None}}),
    ("shape-one-entry", {"input": {"shape": [7]}}),
    ("shape-fixed-batch", {"input": {"shape": [1, 2**24]}}),
    ("shape-eight", {"input": {"shape": [None] + [2] * 7}}),
    ("normalization-alone", {"input": {"normalization": {"mean": [-1e30], "std": [1e-30]}}}),
    (
        "normalization-integers",
        {"input": {"shape": [None, 2], "normalization": {"mean": [0, 1], "std": [1, 2]}}},
    ),
    (
        "normalization-4096",
        {
            "input": {
                "shape": [None, 4096],
                "normalization": {"mean": [0] * 4096, "std": [1] * 4096},
            }
        },
    ),
    ("range-integers", {"input": {"range": [0, 255]}}),
    ("classes-65536", {"output": {"kind": "logits", "classes": [str(i) for i in range(65536)]}}),
    (
        "free-keys",
        {
            "notes": [1, "x", None, {"y": True}],
            "input": {"extra": [1]},
            "training": {"lambda": "any"},
        },
    ),
    (
        "free-values-of-odd-types",
        {"classes": 3, "shape": "any", "test_error": "free at the top level"},
    ),
]


def write(tmp_path: Path, manifest_text: bytes) -> tuple[Path, int]:
    """The base vector with this manifest text; returns the file and its META section's offset."""
    data = replace_section(base_file(), b"META", zstd(manifest_text))
    path = tmp_path / "manifest.epr"
    path.write_bytes(data)
    return path, section_offset(data, b"META")


def one_line_error(capsys: pytest.CaptureFixture[str], code: int, command: str) -> str:
    captured = capsys.readouterr()
    assert code == 1, captured
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith(f"eprpipe {command}: error: ")
    assert captured.out == ""
    return lines[0]


def assert_rejected(path: Path, offset: int, needle: str, capsys: pytest.CaptureFixture[str]):
    """Every command refuses the file with one line naming META, its offset and `needle`."""
    where = f"section META, offset {offset}"
    for args in (["info", str(path)], ["info", "--json", str(path)]):
        line = one_line_error(capsys, main(args), "info")
        assert needle in line and where in line and str(path) in line
    code = main(["validate", str(path)])
    (line,) = capsys.readouterr().out.strip().splitlines()
    assert code == 1
    assert line.startswith(f"{path}: {where}: [bad-manifest] ") and needle in line
    code = main(["validate", "--json", str(path)])
    (report,) = json.loads(capsys.readouterr().out)
    assert code == 1 and not report["valid"]
    assert [(v["code"], v["section"], v["offset"]) for v in report["violations"]] == [
        ("bad-manifest", "META", offset)
    ]


# --- the check on its own -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("manifest", "problem"), [c[1:] for c in BROKEN], ids=[c[0] for c in BROKEN]
)
def test_a_described_key_of_the_wrong_type_or_range_is_named(manifest: dict, problem: str) -> None:
    assert check_manifest(manifest) == problem


@pytest.mark.parametrize("manifest", [c[1] for c in KEPT], ids=[c[0] for c in KEPT])
def test_present_keys_of_the_right_type_pass(manifest: dict) -> None:
    assert check_manifest(manifest) is None


def test_the_first_problem_is_reported_and_the_top_level_must_be_an_object() -> None:
    both = {"input": {"shape": [None, 0]}, "metrics": {"test_error": "x"}}
    assert check_manifest(both) == "input.shape[1] must be a positive integer, got 0"
    assert check_manifest([1]) == "the manifest must be an object, got an array of 1 entries"


def test_long_and_odd_values_are_shown_short_and_ascii() -> None:
    problem = check_manifest({"producer": 1.5, "metrics": {"dataset": ["x"] * 3}})
    assert problem == "producer must be a string, got 1.5"
    problem = check_manifest({"input": {"name": None, "layout": 0}, "output": {"kind": []}})
    assert problem == "input.name must be a string, got null"
    shown = check_manifest({"input": {"shape": [None, "\x1b[2J" + "y" * 100]}})
    assert shown == 'input.shape[1] must be a positive integer, got "\\u001b[2J' + "y" * 36 + '"...'


def test_accessors_read_a_checked_manifest() -> None:
    manifest = {
        "input": {"shape": SHAPE, "normalization": {"mean": [0, 0.5, 1], "std": [1, 2, 3]}},
        "output": {"kind": "logits", "classes": ["a", "b"]},
        "metrics": {"test_error": 0.25, "dataset": "d", "other": 1},
        "untrained_tensors": ["bn.running_mean"],
    }
    assert check_manifest(manifest) is None
    assert input_shape(manifest) == (None, 3, 2, 2)
    assert input_normalization(manifest) == ([0.0, 0.5, 1.0], [1.0, 2.0, 3.0])
    assert classes(manifest) == ["a", "b"]
    assert declares_classification(manifest)
    assert reported_metrics(manifest) == {"test_error": 0.25, "dataset": "d"}
    assert untrained_tensors(manifest) == {"bn.running_mean"}
    assert input_shape({}) is None and input_normalization({}) is None and classes({}) is None
    assert not declares_classification({"output": {"kind": "embedding"}})
    assert reported_metrics({}) == {} and untrained_tensors({}) == frozenset()


# --- what eprpipe writes keeps the rules ----------------------------------------------------


@needs_torch
def test_every_manifest_eprpipe_writes_passes() -> None:
    from eprpipe import __version__
    from eprpipe.plugins.manager import architectures, datasets
    from eprpipe.train.api import InputSpec
    from eprpipe.train.export import OUTPUT_NAME

    fitting = [
        (arch, data)
        for arch in architectures().values()
        for data in datasets().values()
        if arch.input_shape[0] == len(data.mean)  # the pairs `compress` accepts
    ]
    assert len(fitting) >= 2
    for arch, data in fitting:
        names = list(data.classes or ("folder-0", "folder-1"))
        manifest = {  # as eprpipe.train.api.compress_module writes it
            "producer": f"eprpipe {__version__}",
            "architecture": arch.name,
            "dataset": data.name,
            "input": InputSpec(shape=arch.input_shape, mean=data.mean, std=data.std).manifest(),
            "output": {"name": OUTPUT_NAME, "kind": "logits", "classes": names},
            "training": {"lambda": 0.5, "epochs": 20, "batch_size": 128, "decoder": "rdft",
                         "prior": "factorized", "seed": 0, "augmentation": None},
            "untrained_tensors": ["bn.num_batches_tracked", "bn.running_mean"],
            "metrics": {"test_error": 0.0123, "test_examples": 10000, "dataset": data.name,
                        "baseline_test_error": None},
        }  # fmt: skip
        assert check_manifest(manifest) is None, (arch.name, data.name)


def test_the_valid_vectors_pass() -> None:
    files = sorted((VECTORS / "valid").glob("*.epr"))
    assert len(files) == 7
    for path in files:
        contents, _ = read_epr(path)
        assert check_manifest(contents.manifest, contents.minor) is None, path


# --- end to end: every command refuses a broken key, at the META section ---------------------


@pytest.mark.parametrize(
    ("manifest", "problem"), [c[1:] for c in BROKEN], ids=[c[0] for c in BROKEN]
)
def test_every_command_rejects_a_broken_key(
    manifest: dict, problem: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path, offset = write(tmp_path, canonical_json(manifest))
    assert_rejected(path, offset, problem, capsys)
    report = validate_bytes(path.read_bytes())
    assert [(v.code, v.section, v.offset) for v in report.violations] == [
        ("bad-manifest", "META", offset)
    ]


@pytest.mark.parametrize("manifest", [c[1] for c in BROKEN[:4]], ids=[c[0] for c in BROKEN[:4]])
def test_decode_and_eval_reject_what_the_attacker_sent(
    manifest: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path, offset = write(tmp_path, canonical_json(manifest))
    onnx_path = tmp_path / "model.onnx"
    line = one_line_error(capsys, main(["decode", str(path), "-o", str(onnx_path)]), "decode")
    assert f"section META, offset {offset}" in line
    assert not onnx_path.exists()
    line = one_line_error(capsys, main(["eval", str(path), "--dataset", "digits"]), "eval")
    assert f"section META, offset {offset}" in line


@pytest.mark.parametrize("manifest", [c[1] for c in KEPT], ids=[c[0] for c in KEPT])
def test_every_command_reads_a_kept_manifest(
    manifest: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path, _ = write(tmp_path, canonical_json(manifest))
    assert main(["info", str(path)]) == 0
    capsys.readouterr()
    assert main(["info", "--json", str(path)]) == 0
    assert json.loads(capsys.readouterr().out)["manifest"] == manifest
    main(["validate", str(path)])
    assert "[bad-manifest]" not in capsys.readouterr().out


# --- unpaired surrogates (spec 4.1): refused by every consumer --------------------------------


@pytest.mark.parametrize(
    "text",
    [
        rb'{"architecture":"\ud800"}',
        rb'{"architecture":"x\udc00y"}',
        rb'{"notes":["ok","\ude00\ud83d"]}',
        rb'{"\udbff":1}',
        rb'{"notes":{"deep":["\ud83d"]}}',
    ],
    ids=["high", "low", "reversed-pair", "in-a-key", "nested"],
)
def test_an_unpaired_surrogate_escape_is_refused(
    text: bytes, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path, offset = write(tmp_path, text)
    assert_rejected(path, offset, "manifest", capsys)


def test_a_paired_surrogate_escape_is_read_though_not_canonical(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path, _ = write(tmp_path, rb'{"architecture":"\ud83d\ude00"}')
    assert main(["info", str(path)]) == 0
    assert "\U0001f600 trained on ?" in capsys.readouterr().out
    report = validate_bytes(path.read_bytes())
    assert [(v.code, v.section) for v in report.violations] == [("non-canonical-manifest", "META")]


# --- info never fails on a manifest that keeps the rules -------------------------------------


def info_text(tmp_path: Path, manifest: dict, capsys: pytest.CaptureFixture[str]) -> str:
    path, _ = write(tmp_path, canonical_json(manifest))
    assert main(["info", str(path)]) == 0
    return capsys.readouterr().out


@pytest.mark.parametrize(
    ("metrics", "line"),
    [
        (
            {"test_error": 0.125, "test_examples": 1797, "dataset": "digits"},
            "reported test error 12.50 % on 1,797 digits test images (decoded ONNX)",
        ),
        ({"test_error": 0.125}, "reported test error 12.50 % on test images (decoded ONNX)"),
        ({"test_error": 1, "dataset": "d"}, "reported test error 100.00 % on d test images"),
        ({"test_error": 0, "test_examples": 10}, "reported test error 0.00 % on 10 test images"),
    ],
)
def test_the_metrics_line_says_what_is_present(
    metrics: dict, line: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lines = info_text(tmp_path, {"architecture": "a", "metrics": metrics}, capsys).splitlines()
    assert lines[0].endswith(": a trained on ? by ?")
    assert lines[1].startswith(line)


@pytest.mark.parametrize(
    "metrics", [{}, {"test_examples": 5, "dataset": "d"}, {"baseline_test_error": None}]
)
def test_no_metrics_line_without_a_test_error(
    metrics: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert "reported test error" not in info_text(tmp_path, {"metrics": metrics}, capsys)


def test_text_from_the_file_cannot_drive_the_terminal(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    manifest = {"architecture": "\x1b[2Jx\ny", "metrics": {"test_error": 0.5, "dataset": "\x07"}}
    out = info_text(tmp_path, manifest, capsys)
    assert "\x1b" not in out and "\x07" not in out
    assert "\\x1b[2Jx\\ny trained on" in out and "on \\x07 test images" in out


def _report_both(contents: EprContents, sizes) -> str:
    json.dumps(info_json(contents, sizes))
    return info_report(Path("f.epr"), contents, sizes)


def test_info_divides_by_nothing_without_parameters_or_payload() -> None:
    empty = np.zeros(0, np.float32)
    only_raw = EprContents(
        {"metrics": {"test_error": 0.5}},
        identity_graph({"e": (TensorProto.FLOAT, (0,))}),
        [raw("e", empty)],
    )
    text = _report_both(*decode_container(encode_container(only_raw)[0]))
    assert (
        "parameter payload             0 B = latents + tables + decoders + raw; no trained" in text
    )
    no_records = EprContents({}, identity_graph({}), [])
    assert "no trained parameters" in _report_both(
        *decode_container(encode_container(no_records)[0])
    )


def test_a_normal_file_reports_as_before() -> None:
    contents, sizes = read_epr(VECTORS / "valid" / "dense-masks.epr")
    text = info_report(Path("f.epr"), contents, sizes)
    parameters = 24 * 24
    payload = sizes.payload_bytes
    assert text.splitlines()[0] == "f.epr: dense-masks trained on ? by eprpipe test vectors"
    assert (
        f"{8 * payload / parameters:.4f} bits/param, "
        f"{4 * parameters / payload:,.1f}× smaller than float32 ({4 * parameters:,} B)"
    ) in text


@needs_torch
def test_compress_refuses_a_model_it_could_not_describe_before_training(tmp_path: Path) -> None:
    """Three channels with one mean: the manifest would be rejected, so nothing is trained."""
    import torch

    from eprpipe.errors import EprError
    from eprpipe.train.api import InputSpec, compress_module
    from eprpipe.train.loop import TrainConfig

    images = np.zeros((4, 3, 8, 8), dtype=np.float32)
    labels = np.zeros(4, dtype=np.int64)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(192, 2))
    spec = InputSpec(shape=(3, 8, 8), mean=(0.5,), std=(0.25,))
    with pytest.raises(EprError, match=r"input.shape\[1\]|normalization"):
        compress_module(
            net, (images, labels), (images, labels), tmp_path / "m.epr",
            input_spec=spec, classes=("a", "b"), config=TrainConfig(epochs=1),
        )  # fmt: skip
    assert not (tmp_path / "m.epr").exists()
