"""Small non-image data and models the task tests share: flat features with a smooth
regression target, and a model of two inputs (float features and int64 token ids)."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


def features(n: int, seed: int, width: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """Flat float features and a smooth regression target of them."""
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 1, (n, width)).astype(np.float32)
    return x, np.sin(x[:, :2].sum(1, keepdims=True)).astype(np.float32)


class TwoInputs(nn.Module):
    """Float features and int64 token ids, one output."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(10, 4)
        self.fc = nn.Linear(8 + 4, 1)

    def forward(self, x: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.cat([x, self.embed(tokens).mean(1)], 1))
