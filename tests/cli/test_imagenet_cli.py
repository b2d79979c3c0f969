"""`eprpipe compress … --dataset imagenet`: JPEG class folders streamed through loader workers."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from class_folders import WNIDS, write_class_folders
from cli_runner import run_eprpipe

pytest.importorskip("torch")  # every test here compresses


@pytest.fixture(scope="module")
def imagenet_epr(tmp_path_factory) -> tuple[Path, Path, str]:
    root = tmp_path_factory.mktemp("imagenet")
    write_class_folders(root, "train", 16, 0)
    write_class_folders(root, "val", 6, 1)
    out = root / "model.epr"
    done = run_eprpipe(
        ["compress", "resnet20", "--dataset", "imagenet", "--data-dir", str(root), "-o",
         str(out), "--epochs", "5", "--batch-size", "16", "--lambda", "0.1", "--no-baseline",
         "--workers", "2", "--quiet"]
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return root, out, done.stdout


def test_compress_streams_class_folders_and_reports_the_decoded_error(imagenet_epr) -> None:
    root, out, report = imagenet_epr
    assert "of 18 imagenet test images (decoded ONNX model" in report
    evaluated = run_eprpipe(["eval", str(out), "--dataset", "imagenet", "--data-dir", str(root)])
    assert evaluated.returncode == 0, evaluated.stderr
    wrong = re.search(r"\((\d+) of 18 imagenet test images wrong\)", evaluated.stdout)
    assert wrong, evaluated.stdout
    info = json.loads(run_eprpipe(["info", str(out), "--json"]).stdout)
    manifest = info["manifest"]
    assert manifest["output"]["classes"] == list(WNIDS)  # named by the train folders
    assert manifest["training"]["augmentation"] == "random-resized-crop-flip"
    assert manifest["metrics"]["test_examples"] == 18
    assert manifest["metrics"]["test_error"] == pytest.approx(int(wrong.group(1)) / 18)
    assert int(wrong.group(1)) <= 4  # colour tells the classes apart (chance: 12 wrong)


def test_a_damaged_image_names_its_file(tmp_path: Path) -> None:
    write_class_folders(tmp_path, "train", 2, 0)
    write_class_folders(tmp_path, "val", 1, 1)
    broken = tmp_path / "val" / WNIDS[1] / "broken.JPEG"
    broken.write_bytes(b"\xff\xd8\xff\xe0 not really a JPEG")
    done = run_eprpipe(
        ["compress", "resnet20", "--dataset", "imagenet", "--data-dir", str(tmp_path), "-o",
         str(tmp_path / "m.epr"), "--epochs", "1", "--batch-size", "4", "--no-baseline",
         "--workers", "0", "--quiet"]
    )  # fmt: skip
    assert done.returncode == 1
    assert "broken.JPEG" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "m.epr").exists()
