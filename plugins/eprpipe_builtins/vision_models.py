"""CIFAR-10 and ImageNet networks of the compression literature, as plain torch modules.

The ImageNet ResNets reproduce torchvision's ``resnet18``/``resnet50`` module tree (attribute
names, layer order, initialisation), so their state_dict names and shapes are torchvision's
and published weights load with ``load_state_dict(strict=True)``; torchvision itself is not
needed. The CIFAR ResNets reuse the same blocks and naming.
"""

from __future__ import annotations

import torch
from torch import nn

# VGG-16 feature configuration: output channels of each 3×3 conv, "M" a 2×2 max pooling.
VGG16_LAYERS: tuple[int | str, ...] = (
    64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M",
)  # fmt: skip


def _init_weights(module: nn.Module) -> None:
    """He initialisation for convs, unit BatchNorm: torchvision's ResNet initialisation."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d | nn.BatchNorm1d):
            nn.init.constant_(m.weight, 1)
            nn.init.constant_(m.bias, 0)


class VGG16Cifar(nn.Module):
    """VGG-16 for 32×32 inputs as in Li et al. 2017, "Pruning Filters for Efficient ConvNets".

    13 conv-BatchNorm-ReLU layers with five max poolings leave 512×1×1; the classifier is
    Linear 512→512, BatchNorm1d, ReLU, Linear 512→classes (BatchNorm after the first linear
    layer and no dropout, as Li et al.; the 15.0 M parameters the EPR and MIRACLE papers quote).
    """

    def __init__(self, num_classes: int = 10):
        super().__init__()
        layers: list[nn.Module] = []
        channels = 3
        for item in VGG16_LAYERS:
            if item == "M":
                layers.append(nn.MaxPool2d(2))
            else:
                layers += [
                    nn.Conv2d(channels, item, 3, padding=1, bias=False),
                    nn.BatchNorm2d(item),
                    nn.ReLU(inplace=True),
                ]
                channels = item
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(
            nn.Linear(512, 512),
            nn.BatchNorm1d(512),
            nn.ReLU(inplace=True),
            nn.Linear(512, num_classes),
        )
        _init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.features(x), 1))


def _projection(in_planes: int, out_planes: int, stride: int) -> nn.Sequential | None:
    """A 1×1 conv + BatchNorm shortcut where the block changes shape, else None (identity).

    Torchvision's ``downsample``, and He et al.'s option B.
    """
    if stride == 1 and in_planes == out_planes:
        return None
    return nn.Sequential(
        nn.Conv2d(in_planes, out_planes, 1, stride=stride, bias=False), nn.BatchNorm2d(out_planes)
    )


class BasicBlock(nn.Module):
    """Two 3×3 convs with BatchNorm and a residual connection (torchvision's names)."""

    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = _projection(in_planes, planes, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """1×1 reduce, 3×3 (strided: "ResNet v1.5", as torchvision), 1×1 expand by 4, residual."""

    expansion = 4

    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        out_planes = planes * self.expansion
        self.conv1 = nn.Conv2d(in_planes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out_planes, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_planes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _projection(in_planes, out_planes, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


def _stage(
    block: type[BasicBlock | Bottleneck], in_planes: int, planes: int, blocks: int, stride: int
) -> nn.Sequential:
    """`blocks` blocks; the first one strides and changes the width."""
    layers = [block(in_planes, planes, stride)]
    layers += [block(planes * block.expansion, planes) for _ in range(blocks - 1)]
    return nn.Sequential(*layers)


class ImageNetResNet(nn.Module):
    """Torchvision's ResNet: 7×7/2 stem, max pooling, four stages, global average pooling.

    Adaptive pooling makes it run on any input of at least 32×32, not only 224×224.
    """

    def __init__(
        self, block: type[BasicBlock | Bottleneck], blocks: tuple[int, int, int, int],
        num_classes: int = 1000,
    ):  # fmt: skip
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        widths = (64, 128, 256, 512)
        in_planes = 64
        for index, (planes, count) in enumerate(zip(widths, blocks, strict=True)):
            stage = _stage(block, in_planes, planes, count, stride=1 if index == 0 else 2)
            self.add_module(f"layer{index + 1}", stage)
            in_planes = planes * block.expansion
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(in_planes, num_classes)
        _init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def resnet18(num_classes: int = 1000) -> ImageNetResNet:
    """ResNet-18 (basic blocks 2-2-2-2), torchvision's state_dict layout."""
    return ImageNetResNet(BasicBlock, (2, 2, 2, 2), num_classes)


def resnet50(num_classes: int = 1000) -> ImageNetResNet:
    """ResNet-50 (bottlenecks 3-4-6-3), torchvision's state_dict layout."""
    return ImageNetResNet(Bottleneck, (3, 4, 6, 3), num_classes)


class CifarResNet(nn.Module):
    """He et al. 2016's CIFAR ResNet-(6n+2), with a width multiplier.

    A 3×3 conv to 16·width channels, three stages of n basic blocks at 16/32/64 · width
    channels (32×32, 16×16, 8×8), global average pooling, one linear layer. Shortcuts that
    change shape are 1×1 conv + BatchNorm projections (option B); the rest are identities.
    """

    def __init__(self, depth: int, width: int = 1, num_classes: int = 10):
        super().__init__()
        if depth < 8 or (depth - 2) % 6:
            raise ValueError(f"a CIFAR ResNet has depth 6n + 2 with n ≥ 1, not {depth}")
        if width < 1:
            raise ValueError(f"width multiplier must be at least 1, not {width}")
        n = (depth - 2) // 6
        widths = (16 * width, 32 * width, 64 * width)
        self.conv1 = nn.Conv2d(3, widths[0], 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = _stage(BasicBlock, widths[0], widths[0], n, stride=1)
        self.layer2 = _stage(BasicBlock, widths[0], widths[1], n, stride=2)
        self.layer3 = _stage(BasicBlock, widths[1], widths[2], n, stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(widths[2], num_classes)
        _init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(torch.flatten(self.avgpool(x), 1))
