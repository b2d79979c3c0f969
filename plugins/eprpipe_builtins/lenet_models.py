"""The LeNet modules, with one named attribute per layer so state_dict keys read well."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class LeNet300100(nn.Module):
    """Fully connected 784-300-100-classes with ReLU between layers."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.fc1 = nn.Linear(28 * 28, 300)
        self.fc2 = nn.Linear(300, 100)
        self.fc3 = nn.Linear(100, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.fc1(x.flatten(1)))
        x = F.relu(self.fc2(x))
        return self.fc3(x)


class LeNet5Caffe(nn.Module):
    """Caffe's MNIST LeNet: two 5x5 convs with max pooling, then fc 500 and fc classes.

    As in Caffe's lenet_train_test.prototxt, the only ReLU follows fc1; the convolutions are
    linear up to their pooling.
    """

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 20, kernel_size=5)
        self.conv2 = nn.Conv2d(20, 50, kernel_size=5)
        self.fc1 = nn.Linear(50 * 4 * 4, 500)
        self.fc2 = nn.Linear(500, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(self.conv1(x), 2)
        x = F.max_pool2d(self.conv2(x), 2)
        x = F.relu(self.fc1(x.flatten(1)))
        return self.fc2(x)
