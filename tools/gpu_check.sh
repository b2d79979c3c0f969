#!/usr/bin/env bash
# The GPU checks, as one short script for a lent GPU machine (see the device tool's README).
#
# That machine has python3 with CUDA torch, onnx, onnxruntime, pluggy, Pillow and pytest, but
# no network and not constriction or zstandard. So, here first (with the registries reachable):
#     bash tools/gpu_check.sh --prepare       # wheels for python 3.12 into .wheels/ (git-ignored)
# then on the device, carrying .wheels:
#     bash tools/gpu_check.sh                 # ~5 minutes; results in $OUT (or ./gpu_results)
# It installs eprpipe (no dependencies fetched), runs the device-parametrized tests on CUDA,
# times EPR against plain steps on the GPU (resnet20, vgg16-cifar, fp32 and bf16), and streams
# ImageNet-like JPEGs into a resnet18 compression on the GPU.
set -uo pipefail
cd "$(dirname "$0")/.."

if [ "${1:-}" = "--prepare" ]; then
    mkdir -p .wheels
    python3 -m pip download --quiet --dest .wheels --only-binary=:all: \
        --python-version 3.12 --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 \
        "constriction>=0.5,<0.6" "zstandard>=0.22"
    grep -qx '/.wheels/' .git/info/exclude 2>/dev/null || echo '/.wheels/' >> .git/info/exclude
    ls .wheels
    exit 0
fi

results="${OUT:-gpu_results}"
mkdir -p "$results"
export PYTHONUNBUFFERED=1
{
    nvidia-smi -L
    python3 -m pip install --quiet --no-index --find-links .wheels constriction zstandard
    python3 -m pip install --quiet --no-deps --no-build-isolation -e .
    python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
    python3 -m pytest -q -p no:cacheprovider tests/train/test_devices.py tests/data/test_cifar.py -k "cuda or device"
    for arch in resnet20 vgg16-cifar; do
        python3 tools/bench_step.py "$arch" --device cuda --repeats 30 --rounds 3
    done
    python3 tools/bench_loader.py --images 512 --workers 0 4 8
    python3 - <<'PY'
import sys, tempfile, time
from pathlib import Path
sys.path.insert(0, "tools")
from bench_loader import write_images
from eprpipe.train.api import compress_registered
from eprpipe.train import TrainConfig

root = Path(tempfile.mkdtemp())
write_images(root / "train", 1024, seed=0)
write_images(root / "val", 256, seed=1)
for bf16 in (False, True):
    config = TrainConfig(epochs=2, batch_size=128, lam=1.0, device="cuda", bf16=bf16)
    started = time.perf_counter()
    result = compress_registered("resnet18", "imagenet", root / "r18.epr", data_dir=root,
                                 config=config, baseline=False, workers=8)
    print(f"resnet18 from JPEG folders on cuda, bf16={bf16}: 2 epochs of 1,024 images in "
          f"{time.perf_counter() - started:.1f} s, epochs {[round(e.seconds, 1) for e in result.history.epochs]} s, "
          f"file {result.sizes.file_bytes:,} B")
PY
} 2>&1 | tee "$results/gpu_check.log"
