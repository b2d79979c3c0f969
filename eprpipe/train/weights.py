"""Put weights into a torch module: safetensors files, torch state dicts or `.epr` files, safely.

Torch files are read with `weights_only=True` (a state dict is data; unpickling arbitrary
objects would run code from the file). Common wrappers are unwrapped: {"state_dict": ...},
{"model": ...}, and the "module." prefix DistributedDataParallel adds to every name. `.epr`
files are decoded without running anything (`eprpipe.load_weights`), tied tensors included.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn
from torch.nn.utils import parametrize

from eprpipe.errors import EprError
from eprpipe.format.api import load_weights
from eprpipe.format.structures import MAGIC

SAFETENSORS_SUFFIXES = (".safetensors",)
_WRAPPERS = ("state_dict", "model", "model_state_dict", "net")


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a .safetensors file or of a torch-saved state dict."""
    path = Path(path)
    if not path.is_file():
        raise EprError(f"--init-from: no file {path}")
    if _is_epr(path):
        return {name: torch.from_numpy(array) for name, array in load_weights(path).items()}
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


def _is_epr(path: Path) -> bool:
    with path.open("rb") as file:
        return file.read(len(MAGIC)) == MAGIC


def load_into(net: nn.Module, path: str | Path, *, strict: bool = True) -> None:
    """Load `path` (an .epr file, safetensors or a torch state dict) into the plain module
    `net`, every name and shape matching, or say exactly what does not.

    With `strict=False`, names only one side has are skipped; shapes must still match.
    """
    if any(parametrize.is_parametrized(module) for module in net.modules()):
        raise EprError(
            "load_into takes a plain module; this one is wrapped by EPR (its weights are "
            "latents): load the file into a fresh instance of the model instead"
        )
    path = Path(path)
    state = read_state_dict(path)
    own = net.state_dict()
    missing = sorted(own.keys() - state.keys()) if strict else []
    unexpected = sorted(state.keys() - own.keys()) if strict else []
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
        raise EprError(f"{path} does not fit the model; " + "; ".join(problems))
    with torch.no_grad():
        net.load_state_dict(
            {name: value.to(own[name].dtype) for name, value in state.items() if name in own},
            strict=strict,
        )
