"""Checks the export tests share: fill a weightless graph from a module's state_dict as a
consumer fills it from records, run it in onnxruntime, and compare it with torch."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import torch
from onnx import helper, numpy_helper
from torch import nn

from eprpipe.format.graph import parse_graph
from eprpipe.train.export import ExportedGraph

RTOL, ATOL = 1e-5, 1e-6


def filled(exported: ExportedGraph, module: nn.Module) -> onnx.ModelProto:
    """The graph with every data-less initializer filled from `module`'s state_dict by name, as
    a consumer fills it from records, checked as the container's graph profile requires."""
    model = parse_graph(exported.graph)
    state = {name: value.detach().numpy() for name, value in module.state_dict().items()}
    for initializer in model.graph.initializer:
        if initializer.raw_data or initializer.float_data or initializer.int64_data:
            continue  # a small graph constant, or the preprocessing
        assert initializer.name in state, f"{initializer.name} is no state_dict name"
        assert initializer.name not in exported.tied_tensors, "an alias, not the canonical name"
        dtype = helper.tensor_dtype_to_np_dtype(initializer.data_type)
        values = state[initializer.name].astype(dtype)
        assert values.shape == tuple(initializer.dims)
        initializer.CopyFrom(numpy_helper.from_array(values, initializer.name))
    onnx.checker.check_model(model, full_check=True)
    assert [(o.domain, o.version) for o in model.opset_import] == [("", 20)]
    assert model.ir_version == 10 and not model.functions
    return model


def run(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def flat(outputs: object) -> list[torch.Tensor]:
    if outputs is None:
        return []
    if isinstance(outputs, torch.Tensor):
        return [outputs]
    if isinstance(outputs, dict):
        return [t for value in outputs.values() for t in flat(value)]
    return [t for value in outputs for t in flat(value)]


def assert_matches(exported: ExportedGraph, module: nn.Module, args: tuple, kwargs=None) -> None:
    """onnxruntime on the filled graph gives torch's outputs, with their declared dtypes and
    a shape that fits the declared one (ints equal, names consistent across tensors)."""
    tensors = [t for t in (*args, *(kwargs or {}).values()) if isinstance(t, torch.Tensor)]
    feeds = {spec.name: t.numpy() for spec, t in zip(exported.inputs, tensors, strict=True)}
    got = run(filled(exported, module), feeds)
    with torch.no_grad():
        expected = flat(module.eval()(*args, **(kwargs or {})))
    sizes = {}  # symbolic dim -> its size in this run
    for spec, value in zip(exported.inputs, tensors, strict=True):
        sizes.update((d, n) for d, n in zip(spec.shape, value.shape, strict=True) if str(d) == d)
    assert len(got) == len(expected) == len(exported.outputs)
    for spec, mine, theirs in zip(exported.outputs, got, expected, strict=True):
        np.testing.assert_allclose(mine, theirs.numpy(), rtol=RTOL, atol=ATOL, err_msg=spec.name)
        assert str(mine.dtype) == spec.dtype and mine.ndim == len(spec.shape)
        for dim, size in zip(spec.shape, mine.shape, strict=True):
            assert sizes.setdefault(dim, size) == size if isinstance(dim, str) else dim == size
