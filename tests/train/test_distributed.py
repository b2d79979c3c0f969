"""torchrun: two CPU processes (gloo) train like one, the rate is counted once, one file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from class_folders import write_class_folders
from feature_models import features
from stripes import stripes
from toy_plugin import write_toy_plugin

import eprpipe
from eprpipe.format.container import read_epr
from eprpipe.format.validate import validate_file

ROOT = Path(__file__).resolve().parents[2]
ARGS = ["compress", "lenet-300-100", "--dataset", "digits", "--epochs", "3", "--decoder", "sq"]
ARGS += ["--quiet", "--no-baseline"]


def _run(
    prefix: list[str], output: Path, lam: str = "0.5", args: list[str] = ARGS, path: str = ""
) -> str:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), path]))}
    env["OMP_NUM_THREADS"] = "1"
    done = subprocess.run(
        [*prefix, "-m", "eprpipe", *args, "--lambda", lam, "-o", str(output)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def _latents(path: Path) -> dict[str, np.ndarray]:
    contents, _ = read_epr(path)
    return {r.name: r.latents for r in contents.tensors if r.latents is not None}


TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node"]


def _assert_same_up_to_summation_order(folder: Path) -> None:
    """one.epr and two.epr: the same steps; twice_lambda.epr: the control that must differ."""
    one, two = _latents(folder / "one.epr"), _latents(folder / "two.epr")
    control = _latents(folder / "twice_lambda.epr")
    differ = sum(int((one[k] != two[k]).sum()) for k in one)
    differ_control = sum(int((one[k] != control[k]).sum()) for k in one)
    total = sum(v.size for v in one.values())
    # Same steps up to float summation order: a few latents at a rounding boundary move by 1.
    assert all(np.abs(one[k] - two[k]).max() <= 1 for k in one)
    assert differ < 0.01 * total
    # Counting the rate once per process would act like a larger λ, which moves far more.
    assert differ_control > 10 * max(differ, 1)


def test_two_processes_train_like_one(tmp_path: Path) -> None:
    out = _run([*TORCHRUN, "2"], tmp_path / "two.epr")
    _run([sys.executable], tmp_path / "one.epr")
    _run([sys.executable], tmp_path / "twice_lambda.epr", lam="1.0")

    assert out.count("parameter payload") == 1  # only rank 0 reports
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one.epr", "twice_lambda.epr", "two.epr"]
    assert validate_file(tmp_path / "two.epr").valid
    _assert_same_up_to_summation_order(tmp_path)


def test_two_processes_stream_augmented_image_files_like_one(tmp_path: Path) -> None:
    """imagenet folders, random crops and flips, a loader worker in each of two processes."""
    site = write_toy_plugin(tmp_path / "site")
    data = tmp_path / "data"
    write_class_folders(data, "train", 16, 0)
    write_class_folders(data, "val", 4, 1)
    args = ["compress", "toy-rgb-mlp", "--dataset", "imagenet", "--data-dir", str(data)]
    args += ["--epochs", "3", "--batch-size", "16", "--workers", "1", "--quiet", "--no-baseline"]
    runs = tmp_path / "runs"
    runs.mkdir()
    out = _run([*TORCHRUN, "2"], runs / "two.epr", args=args, path=str(site))
    _run([sys.executable], runs / "one.epr", args=args, path=str(site))
    _run([sys.executable], runs / "twice_lambda.epr", lam="1.0", args=args, path=str(site))
    assert out.count("parameter payload") == 1
    assert read_epr(runs / "two.epr")[0].manifest["training"]["augmentation"] == (
        "random-resized-crop-flip"
    )
    _assert_same_up_to_summation_order(runs)


_SHARED_EVALUATION_JOB = """
import json, sys
import torch
from stripes import SmallConvNet, stripes
from eprpipe.train.api import InputSpec, compress_module
from eprpipe.train.distributed import current_world
from eprpipe.train.loop import TrainConfig

torch.manual_seed(0)
net = SmallConvNet()
result = compress_module(
    net, stripes(512, 0), stripes(301, 1), sys.argv[1],
    input_spec=InputSpec(shape=(1, 6, 6), mean=(0.5,), std=(0.25,)),
    classes=("horizontal", "vertical"),
    config=TrainConfig(epochs=3, batch_size=32, lam=0.1, eval_every=2, progress=False),
    baseline=True,
)
rank = current_world().rank
buffers = {k: v.tolist() for k, v in net.state_dict().items() if "running" in k}
report = {
    "buffers": buffers,
    "test": [result.evaluation.correct, result.evaluation.total],
    "baseline": result.baseline_error,
    "history": [e.test_error for e in result.history.epochs],
    "buffer_choice": repr(result.buffers),
}
with open(f"{sys.argv[1]}.rank{rank}.json", "w") as out:
    json.dump(report, out)
"""


def _reports_of_two_processes(job: str, output: Path) -> tuple[dict, dict]:
    """Run `job` (writes `output` and a JSON report per rank) under torchrun on two processes."""
    script = output.with_suffix(".job.py")
    script.write_text(job)
    paths = os.pathsep.join([str(ROOT), str(ROOT / "tests")])
    env = {**os.environ, "PYTHONPATH": paths, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [*TORCHRUN, "2", str(script), str(output)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    zero, one = (json.loads(Path(f"{output}.rank{r}.json").read_text()) for r in (0, 1))
    return zero, one


def test_processes_share_evaluation_and_agree_on_batchnorm_statistics(tmp_path: Path) -> None:
    """Each process evaluates part of the data; all must hold rank 0's BatchNorm statistics,
    the written file's, so that the summed counts are the decoded file's own accuracy."""
    from eprpipe.deploy.evaluate import evaluate_model
    from eprpipe.format.graph import build_onnx

    output = tmp_path / "bn.epr"
    zero, one = _reports_of_two_processes(_SHARED_EVALUATION_JOB, output)
    assert zero == one  # statistics, counts, baseline, per-epoch errors, stored-buffer choice
    assert zero["test"][1] == 301
    assert zero["history"][0] is None and None not in zero["history"][1:]  # eval_every=2
    contents, _ = read_epr(output)
    whole = evaluate_model(build_onnx(contents), *stripes(301, 1))
    assert [whole.correct, whole.total] == zero["test"]
    assert contents.manifest["metrics"]["test_examples"] == 301


_GENERAL_JOB = """
import json, sys
import torch
from torch import nn
from feature_models import features
from eprpipe.train import TrainConfig, compress_module
from eprpipe.train.distributed import current_world

torch.manual_seed(0)
net = nn.Sequential(nn.Linear(8, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Linear(32, 1))
result = compress_module(
    net, features(512, 0), features(301, 1), sys.argv[1], task="regression",
    config=TrainConfig(epochs=2, batch_size=64, lam=0.01, progress=False), baseline=True,
)
rank = current_world().rank
report = {
    "metric": [result.metric.name, result.metric.value, result.metric.baseline,
               result.metric.examples],
    "buffers": {k: v.tolist() for k, v in net.state_dict().items() if "running" in k},
    "history": [e.test_metric for e in result.history.epochs],
    "buffer_choice": repr(result.buffers),
}
with open(f"{sys.argv[1]}.rank{rank}.json", "w") as out:
    json.dump(report, out)
"""


def test_any_task_trains_and_is_scored_across_processes(tmp_path: Path) -> None:
    """The general path (format 1.1, the task's metric) under torchrun: every process reports
    the same metric, statistics and buffer choice, and the metric is the written file's own
    mean squared error over all 301 test examples, split unevenly between the processes."""
    output = tmp_path / "regression.epr"
    zero, one = _reports_of_two_processes(_GENERAL_JOB, output)
    assert zero == one
    name, value, baseline, examples = zero["metric"]
    assert (name, examples) == ("mse", 301) and baseline is not None
    assert validate_file(output).valid
    x, y = features(301, 1)
    (predicted,) = eprpipe.session(output).run(None, {"input": x})
    assert value == pytest.approx(float(((predicted - y) ** 2).mean()), rel=1e-5)
    manifest = read_epr(output)[0].manifest
    assert manifest["metrics"]["task_metric"]["value"] == value
