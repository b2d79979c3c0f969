"""Evaluation split among processes, and how often training measures its test error."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from stripes import SmallConvNet, stripes

from eprpipe.deploy import evaluate
from eprpipe.errors import EprError
from eprpipe.train.api import InputSpec, compress_module
from eprpipe.train.distributed import World, assemble, own_range
from eprpipe.train.loop import TensorData, TrainConfig, error_rate


@pytest.mark.parametrize("count", [0, 1, 5, 301])
@pytest.mark.parametrize("size", [1, 2, 3, 8])
def test_own_ranges_cover_every_item_once_in_order(count: int, size: int) -> None:
    ranges = [own_range(count, World(rank, size)) for rank in range(size)]
    items = [i for part in ranges for i in range(count)[part]]
    assert items == list(range(count))
    lengths = [len(range(count)[part]) for part in ranges]
    assert max(lengths) - min(lengths) <= 1


def test_eval_batches_of_all_processes_make_the_whole_split() -> None:
    images, labels = stripes(301, 0)
    data = TensorData.from_numpy(images, labels, (0.5,), (0.25,), "cpu")
    whole = torch.cat([x for x, _ in data.eval_batches(World(), batch_size=100)])
    parts = [
        torch.cat([x for x, _ in data.eval_batches(World(rank, 3), batch_size=40)])
        for rank in range(3)
    ]
    assert torch.equal(torch.cat(parts), whole) and len(whole) == 301


def test_a_world_of_one_assembles_its_own_part() -> None:
    assert assemble(np.array([4, 2, 7]), 3, World(), "cpu").tolist() == [4, 2, 7]


def test_eval_every_must_not_be_negative() -> None:
    with pytest.raises(EprError, match="eval_every"):
        TrainConfig(eval_every=-1).validate()


def test_eval_every_zero_skips_the_per_epoch_errors_but_not_the_reported_ones(
    tmp_path: Path,
) -> None:
    torch.manual_seed(0)
    result = compress_module(
        SmallConvNet(), stripes(256, 0), stripes(128, 1), tmp_path / "small.epr",
        input_spec=InputSpec(shape=(1, 6, 6), mean=(0.5,), std=(0.25,)),
        classes=("horizontal", "vertical"),
        config=TrainConfig(epochs=2, batch_size=32, lam=0.1, eval_every=0, progress=False),
        baseline=True,
    )  # fmt: skip
    assert [epoch.test_error for epoch in result.history.epochs] == [None, None]
    assert result.baseline_error is not None and 0 <= result.baseline_error < 0.5
    assert result.evaluation.total == 128 and result.evaluation.error < 0.5


def test_the_torch_evaluation_shows_its_bar_too(monkeypatch, capsys) -> None:
    monkeypatch.setattr(evaluate, "PROGRESS_DELAY_S", 0.0)
    images, labels = stripes(300, 0)
    data = TensorData.from_numpy(images, labels, (0.5,), (0.25,), "cpu")
    error = error_rate(SmallConvNet(), data, progress=True)
    bar = capsys.readouterr().err
    assert 0 <= error <= 1 and "evaluating" in bar and "/300" in bar


def test_a_process_with_no_examples_to_evaluate_gets_no_batches() -> None:
    """More processes than test images: some processes own no part of the split."""
    assert own_range(3, World(0, 4)) == slice(0, 0)
    data = TensorData.from_numpy(
        np.zeros((3, 1, 2, 2), np.float32), np.zeros(3, np.int64), (0.5,), (0.25,), "cpu"
    )
    assert list(data.eval_batches(World(0, 4))) == []
