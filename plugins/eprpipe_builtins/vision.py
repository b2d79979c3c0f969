"""CIFAR-10 and ImageNet networks of the compression literature (VGG-16, ResNets).

The EPR paper's larger experiments use VGG-16 and ResNet-20-4 on CIFAR-10 and ResNet-18/50 on
ImageNet. The models live in `vision_models`, imported inside the hook: this module is also
imported where torch is absent. The parameter counts in the descriptions are those of the
10-class (CIFAR) and 1000-class (ImageNet) models; tests/plugins/test_vision_architectures.py holds
them to the modules.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from eprpipe import hookimpl
from eprpipe.plugins.registry import ArchitectureSpec

CIFAR_INPUT = (3, 32, 32)
IMAGENET_INPUT = (3, 224, 224)

# name → (depth, width multiplier, parameters with 10 classes)
CIFAR_RESNETS = {
    "resnet20": (20, 1, 272_474),
    "resnet32": (32, 1, 466_906),
    "resnet56": (56, 1, 855_770),
    "resnet20-4": (20, 4, 4_327_754),
}


@hookimpl
def register_architectures(register: Callable[[ArchitectureSpec], None]) -> None:
    from . import vision_models

    register(
        ArchitectureSpec(
            name="vgg16-cifar",
            factory=vision_models.VGG16Cifar,
            input_shape=CIFAR_INPUT,
            num_classes=10,
            description="VGG-16 with BatchNorm for 32×32 (Li et al. 2017): 13 convs, "
            "fc 512 + BatchNorm1d, fc 10 (14,987,722 parameters)",
        )
    )
    for name, (depth, width, count) in CIFAR_RESNETS.items():
        channels = "/".join(str(c * width) for c in (16, 32, 64))
        register(
            ArchitectureSpec(
                name=name,
                factory=partial(vision_models.CifarResNet, depth=depth, width=width),
                input_shape=CIFAR_INPUT,
                num_classes=10,
                description=f"CIFAR ResNet-{depth} (He et al. 2016), {channels} channels, "
                f"1×1 conv shortcuts (option B) ({count:,} parameters)",
            )
        )
    register(
        ArchitectureSpec(
            name="resnet18",
            factory=vision_models.resnet18,
            input_shape=IMAGENET_INPUT,
            num_classes=1000,
            description="ImageNet ResNet-18, torchvision's state_dict names and shapes "
            "(11,689,512 parameters)",
        )
    )
    register(
        ArchitectureSpec(
            name="resnet50",
            factory=vision_models.resnet50,
            input_shape=IMAGENET_INPUT,
            num_classes=1000,
            description="ImageNet ResNet-50 (v1.5), torchvision's state_dict names and shapes "
            "(25,557,032 parameters)",
        )
    )
