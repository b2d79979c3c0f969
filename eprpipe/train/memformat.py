"""Image batches in channels-last layout for CPU training, where the model allows it.

oneDNN's CPU convolutions are much faster on NHWC tensors than on NCHW ones, and a
convolution given an NHWC input returns NHWC, which BatchNorm, ReLU and residual additions
keep. Measured with resnet20, batch 128, 2 threads: a plain training step 153.5 → 112.2 ms
and an EPR step 166.5 → 128.6 ms. Only the input needs converting; weights stay as they are.
A model may still reshape with `.view`, which an NHWC tensor refuses, so one probe on a couple
of examples decides per model; GPUs keep the layout they are given.
"""

from __future__ import annotations

import torch
from torch import nn

_PROBE_EXAMPLES = 2


def batch_format(model: nn.Module, images: torch.Tensor) -> torch.memory_format:
    """channels_last if `images` are 4-D on a CPU and `model` gives the same outputs for them
    in both layouts, else contiguous_format. The probe runs in eval mode without gradients,
    so it changes no BatchNorm statistics and draws no random numbers."""
    if images.device.type != "cpu" or images.ndim != 4:
        return torch.contiguous_format
    example = images[:_PROBE_EXAMPLES].contiguous()
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            reference = model(example)
            probe = model(example.contiguous(memory_format=torch.channels_last))
    except RuntimeError:  # a .view that NHWC strides cannot serve
        return torch.contiguous_format
    finally:
        model.train(was_training)
    if not torch.allclose(probe.float(), reference.float(), rtol=1e-3, atol=1e-3):
        return torch.contiguous_format
    return torch.channels_last


def in_format(images: torch.Tensor, memory_format: torch.memory_format) -> torch.Tensor:
    """`images` laid out in `memory_format` (4-D tensors only; others as they are)."""
    if images.ndim != 4:
        return images
    return images.contiguous(memory_format=memory_format)
