"""The plugin manager: hooks, registries, attribution, and the torch-free dataset path."""

from __future__ import annotations

import inspect
import json
import os
import subprocess
import sys
import textwrap

import pytest
from idx_files import write_mnist_like
from installed import builtin_names
from torch_free import needs_torch, run_without_torch
from toy_plugin import write_toy_plugin

from eprpipe import hookimpl
from eprpipe.data.datasets import DatasetSpec
from eprpipe.errors import PluginError
from eprpipe.plugins.manager import (
    architectures,
    datasets,
    get_architecture,
    get_dataset,
    get_plugin_manager,
    hookspecs,
    load_plugins,
    plugin_listing,
)
from eprpipe.plugins.registry import ArchitectureSpec

HOOKS = [name for name, _ in inspect.getmembers(hookspecs, inspect.isfunction)]

# What eprpipe's own plugins register; other eprpipe plugins may be installed beside them.
BUILTIN_ARCHITECTURES = [
    "lenet-300-100", "lenet5-caffe", "resnet18", "resnet20", "resnet20-4", "resnet32",
    "resnet50", "resnet56", "vgg16-cifar",
]  # fmt: skip
BUILTIN_DATASETS = ["cifar10", "digits", "fashion-mnist", "imagenet", "mnist"]


def _run_python(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter, so plugin loading starts from nothing."""
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return result


# --- hooks and built-ins ---------------------------------------------------------------------


def test_hooks_exist():
    assert HOOKS == ["register_architectures", "register_datasets"]


@pytest.mark.parametrize("hook", HOOKS)
def test_hooks_are_documented(hook):
    assert ":param register:" in (getattr(hookspecs, hook).__doc__ or "")


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_has_a_builtin_implementation(hook):
    impls = getattr(get_plugin_manager().hook, hook).get_hookimpls()
    assert any(impl.plugin.__name__.startswith("eprpipe_builtins.") for impl in impls)


@pytest.mark.parametrize(
    ("kind", "name", "plugin"),
    [
        pytest.param("architecture", "lenet-300-100", "lenet", marks=needs_torch),
        pytest.param("architecture", "lenet5-caffe", "lenet", marks=needs_torch),
        ("dataset", "mnist", "idx_datasets"),
        ("dataset", "fashion-mnist", "idx_datasets"),
        ("dataset", "digits", "digits"),
    ],
)
def test_builtins_come_from_entry_points_of_eprpipe(kind, name, plugin):
    row = next(row for row in plugin_listing() if (row.kind, row.name) == (kind, name))
    assert (row.plugin, row.distribution) == (plugin, "eprpipe")
    assert row.version and row.description


def test_load_plugins_is_idempotent():
    pm = get_plugin_manager()
    load_plugins()
    load_plugins()
    assert get_plugin_manager() is pm
    assert set(BUILTIN_DATASETS) <= set(datasets())  # each registered once, or it would raise


def test_dataset_registry():
    assert builtin_names("dataset") == BUILTIN_DATASETS
    assert set(BUILTIN_DATASETS) <= set(datasets())
    assert get_dataset("fashion-mnist").classes[-1] == "Ankle boot"
    assert get_dataset("mnist").mean == (0.1307,)


@needs_torch
def test_architecture_registry():
    assert builtin_names("architecture") == BUILTIN_ARCHITECTURES
    assert set(BUILTIN_ARCHITECTURES) <= set(architectures())
    assert get_architecture("lenet5-caffe").input_shape == (1, 28, 28)


@pytest.mark.parametrize(
    ("kind", "get", "registry"),
    [
        pytest.param("architecture", get_architecture, architectures, marks=needs_torch),
        ("dataset", get_dataset, datasets),
    ],
)
def test_unknown_names_list_the_known_ones(kind, get, registry):
    with pytest.raises(PluginError) as caught:
        get("resnet")
    known = list(registry())
    assert str(caught.value) == f"unknown {kind} 'resnet'; known: {', '.join(sorted(known))}"
    assert set(BUILTIN_ARCHITECTURES if kind == "architecture" else BUILTIN_DATASETS) <= set(known)


# --- plugins registered by hand --------------------------------------------------------------


def _dataset(name: str) -> DatasetSpec:
    def load(split, data_dir):
        raise AssertionError("never loaded")

    return DatasetSpec(name, ("a",), (1, 2, 2), (0.5,), (0.5,), load, "test dataset")


class DatasetPlugin:
    def __init__(self, *specs: object):
        self.specs = specs

    @hookimpl
    def register_datasets(self, register):
        for spec in self.specs:
            register(spec)


class BrokenArchitecturePlugin:
    @hookimpl
    def register_architectures(self, register):
        import eprpipe_no_such_module  # noqa: F401


class FaultyDatasetPlugin:
    @hookimpl
    def register_datasets(self, register):
        raise RuntimeError("bug in the hook\nsecond line")


@pytest.fixture
def register_plugin():
    """Register plugins on the process-wide manager for one test, then remove them."""
    pm = get_plugin_manager()
    added = []

    def register(plugin: object, name: str) -> None:
        pm.register(plugin, name=name)
        added.append(plugin)

    yield register
    for plugin in added:
        pm.unregister(plugin)


def test_hand_registered_plugin_is_seen(register_plugin):
    register_plugin(DatasetPlugin(_dataset("extra")), "extra-plugin")
    assert "extra" in datasets()
    row = next(row for row in plugin_listing() if row.name == "extra")
    assert (row.plugin, row.distribution, row.version) == ("extra-plugin", None, None)


def test_duplicate_of_a_builtin_names_both_providers(register_plugin):
    register_plugin(DatasetPlugin(_dataset("digits")), "clash")
    with pytest.raises(PluginError) as caught:
        get_dataset("mnist")
    message = str(caught.value)
    assert "dataset 'digits' is registered twice" in message
    assert "eprpipe 0.1.0 (plugin 'digits')" in message and "plugin 'clash'" in message


def test_duplicate_between_two_plugins(register_plugin):
    register_plugin(DatasetPlugin(_dataset("twin")), "first")
    register_plugin(DatasetPlugin(_dataset("twin")), "second")
    with pytest.raises(PluginError, match="'twin' is registered twice: by plugin 'first' and by"):
        datasets()
    clashing = [row.plugin for row in plugin_listing() if row.name == "twin"]
    assert sorted(clashing) == ["first", "second"]


def test_wrong_spec_type_names_the_plugin(register_plugin):
    register_plugin(DatasetPlugin("not a spec"), "sloppy")
    with pytest.raises(PluginError, match="plugin 'sloppy' registered a str as dataset"):
        datasets()


def test_architecture_spec_as_dataset_is_refused(register_plugin):
    spec = ArchitectureSpec("x", object, (1, 2, 2), 2, "")
    register_plugin(DatasetPlugin(spec), "confused")
    with pytest.raises(PluginError, match="ArchitectureSpec as dataset; expected DatasetSpec"):
        datasets()


@needs_torch  # without torch the built-in architecture plugins cannot register either
def test_plugin_that_cannot_import_is_reported(register_plugin):
    register_plugin(BrokenArchitecturePlugin(), "broken")
    with pytest.raises(PluginError, match="plugin 'broken' cannot register architectures here"):
        architectures()
    row = next(row for row in plugin_listing() if row.plugin == "broken")
    assert row.name == "-" and "eprpipe_no_such_module" in row.description
    assert "digits" in datasets()  # the dataset path does not call architecture hooks


def test_misspelled_hook_fails_loudly():
    import pluggy

    class Misspelled:
        @hookimpl
        def register_dataset(self, register):
            pass

    pm = pluggy.PluginManager("eprpipe")
    pm.add_hookspecs(hookspecs)
    pm.register(Misspelled())
    with pytest.raises(pluggy.PluginValidationError):
        pm.check_pending()


# --- fresh interpreters --------------------------------------------------------------------


def test_datasets_load_without_torch(tmp_path):
    write_mnist_like(tmp_path / "mnist")
    write_mnist_like(tmp_path / "fashion-mnist", seed=1)
    code = """
    import json
    from eprpipe.data.datasets import prepare
    from eprpipe.plugins.manager import datasets, get_dataset, plugin_listing

    shapes = {}
    for name in ("digits", "fashion-mnist", "mnist"):  # cifar10: tests/test_cifar.py
        for split in ("train", "test"):
            images, labels = prepare(get_dataset(name).load(split, None), (1, 28, 28))
            shapes[f"{name}/{split}"] = list(images.shape)
    listing = [(row.kind, row.name, row.plugin, row.distribution, row.description)
               for row in plugin_listing()]  # fmt: skip
    print(json.dumps({"shapes": shapes, "listing": listing}))
    """
    done = run_without_torch(code, EPRPIPE_DATA_DIR=str(tmp_path))
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["shapes"] == {
        "digits/train": [1437, 1, 28, 28],
        "digits/test": [360, 1, 28, 28],
        "fashion-mnist/train": [6, 1, 28, 28],
        "fashion-mnist/test": [4, 1, 28, 28],
        "mnist/train": [6, 1, 28, 28],
        "mnist/test": [4, 1, 28, 28],
    }
    # eprpipe's lenet and vision plugins, each unable to build without torch (other installed
    # plugins may add rows of their own: only eprpipe's are counted)
    rows = [row for row in result["listing"] if row[0] == "architecture" and row[3] == "eprpipe"]
    assert sorted(plugin for _, _, plugin, _, _ in rows) == ["lenet", "vision"]
    assert all(name == "-" and "torch" in why for _, name, _, _, why in rows)


def test_blocking_torch_really_blocks_it():
    result = run_without_torch("from eprpipe.plugins import architectures\narchitectures()")
    assert result.returncode != 0 and "cannot register architectures here" in result.stderr


def test_a_hook_that_raises_is_one_line_naming_the_plugin(register_plugin):
    register_plugin(FaultyDatasetPlugin(), "faulty")
    with pytest.raises(PluginError) as caught:
        datasets()
    assert str(caught.value) == (
        "plugin 'faulty' failed to register datasets: RuntimeError: bug in the hook second line"
    )
    row = next(row for row in plugin_listing() if row.plugin == "faulty")
    assert row.kind == "dataset" and row.name == "-" and "bug in the hook" in row.description


def test_trace_hooks_env_writes_hook_calls_to_stderr():
    code = "from eprpipe.plugins import datasets; datasets()"
    result = _run_python(code, EPRPIPE_TRACE_HOOKS="1")
    assert "register_datasets" in result.stderr


@needs_torch  # the toy architecture is a torch module
def test_third_party_plugin_from_a_distribution(tmp_path):
    site = write_toy_plugin(tmp_path)
    code = """
    import json
    from eprpipe.data.datasets import prepare
    from eprpipe.plugins.manager import get_architecture, get_dataset, load_plugins, plugin_listing

    load_plugins()
    arch, data = get_architecture("toy-mlp"), get_dataset("toy-blobs")
    images, labels = prepare(data.load("train", None), arch.input_shape)
    logits = arch.factory(num_classes=arch.num_classes)(__import__("torch").from_numpy(images))
    rows = [[r.kind, r.name, r.plugin, r.distribution, r.version] for r in plugin_listing()]
    print(json.dumps({"rows": rows, "logits": list(logits.shape), "labels": len(set(labels))}))
    """
    result = json.loads(_run_python(code, PYTHONPATH=str(site)).stdout)
    rows = {(kind, name): rest for kind, name, *rest in result["rows"]}
    assert rows["architecture", "toy-mlp"] == ["toy", "eprpipe_toy", "0.1"]
    assert rows["dataset", "toy-blobs"] == ["toy", "eprpipe_toy", "0.1"]
    assert rows["architecture", "lenet5-caffe"] == ["lenet", "eprpipe", "0.1.0"]
    assert result["logits"] == [300, 3] and result["labels"] == 3


@needs_torch  # the architectures of both plugins are torch modules
def test_third_party_entry_point_named_like_a_builtin_is_still_loaded(tmp_path):
    site = write_toy_plugin(tmp_path)
    entry_points = tmp_path / "eprpipe_toy-0.1.dist-info" / "entry_points.txt"
    entry_points.write_text("[eprpipe]\nlenet = eprpipe_toy\n")
    code = """
    from eprpipe.plugins.manager import plugin_listing
    print(sorted({(r.name, r.plugin, r.distribution) for r in plugin_listing()}))
    """
    listing = _run_python(code, PYTHONPATH=str(site)).stdout
    assert "('toy-mlp', 'lenet', 'eprpipe_toy')" in listing
    assert "('lenet5-caffe', 'lenet', 'eprpipe')" in listing
