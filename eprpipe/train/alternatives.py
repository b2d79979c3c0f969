"""The alternatives to EPR, measured on the same trained model and the same test images.

The benchmarks train a plain float model once per architecture and seed; this module turns it
into the float32 ONNX model a user would ship (the exported graph, its state-dict weights and
the dataset's input normalization in front, like a decoded .epr model), runs every baseline of
`eprpipe.deploy.baselines` and magnitude pruning (`eprpipe.train.pruning`) followed by
uniform8+zstd on it, and measures each with `eprpipe.deploy.evaluate`, the evaluation EPR's
rows use. Each result is one row for the benchmark's runs.jsonl: `variant` names it, `series`
groups the points drawn as one curve; NNCodec, on the float and on the pruned models, adds rows
of the same shape.
"""

from __future__ import annotations

import copy
import json
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper
from torch import nn

from eprpipe.data.datasets import Prepared, as_float
from eprpipe.deploy import baselines
from eprpipe.deploy.evaluate import evaluate_split
from eprpipe.errors import EprError
from eprpipe.train.alternative_options import (
    CALIBRATION_IMAGES,
    NNCODEC_QPS,
    PRUNING_SPARSITIES,
)
from eprpipe.train.export import INPUT_NAME, weightless_graph
from eprpipe.train.loop import Data, TrainConfig
from eprpipe.train.pruning import prune_and_finetune

PRUNED_STORAGE = "uniform8+zstd"  # how a pruned model is stored: its zeros share one code
NORMALIZED = "input_normalized"


def float_onnx(
    module: nn.Module,
    input_shape: tuple[int, int, int],
    mean: Sequence[float],
    std: Sequence[float],
) -> tuple[onnx.ModelProto, list[str]]:
    """`module` as a float32 ONNX model taking [0, 1] pixels, and the names of its weights
    (the state-dict tensors the graph holds; the normalization constants are not weights)."""
    state = {name: value.detach().cpu().numpy() for name, value in module.state_dict().items()}
    model = onnx.load_from_string(weightless_graph(module, input_shape, set(state)))
    weights = []
    for init in model.graph.initializer:
        if init.name in state:
            values = state[init.name].astype(helper.tensor_dtype_to_np_dtype(init.data_type))
            init.CopyFrom(numpy_helper.from_array(values, init.name))
            weights.append(init.name)
    for node in model.graph.node:
        node.input[:] = [NORMALIZED if name == INPUT_NAME else name for name in node.input]
    shape = (1, len(mean), 1, 1)
    model.graph.initializer.extend(
        [
            numpy_helper.from_array(np.asarray(mean, np.float32).reshape(shape), "input_mean"),
            numpy_helper.from_array(np.asarray(std, np.float32).reshape(shape), "input_std"),
        ]
    )
    existing = list(model.graph.node)
    del model.graph.node[:]
    model.graph.node.extend(
        [
            helper.make_node("Sub", [INPUT_NAME, "input_mean"], ["input_centered"]),
            helper.make_node("Div", ["input_centered", "input_std"], [NORMALIZED]),
            *existing,
        ]
    )
    onnx.checker.check_model(model, full_check=True)
    return model, weights


def calibration_images(train_images: np.ndarray, count: int, seed: int) -> np.ndarray:
    """`count` training images drawn without replacement (seeded), as float32 in [0, 1]."""
    if not len(train_images):
        raise EprError("calibration needs training images")
    rng = np.random.default_rng(seed)
    chosen = np.sort(rng.choice(len(train_images), min(count, len(train_images)), replace=False))
    return as_float(train_images[chosen])


def _row(variant: baselines.Variant, test: Prepared, threads: int | None) -> dict:
    started = time.perf_counter()
    result = evaluate_split(variant.model, test, threads, source=variant.name)
    return {
        "variant": variant.name,
        "series": variant.name,
        "payload_bytes": variant.payload_bytes,
        "file_bytes": variant.file_bytes,
        "test_error": result.error,
        "test_examples": result.total,
        "eval_seconds": time.perf_counter() - started,
    }


def measure_baselines(
    model: onnx.ModelProto,
    weights: Sequence[str],
    calibration: np.ndarray,
    test: Prepared,
    threads: int | None = 1,
) -> list[dict]:
    """One row per baseline of `eprpipe.deploy.baselines` of the float ONNX `model` (as
    `float_onnx` gives it, with its `weights`), each evaluated on `test`."""
    return [_row(v, test, threads) for v in baselines.variants(model, calibration, weights)]


def measure_pruning(
    module: nn.Module,
    input_shape: tuple[int, int, int],
    mean: Sequence[float],
    std: Sequence[float],
    data: tuple[Data, Data],
    test: Prepared,
    config: TrainConfig,
    sparsities: Sequence[float] = PRUNING_SPARSITIES,
    threads: int | None = 1,
    nncodec: Sequence[str] | None = None,
    nncodec_qps: Sequence[int] = NNCODEC_QPS,
) -> list[dict]:
    """For each sparsity, a copy of `module` magnitude-pruned (global) and fine-tuned for
    `config.epochs` epochs on `data` (train, test tensors), stored as PRUNED_STORAGE, decoded
    and evaluated on `test`; with `nncodec`, the same pruned weights are also coded by NNCodec
    at `nncodec_qps` (pruning, quantization and entropy coding: Deep Compression's pipeline
    with a modern coder). `module` itself is left as it is."""
    train_data, test_data = data
    rows = []
    for sparsity in sparsities:
        started = time.perf_counter()
        pruned = prune_and_finetune(copy.deepcopy(module), train_data, test_data, sparsity, config)
        model, weights = float_onnx(pruned.module, input_shape, mean, std)
        stored = next(
            v for v in baselines.float_variants(model, weights) if v.name == PRUNED_STORAGE
        )
        row = _row(stored, test, threads)
        rows.append(
            {
                **row,
                "variant": f"pruned{sparsity:g}+{PRUNED_STORAGE}",
                "series": f"magnitude pruning + {PRUNED_STORAGE}",
                "sparsity": pruned.sparsity,
                "pruned_error": pruned.pruned_error,
                "finetuned_error": pruned.error,
                "finetune_epochs": config.epochs,
                "seconds": time.perf_counter() - started,
            }
        )
        if nncodec is not None:
            coded = measure_nncodec(model, weights, test, nncodec, nncodec_qps, threads)
            rows += [
                {
                    **r,
                    "variant": f"pruned{sparsity:g}+{r['variant']}",
                    "series": "magnitude pruning + NNCodec",
                    "sparsity": pruned.sparsity,
                }
                for r in coded
            ]
    return rows


def measure_nncodec(
    model: onnx.ModelProto,
    weights: Sequence[str],
    test: Prepared,
    command: Sequence[str],
    qps: Sequence[int],
    threads: int | None = 1,
) -> list[dict]:
    """NNCodec (MPEG NNC) at each of `qps`, one row each: `command` runs tools/bench_nncodec.py
    under the Python of NNCodec's own environment (it pins numpy<2), which codes the float
    model's weights and writes them decoded; they go back into the float ONNX model, evaluated
    on `test` like every other row. The payload is NNCodec's whole bitstream."""
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        np.savez(folder / "weights.npz", **baselines.weight_arrays(model, weights))
        done = subprocess.run(
            [*command, str(folder / "weights.npz"), "--out", str(folder), "--qp", *map(str, qps)],
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            reason = (done.stderr.strip().splitlines() or ["no message"])[-1]
            raise EprError(f"NNCodec failed ({' '.join(command)}): {reason}")
        report = json.loads((folder / "nncodec.json").read_text())
        for result in report["results"]:
            with np.load(folder / result["weights"], allow_pickle=False) as stored:
                decoded = {name: stored[name] for name in stored.files}
            if set(decoded) != set(weights):
                raise EprError(f"NNCodec at qp {result['qp']} returned other tensors than it got")
            variant = baselines.Variant(
                f"nncodec-qp{result['qp']}",
                result["bitstream_bytes"],
                None,
                baselines.with_weights(model, decoded),
            )
            rows.append({**_row(variant, test, threads), "series": "NNCodec", "qp": result["qp"]})
    return rows


def measure_alternatives(
    module: nn.Module,
    input_shape: tuple[int, int, int],
    mean: Sequence[float],
    std: Sequence[float],
    train_images: np.ndarray,
    test: Prepared,
    data: tuple[Data, Data],
    finetune: TrainConfig,
    sparsities: Sequence[float] = PRUNING_SPARSITIES,
    calibration: int = CALIBRATION_IMAGES,
    threads: int | None = 1,
    nncodec: Sequence[str] | None = None,
    nncodec_qps: Sequence[int] = NNCODEC_QPS,
) -> list[dict]:
    """Every baseline of the trained `module`, pruning at each of `sparsities` (fine-tuned as
    `finetune` says), then NNCodec at `nncodec_qps` on the float and on each pruned model if
    `nncodec` (see `measure_nncodec`) is given; calibration images are drawn with
    `finetune.seed`. The float model is exported once."""
    model, weights = float_onnx(module, input_shape, mean, std)
    images = calibration_images(train_images, calibration, finetune.seed)
    rows = measure_baselines(model, weights, images, test, threads)
    rows += measure_pruning(
        module, input_shape, mean, std, data, test, finetune, sparsities, threads,
        nncodec, nncodec_qps,
    )  # fmt: skip
    if nncodec is not None:
        rows += measure_nncodec(model, weights, test, nncodec, nncodec_qps, threads)
    return rows
