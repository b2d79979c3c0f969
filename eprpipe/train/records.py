"""The container's tensor records of a trained EPR model: what a file stores, tensor by tensor.

Reparameterized parameters become coded records (their integer latents and decoder steps);
every other state_dict tensor (BatchNorm statistics, buffers) is stored verbatim.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from eprpipe.format import container
from eprpipe.train.reparam import EPRModel, RdftDecoder


def tensor_records(model: EPRModel, state: dict[str, torch.Tensor]) -> list[container.TensorRecord]:
    """Every state_dict tensor: coded latents for parameters, verbatim bytes for `state`."""
    latents = model.integer_latents()
    records = []
    for tensor in model.tensors:
        if isinstance(tensor.decoder, RdftDecoder):
            steps = tensor.decoder.steps().detach().cpu().numpy().astype(np.float16)
            decoder: container.ScalarDecoderParams | container.RdftDecoderParams = (
                container.RdftDecoderParams(steps=steps)
            )
        else:
            decoder = container.ScalarDecoderParams(step=float(tensor.decoder.step().detach()))
        records.append(
            container.TensorRecord(
                name=tensor.name,
                shape=tuple(latents[tensor.name].shape),
                dtype="float32",
                decoder=decoder,
                latents=latents[tensor.name],
                raw=None,
            )
        )
    for name, value in state.items():
        array = value.detach().cpu().numpy()
        records.append(
            container.TensorRecord(
                name=name,
                shape=tuple(array.shape),
                dtype=str(array.dtype),
                decoder=None,
                latents=None,
                raw=array,
            )
        )
    return records


def untrained_state(net: nn.Module) -> dict[str, torch.Tensor]:
    """state_dict entries that are not reparameterized parameters (BatchNorm statistics, …)."""
    return {
        name: value for name, value in net.state_dict().items() if ".parametrizations." not in name
    }
