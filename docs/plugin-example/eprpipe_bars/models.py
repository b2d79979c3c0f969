"""The 'bars-cnn' architecture (torch): imported only inside the architecture hook."""

from __future__ import annotations

import torch
from torch import nn


class BarsCNN(nn.Module):
    """Two 3x3 convolutions, a global average and a linear classifier.

    Takes float32 (N, in_channels, H, W), already normalized by eprpipe; returns
    (N, num_classes) logits.
    """

    def __init__(self, num_classes: int, in_channels: int) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 8, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3, padding=1),
            nn.ReLU(),
        )
        self.classifier = nn.Linear(16, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x).mean((2, 3)))
