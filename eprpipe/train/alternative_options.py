"""The benchmarks' choices for the alternatives to EPR, torch-free so a tool's main process can
parse its command line without importing torch (`eprpipe.train.alternatives` measures them).
"""

from __future__ import annotations

import argparse
from pathlib import Path

PRUNING_SPARSITIES = (0.5, 0.8, 0.9, 0.95)
CALIBRATION_IMAGES = 1000  # training images onnxruntime's static quantization calibrates on
NNCODEC_QPS = (-38, -32, -26, -20, -16)  # each +4 doubles NNCodec's quantization step


def add_alternative_options(
    parser: argparse.ArgumentParser, *, finetune_epochs: int, subject: str
) -> None:
    """`--alternatives` and its settings; `subject` says which float model they start from."""
    parser.add_argument(
        "--alternatives",
        action="store_true",
        help="also measure float16, zstd, uniform 8/4-bit, onnxruntime int8 and pruning on "
        + subject,
    )
    parser.add_argument(
        "--sparsities",
        nargs="*",
        type=float,
        default=list(PRUNING_SPARSITIES),
        help="magnitude-pruning sparsities for --alternatives (none: no pruning)",
    )
    parser.add_argument(
        "--finetune-epochs",
        type=int,
        default=finetune_epochs,
        help="fine-tuning after pruning (default: %(default)s)",
    )
    parser.add_argument(
        "--calibration-images",
        type=int,
        default=CALIBRATION_IMAGES,
        help="training images onnxruntime's static int8 quantization calibrates on",
    )
    parser.add_argument(
        "--nncodec-python",
        type=Path,
        default=None,
        metavar="PYTHON",
        help="with --alternatives, also NNCodec, run by tools/bench_nncodec.py under this Python "
        "(its own venv: see that tool)",
    )
    parser.add_argument(
        "--nncodec-qps",
        nargs="+",
        type=int,
        default=list(NNCODEC_QPS),
        help="NNCodec quantization parameters (default: %(default)s)",
    )
