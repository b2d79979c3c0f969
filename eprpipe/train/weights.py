"""Start from weights a user already has: safetensors files or torch state dicts, loaded safely.

Torch files are read with `weights_only=True` (a state dict is data; unpickling arbitrary
objects would run code from the file). Common wrappers are unwrapped: {"state_dict": ...},
{"model": ...}, and the "module." prefix DistributedDataParallel adds to every name.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from eprpipe.errors import EprError

SAFETENSORS_SUFFIXES = (".safetensors",)
_WRAPPERS = ("state_dict", "model", "model_state_dict", "net")


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a .safetensors file or of a torch-saved state dict."""
    path = Path(path)
    if not path.is_file():
        raise EprError(f"--init-from: no file {path}")
    try:
        if path.suffix in SAFETENSORS_SUFFIXES:
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except EprError:
        raise
    except Exception as err:  # both libraries raise many types for damaged or foreign files
        raise EprError(f"--init-from: cannot read weights from {path}: {err}") from err
    return _unwrap(state, path)


def _unwrap(state: object, path: Path) -> dict[str, torch.Tensor]:
    for key in _WRAPPERS:
        if isinstance(state, Mapping) and isinstance(state.get(key), Mapping):
            state = state[key]
            break
    if not isinstance(state, Mapping) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
    ):
        raise EprError(f"--init-from: {path} does not hold a state dict of named tensors")
    if state and all(name.startswith("module.") for name in state):
        state = {name.removeprefix("module."): value for name, value in state.items()}
    return dict(state)


def load_into(net: nn.Module, path: Path) -> None:
    """Load `path` into `net`, every name and shape matching, or say exactly what does not."""
    state = read_state_dict(path)
    own = net.state_dict()
    missing = sorted(own.keys() - state.keys())
    unexpected = sorted(state.keys() - own.keys())
    wrong = sorted(
        f"{name} {tuple(state[name].shape)} (model: {tuple(own[name].shape)})"
        for name in own.keys() & state.keys()
        if state[name].shape != own[name].shape
    )
    problems = [
        f"{label}: {', '.join(items[:8])}{' ...' if len(items) > 8 else ''}"
        for label, items in (("missing", missing), ("unexpected", unexpected), ("shape", wrong))
        if items
    ]
    if problems:
        raise EprError(f"--init-from {path} does not fit the model; " + "; ".join(problems))
    with torch.no_grad():
        net.load_state_dict({name: value.to(own[name].dtype) for name, value in state.items()})
