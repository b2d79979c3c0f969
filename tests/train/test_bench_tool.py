"""The benchmark tools end to end on tiny inputs: they must not rot."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch
from cifar_files import fake_batches, write_folder
from idx_files import write_mnist_like

from eprpipe.errors import EprError

ROOT = Path(__file__).resolve().parents[2]


def _load_tool(name: str = "bench_mnist"):
    spec = importlib.util.spec_from_file_location(name, ROOT / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up here
    spec.loader.exec_module(module)
    return module


def test_bench_writes_table_and_plot(tmp_path):
    data = write_mnist_like(tmp_path / "mnist", n_train=64, n_test=32)
    out = tmp_path / "bench"
    tool = _load_tool()
    args = ["--data-dir", str(data), "--out-dir", str(out), "--architectures", "lenet-300-100",
            "--lambdas", "0.5", "--epochs", "1", "--jobs", "1"]  # fmt: skip
    assert tool.main(args) == 0
    rows = [json.loads(line) for line in (out / "runs.jsonl").read_text().splitlines()]
    assert {row["decoder"] for row in rows} == {"sq", "baseline"}
    compressed = next(row for row in rows if row["decoder"] == "sq")
    assert compressed["test_examples"] == 32 and compressed["payload_bytes"] > 0
    table = (out / "results.md").read_text()
    assert "| lenet-300-100 | sq | 0.5 | 1 |" in table
    assert (out / "results.png").stat().st_size > 1000


def test_bench_step_prints_both_step_times_and_their_ratio(capsys):
    tool = _load_tool("bench_step")
    assert tool.main(["lenet-300-100", "--repeats", "1", "--batch-size", "8"]) == 0
    printed = capsys.readouterr().out
    assert "plain step" in printed and "EPR step (rdft)" in printed and "ratio" in printed
    args = ["lenet-300-100", "--repeats", "1", "--batch-size", "8", "--rounds", "3"]
    assert tool.main(args) == 0
    printed = capsys.readouterr().out
    assert printed.count("EPR step (rdft)") == 3 and "median ratio of 3 rounds" in printed


def test_bench_cifar_reports_the_decoded_model_and_the_step_ratio(tmp_path, capsys):

    data = write_folder(tmp_path / "cifar", fake_batches(per_batch=40, n_test=20))
    tool = _load_tool("bench_cifar")
    results = tmp_path / "results"
    args = ["--data-dir", str(data), "--epochs", "1", "--repeats", "1", "--batch-size", "32",
            "--out", str(tmp_path / "r.epr"), "--results", str(results), "--quiet"]  # fmt: skip
    assert tool.main(args) == 0
    row = json.loads((results / "bench_cifar_resnet20_lam0.2_e1.json").read_text())
    assert row["test_images"] == 20 and row["payload_bytes"] > 0
    assert row["plain_step_s"] > 0 and row["step_ratio"] == row["epr_step_s"] / row["plain_step_s"]
    assert "| resnet20 | 0.2 | 1 |" in (results / "bench_cifar_resnet20_lam0.2_e1.md").read_text()
    assert (results / "bench_cifar_resnet20_lam0.2_e1.png").stat().st_size > 1000
    assert "ratio" in capsys.readouterr().out


def test_bench_cifar_starts_from_trained_weights_when_given_them(tmp_path):
    from safetensors.torch import save_file

    from eprpipe.plugins.manager import get_architecture

    data = write_folder(tmp_path / "cifar", fake_batches(per_batch=40, n_test=20))
    torch.manual_seed(1)
    trained = get_architecture("resnet20").factory()
    weights = tmp_path / "trained.safetensors"
    save_file({k: v.contiguous() for k, v in trained.state_dict().items()}, str(weights))
    results = tmp_path / "results"
    args = ["--data-dir", str(data), "--epochs", "1", "--repeats", "1", "--batch-size", "32",
            "--out", str(tmp_path / "r.epr"), "--results", str(results), "--quiet",
            "--init-from", str(weights)]  # fmt: skip
    assert _load_tool("bench_cifar").main(args) == 0
    row = json.loads((results / "bench_cifar_resnet20_init_lam0.2_e1.json").read_text())
    assert row["start"] == "weights trained.safetensors"
    table = (results / "bench_cifar_resnet20_init_lam0.2_e1.md").read_text()
    assert "from weights trained.safetensors" in table
    wrong = tmp_path / "wrong.safetensors"
    save_file({"conv1.weight": torch.zeros(1)}, str(wrong))
    with pytest.raises(EprError, match=r"conv1\.weight"):  # the weights do reach the model
        _load_tool("bench_cifar").main([*args[:-1], str(wrong)])


def test_bench_loader_streams_jpegs_with_each_worker_count(capsys):
    tool = _load_tool("bench_loader")
    assert tool.main(["--images", "12", "--batch-size", "5", "--workers", "0", "2"]) == 0
    out = capsys.readouterr().out
    assert "12 JPEGs of 500×375" in out
    for line in ("0 worker process(es)", "2 worker process(es)", "evaluation view, 2 thread(s)"):
        assert line in out and "img/s" in out.split(line)[1].splitlines()[0]


def test_train_plain_writes_weights_that_init_from_loads(tmp_path, capsys):
    import torch

    from eprpipe.plugins.manager import get_architecture
    from eprpipe.train.weights import load_into

    tool = _load_tool("train_plain")
    out = tmp_path / "plain.safetensors"
    args = ["lenet-300-100", "--dataset", "digits", "--epochs", "1", "--out", str(out), "--quiet"]
    assert tool.main(args) == 0
    assert "test error" in capsys.readouterr().out
    net = get_architecture("lenet-300-100").factory(num_classes=10)
    load_into(net, out)
    assert torch.isfinite(net.fc1.weight).all() and net.fc1.weight.abs().sum() > 0


def test_kernel_decoder_benchmark_writes_table_and_plot(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "tools"))  # it imports its sibling, bench_own_loop
    tool = _load_tool("bench_kernel_decoders")
    args = ["--steps", "2", "--epr-steps", "2", "--lambdas", "0.1", "--only", "conv1d"]
    assert tool.main([*args, "--out", str(tmp_path)]) == 0
    rows = json.loads((tmp_path / "results.json").read_text())
    assert [(r["model"], r["decoder"]) for r in rows] == [("conv1d", "sq"), ("conv1d", "frequency")]
    assert all(r["empirical_bits"] > 0 for r in rows)
    assert (tmp_path / "results.png").stat().st_size > 1000


def test_bench_starts_epr_from_each_seeds_float_model(tmp_path):
    data = write_mnist_like(tmp_path / "mnist", n_train=64, n_test=32)
    out = tmp_path / "bench"
    tool = _load_tool()
    args = ["--data-dir", str(data), "--out-dir", str(out), "--architectures", "lenet-300-100",
            "--lambdas", "0.5", "--epochs", "1", "--jobs", "2", "--seeds", "0", "1",
            "--epr-start", "float"]  # fmt: skip
    assert tool.main(args) == 0
    rows = [json.loads(line) for line in (out / "runs.jsonl").read_text().splitlines()]
    # Each EPR run comes after the float model it starts from.
    for seed in (0, 1):
        order = [row["decoder"] for row in rows if row["seed"] == seed]
        assert order == ["baseline", "sq"]
    assert all(row["start"] == "float" for row in rows)
    assert sorted(p.name for p in out.glob("*_float*")) == [
        "lenet-300-100_float_s0.safetensors",
        "lenet-300-100_float_s1.safetensors",
        "lenet-300-100_sq_lam0.5_s0_float.epr",
        "lenet-300-100_sq_lam0.5_s1_float.epr",
    ]
    assert "| lenet-300-100 | sq from float | 0.5 | 1 | 0 |" in (out / "results.md").read_text()


def test_bench_refuses_a_float_start_without_the_float_model(tmp_path, capsys):
    tool = _load_tool()
    with pytest.raises(SystemExit):
        tool.main(["--data-dir", str(tmp_path), "--epr-start", "float", "--no-baseline"])
    assert "--epr-start float starts from the baseline model" in capsys.readouterr().err
