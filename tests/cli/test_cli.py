"""The command line: a third-party plugin compresses end to end; bad input fails cleanly.

`compress` and `demo` train, so their tests need torch; the reading commands are tested on a
golden vector, without it.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from cli_runner import run_eprpipe
from torch_free import needs_torch, run_without_torch
from toy_plugin import write_toy_plugin

from eprpipe.cli import main

ROOT = Path(__file__).resolve().parents[2]
VECTOR = ROOT / "spec" / "vectors" / "valid" / "conv-rdft.epr"


@pytest.fixture(scope="module")
def toy_epr(tmp_path_factory) -> tuple[Path, Path]:
    """The toy plugin, installed as a distribution on a path, compressed through the CLI."""
    pytest.importorskip("torch")
    base = tmp_path_factory.mktemp("toy")
    site = write_toy_plugin(base / "site")
    out = base / "toy.epr"
    done = run_eprpipe(
        [
            "compress",
            "toy-mlp",
            "--dataset",
            "toy-blobs",
            "--epochs",
            "8",
            "--lambda",
            "0.1",
            "--batch-size",
            "32",
            "--eval-every",
            "3",
            "-o",
            str(out),
            "--quiet",
        ],
        site,
    )
    assert done.returncode == 0, done.stderr
    return out, site


def test_third_party_architecture_compresses_and_decodes(toy_epr, tmp_path):
    out, site = toy_epr
    listing = run_eprpipe(["plugins"], site)
    assert "toy-mlp" in listing.stdout and "eprpipe_toy" in listing.stdout
    evaluated = run_eprpipe(["eval", str(out), "--dataset", "toy-blobs"], site)
    assert evaluated.returncode == 0, evaluated.stderr
    assert "test error" in evaluated.stdout


def _one_line_error(capsys, code: int, *needles: str) -> None:
    captured = capsys.readouterr()
    assert code == 1
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    for needle in needles:
        assert needle in lines[0]


@needs_torch
def test_unknown_architecture(capsys, tmp_path):
    code = main(["compress", "lenet-9000", "--dataset", "digits", "-o", str(tmp_path / "x.epr")])
    _one_line_error(capsys, code, "unknown architecture", "lenet-300-100")
    assert not list(tmp_path.iterdir())


@needs_torch
def test_unknown_dataset(capsys, tmp_path):
    code = main(
        ["compress", "lenet5-caffe", "--dataset", "imagenet-9k", "-o", str(tmp_path / "x.epr")]
    )
    _one_line_error(capsys, code, "unknown dataset", "mnist")


@needs_torch
def test_missing_data_files(capsys, tmp_path, monkeypatch):
    monkeypatch.delenv("EPRPIPE_DOWNLOAD", raising=False)
    empty = tmp_path / "nothing-here"
    empty.mkdir()
    code = main(
        [
            "compress",
            "lenet5-caffe",
            "--dataset",
            "mnist",
            "--data-dir",
            str(empty),
            "-o",
            str(tmp_path / "x.epr"),
        ]
    )
    _one_line_error(capsys, code, "train-images-idx3-ubyte.gz", str(empty))
    assert not (tmp_path / "x.epr").exists()


@needs_torch
def test_unwritable_output_fails_before_training(capsys, tmp_path):
    code = main(
        [
            "compress",
            "lenet-300-100",
            "--dataset",
            "digits",
            "-o",
            str(tmp_path / "no" / "such" / "dir" / "x.epr"),
        ]
    )
    _one_line_error(capsys, code, "does not exist")


@needs_torch
def test_a_negative_eval_every_fails_before_training(capsys, tmp_path):
    out = tmp_path / "x.epr"
    args = ["compress", "lenet-300-100", "--dataset", "digits", "--eval-every", "-1"]
    code = main([*args, "-o", str(out)])
    _one_line_error(capsys, code, "eval_every must be ≥ 0")
    assert not out.exists()


def test_not_an_epr_file(capsys, tmp_path):
    bogus = tmp_path / "model.epr"
    bogus.write_bytes(b"PK\x03\x04 this is a zip file, not an .epr")
    for command in (["info", str(bogus)], ["decode", str(bogus), "-o", str(tmp_path / "m.onnx")]):
        _one_line_error(capsys, main(command), str(bogus))
    assert not (tmp_path / "m.onnx").exists()


def test_truncated_and_corrupted_files(capsys, tmp_path):
    data = VECTOR.read_bytes()
    truncated = tmp_path / "truncated.epr"
    truncated.write_bytes(data[: len(data) // 2])
    _one_line_error(capsys, main(["info", str(truncated)]), str(truncated))
    corrupted = tmp_path / "corrupted.epr"
    flipped = bytearray(data)
    flipped[-5] ^= 0x10
    corrupted.write_bytes(bytes(flipped))
    _one_line_error(
        capsys, main(["decode", str(corrupted), "-o", str(tmp_path / "m.onnx")]), "checksum"
    )
    assert not (tmp_path / "m.onnx").exists()


def test_missing_input_file(capsys, tmp_path):
    _one_line_error(capsys, main(["info", str(tmp_path / "absent.epr")]), "absent.epr")


def test_decode_to_unwritable_place_keeps_nothing(capsys, tmp_path):
    code = main(["decode", str(VECTOR), "-o", str(tmp_path / "missing-dir" / "m.onnx")])
    _one_line_error(capsys, code, "cannot write", "missing-dir")
    assert not (tmp_path / "missing-dir").exists()


@needs_torch
def test_demo_runs_the_embedded_default(capsys, tmp_path):
    out = tmp_path / "demo.epr"
    assert main(["demo", "--epochs", "1", "--no-baseline", "--quiet", "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "lenet5-caffe on digits" in printed and "decoded ONNX model" in printed
    assert out.exists()


def test_compress_without_an_output_is_an_error(capsys):
    _one_line_error(capsys, main(["compress", "lenet5-caffe", "--dataset", "digits"]), "-o")


def test_compress_help_shows_the_config_defaults_without_torch():
    code = """
    import contextlib, io
    from eprpipe.cli import main

    text = io.StringIO()
    with contextlib.redirect_stdout(text), contextlib.suppress(SystemExit):
        main(["compress", "--help"])
    print(text.getvalue())
    """
    done = run_without_torch(code)
    assert done.returncode == 0, done.stderr
    from eprpipe.train.config import DEFAULTS

    options = done.stdout.split("options:")[1]
    entries = [" ".join(entry.split()) for entry in re.split(r"\n  (?=-)", options)]
    helps = {entry.split()[0]: entry for entry in entries if entry}  # argparse wraps the text
    assert helps["--decoder"].startswith("--decoder {auto,rdft,sq}")
    assert helps["--prior"].startswith("--prior {factorized,logistic}")
    for name in ("decoder", "prior", "schedule", "batch_size", "lr", "prior_lr", "seed", "device"):
        option = "--" + name.replace("_", "-")
        assert helps[option].endswith(f"(default: {getattr(DEFAULTS, name)})"), helps[option]
    assert helps["--epochs"].endswith(
        f"(default: the architecture's recipe where it has one, else {DEFAULTS.epochs}; "
        "without ARCHITECTURE, the demo's 80)"
    )
    assert "higher gives a smaller file, lower a lower error" in helps["--lambda"]


@pytest.mark.parametrize("command", [["compress", "lenet5-caffe"], ["demo"]])
def test_the_command_line_defaults_are_the_config_defaults(command):
    from eprpipe.cli import build_parser
    from eprpipe.train.config import DEFAULTS

    args = build_parser().parse_args(command)
    for name in (
        "batch_size", "lr", "decoder_lr", "prior_lr", "schedule", "decoder", "prior",
        "init_step", "seed", "device", "eval_every",
    ):  # fmt: skip
        assert getattr(args, name) == getattr(DEFAULTS, name), name


@pytest.mark.parametrize("command", [["demo"], ["compress", "lenet5-caffe", "--dataset", "digits"]])
def test_training_without_torch_is_one_line_naming_the_install(tmp_path, command):
    code = f"""
    import sys
    from eprpipe.cli import main

    sys.exit(main({[*command, "-o", str(tmp_path / "out.epr")]!r}))
    """
    done = run_without_torch(code)
    assert done.returncode == 1, done.stderr
    assert done.stderr.count("\n") == 1, done.stderr
    assert "trains with torch, which is not installed here" in done.stderr
    assert "eprpipe[train]" in done.stderr
    assert not (tmp_path / "out.epr").exists()


@needs_torch
def test_an_architectures_recipe_sets_what_the_user_did_not(capsys, tmp_path):
    """lenet-300-100's recipe picks λ; --epochs given on the line wins; the report says so."""
    from eprpipe.plugins.manager import get_architecture

    recipe = get_architecture("lenet-300-100").recipe
    assert recipe.lam is not None and recipe.measured
    out = tmp_path / "x.epr"
    args = ["compress", "lenet-300-100", "--dataset", "digits", "--epochs", "1", "--quiet"]
    assert main([*args, "--no-baseline", "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"λ={recipe.lam:g}, 1 epochs" in printed
    assert f"λ={recipe.lam:g}: lenet-300-100's recipe (measured: " in printed
    assert "epochs: lenet-300-100's recipe" not in printed
    assert main([*args, "--lambda", "2", "--no-baseline", "-o", str(out)]) == 0
    assert "'s recipe" not in capsys.readouterr().out
