"""The format wing's public functions, as `import eprpipe` offers them, on the golden vectors.

spec/vectors/vectors.json lists what each valid file decodes to (names, shapes, dtypes and a
SHA-256 of the little-endian bytes) and the error each invalid file must give; the public
functions must agree with it.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

import eprpipe

ROOT = Path(__file__).resolve().parents[2]
VECTORS = ROOT / "spec" / "vectors"
INDEX = json.loads((VECTORS / "vectors.json").read_text())
VALID = {entry["file"]: entry for entry in INDEX["valid"]}
INVALID = {entry["file"]: entry for entry in INDEX["invalid"]}


def _listed(shape: tuple[int, ...]) -> list[int]:
    """A shape as vectors.json lists it: made with np.ascontiguousarray, which gives 0-d
    tensors one dimension, so the 0-d record of raw-dtypes.epr is listed as [1]."""
    return list(shape) or [1]


def _digest(values: np.ndarray) -> str:
    values = np.ascontiguousarray(values)
    return hashlib.sha256(values.astype(values.dtype.newbyteorder("<")).tobytes()).hexdigest()


@pytest.mark.parametrize("name", sorted(VALID))
def test_info_lists_the_tensors_and_where_the_bytes_go(name: str) -> None:
    path = VECTORS / name
    summary = eprpipe.info(path)
    expected = VALID[name]["tensors"]
    assert isinstance(summary, eprpipe.EprInfo) and summary.path == str(path)
    assert [(t.name, _listed(t.shape), t.dtype) for t in summary.tensors] == [
        (e["name"], e["shape"], e["dtype"]) for e in expected
    ]
    assert summary.sizes.file_bytes == path.stat().st_size
    assert sum(t.payload_bytes for t in summary.tensors) == summary.payload_bytes
    assert summary.architecture == summary.manifest.get("architecture")


def test_info_names_decoders_and_counts_trained_parameters() -> None:
    summary = eprpipe.info(VECTORS / "valid" / "dense-masks.epr")
    weight, bias = summary.tensors
    assert (weight.decoder, weight.numel, weight.trained) == ("scalar", 576, True)
    assert (bias.decoder, bias.payload_bytes) == ("raw", 24 * 4)
    assert summary.num_parameters == 576  # raw tensors are not coded parameters
    (kernel,) = eprpipe.info(VECTORS / "valid" / "conv-rdft.epr").tensors
    assert kernel.decoder == "rdft" and kernel.payload_bytes > 0


def test_info_of_a_foreign_file_is_a_format_error_naming_the_file() -> None:
    path = VECTORS / "invalid" / "bad-magic.epr"
    with pytest.raises(eprpipe.FormatError) as caught:
        eprpipe.info(path)
    assert caught.value.code == "bad-magic" and str(path) in str(caught.value)
    assert isinstance(caught.value, eprpipe.EprError)


def test_limits_reach_the_reader() -> None:
    path = VECTORS / "valid" / "conv-rdft.epr"
    tight = eprpipe.ReadLimits(min_element_allowance=1, elements_per_byte=1)
    for read in (eprpipe.info, eprpipe.decode, eprpipe.load_weights):
        with pytest.raises(eprpipe.FormatError) as caught:
            read(path, limits=tight)
        assert caught.value.code == "limit-exceeded"
    assert not eprpipe.validate(path, limits=tight).valid


@pytest.mark.parametrize("name", sorted(VALID))
def test_validate_accepts_the_valid_vectors(name: str) -> None:
    report = eprpipe.validate(VECTORS / name)
    assert report.valid and report.tensors == len(VALID[name]["tensors"])


@pytest.mark.parametrize("name", sorted(INVALID))
def test_validate_and_decode_give_each_invalid_vectors_error(name: str) -> None:
    entry = INVALID[name]
    where = (entry["code"], entry["section"], entry["offset"])
    report = eprpipe.validate(VECTORS / name)
    assert [(v.code, v.section, v.offset) for v in report.violations] == [where]
    if entry["code"] == "non-canonical-manifest":  # a producer rule only a validator checks
        return
    with pytest.raises(eprpipe.FormatError) as caught:
        eprpipe.decode(VECTORS / name)
    assert (caught.value.code, caught.value.section, caught.value.offset) == where


def test_validate_of_a_directory_is_an_error_not_a_report(tmp_path: Path) -> None:
    with pytest.raises(eprpipe.EprError):
        eprpipe.validate(tmp_path)


@pytest.mark.parametrize("name", sorted(VALID))
def test_load_weights_gives_the_listed_tensors_by_state_dict_name(name: str) -> None:
    weights = eprpipe.load_weights(VECTORS / name)
    expected = VALID[name]["tensors"]
    aliases = VALID[name].get("tied_aliases", {})  # format 1.1: names that share a record
    assert list(weights) == [e["name"] for e in expected] + list(aliases)
    by_name = {entry["name"]: entry for entry in expected}
    for stored, values in weights.items():
        entry = by_name[aliases.get(stored, stored)]
        assert isinstance(values, np.ndarray) and values.dtype.name == entry["dtype"]
        assert _listed(values.shape) == entry["shape"] and _digest(values) == entry["sha256"]


@pytest.mark.parametrize("name", sorted(VALID))
def test_decode_fills_the_graph_with_the_loaded_weights(name: str) -> None:
    model = eprpipe.decode(VECTORS / name)
    assert isinstance(model, onnx.ModelProto)
    onnx.checker.check_model(model)
    weights = eprpipe.load_weights(VECTORS / name)
    filled = {init.name: numpy_helper.to_array(init) for init in model.graph.initializer}
    for tensor_name, values in filled.items():
        if tensor_name in weights:
            assert _digest(values) == _digest(weights[tensor_name]), tensor_name


def test_write_onnx_writes_the_decoded_model(tmp_path: Path) -> None:
    source = VECTORS / "valid" / "conv-rdft.epr"
    written = eprpipe.write_onnx(source, tmp_path / "conv.onnx")
    assert written == tmp_path / "conv.onnx"
    assert written.read_bytes() == eprpipe.decode(source).SerializeToString()
    assert [p.name for p in tmp_path.iterdir()] == ["conv.onnx"]  # no temporary file left


def test_write_onnx_refuses_to_overwrite_its_input(tmp_path: Path) -> None:
    source = tmp_path / "conv.epr"
    source.write_bytes((VECTORS / "valid" / "conv-rdft.epr").read_bytes())
    before = source.read_bytes()
    with pytest.raises(eprpipe.EprError):
        eprpipe.write_onnx(source, source)
    assert source.read_bytes() == before
