"""The training face: wrap any module, train it in your own loop, save one `.epr` file.

The flow users know from NNCF, TF-MOT and CompressAI — wrap, add a term to your own loss,
export at the end — with one file at the end that any machine decodes to ONNX without torch:

    wrapped = eprpipe.train.wrap(model)
    optimizer = torch.optim.Adam(wrapped.param_groups())
    for x, y in loader:
        loss = my_loss(wrapped(x), y) + lam * wrapped.rate_loss()
        ...
    sizes = eprpipe.train.save(wrapped, "model.epr", example_inputs=(x[:1],))
    eprpipe.train.load_into(plain_model, "model.epr")
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from eprpipe import __version__
from eprpipe.deploy.evaluate import ORT_ERRORS, session
from eprpipe.errors import EprError
from eprpipe.format import container
from eprpipe.format.atomic import write_atomically
from eprpipe.format.graph import build_onnx
from eprpipe.train.config import DEFAULTS, Decoder, Prior
from eprpipe.train.export import ExportedGraph, Normalization, check_representable, export_graph
from eprpipe.train.interface import BoundInputs, bind_inputs
from eprpipe.train.paths import check_writable
from eprpipe.train.records import buffer_state, tensor_records
from eprpipe.train.reparam import EPRModel

TASK_KINDS = ("classification", "regression", "none")
VERIFY_TOLERANCE = 1e-4  # decoded model vs wrapped module, relative to the largest output

Inputs = torch.Tensor | Sequence[torch.Tensor]


def wrap(
    module: nn.Module,
    *,
    decoder: Decoder | str = Decoder.AUTO,
    prior: Prior | str = DEFAULTS.prior,
    exclude: Sequence[str] | str = (),
    exclude_dtype: str = "float32",
    init_step: float = DEFAULTS.init_step,
) -> EPRModel:
    """`module` with EPR applied: every floating-point parameter becomes integer latents and a
    small decoder under a learned density. Call it as you called `module`.

    `exclude` takes parameter-name patterns (fnmatch: "*.bias", "head.*") left out of EPR and
    stored as `exclude_dtype` ("float32" or "float16"). The module is modified in place; a
    plain copy made first is what `save` exports, so the graph is the module's own forward.
    """
    check_representable(module)
    try:
        template = copy.deepcopy(module).cpu()
    except Exception as error:  # user modules may hold anything (locks, handles, generators)
        raise EprError(f"cannot copy the module before wrapping it: {error}") from error
    wrapped = EPRModel(
        module,
        decoder=decoder,
        prior=prior,
        init_step=init_step,
        exclude=(exclude,) if isinstance(exclude, str) else tuple(exclude),
        exclude_dtype=exclude_dtype,
    )
    object.__setattr__(wrapped, "plain_template", template)  # not a submodule: no state, no DDP
    return wrapped


def _template(model: EPRModel) -> nn.Module:
    """The plain module holding the weights the file decodes to."""
    template = getattr(model, "plain_template", None)
    if template is None:
        raise EprError("save() takes a module returned by eprpipe.train.wrap()")
    template.load_state_dict({k: v.cpu() for k, v in model.decoded_state().items()})
    return template.eval()


def _as_tuple(inputs: Inputs) -> tuple[torch.Tensor, ...]:
    return (inputs,) if isinstance(inputs, torch.Tensor) else tuple(inputs)


def _task_manifest(task: object) -> dict | None:
    """A task as the manifest's `task` key: a kind name, a dict, or an object with `kind`."""
    if task is None:
        return None
    if isinstance(task, str):
        kind, classes = task, None
    elif isinstance(task, Mapping):
        kind, classes = task.get("kind"), task.get("classes")
    else:
        kind, classes = getattr(task, "kind", None), getattr(task, "classes", None)
    if kind not in TASK_KINDS:
        raise EprError(f"task kind must be one of {', '.join(TASK_KINDS)}, got {kind!r}")
    entry: dict[str, Any] = {"kind": kind}
    if classes is not None:
        if kind != "classification":
            raise EprError(f"class names belong to a classification task, not {kind!r}")
        entry["classes"] = [str(name) for name in classes]
    return entry


def _normalizations(
    preprocessing: Mapping[str, Normalization | Mapping] | None,
) -> dict[str, Normalization]:
    result = {}
    for name, value in (preprocessing or {}).items():
        if isinstance(value, Mapping):
            value = Normalization(
                mean=tuple(value["mean"]), std=tuple(value["std"]), axis=value.get("axis", 1)
            )
        result[name] = value
    return result


def _interface(
    exported: ExportedGraph, normalizations: Mapping[str, Normalization]
) -> tuple[list, list]:
    inputs = []
    for spec in exported.inputs:
        entry = spec.manifest()
        if spec.name in normalizations:
            norm = normalizations[spec.name]
            entry["preprocessing"] = {
                "normalization": {
                    "mean": list(norm.mean),
                    "std": list(norm.std),
                    "axis": norm.axis,
                },
                "applied": "inside the graph: (input - mean) / std",
            }
        inputs.append(entry)
    return inputs, [spec.manifest() for spec in exported.outputs]


def contents_for(
    model: EPRModel,
    example_inputs: Inputs,
    *,
    example_kwargs: Mapping[str, Any] | None = None,
    input_names: Sequence[str] | None = None,
    output_names: Sequence[str] | None = None,
    dynamic_axes: Mapping[str, Mapping[int, str]] | None = None,
    preprocessing: Mapping[str, Normalization | Mapping] | None = None,
    task: object = None,
    metadata: Mapping[str, str] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> container.EprContents:
    """What `save` writes: the records, the weightless graph (preprocessing inside it) and a
    format 1.1 manifest describing the inputs, outputs, task, metadata and tied tensors.

    `extra` adds manifest keys (architecture, dataset, training, metrics) for the built-in loop.
    """
    buffers = buffer_state(model)
    records = tensor_records(model, buffers)
    template = _template(model)
    normalizations = _normalizations(preprocessing)
    exported = export_graph(
        template,
        tuple(x.detach().cpu() for x in _as_tuple(example_inputs)),
        {record.name for record in records},
        example_kwargs=dict(example_kwargs) if example_kwargs else None,
        input_names=input_names,
        output_names=output_names,
        dynamic_axes=dynamic_axes,
        preprocessing=normalizations,
        float16_tensors={s.name for s in model.stored if s.dtype == "float16"},
    )
    inputs, outputs = _interface(exported, normalizations)
    manifest: dict[str, Any] = {
        "producer": f"eprpipe {__version__}",
        "inputs": inputs,
        "outputs": outputs,
        "untrained_tensors": sorted(buffers),
        "training": {"decoder": model.decoder_kind.value, "prior": model.prior_kind.value},
    }
    task_entry = _task_manifest(task)
    if task_entry is not None:
        manifest["task"] = task_entry
    if metadata:
        manifest["metadata"] = {str(key): str(value) for key, value in metadata.items()}
    if exported.tied_tensors:
        manifest["tied_tensors"] = dict(exported.tied_tensors)
    manifest.update(extra or {})
    return container.EprContents(manifest=manifest, graph=exported.graph, tensors=records)


def _feeds(runner, bound: BoundInputs, normalizations) -> dict[str, np.ndarray]:
    """The decoded model's inputs for the examples (what the module takes): raw values where
    the graph applies a normalization first."""
    feeds = {}
    for value, tensor in zip(runner.get_inputs(), bound.tensors, strict=True):
        array = tensor.detach().cpu()
        norm = normalizations.get(value.name)
        if norm is not None:
            shape = [1] * array.ndim
            shape[norm.axis] = -1
            array = array * torch.tensor(norm.std).reshape(shape) + torch.tensor(norm.mean).reshape(
                shape
            )
        feeds[value.name] = array.numpy()
    return feeds


def _flat_outputs(outputs: Any) -> list[torch.Tensor]:
    if isinstance(outputs, torch.Tensor):
        return [outputs]
    if isinstance(outputs, Mapping):
        return [t for value in outputs.values() for t in _flat_outputs(value)]
    if outputs is None:
        return []
    return [t for value in outputs for t in _flat_outputs(value)]


def verify(
    model: EPRModel,
    data: bytes,
    bound: BoundInputs,
    normalizations: Mapping[str, Normalization],
    source: str,
) -> float:
    """Run the file's decoded model in onnxruntime on the example inputs and compare it with
    the wrapped module: the largest difference relative to the largest output. A file whose
    model computes something else is refused before it is written."""
    decoded, _ = container.decode_container(data, source=source)
    was_training = model.training
    model.eval()
    with torch.no_grad():
        outputs = model(*bound.args, **bound.kwargs)
        expected = [t.float().cpu().numpy() for t in _flat_outputs(outputs)]
    model.train(was_training)
    runner = session(build_onnx(decoded), source=source)
    try:
        got = runner.run(None, _feeds(runner, bound, normalizations))
    except ORT_ERRORS as error:
        raise EprError(f"onnxruntime cannot run the model exported for {source}: {error}") from None
    scale = max((float(np.abs(e).max(initial=0.0)) for e in expected), default=0.0) or 1.0
    worst = max(
        float(np.abs(np.asarray(g, np.float64) - e).max(initial=0.0)) / scale
        for g, e in zip(got, expected, strict=True)
    )
    if worst > VERIFY_TOLERANCE:
        raise EprError(
            f"the decoded model of {source} differs from the wrapped module by {worst:.2g} "
            f"(relative to the largest output), more than {VERIFY_TOLERANCE:g}; nothing written"
        )
    return worst


def save(
    wrapped: EPRModel,
    path: str | Path,
    example_inputs: Inputs,
    *,
    example_kwargs: Mapping[str, Any] | None = None,
    input_names: Sequence[str] | None = None,
    output_names: Sequence[str] | None = None,
    dynamic_axes: Mapping[str, Mapping[int, str]] | None = None,
    preprocessing: Mapping[str, Normalization | Mapping] | None = None,
    task: object = None,
    metadata: Mapping[str, str] | None = None,
) -> container.SizeBreakdown:
    """Write `wrapped` as an `.epr` file, atomically, and return its sizes.

    `example_inputs` are what the module takes (one tensor or a tuple; `example_kwargs` for
    keyword arguments); axis 0 of every input is the batch unless `dynamic_axes` says
    otherwise ({"tokens": {0: "batch", 1: "length"}}). `preprocessing` ({input name:
    Normalization or {"mean", "std", "axis"}}) is exported as the graph's first nodes, so the
    decoded model takes raw inputs. `task` is "classification" (or {"kind": "classification",
    "classes": [...]}), "regression" or "none"; `metadata` is free text the decoded ONNX model
    carries. Before anything is written, the decoded model is run in onnxruntime on the
    examples and compared with the wrapped module.
    """
    path = Path(path)
    check_writable(path)
    contents = contents_for(
        wrapped,
        example_inputs,
        example_kwargs=example_kwargs,
        input_names=input_names,
        output_names=output_names,
        dynamic_axes=dynamic_axes,
        preprocessing=preprocessing,
        task=task,
        metadata=metadata,
    )
    data, sizes = container.encode_container(contents)
    # contents_for checked that `wrapped` came from wrap(); binding needs only the signature
    bound = bind_inputs(
        wrapped.plain_template, _as_tuple(example_inputs), dict(example_kwargs or {})
    )
    verify(wrapped, data, bound, _normalizations(preprocessing), str(path))
    write_atomically(path, data)
    return sizes
