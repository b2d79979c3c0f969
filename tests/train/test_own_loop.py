"""Your own model, loss and loop: wrap → train → save → validate → decode without torch → run.

Six models that are not image classifiers (tools/bench_own_loop.py defines them): a regression
MLP on flat features, a transformer on int64 token ids, two inputs and two outputs, tied
weights, a 1-D convolution and a GRU. Each is trained briefly in an ordinary loop, saved, and
its decoded ONNX model must compute what the wrapped module computes.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from torch_free import run_without_torch

import eprpipe
from eprpipe.cli import main
from eprpipe.train import load_into, save, wrap

ROOT = Path(__file__).resolve().parents[2]


def _tool():
    spec = importlib.util.spec_from_file_location(
        "bench_own_loop", ROOT / "tools/bench_own_loop.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_own_loop"] = module
    spec.loader.exec_module(module)
    return module


TOOL = _tool()


def _outputs(value) -> list[np.ndarray]:
    values = [value] if isinstance(value, torch.Tensor) else list(value)
    return [v.detach().float().numpy() for v in values]


def _close(got: list[np.ndarray], expected: list[np.ndarray], rtol: float = 1e-5) -> None:
    scale = max(float(np.abs(e).max()) for e in expected)
    for g, e in zip(got, expected, strict=True):
        assert g.shape == e.shape
        assert float(np.abs(g - e).max()) <= rtol * scale


@pytest.mark.parametrize("name", sorted(TOOL.EXAMPLES))
def test_own_loop_round_trip(name, tmp_path, capsys):
    example = TOOL.EXAMPLES[name]
    torch.manual_seed(0)
    model = example.build()
    TOOL.train(model, example, 120, seed=0)
    float_metric = TOOL.torch_metric(model, example)
    wrapped = wrap(model)
    TOOL.train(wrapped, example, 120, seed=1, lam=example.lam)
    path = tmp_path / f"{name}.epr"
    examples, _ = example.batch(torch.Generator().manual_seed(7), 4)
    sizes = save(wrapped, path, examples, **example.save_options)
    assert path.stat().st_size == sizes.file_bytes
    report = eprpipe.validate(path)
    assert report.valid, report.violations
    assert main(["info", str(path)]) == 0
    shown = capsys.readouterr().out
    assert "written by eprpipe" in shown and "(format 1.1)" in shown
    for input_name in example.save_options["input_names"]:
        assert f"input  {input_name}: " in shown

    onnx_path = tmp_path / f"{name}.onnx"
    child = run_without_torch(
        f"import eprpipe; eprpipe.write_onnx({str(path)!r}, {str(onnx_path)!r})"
    )
    assert child.returncode == 0, child.stderr

    # a batch size (and, for sequences, a length) the examples did not have
    inputs, _ = example.batch(torch.Generator().manual_seed(8), 5)
    runner = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    feeds = {
        value.name: x.numpy()
        for value, x in zip(runner.get_inputs(), TOOL.raw_inputs(example, inputs), strict=True)
    }
    got = runner.run(None, feeds)
    assert [value.name for value in runner.get_outputs()] == example.save_options["output_names"]
    with torch.no_grad():
        _close(got, _outputs(wrapped(*inputs)))
        fresh = example.build()
        load_into(fresh, path)
        _close(got, _outputs(fresh.eval()(*inputs)))

    decoded = TOOL.onnx_metric(path, example)
    assert decoded <= 1.5 * float_metric + 0.05, (decoded, float_metric)
    assert 8 * sizes.payload_bytes / wrapped.num_parameters() < 16  # well under float16


def test_the_benchmark_writes_its_table_plot_and_overhead(tmp_path):
    out = tmp_path / "results"
    args = ["--steps", "5", "--epr-steps", "5", "--only", "two-in-two-out", "--overhead", "3"]
    assert TOOL.main([*args, "--out", str(out)]) == 0
    results = json.loads((out / "results.json").read_text())
    assert [row["example"] for row in results["rows"]] == ["two-in-two-out"]
    assert results["transformer_step"]["ratio_with_rate_to_plain"] > 0
    assert "two-in-two-out" in (out / "results.md").read_text()
    assert (out / "results.png").stat().st_size > 1000
