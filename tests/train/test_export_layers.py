"""Every common layer exports to a weightless graph that runs: filled from the module's own
state_dict by name, checked against the container's graph profile, run in onnxruntime at a
batch size and sequence length other than the example's, and compared with torch."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from export_checks import ATOL, RTOL, assert_matches, flat
from torch import nn

from eprpipe.train.export import export_graph

EXAMPLE, OTHER = (2, 5), (3, 7)  # (batch, sequence length): exported with one, run with the other
SEQUENCE = {0: "batch", 1: "seq"}


def _tokens(batch: int, seq: int) -> torch.Tensor:
    return torch.randint(0, 20, (batch, seq))


class _Tied(nn.Module):
    """A language-model head tied to its embedding: one Parameter under two names."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(20, 8)
        self.mix = nn.Linear(8, 8)
        self.head = nn.Linear(8, 20, bias=False)
        self.head.weight = self.embed.weight

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.head(torch.tanh(self.mix(self.embed(tokens))))


def _batch_norm(module: nn.Module) -> nn.Module:
    """Running statistics that are not the identity, so that the test sees them used."""
    module.running_mean.uniform_(-1, 1)
    module.running_var.uniform_(0.5, 2)
    return module


@dataclass
class Layer:
    build: Callable[[], nn.Module]
    inputs: Callable[[int, int], tuple]  # (batch, sequence length) -> positional arguments
    dynamic_axes: dict | None = None  # None: the default, axis 0 of every input is "batch"
    kwargs: Callable[[int, int], dict] = field(default=lambda batch, seq: {})


def _padding_mask(batch: int, seq: int) -> dict:
    mask = torch.rand(batch, seq) < 0.3
    mask[:, 0] = False  # every sequence keeps one token
    return {"src_key_padding_mask": mask}


LAYERS = {
    "Linear": Layer(lambda: nn.Linear(6, 4), lambda b, s: (torch.randn(b, 6),)),
    "Conv1d": Layer(lambda: nn.Conv1d(3, 4, 3, padding=1), lambda b, s: (torch.randn(b, 3, s),),
                    {"input": {0: "batch", 2: "length"}}),
    "Conv2d": Layer(lambda: nn.Conv2d(3, 4, 3), lambda b, s: (torch.randn(b, 3, s, s + 1),),
                    {"input": {0: "batch", 2: "height", 3: "width"}}),
    "Conv3d": Layer(lambda: nn.Conv3d(2, 3, 3), lambda b, s: (torch.randn(b, 2, 5, 5, 5),)),
    "ConvTranspose1d": Layer(lambda: nn.ConvTranspose1d(3, 4, 3, stride=2),
                             lambda b, s: (torch.randn(b, 3, s),),
                             {"input": {0: "batch", 2: "length"}}),
    "ConvTranspose2d": Layer(lambda: nn.ConvTranspose2d(3, 4, 3, stride=2, padding=1,
                                                        output_padding=1),
                             lambda b, s: (torch.randn(b, 3, 4, 4),)),
    "Embedding": Layer(lambda: nn.Embedding(20, 6), lambda b, s: (_tokens(b, s),),
                       {"input": SEQUENCE}),
    "LayerNorm": Layer(lambda: nn.LayerNorm(6), lambda b, s: (torch.randn(b, s, 6),),
                       {"input": SEQUENCE}),
    "GroupNorm": Layer(lambda: nn.GroupNorm(2, 4), lambda b, s: (torch.randn(b, 4, 3, 3),)),
    "BatchNorm1d": Layer(lambda: _batch_norm(nn.BatchNorm1d(4)),
                         lambda b, s: (torch.randn(b, 4, s),), {"input": {0: "batch", 2: "seq"}}),
    "BatchNorm2d": Layer(lambda: _batch_norm(nn.BatchNorm2d(4)),
                         lambda b, s: (torch.randn(b, 4, 3, 3),)),
    "MultiheadAttention": Layer(lambda: nn.MultiheadAttention(8, 2, batch_first=True),
                                lambda b, s: tuple(torch.randn(b, s, 8) for _ in range(3)),
                                {"query": SEQUENCE, "key": SEQUENCE, "value": SEQUENCE}),
    "MultiheadAttention self, fast path": Layer(
        lambda: nn.MultiheadAttention(8, 2, batch_first=True),
        lambda b, s: (torch.randn(b, s, 8),) * 3,
        {"query": SEQUENCE, "key": SEQUENCE, "value": SEQUENCE},
        lambda b, s: {"need_weights": False}),
    "TransformerEncoderLayer": Layer(
        lambda: nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, batch_first=True),
        lambda b, s: (torch.randn(b, s, 8),),
        {"src": SEQUENCE, "src_key_padding_mask": SEQUENCE}, _padding_mask),
    "GRU": Layer(lambda: nn.GRU(4, 6, num_layers=2, batch_first=True),
                 lambda b, s: (torch.randn(b, s, 4),), {"input": SEQUENCE}),
    "LSTM": Layer(lambda: nn.LSTM(4, 6, num_layers=2, batch_first=True),
                  lambda b, s: (torch.randn(b, s, 4),), {"input": SEQUENCE}),
    "tied Embedding and Linear": Layer(_Tied, lambda b, s: (_tokens(b, s),),
                                       {"tokens": SEQUENCE}),
}  # fmt: skip


@pytest.mark.parametrize("name", LAYERS)
def test_every_common_layer_runs_from_its_state_dict(name: str) -> None:
    torch.manual_seed(0)
    layer = LAYERS[name]
    module = layer.build().eval()
    exported = export_graph(
        module,
        layer.inputs(*EXAMPLE),
        set(module.state_dict()),
        example_kwargs=layer.kwargs(*EXAMPLE),
        dynamic_axes=layer.dynamic_axes,
    )
    assert all(spec.shape[0] == "batch" for spec in exported.inputs)
    assert_matches(exported, module, layer.inputs(*OTHER), layer.kwargs(*OTHER))


def test_tied_weights_are_one_initializer_under_the_canonical_name() -> None:
    module = _Tied()
    names = {name for name, _ in module.named_parameters()}  # canonical names only
    exported = export_graph(module, _tokens(*EXAMPLE), names, dynamic_axes={"tokens": SEQUENCE})
    assert exported.tied_tensors == {"head.weight": "embed.weight"}
    initializers = [init.name for init in onnx.load_from_string(exported.graph).graph.initializer]
    assert "embed.weight" in initializers and "head.weight" not in initializers
    assert len(initializers) == len(set(initializers))


def test_the_graph_reads_the_state_dict_names_of_recurrent_weights() -> None:
    """No folded or renamed copy: every weight of a GRU is a data-less initializer by name."""
    module = nn.GRU(4, 6, batch_first=True)
    exported = export_graph(module, torch.randn(2, 5, 4), set(module.state_dict()))
    graph = onnx.load_from_string(exported.graph).graph
    assert {init.name for init in graph.initializer if not init.raw_data} == set(
        module.state_dict()
    )
    assert exported.outputs[0].shape == ("batch", 5, 6)  # only axis 0 was declared dynamic


@pytest.mark.parametrize("kind", [nn.GRU, nn.LSTM])
def test_a_second_recurrent_export_keeps_the_sequence_dynamic(kind: type[nn.Module]) -> None:
    """torch.onnx leaves its while-loop RNN kernel's dispatch cache behind (see
    export._forget_rnn_kernels): without clearing it, the second export fixed the length."""
    for _ in range(2):
        module = kind(4, 6, batch_first=True).eval()
        exported = export_graph(module, torch.randn(2, 5, 4), set(module.state_dict()),
                                dynamic_axes={"input": SEQUENCE})  # fmt: skip
        assert exported.inputs[0].shape == ("batch", "seq", 4)
        assert exported.outputs[0].shape == ("batch", "seq", 6)
        assert_matches(exported, module, (torch.randn(*OTHER, 4),))


@pytest.mark.parametrize("name", LAYERS)
def test_every_common_layer_is_reparameterized_saved_and_decoded(name: str, tmp_path) -> None:
    """Through EPR: every float parameter becomes latents (tied ones once), the saved file's
    decoded model computes what the wrapped module computes at another batch size and
    sequence length, and `load_into` gives a plain module the same weights."""
    import eprpipe
    from eprpipe.train import load_into, save, wrap

    torch.manual_seed(0)
    layer = LAYERS[name]
    wrapped = wrap(layer.build())
    with torch.no_grad():  # latents away from their start, so that decoding matters
        for latent in wrapped.latent_parameters():
            latent.add_(torch.randint_like(latent, -2, 3))
    parameters = {id(p) for p in wrapped.plain_template.parameters()}
    assert len(wrapped.tensors) == len(parameters)  # each parameter once, tied ones too
    path = tmp_path / "layer.epr"
    save(
        wrapped, path, layer.inputs(*EXAMPLE),
        example_kwargs=layer.kwargs(*EXAMPLE), dynamic_axes=layer.dynamic_axes,
    )  # fmt: skip
    args, kwargs = layer.inputs(*OTHER), layer.kwargs(*OTHER)
    tensors = [t for t in (*args, *kwargs.values()) if isinstance(t, torch.Tensor)]
    runner = ort.InferenceSession(
        eprpipe.decode(path).SerializeToString(), providers=["CPUExecutionProvider"]
    )
    got = runner.run(
        None, {v.name: t.numpy() for v, t in zip(runner.get_inputs(), tensors, strict=True)}
    )
    with torch.no_grad():
        expected = flat(wrapped.eval()(*args, **kwargs))
        for mine, theirs in zip(got, expected, strict=True):
            np.testing.assert_allclose(mine, theirs.numpy(), rtol=RTOL, atol=ATOL)
        plain = layer.build()
        load_into(plain, path)
        for mine, theirs in zip(got, flat(plain.eval()(*args, **kwargs)), strict=True):
            np.testing.assert_allclose(mine, theirs.numpy(), rtol=RTOL, atol=ATOL)
