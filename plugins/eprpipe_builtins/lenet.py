"""LeNet-300-100 and LeNet5-Caffe, the MNIST models of the EPR paper's first experiments.

The models live in `lenet_models`, imported inside the hook: this module is also imported
where torch is absent, and there only the dataset hooks run.
"""

from __future__ import annotations

from collections.abc import Callable

from eprpipe import hookimpl
from eprpipe.plugins.registry import ArchitectureSpec, Recipe

# What each recipe reached on full MNIST (decoded ONNX model, all 10,000 test images; 2-core
# CPU; docs/benchmarks.md has the commands).
LENET_300_100_MEASURED = (
    "5,610-5,915 B at 1.59-1.84 % over seeds 0-2 (shift2 augmentation), about 90 s each"
)
LENET5_MEASURED = (
    "2,044-2,767 B at 0.85-0.98 % over seeds 0-2 (shift2 augmentation), 12-15 min each"
)


@hookimpl
def register_architectures(register: Callable[[ArchitectureSpec], None]) -> None:
    from . import lenet_models

    register(
        ArchitectureSpec(
            name="lenet-300-100",
            factory=lenet_models.LeNet300100,
            input_shape=(1, 28, 28),
            num_classes=10,
            description="MLP 784-300-100-10 with ReLU (266,610 parameters)",
            recipe=Recipe(lam=0.62, epochs=20, measured=LENET_300_100_MEASURED),
        )
    )
    register(
        ArchitectureSpec(
            name="lenet5-caffe",
            factory=lenet_models.LeNet5Caffe,
            input_shape=(1, 28, 28),
            num_classes=10,
            description="Caffe's LeNet: conv 20, conv 50, fc 500, fc 10 (431,080 parameters)",
            recipe=Recipe(lam=2.0, epochs=30, measured=LENET5_MEASURED),
        )
    )
