"""The torch reparameterization against the numpy decoders the file is decoded with."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from eprpipe.format.paramdecode import decode_rdft, decode_scalar
from eprpipe.train.reparam import EPRModel, RdftDecoder, ScalarDecoder, ste_float16, ste_round


class TwoLayer(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 4, 3)
        self.fc = nn.Linear(4 * 4 * 4, 3)

    def forward(self, x):
        return self.fc(torch.relu(self.conv(x)).flatten(1))


def test_straight_through_round_passes_gradient():
    x = torch.tensor([0.2, 1.7, -2.5], requires_grad=True)
    y = ste_round(x)
    y.sum().backward()
    assert y.tolist() == [0.0, 2.0, -2.0]
    assert x.grad.tolist() == [1.0, 1.0, 1.0]


@pytest.mark.parametrize("decoder", ["rdft", "sq"])
def test_latents_start_from_the_module_weights(decoder):
    torch.manual_seed(0)
    net = TwoLayer()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    model = EPRModel(net, decoder=decoder, init_step=1e-4)
    for name, value in before.items():
        module_name, _, attribute = name.rpartition(".")
        after = getattr(net.get_submodule(module_name), attribute)
        # Rounding to a 1e-4 grid moves each weight by at most half a step (plus float error).
        assert torch.allclose(after, value, atol=1e-4), name
    kinds = {t.name: type(t.decoder) for t in model.tensors}
    expected = RdftDecoder if decoder == "rdft" else ScalarDecoder
    assert kinds["conv.weight"] is expected
    assert kinds["fc.weight"] is ScalarDecoder


def test_torch_decoders_agree_with_the_file_arithmetic():
    torch.manual_seed(1)
    net = TwoLayer()
    model = EPRModel(net, decoder="rdft", init_step=0.01)
    latents = model.integer_latents()
    for tensor in model.tensors:
        weight = getattr(tensor.module, tensor.attribute).detach().numpy()
        if isinstance(tensor.decoder, RdftDecoder):
            steps = tensor.decoder.steps().detach().numpy().astype(np.float16)
            reference = decode_rdft(steps, latents[tensor.name])
        else:
            reference = decode_scalar(float(tensor.decoder.step().detach()), latents[tensor.name])
        np.testing.assert_allclose(weight, reference, rtol=1e-5, atol=1e-6)


def test_rate_is_positive_and_trainable():
    torch.manual_seed(2)
    model = EPRModel(TwoLayer(), decoder="rdft", prior="factorized")
    bits = model.rate_bits("noise")
    assert bits.item() > 0
    bits.backward()
    grads = [p.grad for p in model.prior_parameters()]
    assert any(g is not None and g.abs().sum() > 0 for g in grads)
    assert all(t.latent.grad is not None for t in model.tensors)


@pytest.mark.parametrize("prior", ["factorized", "logistic"])
def test_more_concentrated_latents_cost_fewer_bits(prior):
    torch.manual_seed(3)
    model = EPRModel(TwoLayer(), prior=prior)
    wide = model.rate_bits("round").item()
    with torch.no_grad():
        for tensor in model.tensors:
            tensor.latent.mul_(0.1)
    narrow = model.rate_bits("round").item()
    assert narrow < wide


def test_unknown_decoder_is_a_clear_error():
    from eprpipe.errors import EprError

    with pytest.raises(EprError, match="unknown decoder"):
        EPRModel(TwoLayer(), decoder="wavelet")


@pytest.mark.parametrize("prior", ["factorized", "logistic"])
def test_interpolated_rate_matches_the_exact_density(prior):
    from eprpipe.train.priors import PRIORS, interpolated_bits

    torch.manual_seed(4)
    density = PRIORS[prior](5, init_scale=4.0)
    values = (torch.randn(5, 4000) * 3 + torch.arange(5)[:, None]).requires_grad_(True)
    exact = density.bits(values)
    group_ids = torch.arange(5).repeat_interleave(4000)
    approx = interpolated_bits(density, values.reshape(-1), group_ids)
    assert abs(float(approx.detach()) / float(exact.detach()) - 1) < 1e-4
    (grad_exact,) = torch.autograd.grad(exact, values)
    (grad_approx,) = torch.autograd.grad(approx, values)
    assert float((grad_exact - grad_approx).norm() / grad_exact.norm()) < 0.02
    integers = torch.round(values.detach())
    exact_integers = density.bits(integers)
    at_integers = interpolated_bits(density, integers.reshape(-1), group_ids, per_unit=1)
    assert torch.allclose(at_integers, exact_integers, rtol=1e-6)


def test_one_node_grid_lerp_matches_gathers_and_lerp():
    """The fused rate node against the lerp of two gathers it replaces: value and gradients."""
    from eprpipe.train.priors import _GridLerp

    torch.manual_seed(5)
    groups, points, per_unit, low = 3, 41, 4, -6.0
    grid = torch.rand(groups * points, dtype=torch.float64, requires_grad=True)
    group_ids = torch.randint(0, groups, (5000,))
    # Values over the whole span, grid points and the last interval's top end included.
    values = low + (torch.rand(5000, dtype=torch.float64) * (points - 1)) / per_unit
    values[:3] = torch.tensor([low, low + 2.5, low + (points - 1) / per_unit])
    values.requires_grad_(True)
    ours = _GridLerp.apply(values, grid, group_ids.to(torch.int32), low, per_unit, points)
    position = (values - low) * per_unit
    index = position.detach().long().clamp(0, points - 2) + group_ids * points
    fraction = position - index.remainder(points)
    reference = torch.lerp(grid[index], grid[index + 1], fraction).sum()
    torch.testing.assert_close(ours, reference)
    for ours_grad, reference_grad in zip(
        torch.autograd.grad(ours, (values, grid)),
        torch.autograd.grad(reference, (values, grid)),
        strict=True,
    ):
        torch.testing.assert_close(ours_grad, reference_grad)


def _reference_decode(decoder: ScalarDecoder | RdftDecoder, latent: torch.Tensor) -> torch.Tensor:
    """The decode spelled out from its straight-through parts, as the paper defines it."""
    rounded = ste_round(latent)
    if isinstance(decoder, ScalarDecoder):
        return rounded * ste_float16(decoder.log_step.exp())
    scaled = ste_float16(decoder.log_steps.exp()).reshape(-1, 1) * decoder.basis
    return (rounded.reshape(-1, decoder.basis.shape[0]) @ scaled).reshape(latent.shape)


@pytest.mark.parametrize(
    ("decoder", "shape"),
    [(ScalarDecoder(0.03), (5, 7)), (RdftDecoder((3, 3), 0.03), (4, 6, 3, 3)),
     (RdftDecoder((5, 3), 0.03), (2, 3, 5, 3))],
)  # fmt: skip
def test_one_node_decode_matches_its_straight_through_parts(decoder, shape):
    torch.manual_seed(0)
    with torch.no_grad():
        for parameter in decoder.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.3)
    latent = (torch.randn(shape) * 6).requires_grad_()
    upstream = torch.randn(shape)
    gradients = []
    for decode in (decoder, lambda x: _reference_decode(decoder, x)):
        decoded = decode(latent)
        decoded.backward(upstream)
        gradients.append((decoded.detach(), latent.grad, next(decoder.parameters()).grad))
        latent.grad = None
        decoder.zero_grad(set_to_none=True)
    (ours, ours_latent, ours_steps), (reference, ref_latent, ref_steps) = gradients
    assert torch.equal(ours, reference)
    torch.testing.assert_close(ours_latent, ref_latent)
    torch.testing.assert_close(ours_steps, ref_steps, rtol=1e-5, atol=1e-6)


class ReadsItsWeightTwice(nn.Module):
    """A layer whose forward reads its weight twice, as weight-tied layers do."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3, 3)

    def forward(self, x):
        return x @ self.fc.weight.T + x @ self.fc.weight + self.fc.bias


def test_every_weight_is_decoded_once_before_the_wrapped_forward_starts():
    torch.manual_seed(0)
    net = nn.Sequential(TwoLayer(), ReadsItsWeightTwice())
    model = EPRModel(net)
    events: list[str] = []
    net.register_forward_pre_hook(lambda *_: events.append("forward starts"))
    for tensor in model.tensors:
        tensor.decoder.register_forward_hook(lambda *_, name=tensor.name: events.append(name))
    output = model(torch.randn(2, 2, 6, 6))
    decoded = sorted(t.name for t in model.tensors)
    assert sorted(events[:-1]) == decoded and events[-1] == "forward starts"
    # The decoded weights are the ones the layers use: gradients reach every latent.
    output.sum().backward()
    assert all(t.latent.grad is not None for t in model.tensors)
    # Outside the forward each access decodes afresh: nothing stale is kept between steps.
    events.clear()
    assert net[1].fc.weight.shape == (3, 3)
    assert events == ["1.fc.weight"]


def test_histogram_bits_count_each_group_under_its_own_histogram():
    """A scalar tensor is one group; an rdft tensor one group per frequency."""
    from eprpipe.format.coding import empirical_bits

    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.Flatten(), nn.Linear(4, 2))
    model = EPRModel(net, decoder="rdft")
    with torch.no_grad():
        for latent in model.latent_parameters():
            latent.copy_(torch.randint(-3, 4, latent.shape).float())
    expected = 0.0
    for tensor in model.tensors:
        latents = torch.round(tensor.latent.detach()).long().numpy()
        groups = 9 if tensor.name == "0.weight" else 1
        expected += sum(empirical_bits(c) for c in latents.reshape(-1, groups).T)
    assert model.histogram_bits() == pytest.approx(expected)
    assert model.histogram_bits() < float(model.rate_bits().detach())  # no density beats it
