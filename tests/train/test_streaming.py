"""Training from image files (DataLoader workers) gives what training from memory gives."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from stripes import CLASSES, FLIP, SPEC, SmallConvNet, as_files, as_uint8, stripes

from eprpipe.data.datasets import ImageFiles, prepare_files
from eprpipe.deploy.evaluate import evaluate_model, evaluate_split
from eprpipe.errors import DataError, EprError
from eprpipe.train import checkpoint as checkpoint_module
from eprpipe.train.api import compress_module
from eprpipe.train.checkpoint import CheckpointPolicy
from eprpipe.train.distributed import World
from eprpipe.train.loader import FileData
from eprpipe.train.loop import TensorData, TrainConfig

CONFIG = TrainConfig(epochs=2, batch_size=32, lam=0.1, decoder="rdft", progress=False)
ONE = World()


@pytest.fixture(scope="module")
def splits(tmp_path_factory):
    root = tmp_path_factory.mktemp("files")
    train, test = as_uint8(stripes(256, 0)), as_uint8(stripes(96, 1))
    return train, test, as_files(train, root / "train"), as_files(test, root / "test")


def _compress(path: Path, train, test, config=CONFIG, **options):
    torch.manual_seed(0)
    return compress_module(
        SmallConvNet(), train, test, path, input_spec=SPEC, classes=CLASSES, config=config,
        baseline=False, **options,
    )  # fmt: skip


@pytest.mark.parametrize("workers", [0, 2])
def test_files_train_to_the_same_bytes_as_arrays(tmp_path: Path, splits, workers: int) -> None:
    train, test, train_files, test_files = splits
    in_memory = _compress(tmp_path / "memory.epr", train, test)
    streamed = _compress(tmp_path / "files.epr", train_files, test_files, workers=workers)
    assert (tmp_path / "files.epr").read_bytes() == (tmp_path / "memory.epr").read_bytes()
    assert streamed.evaluation == in_memory.evaluation
    assert in_memory.evaluation.error < 0.2


def test_random_views_do_not_depend_on_workers(splits) -> None:
    _, _, train_files, _ = splits
    plan = [torch.arange(i, 256, 7)[:20] for i in range(5)]

    def batches(workers: int) -> list[torch.Tensor]:
        data = FileData(train_files, SPEC.mean, SPEC.std, "cpu", workers)
        return [images for images, _ in data.batches(plan, 3, FLIP, (0, 1), ONE)]

    serial, parallel = batches(0), batches(2)
    assert all(torch.equal(a, b) for a, b in zip(serial, parallel, strict=True))
    plain = [images for images, _ in FileData(train_files, SPEC.mean, SPEC.std, "cpu", 0).batches(
        plan, 3, None, (0, 1), ONE)]  # fmt: skip
    flipped = sum(not torch.equal(a, b) for a, b in zip(serial, plain, strict=True))
    assert flipped == len(plan)  # 20 images a batch, each mirrored with probability 1/2


def test_files_match_arrays_batch_for_batch(splits) -> None:
    train, _, train_files, _ = splits
    memory = TensorData.from_numpy(*train, SPEC.mean, SPEC.std, "cpu")
    files = FileData(train_files, SPEC.mean, SPEC.std, "cpu", 0)
    plan = [torch.tensor([5, 0, 255]), torch.tensor([17])]
    for (a, la), (b, lb) in zip(
        memory.batches(plan, 0, None, (0,), ONE),
        files.batches(plan, 0, None, (0,), ONE),
        strict=True,
    ):
        assert torch.equal(a, b) and torch.equal(la, lb)
    assert sum(len(y) for _, y in files.eval_batches(ONE, 100)) == 256


def test_interrupted_streaming_run_resumes_to_the_same_file(
    tmp_path: Path, splits, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, _, train_files, test_files = splits
    config = dataclasses.replace(CONFIG, augmentation=FLIP, epochs=3)
    _compress(tmp_path / "whole.epr", train_files, test_files, config, workers=2)
    policy = CheckpointPolicy(tmp_path / "run.ckpt", every_steps=5, every_seconds=None)
    original = checkpoint_module.Checkpointer.save
    saves = []

    class Crash(Exception):
        pass

    def save_then_crash(self, phase: str, state: dict) -> None:
        original(self, phase, state)
        saves.append(phase)
        if len(saves) == 3:
            raise Crash

    monkeypatch.setattr(checkpoint_module.Checkpointer, "save", save_then_crash)
    with pytest.raises(Crash):
        _compress(tmp_path / "run.epr", train_files, test_files, config, workers=2,
                  checkpoint=policy)  # fmt: skip
    resumed = dataclasses.replace(policy, resume=True)
    _compress(tmp_path / "run.epr", train_files, test_files, config, workers=2, checkpoint=resumed)
    assert (tmp_path / "run.epr").read_bytes() == (tmp_path / "whole.epr").read_bytes()


def test_batch_augmentations_are_refused_for_files(splits) -> None:
    _, _, train_files, _ = splits
    data = FileData(train_files, SPEC.mean, SPEC.std, "cpu", 0)
    with pytest.raises(EprError, match=r"'crop4-flip' transforms in-memory batches.*test-flip"):
        next(data.batches([torch.tensor([0])], 0, "crop4-flip", (0,), ONE))
    with pytest.raises(EprError, match="unknown augmentation 'mixup' for these image files"):
        data.check_augmentation("mixup")


def test_streamed_evaluation_equals_in_memory(tmp_path: Path, splits) -> None:
    from eprpipe.format.api import decode

    train, test, _, test_files = splits
    _compress(tmp_path / "m.epr", train, test)
    model = decode(tmp_path / "m.epr")
    assert evaluate_split(model, test_files) == evaluate_model(model, *test)


def test_a_reader_returning_the_wrong_shape_is_named(splits) -> None:
    _, _, train_files, _ = splits
    wrong = dataclasses.replace(train_files, size=(5, 5))
    with pytest.raises(DataError, match=r"00000\.npy: the reader returned uint8 \(1, 6, 6\)"):
        wrong.read_batch(np.array([0]))
    with pytest.raises(EprError, match="need a size"):
        FileData(dataclasses.replace(train_files, size=None), SPEC.mean, SPEC.std, "cpu")


def _interleave(shares: list[torch.Tensor]) -> torch.Tensor:
    """Rebuild a global batch from the shares of processes 0, 1, …: rank r held r, r + size…"""
    whole = torch.empty((sum(len(s) for s in shares), *shares[0].shape[1:]), dtype=shares[0].dtype)
    for rank, share in enumerate(shares):
        whole[rank :: len(shares)] = share
    return whole


@pytest.mark.parametrize("source", ["memory", "files"])
def test_an_image_gets_the_same_view_however_many_processes_share_its_batch(splits, source):
    train, _, train_files, _ = splits
    if source == "memory":
        data = TensorData.from_numpy(*train, SPEC.mean, SPEC.std, "cpu")
        augmentation = "crop4-flip"
    else:
        data, augmentation = FileData(train_files, SPEC.mean, SPEC.std, "cpu", 0), FLIP
    plan = [torch.randperm(256, generator=torch.Generator().manual_seed(s))[:31] for s in (1, 2)]
    alone = list(data.batches(plan, 5, augmentation, (0, 1), ONE))
    shared = [list(data.batches(plan, 5, augmentation, (0, 1), World(r, 2))) for r in (0, 1)]
    for step, (images, labels) in enumerate(alone):
        assert torch.equal(_interleave([shared[r][step][0] for r in (0, 1)]), images)
        assert torch.equal(_interleave([shared[r][step][1] for r in (0, 1)]), labels)
    unaugmented = data.batches(plan, 5, None, (0, 1), ONE)
    assert not all(torch.equal(a, b) for (a, _), (b, _) in zip(unaugmented, alone, strict=True))


@pytest.mark.parametrize(
    ("cores", "processes", "expected"), [(2, 1, 2), (16, 1, 8), (16, 4, 4), (2, 4, 1)]
)
def test_default_workers_share_the_cores_among_local_processes(
    monkeypatch: pytest.MonkeyPatch, cores: int, processes: int, expected: int
) -> None:
    from eprpipe.train import loader

    monkeypatch.setattr(loader.os, "sched_getaffinity", lambda _: set(range(cores)), raising=False)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", str(processes))
    assert loader.default_workers() == expected


def test_held_out_files_are_spread_over_the_split() -> None:
    """Files are listed class by class: the held-out set must not be the last class only."""
    from eprpipe.train.images import HELD_OUT_EXAMPLES, held_out_images

    def read_label(path: str, size, rng) -> np.ndarray:
        return np.full((1, *size), int(path) // 1000, dtype=np.uint8)  # 1,000 files per class

    n = 5000
    labels = np.arange(n, dtype=np.int64) // 1000
    files = ImageFiles(tuple(str(i) for i in range(n)), labels, tuple("abcde"), read_label, 1)
    held_out, count = held_out_images(prepare_files(files, (1, 2, 2)), ONE)
    assert len(held_out) == count == HELD_OUT_EXAMPLES
    assert np.bincount(held_out[:, 0, 0, 0]).tolist() == [200] * 5
    parts = [held_out_images(prepare_files(files, (1, 2, 2)), World(r, 3)) for r in range(3)]
    assert np.array_equal(np.concatenate([part for part, _ in parts]), held_out)


def test_an_empty_plan_streams_nothing_even_with_workers(splits) -> None:
    """A run resumed at the very end of an epoch has no steps left in it."""
    _, _, train_files, _ = splits
    data = FileData(train_files, SPEC.mean, SPEC.std, "cpu", 2)
    assert list(data.batches([], 8, FLIP, (0, 1), ONE)) == []
