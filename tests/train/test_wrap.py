"""The training face: `wrap` keeps the module's call, adds the rate term, and trains anywhere."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from torch import nn

from eprpipe.errors import EprError
from eprpipe.train import load_into, save, wrap
from eprpipe.train.reparam import RdftDecoder, ScalarDecoder

ROOT = Path(__file__).resolve().parents[2]


class Scaled(nn.Module):
    """Keyword arguments, a kernel with a k×k footprint and a tied pair."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 4, 3, padding=1)
        self.embed = nn.Embedding(10, 4)
        self.out = nn.Linear(4, 10, bias=False)
        self.out.weight = self.embed.weight

    def forward(self, image: torch.Tensor, tokens: torch.Tensor, *, scale: float = 1.0):
        pooled = self.conv(image).mean((2, 3))
        return self.out(pooled + self.embed(tokens)) * scale


def _inputs() -> tuple[torch.Tensor, torch.Tensor]:
    return torch.rand(3, 2, 5, 5), torch.tensor([1, 2, 3])


def test_wrapped_module_is_called_like_the_module():
    torch.manual_seed(0)
    model = Scaled()
    image, tokens = _inputs()
    with torch.no_grad():
        before = model(image, tokens, scale=2.0)
    wrapped = wrap(model, init_step=1e-4).eval()
    with torch.no_grad():
        after = wrapped(image, tokens, scale=2.0)
    assert torch.allclose(before, after, atol=1e-3)  # latents start from the weights
    decoders = {t.name: type(t.decoder) for t in wrapped.tensors}
    assert decoders == {
        "conv.weight": RdftDecoder,  # "auto": the frequency decoder for 3×3 kernels
        "conv.bias": ScalarDecoder,
        "embed.weight": ScalarDecoder,  # out.weight is the same tensor: one latent, coded once
    }


def test_rate_loss_is_noisy_in_training_and_exact_in_eval():
    wrapped = wrap(Scaled())
    wrapped.train()
    noisy = {float(wrapped.rate_loss().detach()) for _ in range(3)}
    assert len(noisy) == 3
    wrapped.eval()
    exact = wrapped.rate_loss()
    assert float(exact.detach()) == pytest.approx(
        float(wrapped.rate_bits().detach()) / wrapped.num_parameters()
    )
    exact.backward()
    assert all(latent.grad is not None for latent in wrapped.latent_parameters())


def test_param_groups_serve_any_optimizer_and_training_lowers_the_rate():
    torch.manual_seed(0)
    wrapped = wrap(Scaled(), exclude=["conv.bias"])
    groups = wrapped.param_groups(lr=0.1, decoder_lr=1e-3, prior_lr=1e-2, stored_lr=1e-3)
    assert [g["name"] for g in groups] == ["latents", "decoders", "prior", "stored"]
    assert [g["lr"] for g in groups] == [0.1, 1e-3, 1e-2, 1e-3]
    every = {id(p) for g in groups for p in g["params"]}
    assert every == {id(p) for p in wrapped.parameters()}  # each parameter in one group
    optimizer = torch.optim.SGD(groups, momentum=0.9)
    start = float(wrapped.eval().rate_bits().detach())
    wrapped.train()
    for _ in range(60):
        optimizer.zero_grad()
        wrapped.rate_loss().backward()
        optimizer.step()
    assert float(wrapped.eval().rate_bits().detach()) < 0.95 * start


def test_state_dict_restores_a_fresh_wrap():
    torch.manual_seed(0)
    wrapped = wrap(Scaled(), exclude=["conv.bias"], exclude_dtype="float16")
    with torch.no_grad():
        for latent in wrapped.latent_parameters():
            latent.add_(torch.randn_like(latent))
    state = wrapped.state_dict()
    restored = wrap(Scaled(), exclude=["conv.bias"], exclude_dtype="float16")
    restored.load_state_dict(state)
    image, tokens = _inputs()
    with torch.no_grad():
        assert torch.equal(restored.eval()(image, tokens), wrapped.eval()(image, tokens))
    assert float(restored.rate_bits().detach()) == float(wrapped.rate_bits().detach())


def test_excluded_parameters_are_stored_as_asked(tmp_path):
    torch.manual_seed(0)
    wrapped = wrap(Scaled(), exclude=["conv.*"], exclude_dtype="float16").eval()
    assert {s.name for s in wrapped.stored} == {"conv.weight", "conv.bias"}
    path = tmp_path / "m.epr"
    save(wrapped, path, _inputs())
    weights = __import__("eprpipe").load_weights(path)
    assert weights["conv.weight"].dtype.name == "float16"
    assert torch.equal(
        torch.from_numpy(weights["conv.weight"]).float(), wrapped.net.conv.weight.detach()
    )
    assert weights["out.weight"].tobytes() == weights["embed.weight"].tobytes()  # tied again
    fresh = Scaled()
    load_into(fresh, path)
    assert fresh.out.weight is fresh.embed.weight


def test_autocast_keeps_the_decoded_weights_in_float32():
    wrapped = wrap(Scaled())
    image, tokens = _inputs()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        output = wrapped(image, tokens)
        weight = wrapped.net.conv.weight
    assert output.dtype == torch.bfloat16 and weight.dtype == torch.float32
    (output.float().sum() + wrapped.rate_loss()).backward()


def test_bad_modules_and_options_are_named():
    with pytest.raises(EprError, match="no floating-point parameters"):
        wrap(nn.ReLU())
    with pytest.raises(EprError, match="exclude_dtype"):
        wrap(nn.Linear(2, 2), exclude_dtype="int8")
    with pytest.raises(EprError, match="unknown decoder"):
        wrap(nn.Linear(2, 2), decoder="wavelet")
    wrapped = wrap(nn.Linear(2, 2))
    with pytest.raises(EprError, match="plain module"):
        load_into(wrapped.net, ROOT / "spec/vectors/valid/dense-masks.epr")


DDP_SCRIPT = """
import os, torch, torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from eprpipe.train import wrap

dist.init_process_group("gloo")
rank = dist.get_rank()
torch.manual_seed(0)
wrapped = wrap(nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 2)))
model = DistributedDataParallel(wrapped)
optimizer = torch.optim.Adam(wrapped.param_groups())
generator = torch.Generator().manual_seed(100 + rank)  # each process its own data
for _ in range(5):
    x = torch.randn(16, 6, generator=generator)
    loss = model(x).pow(2).mean() + 0.1 * wrapped.rate_loss()
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
flat = torch.cat([p.detach().reshape(-1) for p in wrapped.parameters()])
gathered = [torch.zeros_like(flat) for _ in range(2)]
dist.all_gather(gathered, flat)
assert torch.equal(gathered[0], gathered[1]), "the processes diverged"
if rank == 0:
    print("in step", flat.numel())
dist.destroy_process_group()
"""


def test_wrapped_module_trains_under_ddp(tmp_path):
    script = tmp_path / "ddp.py"
    script.write_text(textwrap.dedent(DDP_SCRIPT))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
         str(script)],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert "in step" in done.stdout


class Branchy(nn.Module):
    """A forward torch.onnx cannot export: control flow on a tensor's value."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x) if x.sum() > 0 else -self.fc(x)


@pytest.mark.parametrize(
    ("build", "inputs", "options", "message"),
    [
        (lambda: nn.Linear(3, 2), (torch.zeros(2, 3), torch.zeros(2, 3)), {}, "do not match"),
        (lambda: nn.Linear(3, 2), (torch.zeros(2, 4),), {}, "Linear"),
        (lambda: nn.Linear(3, 2), (torch.zeros(2, 3),), {"input_names": ["a", "a"]}, "a"),
        (lambda: nn.Linear(3, 2), (torch.zeros(2, 3),), {"output_names": ["weight"]}, "weight"),
        (Branchy, (torch.zeros(2, 3),), {}, "cannot export"),
        (lambda: nn.Linear(3, 2), (torch.zeros(2, 3),), {"task": "ranking"}, "task kind"),
        (lambda: nn.Linear(3, 2), (torch.zeros(2, 3),),
         {"metadata": {"eprpipe.producer": "me"}}, "eprpipe."),
        (lambda: nn.Linear(3, 2), (torch.zeros(2, 3),), {"metadata": {"k": "v" * 70_000}},
         "metadata"),
    ],
)  # fmt: skip
def test_bad_input_to_save_is_named_and_nothing_is_written(
    build, inputs, options, message, tmp_path
):
    path = tmp_path / "model.epr"
    path.write_bytes(b"the user's previous file")
    wrapped = wrap(build())
    with pytest.raises(EprError, match=message):
        save(wrapped, path, inputs, **options)
    assert path.read_bytes() == b"the user's previous file"
    assert [p.name for p in tmp_path.iterdir()] == ["model.epr"]  # no temporary file left


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda m: setattr(m, "weight", nn.Parameter(torch.zeros(2, 3, dtype=torch.cfloat))),
         "complex"),
        (lambda m: setattr(m, "weight", nn.Parameter(torch.zeros(2, 3).to_sparse())), "sparse"),
        (lambda m: m.to("meta"), "meta"),
    ],
)  # fmt: skip
def test_parameters_eprpipe_cannot_represent_are_named(make, message):
    module = nn.Linear(3, 2)
    make(module)
    with pytest.raises(EprError, match=message) as error:
        wrap(module)
    assert "weight" in str(error.value)


def test_save_takes_what_wrap_returned(tmp_path):
    from eprpipe.train.reparam import EPRModel

    with pytest.raises(EprError, match="wrap"):
        save(EPRModel(nn.Linear(3, 2)), tmp_path / "m.epr", torch.zeros(1, 3))
    assert not (tmp_path / "m.epr").exists()
