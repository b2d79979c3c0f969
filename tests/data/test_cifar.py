"""The cifar10 plugin (directory and archive forms, hostile archives) and batch augmentation.

Every test writes its own tiny CIFAR-10 files; only `test_real_cifar10_archive` uses the real
archive, and it is skipped where ../shared is absent.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
from cifar_files import Batches, fake_batches, record_bytes, write_folder
from torch_free import run_without_torch

from eprpipe.data.datasets import ImageSplit, prepare
from eprpipe.errors import DataError, EprError
from eprpipe.plugins.manager import get_dataset
from eprpipe_builtins import cifar, download

try:
    import torch

    from eprpipe.train.augment import AUGMENTATIONS, augment, crop_flip
    from eprpipe.train.loop import TensorData
except ImportError:  # an eval-only install: the loader tests still run
    torch = None

SHARED_ARCHIVE = (
    Path(__file__).resolve().parents[3] / "shared" / "datasets" / "cifar10" / cifar.ARCHIVE
)


@pytest.fixture(autouse=True)
def _no_downloads(monkeypatch):
    monkeypatch.delenv("EPRPIPE_DOWNLOAD", raising=False)
    monkeypatch.delenv("EPRPIPE_DATA_DIR", raising=False)


# --- fake CIFAR-10 files ----------------------------------------------------------------------


def _add(archive: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    archive.addfile(info, io.BytesIO(data))


def write_archive(path: Path, batches: Batches, extra: dict[str, bytes] | None = None) -> Path:
    """A .tar.gz laid out like the official one, with ``extra`` members before the batches."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as archive:
        folder = tarfile.TarInfo(cifar.FOLDER)
        folder.type = tarfile.DIRTYPE
        archive.addfile(folder)
        members = (extra or {}) | {n: record_bytes(*batch) for n, batch in batches.items()}
        members["batches.meta.txt"] = "\n".join(cifar.CLASSES).encode()
        for name, data in members.items():
            _add(archive, f"{cifar.FOLDER}/{name}", data)
    return path


def expected(batches: Batches, split: str) -> tuple[np.ndarray, np.ndarray]:
    chosen = [batches[name] for name in cifar.BATCHES[split]]
    return np.concatenate([b[0] for b in chosen]), np.concatenate([b[1] for b in chosen])


# --- loading -----------------------------------------------------------------------------------


@pytest.mark.parametrize("layout", ["folder", "loose files", "archive", "archive as data dir"])
def test_round_trip(tmp_path, layout):
    batches = fake_batches()
    if layout == "folder":
        write_folder(tmp_path / cifar.FOLDER, batches)
    elif layout == "loose files":
        write_folder(tmp_path, batches)
    else:
        write_archive(tmp_path / cifar.ARCHIVE, batches)
    data_dir = tmp_path / cifar.ARCHIVE if layout == "archive as data dir" else tmp_path
    before = sorted(tmp_path.rglob("*"))
    for split, n in (("train", 15), ("test", 4)):
        loaded = get_dataset("cifar10").load(split, data_dir)
        labels, images = expected(batches, split)
        assert loaded.images.shape == (n, 3, 32, 32) and loaded.images.dtype == np.uint8
        assert loaded.labels.dtype == np.int64
        np.testing.assert_array_equal(loaded.labels, labels)
        np.testing.assert_array_equal(loaded.images, images)
    assert sorted(tmp_path.rglob("*")) == before  # nothing extracted or written


def test_record_layout_is_label_then_red_green_blue_planes_row_major(tmp_path):
    record = np.zeros(cifar.RECORD_BYTES, np.uint8)
    record[0] = 7
    record[1:1025] = 10
    record[1025:2049] = 20
    record[2049:] = np.repeat(np.arange(32), 32)  # blue = row index
    batches = fake_batches()
    folder = write_folder(tmp_path, batches)
    (folder / "test_batch.bin").write_bytes(record.tobytes())
    test = cifar.load("test", tmp_path)
    assert test.labels.tolist() == [7]
    assert (test.images[0, 0] == 10).all() and (test.images[0, 1] == 20).all()
    np.testing.assert_array_equal(test.images[0, 2], np.arange(32)[:, None].repeat(32, 1))


def test_user_archive_with_another_checksum_and_1000_test_images_is_accepted(tmp_path):
    path = write_archive(tmp_path / cifar.ARCHIVE, fake_batches(per_batch=1, n_test=1000))
    assert hashlib.md5(path.read_bytes()).hexdigest() != cifar.MD5
    assert len(cifar.load("test", tmp_path).labels) == 1000


def test_data_dir_root_and_environment(tmp_path, monkeypatch):
    write_archive(tmp_path / "cifar10" / cifar.ARCHIVE, fake_batches())
    assert len(cifar.load("test", tmp_path).labels) == 4
    monkeypatch.setenv("EPRPIPE_DATA_DIR", str(tmp_path))
    assert len(cifar.load("test", None).labels) == 4


def test_folder_is_preferred_and_a_partial_folder_falls_back_to_the_archive(tmp_path):
    write_archive(tmp_path / cifar.ARCHIVE, fake_batches(seed=1))
    write_folder(tmp_path / cifar.FOLDER, {"test_batch.bin": fake_batches()["test_batch.bin"]})
    folder_images = fake_batches()["test_batch.bin"][1]
    np.testing.assert_array_equal(cifar.load("test", tmp_path).images, folder_images)
    assert len(cifar.load("train", tmp_path).labels) == 15  # from the archive


def test_spec():
    spec = get_dataset("cifar10")
    assert spec.classes[0] == "airplane" and spec.classes[-1] == "truck"
    assert spec.image_shape == (3, 32, 32)
    assert len(spec.mean) == len(spec.std) == 3
    assert spec.augmentation == "crop4-flip"
    assert get_dataset("digits").augmentation is None


# --- missing data, downloads -------------------------------------------------------------------


def test_missing_data_is_one_line_naming_file_and_dirs(tmp_path):
    with pytest.raises(DataError) as caught:
        cifar.load("train", tmp_path)
    message = str(caught.value)
    assert message.startswith(
        f"cifar10: missing data_batch_1.bin and {cifar.ARCHIVE} in {tmp_path}; put the CIFAR-10"
    )
    assert "--data-dir" in message and "EPRPIPE_DOWNLOAD=1" in message and "\n" not in message


def test_missing_file_of_a_partial_folder_is_named(tmp_path):
    write_folder(tmp_path / cifar.FOLDER, {"data_batch_1.bin": fake_batches()["data_batch_1.bin"]})
    with pytest.raises(
        DataError, match=rf"missing data_batch_2\.bin in \S+/{cifar.FOLDER} and {cifar.ARCHIVE} in"
    ):
        cifar.load("train", tmp_path)


def test_no_network_unless_asked(tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("network used")

    monkeypatch.setattr(download.urllib.request, "urlopen", refuse)
    with pytest.raises(DataError, match="EPRPIPE_DOWNLOAD=1"):
        cifar.load("test", tmp_path / "data")
    assert not (tmp_path / "data").exists()


def _file_mirror(tmp_path: Path, monkeypatch, md5: str | None = None) -> None:
    """Point the download at a local archive (file:// URL) with ``md5`` (default: the right one)."""
    source = write_archive(tmp_path / "mirror" / cifar.ARCHIVE, fake_batches())
    monkeypatch.setattr(cifar, "URL", source.as_uri())
    monkeypatch.setattr(cifar, "MD5", md5 or hashlib.md5(source.read_bytes()).hexdigest())
    monkeypatch.setenv("EPRPIPE_DOWNLOAD", "1")


def test_download_verifies_md5_and_saves_the_archive(tmp_path, monkeypatch):
    _file_mirror(tmp_path, monkeypatch)
    assert len(cifar.load("train", tmp_path / "data").labels) == 15
    assert [p.name for p in (tmp_path / "data").iterdir()] == [cifar.ARCHIVE]


def test_download_with_wrong_md5_saves_nothing(tmp_path, monkeypatch):
    _file_mirror(tmp_path, monkeypatch, md5="0" * 32)
    with pytest.raises(DataError, match="has md5"):
        cifar.load("test", tmp_path / "data")
    assert not (tmp_path / "data").exists()


def test_failed_download_is_a_data_error(tmp_path, monkeypatch):
    monkeypatch.setenv("EPRPIPE_DOWNLOAD", "1")
    monkeypatch.setattr(cifar, "URL", (tmp_path / "nowhere.tar.gz").as_uri())
    with pytest.raises(DataError, match=r"download from .* failed"):
        cifar.load("test", tmp_path / "data")


# --- damaged and hostile files -----------------------------------------------------------------


def _header_only(name: str, size: int) -> bytes:
    """A tar holding one header that promises ``size`` bytes and no data at all."""
    info = tarfile.TarInfo(f"{cifar.FOLDER}/{name}")
    info.size = size
    return info.tobuf(format=tarfile.GNU_FORMAT)


def _link(name: str, target: str, kind: bytes) -> bytes:
    info = tarfile.TarInfo(f"{cifar.FOLDER}/{name}")
    info.type, info.linkname = kind, target
    return info.tobuf() + bytes(1024)


def _hostile_archives() -> dict[str, tuple[bytes, str]]:
    """Name -> (raw archive bytes, expected message part)."""
    good = record_bytes(*fake_batches()["test_batch.bin"])
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        _add(archive, f"{cifar.FOLDER}/test_batch.bin", good)
        _add(archive, f"{cifar.FOLDER}/test_batch.bin", good)
    duplicate = buffer.getvalue()
    directory = tarfile.TarInfo(f"{cifar.FOLDER}/test_batch.bin")
    directory.type = tarfile.DIRTYPE
    bad_label = bytearray(good)
    bad_label[0] = 10
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        _add(archive, f"{cifar.FOLDER}/test_batch.bin", bytes(bad_label))
    return {
        "symlink": (_link("test_batch.bin", "/etc/passwd", tarfile.SYMTYPE), "not a regular"),
        "hard link": (_link("test_batch.bin", "readme.html", tarfile.LNKTYPE), "not a regular"),
        "directory": (directory.tobuf() + bytes(1024), "not a regular"),
        "oversized": (_header_only("test_batch.bin", 10_001 * 3073), "not 1..10000 records"),
        "huge": (_header_only("test_batch.bin", 1 << 40), "not 1..10000 records"),
        "wrong record size": (_header_only("test_batch.bin", 3072), "not 1..10000 records"),
        "empty batch": (_header_only("test_batch.bin", 0), "not 1..10000 records"),
        "truncated member": (_header_only("test_batch.bin", 3073), "cannot read archive"),
        "duplicate": (duplicate, "appears twice"),
        "label out of range": (buffer.getvalue(), "label 10 >= 10"),
        "no members": (bytes(1024), "no cifar-10-batches-bin/test_batch.bin"),
        "not a tar": (b"plain bytes, not an archive" * 40, "cannot read archive"),
    }


@pytest.mark.parametrize("case", sorted(_hostile_archives()))
@pytest.mark.parametrize("gzipped", [True, False])
def test_hostile_archive_is_a_clean_data_error(tmp_path, case, gzipped):
    data, message = _hostile_archives()[case]
    path = tmp_path / cifar.ARCHIVE
    path.write_bytes(gzip.compress(data) if gzipped else data)
    with pytest.raises(DataError, match=message) as caught:
        cifar.load("test", tmp_path)
    assert str(caught.value).startswith(str(path))
    assert [p.name for p in tmp_path.iterdir()] == [cifar.ARCHIVE]  # nothing extracted


def test_truncated_gzip_is_a_data_error(tmp_path):
    path = write_archive(tmp_path / cifar.ARCHIVE, fake_batches())
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(DataError, match="cannot read archive"):
        cifar.load("test", tmp_path)


def test_member_count_and_skipped_bytes_are_bounded(tmp_path, monkeypatch):
    extra = {f"junk{i}.txt": bytes(10_000) for i in range(5)}
    write_archive(tmp_path / cifar.ARCHIVE, fake_batches(), extra=extra)
    monkeypatch.setattr(cifar, "MAX_MEMBERS", 4)
    with pytest.raises(DataError, match="more than 4 members"):
        cifar.load("test", tmp_path)
    monkeypatch.setattr(cifar, "MAX_MEMBERS", 1000)
    monkeypatch.setattr(cifar, "MAX_SKIPPED_BYTES", 40_000)
    with pytest.raises(DataError, match=r"40000 bytes in members other than test_batch\.bin"):
        cifar.load("test", tmp_path)


@pytest.mark.parametrize(
    ("size", "label", "match"), [(3072, 0, "not 1..10000"), (3073, 10, "label 10")]
)
def test_damaged_batch_file_names_the_file(tmp_path, size, label, match):
    write_folder(tmp_path, fake_batches())
    (tmp_path / "test_batch.bin").write_bytes(bytes([label]) + bytes(size - 1))
    with pytest.raises(DataError, match=match) as caught:
        cifar.load("test", tmp_path)
    assert str(caught.value).startswith(str(tmp_path / "test_batch.bin"))


# --- no torch on the eval path -----------------------------------------------------------------


def test_loads_without_torch(tmp_path):
    write_archive(tmp_path / "cifar10" / cifar.ARCHIVE, fake_batches())
    code = """
    import json
    from eprpipe.data.datasets import prepare
    from eprpipe.plugins.manager import get_dataset

    spec = get_dataset("cifar10")
    images, labels = prepare(spec.load("test", None), spec.image_shape)
    print(json.dumps([list(images.shape), str(images.dtype), len(labels)]))
    """
    result = run_without_torch(code, EPRPIPE_DATA_DIR=str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == [[4, 3, 32, 32], "float32", 4]


# --- the real archive --------------------------------------------------------------------------


@pytest.mark.skipif(not SHARED_ARCHIVE.is_file(), reason="real CIFAR-10 archive not present")
def test_real_cifar10_archive():
    train = cifar.load("train", SHARED_ARCHIVE)
    test = cifar.load("test", SHARED_ARCHIVE.parent)
    assert train.images.shape == (50_000, 3, 32, 32) and test.images.shape == (1_000, 3, 32, 32)
    assert np.bincount(train.labels).tolist() == [5_000] * 10
    # The stored statistics, recomputed exactly from per-channel histograms of the train pixels.
    values = np.arange(256) / 255.0
    for channel in range(3):
        counts = np.bincount(train.images[:, channel].reshape(-1), minlength=256)
        mean = counts @ values / counts.sum()
        std = np.sqrt(counts @ (values - mean) ** 2 / counts.sum())
        assert abs(mean - cifar.MEAN[channel]) < 5e-5 and abs(std - cifar.STD[channel]) < 5e-5


# --- augmentation ------------------------------------------------------------------------------

MEAN, STD = cifar.MEAN, cifar.STD
needs_torch = pytest.mark.skipif(torch is None, reason="torch is not installed")


def _normalized(n: int, seed: int = 0) -> tuple[np.ndarray, torch.Tensor]:
    """Random uint8 CIFAR-like images and the same normalized as training normalizes them."""
    raw = np.random.default_rng(seed).integers(0, 256, (n, 3, 32, 32), dtype=np.uint8)
    floats, labels = prepare(ImageSplit(raw, np.zeros(n, np.int64)), (3, 32, 32))
    return raw, TensorData.from_numpy(floats, labels, MEAN, STD, "cpu").images


def _run(images: torch.Tensor, seed: int) -> torch.Tensor:
    return augment("crop4-flip", images, torch.Generator().manual_seed(seed), mean=MEAN, std=STD)


def _black() -> torch.Tensor:
    return TensorData.from_numpy(np.zeros((1, 3, 1, 1), np.float32), np.zeros(1), MEAN, STD, "cpu")


@needs_torch
def test_shape_dtype_and_determinism():
    _, images = _normalized(64)
    out = _run(images, seed=1)
    assert out.shape == images.shape and out.dtype == images.dtype
    assert torch.equal(out, _run(images, seed=1))
    assert not torch.equal(out, _run(images, seed=2))
    assert torch.equal(images, _normalized(64)[1])  # the input is left alone


@needs_torch
def test_each_image_is_a_shifted_possibly_flipped_copy_with_black_borders():
    _, images = _normalized(400)
    out = _run(images, seed=0)
    black = _black().images.reshape(1, 3, 1, 1)
    padded = black.expand(len(images), 3, 40, 40).clone()
    padded[:, :, 4:36, 4:36] = images
    found = torch.full((len(images), 3), -1)
    for top in range(9):
        for left in range(9):
            crop = padded[:, :, top : top + 32, left : left + 32]
            for flip in (0, 1):
                candidate = crop.flip(3) if flip else crop
                match = (out == candidate).flatten(1).all(1)
                assert (found[match] == -1).all()  # random pixels: one candidate at most
                found[match] = torch.tensor([top, left, flip])
    assert (found >= 0).all()  # every image is exactly one of the 162 candidates
    assert sorted(set(found[:, 0].tolist())) == sorted(set(found[:, 1].tolist())) == [*range(9)]
    assert 150 <= int(found[:, 2].sum()) <= 250  # flips: binomial(400, 1/2), ±5σ = ±50


@needs_torch
def test_equals_torchvision_order_pad_uint8_with_zero_crop_flip_then_normalize():
    raw, images = _normalized(32)
    offsets = torch.randint(0, 9, (32, 2), generator=torch.Generator().manual_seed(0))
    flips = torch.arange(32) % 2 == 0
    fill = _black().images.reshape(3)
    out = crop_flip(images, fill, offsets, flips, pad=4)
    padded = np.pad(raw, ((0, 0), (0, 0), (4, 4), (4, 4)))  # uint8 zeros, as torchvision pads
    crops = np.stack(
        [padded[i, :, t : t + 32, s : s + 32] for i, (t, s) in enumerate(offsets.tolist())]
    )
    crops[flips.numpy()] = crops[flips.numpy()][..., ::-1]
    floats, labels = prepare(ImageSplit(crops, np.zeros(32, np.int64)), (3, 32, 32))
    assert torch.equal(out, TensorData.from_numpy(floats, labels, MEAN, STD, "cpu").images)


@needs_torch
def test_offset_pad_without_flip_is_identity_and_with_flip_a_mirror():
    _, images = _normalized(8)
    centre = torch.full((8, 2), 4)
    fill = torch.zeros(3)
    assert torch.equal(crop_flip(images, fill, centre, torch.zeros(8, dtype=bool), 4), images)
    mirrored = crop_flip(images, fill, centre, torch.ones(8, dtype=bool), 4)
    assert torch.equal(mirrored, images.flip(3))


@needs_torch
def test_corner_offset_shifts_by_four_and_fills_the_border():
    _, images = _normalized(2)
    fill = torch.tensor([-1.0, -2.0, -3.0])
    out = crop_flip(
        images, fill, torch.zeros(2, 2, dtype=torch.long), torch.zeros(2, dtype=bool), 4
    )
    assert torch.equal(out[:, :, 4:, 4:], images[:, :, :28, :28])
    for channel, value in enumerate(fill.tolist()):
        assert (out[:, channel, :4] == value).all() and (out[:, channel, :, :4] == value).all()


@needs_torch
def test_unknown_name_and_bad_batch_are_errors():
    _, images = _normalized(2)
    generator = torch.Generator()
    with pytest.raises(EprError, match="unknown augmentation 'cutout'; known: crop4-flip"):
        augment("cutout", images, generator, mean=MEAN, std=STD)
    with pytest.raises(EprError, match=r"float \(N, 1, H, W\) batch"):
        augment("crop4-flip", images, generator, mean=(0.5,), std=(0.5,))
    assert set(AUGMENTATIONS) == {"crop4-flip", "shift2"}


@pytest.mark.skipif(torch is None or not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_batch_stays_on_device_and_matches_cpu():
    _, images = _normalized(64)
    out = augment("crop4-flip", images.cuda(), torch.Generator().manual_seed(3), mean=MEAN, std=STD)
    assert out.is_cuda and torch.equal(out.cpu(), _run(images, seed=3))
