"""The container's tensor records of a trained EPR model: what a file stores, tensor by tensor.

Reparameterized parameters become coded records (their integer latents and decoder steps);
every other state_dict tensor (BatchNorm statistics, buffers) is stored verbatim.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from eprpipe.format import container
from eprpipe.train.reparam import EPRModel, RdftDecoder, is_parametrization_state


def tensor_records(model: EPRModel, state: dict[str, torch.Tensor]) -> list[container.TensorRecord]:
    """Every tensor the file stores: coded latents for EPR parameters, verbatim bytes for the
    parameters left out of EPR (`exclude`) and for `state` (buffers)."""
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
    for stored in model.stored:
        value = stored.value().to(getattr(torch, stored.dtype))
        records.append(_verbatim(stored.name, value))
    recorded = {record.name for record in records}
    records += [_verbatim(name, value) for name, value in state.items() if name not in recorded]
    return records


def _verbatim(name: str, value: torch.Tensor) -> container.TensorRecord:
    array = value.detach().cpu().numpy()
    return container.TensorRecord(
        name=name,
        shape=tuple(array.shape),
        dtype=str(array.dtype),
        decoder=None,
        latents=None,
        raw=array,
    )


def untrained_state(net: nn.Module) -> dict[str, torch.Tensor]:
    """state_dict entries that are not reparameterized parameters (BatchNorm statistics, …)."""
    return {
        name: value
        for name, value in net.state_dict().items()
        if not is_parametrization_state(name)
    }


def buffer_state(model: EPRModel) -> dict[str, torch.Tensor]:
    """The state_dict entries that are not parameters: BatchNorm statistics and other buffers,
    which EPR does not train and reports leave out of bits per parameter."""
    parameters = {name for name, _ in model.net.named_parameters(remove_duplicate=False)}
    return {
        name: value for name, value in untrained_state(model.net).items() if name not in parameters
    }
