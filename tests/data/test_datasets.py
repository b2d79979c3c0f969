"""Dataset helpers, the IDX reader, the MNIST-layout loaders and the bundled digits."""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import struct
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from idx_files import idx_bytes, write_idx, write_mnist_like

from eprpipe.data.datasets import ImageSplit, as_float, prepare, resize_images, resolve_data_dir
from eprpipe.errors import DataError
from eprpipe.plugins.manager import get_dataset
from eprpipe_builtins import digits
from eprpipe_builtins.idx import read_idx
from eprpipe_builtins.idx_datasets import MNIST, IdxSource

SHARED_MNIST = Path(__file__).resolve().parents[3] / "shared" / "datasets" / "mnist"
GOLDEN_TEST_LABELS = [7, 9, 4, 7, 0, 2, 6, 1]


@pytest.fixture(autouse=True)
def _no_downloads(monkeypatch):
    monkeypatch.delenv("EPRPIPE_DOWNLOAD", raising=False)
    monkeypatch.delenv("EPRPIPE_DATA_DIR", raising=False)


# --- IDX reader ---------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", ["", ".gz"])
@pytest.mark.parametrize("dtype", [np.uint8, np.int32, np.float32])
def test_idx_round_trip(tmp_path, suffix, dtype):
    array = np.arange(30).reshape(2, 3, 5).astype(dtype)
    read = read_idx(write_idx(array, tmp_path / f"a.idx{suffix}"))
    assert read.dtype == dtype and read.dtype.isnative
    np.testing.assert_array_equal(read, array)


def _corrupt_cases() -> dict[str, bytes]:
    good = idx_bytes(np.zeros((3, 4), dtype=np.uint8))
    return {
        "empty": b"",
        "bad zero bytes": b"\x01" + good[1:],
        "unknown type": good[:2] + b"\x07" + good[3:],
        "no dimensions": good[:3] + b"\x00" + good[4:],
        "too many dimensions": good[:3] + b"\x05" + good[4:],
        "truncated header": good[:6],
        "truncated data": good[:-1],
        "trailing bytes": good + b"\x00",
        "oversized": struct.pack(">HBB3I", 0, 8, 3, 2**31, 2**31, 2**31),
    }


@pytest.mark.parametrize("case", sorted(_corrupt_cases()))
@pytest.mark.parametrize("gzipped", [False, True])
def test_idx_corrupt_raises_data_error_naming_the_file(tmp_path, case, gzipped):
    data = _corrupt_cases()[case]
    path = tmp_path / ("bad.idx.gz" if gzipped else "bad.idx")
    path.write_bytes(gzip.compress(data) if gzipped else data)
    with pytest.raises(DataError, match=r"bad\.idx"):
        read_idx(path)


@pytest.mark.parametrize("damage", ["not gzip", "truncated gzip", "bad crc"])
def test_idx_broken_gzip_raises_data_error(tmp_path, damage):
    packed = gzip.compress(idx_bytes(np.zeros((3, 4), dtype=np.uint8)))
    data = {
        "not gzip": b"plain bytes, not gzip",
        "truncated gzip": packed[:-6],
        "bad crc": packed[:-8] + bytes(8),
    }[damage]
    path = tmp_path / "bad.idx.gz"
    path.write_bytes(data)
    with pytest.raises(DataError, match=r"bad\.idx\.gz"):
        read_idx(path)


def test_idx_size_bound(tmp_path):
    path = write_idx(np.zeros((10, 10), dtype=np.uint8), tmp_path / "a.idx")
    with pytest.raises(DataError, match="more than 99 bytes"):
        read_idx(path, max_bytes=99)


@given(st.binary(max_size=64))
def test_idx_reader_never_fails_otherwise(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("fuzz") / "f.idx"
    path.write_bytes(data)
    with contextlib.suppress(DataError):
        read_idx(path)


# --- MNIST-layout loaders -----------------------------------------------------------------


def test_mnist_loads_idx_files_gz_and_raw(tmp_path):
    write_mnist_like(tmp_path, n_train=6, n_test=4)
    train, test = (get_dataset("mnist").load(split, tmp_path) for split in ("train", "test"))
    assert train.images.shape == (6, 1, 28, 28) and train.images.dtype == np.uint8
    assert test.images.shape == (4, 1, 28, 28)
    assert train.labels.dtype == np.int64 and train.labels.shape == (6,)
    expected = read_idx(tmp_path / "train-images-idx3-ubyte.gz")
    np.testing.assert_array_equal(train.images[:, 0], expected)


def test_digits_train_with_a_shift_and_never_a_mirror():
    assert get_dataset("mnist").augmentation == "shift2"  # a mirrored digit is another glyph
    assert get_dataset("fashion-mnist").augmentation is None  # not measured there yet


def test_data_dir_may_be_a_root_holding_the_dataset(tmp_path):
    write_mnist_like(tmp_path / "mnist", n_train=3)
    assert len(get_dataset("mnist").load("train", tmp_path).images) == 3


def test_missing_file_is_one_line_naming_file_and_dir(tmp_path):
    with pytest.raises(DataError) as caught:
        get_dataset("mnist").load("train", tmp_path)
    message = str(caught.value)
    assert message.startswith(f"mnist: missing train-images-idx3-ubyte.gz in {tmp_path};")
    assert "--data-dir" in message and "\n" not in message


@pytest.mark.parametrize(
    ("stem", "array", "match"),
    [
        ("train-images-idx3-ubyte", np.zeros((6, 27, 28), np.uint8), "shape"),
        ("train-labels-idx1-ubyte", np.zeros(5, np.uint8), "expected 6"),
        ("train-labels-idx1-ubyte", np.full(6, 10, np.uint8), "label 10"),
    ],
)
def test_mnist_rejects_inconsistent_files(tmp_path, stem, array, match):
    write_mnist_like(tmp_path, n_train=6)
    for path in tmp_path.glob(f"{stem}*"):
        path.unlink()
    write_idx(array, tmp_path / f"{stem}.gz")
    with pytest.raises(DataError, match=match):
        get_dataset("mnist").load("train", tmp_path)


def _file_mirror(tmp_path: Path, fallback: Path | None = None) -> IdxSource:
    """An IdxSource whose mirror is a local directory (file:// URL) with correct md5 sums."""
    mirror = write_mnist_like(tmp_path / "mirror")
    for path in mirror.iterdir():  # the mirror serves every file gzipped
        if path.suffix != ".gz":
            path.with_name(path.name + ".gz").write_bytes(gzip.compress(path.read_bytes()))
    md5 = {p.name: hashlib.md5(p.read_bytes()).hexdigest() for p in mirror.glob("*.gz")}
    return IdxSource(
        "local",
        "Local",
        mirror.as_uri() + "/",
        md5,
        fallback_dirs=(fallback,) if fallback else (),
    )


def test_no_download_unless_asked(tmp_path):
    source = _file_mirror(tmp_path)
    with pytest.raises(DataError, match="EPRPIPE_DOWNLOAD=1"):
        source.load("train", tmp_path / "data")
    assert not (tmp_path / "data").exists()


def test_download_verifies_md5_and_writes_atomically(tmp_path, monkeypatch):
    monkeypatch.setenv("EPRPIPE_DOWNLOAD", "1")
    source = _file_mirror(tmp_path)
    split = source.load("train", tmp_path / "data")
    assert split.images.shape == (6, 1, 28, 28)
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == [
        "train-images-idx3-ubyte.gz",
        "train-labels-idx1-ubyte.gz",
    ]


def test_download_with_wrong_md5_saves_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("EPRPIPE_DOWNLOAD", "1")
    good = _file_mirror(tmp_path)
    bad = IdxSource(good.name, good.title, good.mirror, dict.fromkeys(good.md5, "0" * 32))
    with pytest.raises(DataError, match="has md5"):
        bad.load("test", tmp_path / "data")
    assert not (tmp_path / "data").exists()


def test_failed_download_is_a_data_error(tmp_path, monkeypatch):
    monkeypatch.setenv("EPRPIPE_DOWNLOAD", "1")
    source = IdxSource("local", "Local", (tmp_path / "nowhere").as_uri() + "/", MNIST.md5)
    with pytest.raises(DataError, match=r"download from .* failed"):
        source.load("test", tmp_path / "data")


def test_fallback_dir_is_used_when_data_dir_is_empty(tmp_path):
    fallback = write_mnist_like(tmp_path / "system", n_test=2)
    source = IdxSource("local", "Local", "unused://", {}, fallback_dirs=(fallback,))
    assert len(source.load("test", tmp_path / "empty").images) == 2


@pytest.mark.skipif(not SHARED_MNIST.is_dir(), reason="real MNIST files not present")
def test_real_mnist_files():
    test = get_dataset("mnist").load("test", SHARED_MNIST)
    assert test.images.shape == (10000, 1, 28, 28)
    assert np.bincount(test.labels).tolist()[:2] == [980, 1135]


# --- resolve_data_dir -----------------------------------------------------------------------


def test_resolve_data_dir_order(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert resolve_data_dir("mnist", None) == tmp_path / "cache" / "eprpipe" / "mnist"
    monkeypatch.setenv("EPRPIPE_DATA_DIR", str(tmp_path / "root"))
    assert resolve_data_dir("mnist", None) == tmp_path / "root" / "mnist"
    assert resolve_data_dir("mnist", tmp_path / "mine") == tmp_path / "mine"


def test_resolve_data_dir_default_cache(monkeypatch, tmp_path):
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert resolve_data_dir("digits", None) == tmp_path / ".cache" / "eprpipe" / "digits"


# --- digits --------------------------------------------------------------------------------


def test_digits_split_is_a_fixed_permutation():
    from sklearn.datasets import load_digits

    spec = get_dataset("digits")
    train, test = spec.load("train", None), spec.load("test", None)
    assert (len(train.labels), len(test.labels)) == (1437, 360)
    assert train.images.shape[1:] == spec.image_shape == (1, 8, 8)
    full = load_digits()
    order = np.random.RandomState(digits.SEED).permutation(1797)
    np.testing.assert_array_equal(train.labels, full.target[order[:1437]])
    np.testing.assert_array_equal(test.images[:, 0] * 16, full.images[order[1437:]])
    # Pinned, so a change of split (which would move every reported digits number) is noticed.
    assert test.labels[:8].tolist() == GOLDEN_TEST_LABELS


def test_digits_mean_std_are_the_train_split_statistics():
    train = get_dataset("digits").load("train", None).images.astype(np.float64)
    assert abs(digits.MEAN - train.mean()) < 1e-4
    assert abs(digits.STD - train.std()) < 1e-4


def test_digits_prepared_for_lenet():
    images, labels = prepare(get_dataset("digits").load("test", None), (1, 28, 28))
    assert images.shape == (360, 1, 28, 28) and images.dtype == np.float32
    assert images.min() >= 0.0 and images.max() <= 1.0
    assert labels.dtype == np.int64


# --- helpers --------------------------------------------------------------------------------


def test_as_float():
    pixels = np.array([[[[0, 255, 51]]]], dtype=np.uint8)
    np.testing.assert_array_equal(as_float(pixels), np.array([[[[0, 1, 0.2]]]], np.float32))
    floats = np.zeros((1, 1, 1, 1), np.float32)
    assert as_float(floats) is floats
    with pytest.raises(DataError):
        as_float(floats.astype(np.float64))


@pytest.mark.parametrize("size", [(28, 28), (8, 8), (5, 11), (3, 2)])
def test_resize_matches_torch_bilinear(size):
    torch = pytest.importorskip("torch")
    images = np.random.default_rng(0).random((2, 3, 8, 7), dtype=np.float32)
    expected = torch.nn.functional.interpolate(
        torch.from_numpy(images), size=size, mode="bilinear", align_corners=False
    ).numpy()
    resized = resize_images(images, size)
    assert resized.dtype == np.float32 and resized.shape == (2, 3, *size)
    np.testing.assert_allclose(resized, expected, atol=1e-6)


def test_resize_keeps_constant_images_exact():
    images = np.full((1, 1, 8, 8), 1.0, np.float32)
    np.testing.assert_array_equal(resize_images(images, (28, 28)), 1.0)


def test_prepare_rejects_channel_mismatch():
    split = ImageSplit(np.zeros((2, 1, 8, 8), np.uint8), np.zeros(2, np.int64))
    with pytest.raises(DataError, match="3-channel"):
        prepare(split, (3, 32, 32))


def test_prepare_leaves_matching_size_alone():
    split = ImageSplit(np.full((2, 1, 4, 4), 255, np.uint8), np.arange(2))
    images, _ = prepare(split, (1, 4, 4))
    np.testing.assert_array_equal(images, 1.0)


@pytest.mark.parametrize(
    ("images", "labels"),
    [
        (np.zeros((2, 8, 8), np.uint8), np.zeros(2, np.int64)),
        (np.zeros((2, 1, 8, 8), np.float64), np.zeros(2, np.int64)),
        (np.zeros((2, 1, 8, 8), np.uint8), np.zeros(2, np.int32)),
        (np.zeros((2, 1, 8, 8), np.uint8), np.zeros(3, np.int64)),
    ],
)
def test_image_split_checks_shapes_and_dtypes(images, labels):
    with pytest.raises(DataError):
        ImageSplit(images, labels)
