"""Class-folder image datasets (`eprpipe.data.imagefiles`) and the imagenet plugin.

Every test writes its own small images with Pillow; nothing here needs the real ImageNet.
"""

from __future__ import annotations

import copy
import json
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from torch_free import run_without_torch

from eprpipe.data import imagefiles
from eprpipe.data.datasets import ImageFiles, classes_of, fit, prepare_files
from eprpipe.data.imagefiles import (
    TRAIN_VIEW,
    class_folder_split,
    eval_view,
    open_rgb,
    random_crop_box,
    read_image,
    scan_class_folders,
    train_view,
)
from eprpipe.errors import DataError
from eprpipe.plugins.manager import get_dataset
from eprpipe_builtins import imagenet


def save(path: Path, width: int, height: int, seed: int = 0, mode: str = "RGB") -> Path:
    """A random image of ``width`` × ``height``, in the format its suffix names."""
    path.parent.mkdir(parents=True, exist_ok=True)
    channels = {"RGB": 3, "RGBA": 4, "L": 1}[mode]
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, channels), np.uint8)
    Image.fromarray(pixels.squeeze(-1) if channels == 1 else pixels, mode).save(path)
    return path


def index_image(width: int, height: int) -> Image.Image:
    """Red is the column, green the row (both mod 256), blue the column // 256."""
    columns, rows = np.meshgrid(np.arange(width), np.arange(height))
    pixels = np.stack([columns % 256, rows % 256, columns // 256], axis=-1).astype(np.uint8)
    return Image.fromarray(pixels, "RGB")


def png_header(width: int, height: int) -> bytes:
    """A PNG that declares ``width`` × ``height`` and holds no pixels: Pillow opens it lazily."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


# --- scanning class folders --------------------------------------------------------------------


def test_scan_orders_classes_and_files_like_torchvision(tmp_path):
    for name in ("a/z.jpeg", "a/y0.png", "a/y/x.png", "b/img1.png", "b/img0.JPG"):
        save(tmp_path / name, 8, 6)
    (tmp_path / "B").mkdir()  # an empty class is a class
    (tmp_path / "b" / "notes.txt").write_text("not an image")
    (tmp_path / "b" / "README").write_text("not an image")
    save(tmp_path / "b" / ".hidden.jpg", 8, 6)
    save(tmp_path / "a" / ".cache" / "w.png", 8, 6)
    save(tmp_path / ".git" / "q.png", 8, 6)
    save(tmp_path / "loose.jpg", 8, 6)  # not in a class folder

    classes, paths, labels = scan_class_folders(tmp_path)

    assert classes == ("B", "a", "b")  # code-point order
    # By directory, then name: a/y0.png comes before a/y/x.png although "/" < "0".
    expected = ["a/y0.png", "a/z.jpeg", "a/y/x.png", "b/img0.JPG", "b/img1.png"]
    assert paths == tuple(str(tmp_path / name) for name in expected)
    assert labels.dtype == np.int64 and labels.tolist() == [1, 1, 1, 2, 2]


def test_given_classes_index_the_labels(tmp_path):
    save(tmp_path / "n02" / "1.png", 4, 4)
    save(tmp_path / "n03" / "2.png", 4, 4)
    train_classes = ("n01", "n02", "n03")
    classes, paths, labels = scan_class_folders(tmp_path, train_classes)
    assert classes == train_classes and len(paths) == 2 and labels.tolist() == [1, 2]

    save(tmp_path / "n99" / "3.png", 4, 4)
    with pytest.raises(DataError, match=r"class folder 'n99' is not one of the 3 classes"):
        scan_class_folders(tmp_path, train_classes)


def test_symlinked_directories_below_a_class_are_not_followed(tmp_path):
    save(tmp_path / "data" / "cat" / "1.png", 4, 4)
    os.symlink(tmp_path / "data" / "cat", tmp_path / "data" / "cat" / "loop")
    os.symlink(tmp_path / "data" / "cat" / "1.png", tmp_path / "data" / "cat" / "2.png")
    classes, paths, _ = scan_class_folders(tmp_path / "data")
    assert classes == ("cat",)
    assert paths == tuple(str(tmp_path / "data" / "cat" / n) for n in ("1.png", "2.png"))


@pytest.mark.parametrize(
    ("layout", "match"),
    [
        ("missing", "no such directory"),
        ("file", "not a directory"),
        ("no-classes", "no class folders"),
        ("no-images", "no images under"),
    ],
)
def test_scan_errors(tmp_path, layout, match):
    root = tmp_path / "root"
    if layout == "file":
        root.write_text("")
    elif layout == "no-classes":
        save(root / "image.png", 4, 4)
    elif layout == "no-images":
        (root / "empty").mkdir(parents=True)
        (root / "text" / "a.txt").parent.mkdir()
        (root / "text" / "a.txt").write_text("")
    with pytest.raises(DataError, match=match) as caught:
        class_folder_split(root, "mine train")
    assert str(caught.value).startswith("mine train: ") and str(root) in str(caught.value)


def test_class_folder_split_reads_through_the_datasets_api(tmp_path):
    save(tmp_path / "x" / "a.jpg", 50, 40)
    save(tmp_path / "y" / "b.png", 30, 70, mode="RGBA")
    save(tmp_path / "y" / "c.bmp", 64, 64, mode="L")
    split = class_folder_split(tmp_path, "test")
    assert isinstance(split, ImageFiles) and split.read is read_image and split.channels == 3
    batch = prepare_files(split, (3, 16, 24)).read_batch(np.arange(len(split)))
    assert batch.dtype == np.uint8 and batch.shape == (3, 3, 16, 24)


# --- opening files -----------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "L"])
def test_open_rgb_converts_to_rgb(tmp_path, mode):
    image = open_rgb(str(save(tmp_path / "a.png", 5, 3, mode=mode)))
    assert image.mode == "RGB" and image.size == (5, 3)


def test_damaged_files_name_the_path(tmp_path):
    truncated = save(tmp_path / "truncated.jpg", 200, 150)
    truncated.write_bytes(truncated.read_bytes()[: truncated.stat().st_size // 2])
    text = tmp_path / "text.jpg"
    text.write_text("this is not a JPEG")
    for path in (truncated, text, tmp_path / "missing.jpg"):
        with pytest.raises(DataError, match="cannot read image") as caught:
            open_rgb(str(path))
        assert str(caught.value).startswith(f"{path}: ")


def test_images_over_max_pixels_are_refused(tmp_path, monkeypatch):
    path = str(save(tmp_path / "a.png", 20, 20))
    monkeypatch.setattr(imagefiles, "MAX_PIXELS", 399)
    with pytest.raises(DataError, match=rf"^{path}: 20x20 is more than 399 pixels"):
        read_image(path, (8, 8), None)


def test_decompression_bomb_headers_are_refused(tmp_path):
    # Over Pillow's own error limit (twice its default), then between its warning and ours.
    huge = tmp_path / "huge.png"
    huge.write_bytes(png_header(100_000, 100_000))
    with pytest.raises(DataError, match="cannot read image: DecompressionBombError"):
        open_rgb(str(huge))
    large = tmp_path / "large.png"
    large.write_bytes(png_header(10_000, 10_000))
    with (
        pytest.warns(Image.DecompressionBombWarning),
        pytest.raises(DataError, match=r"10000x10000 is more than 89478485 pixels"),
    ):
        open_rgb(str(large))


def test_extreme_aspect_ratio_cannot_blow_up_the_eval_resize(tmp_path, monkeypatch):
    path = str(save(tmp_path / "strip.png", 2000, 1))
    monkeypatch.setattr(imagefiles, "MAX_PIXELS", 100_000)
    # Resizing the short side to 37 would make it 74,000 × 37.
    with pytest.raises(DataError, match=rf"^{path}: a 2000x1 image resizes to more than 100000"):
        read_image(path, (32, 32), None)
    assert read_image(path, (32, 32), np.random.default_rng(0)).shape == (3, 32, 32)


# --- the evaluation view -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("width", "height", "top", "left"),
    [(300, 256, 16, 38), (341, 256, 16, 58), (256, 301, 38, 16)],  # 58.5 and 38.5 round to even
)
def test_eval_view_centre_crop_offsets(width, height, top, left):
    # The shorter side is already 256, so the resize keeps every pixel and the crop shows.
    view = eval_view(index_image(width, height), (224, 224))
    assert view.dtype == np.uint8 and view.shape == (3, 224, 224) and view.flags.c_contiguous
    columns = view[0].astype(int) + 256 * view[2].astype(int)
    assert (columns == np.arange(left, left + 224)).all()
    assert (view[1] == np.arange(top, top + 224)[:, None] % 256).all()


@pytest.mark.parametrize(
    ("width", "height", "size", "resized", "top", "left"),
    [
        (300, 200, (224, 224), (384, 256), 16, 80),  # landscape: 200 → 256, 300 → 384
        (200, 300, (224, 224), (256, 384), 80, 16),  # portrait
        (300, 200, (24, 40), (69, 46), 11, 14),  # non-square: resize by 40 / 0.875 → 46
        (333, 500, (32, 32), (37, 55), 12, 2),  # int(37 * 500 / 333) = 55; 11.5 → 12, 2.5 → 2
    ],
)
def test_eval_view_resizes_the_shorter_side(width, height, size, resized, top, left):
    image = index_image(width, height)
    expected = np.asarray(image.resize(resized, Image.Resampling.BILINEAR))
    expected = expected[top : top + size[0], left : left + size[1]].transpose(2, 0, 1)
    np.testing.assert_array_equal(eval_view(image, size), expected)


# --- the training view -------------------------------------------------------------------------


def test_random_crop_boxes_stay_inside_the_image():
    rng = np.random.default_rng(0)
    for width, height in [(300, 200), (200, 300), (7, 5), (1, 1), (1000, 10), (3, 50)]:
        for _ in range(200):
            top, left, h, w = random_crop_box(width, height, rng)
            assert h > 0 and w > 0 and 0 <= top <= top + h <= height
            assert 0 <= left <= left + w <= width


def test_random_crop_box_falls_back_to_a_centre_crop():
    # No crop of 8..100 % of the area with ratio 3/4..4/3 fits: the ratio is clamped instead.
    assert random_crop_box(10, 1000, np.random.default_rng(0)) == (493, 0, 13, 10)
    assert random_crop_box(1000, 10, np.random.default_rng(0)) == (0, 493, 10, 13)


def test_random_crop_box_covers_the_scale_range():
    # 240x200 is within the ratio range, so a crop may take the whole image.
    rng = np.random.default_rng(1)
    boxes = [random_crop_box(240, 200, rng) for _ in range(500)]
    areas = [h * w / (240 * 200) for _, _, h, w in boxes]
    assert 0.075 < min(areas) < 0.1 and 0.9 < max(areas) <= 1.0
    assert all(0.7 < w / h < 1.4 for _, _, h, w in boxes)


def test_train_view_is_the_crop_resized_then_maybe_flipped():
    image = index_image(300, 200)
    for seed in range(20):
        rng = np.random.default_rng(seed)
        twin = copy.deepcopy(rng)
        view = train_view(image, (32, 48), rng)
        top, left, h, w = random_crop_box(300, 200, twin)
        crop = image.crop((left, top, left + w, top + h)).resize(
            (48, 32), Image.Resampling.BILINEAR
        )
        expected = np.asarray(crop).transpose(2, 0, 1)
        if twin.random() < 0.5:
            expected = expected[:, :, ::-1]
        assert view.dtype == np.uint8 and view.shape == (3, 32, 48) and view.flags.c_contiguous
        np.testing.assert_array_equal(view, expected)


def test_train_view_depends_only_on_the_generator():
    image = index_image(300, 200)
    first = train_view(image, (32, 32), np.random.default_rng(7))
    np.testing.assert_array_equal(first, train_view(image, (32, 32), np.random.default_rng(7)))
    assert not np.array_equal(first, train_view(image, (32, 32), np.random.default_rng(8)))


def test_train_view_flips_about_half_the_time():
    # Red grows with the column, so a flipped view has its larger red on the left.
    image = index_image(255, 200)
    flips = 0
    for seed in range(200):
        view = train_view(image, (16, 16), np.random.default_rng(seed)).astype(int)
        assert view[0, :, 0].mean() != view[0, :, -1].mean()
        flips += view[0, :, 0].mean() > view[0, :, -1].mean()
    assert 70 <= flips <= 130


# --- the imagenet plugin -----------------------------------------------------------------------


def write_imagenet(root: Path) -> None:
    for i, (wnid, split) in enumerate(
        [
            ("n01440764", "train"),
            ("n01440764", "train"),
            ("n01443537", "train"),
            ("n01484850", "train"),
            ("n01443537", "val"),
            ("n01484850", "val"),
        ]
    ):
        save(root / split / wnid / f"{wnid}_{i}.JPEG", 40 + 13 * i, 90 - 11 * i, seed=i)


def test_imagenet_is_registered():
    spec = get_dataset("imagenet")
    assert spec.load is imagenet.load and spec.classes == () and spec.augmentation == TRAIN_VIEW
    assert spec.image_shape == (3, 224, 224)
    assert spec.mean == (0.485, 0.456, 0.406) and spec.std == (0.229, 0.224, 0.225)


def test_imagenet_loads_both_splits(tmp_path):
    write_imagenet(tmp_path / "imagenet")
    spec = get_dataset("imagenet")
    train, test = spec.load("train", tmp_path), spec.load("test", tmp_path / "imagenet")
    wnids = ("n01440764", "n01443537", "n01484850")
    assert train.classes == test.classes == wnids == classes_of(spec, train)
    assert train.labels.tolist() == [0, 0, 1, 2] and test.labels.tolist() == [1, 2]
    assert all(path.startswith(str(tmp_path / "imagenet" / "val")) for path in test.paths)
    fitted = fit(test, (3, 32, 32))
    batch = fitted.read_batch(np.arange(len(test)))
    assert batch.dtype == np.uint8 and batch.shape == (2, 3, 32, 32)
    rngs = [np.random.default_rng(i) for i in range(len(train))]
    batch = prepare_files(train, (3, 32, 32)).read_batch(np.arange(len(train)), rngs)
    assert batch.dtype == np.uint8 and batch.shape == (4, 3, 32, 32)


def test_imagenet_val_classes_must_be_train_classes(tmp_path):
    write_imagenet(tmp_path)
    save(tmp_path / "val" / "n99999999" / "x.JPEG", 10, 10)
    with pytest.raises(DataError, match=r"imagenet test: .*'n99999999' is not one of the 3"):
        imagenet.load("test", tmp_path)


def test_imagenet_without_train_takes_classes_from_val(tmp_path):
    write_imagenet(tmp_path)
    (tmp_path / "train").rename(tmp_path / "elsewhere")
    test = imagenet.load("test", tmp_path)
    assert test.classes == ("n01443537", "n01484850") and test.labels.tolist() == [0, 1]
    with pytest.raises(DataError, match=rf"no {tmp_path / 'train'}; expected"):
        imagenet.load("train", tmp_path)


def test_imagenet_missing_layout_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setenv("EPRPIPE_DATA_DIR", str(tmp_path))
    with pytest.raises(DataError) as caught:
        imagenet.load("test", None)
    message = str(caught.value)
    assert f"no {tmp_path / 'imagenet' / 'val'}" in message
    assert "train/<wnid>/*.JPEG" in message and "valprep" in message
    assert "cannot be downloaded" in message and "--data-dir" in message


# --- no torch on the eval path -----------------------------------------------------------------


def test_imports_and_reads_without_torch(tmp_path):
    write_imagenet(tmp_path / "imagenet")
    code = """
    import json

    import numpy as np

    import eprpipe.data.imagefiles
    import eprpipe_builtins.imagenet
    from eprpipe.data.datasets import fit
    from eprpipe.plugins.manager import get_dataset

    spec = get_dataset("imagenet")
    files = fit(spec.load("test", None), spec.image_shape)
    images = files.read_batch(np.arange(len(files)))
    print(json.dumps([list(images.shape), str(images.dtype)]))
    """
    result = run_without_torch(code, EPRPIPE_DATA_DIR=str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == [[2, 3, 224, 224], "uint8"]
