"""The plugin manager, and the architecture and dataset registries its plugins fill.

Every plugin, built-in ones included, arrives through an entry point in the ``eprpipe`` group;
nothing here imports a plugin by name. Registries are rebuilt from the hooks on each call
(cheap: the hooks only build specs), so they never go stale when a plugin is added by hand.
Asking for datasets calls only the dataset hook, so no architecture plugin gets to import torch.
An entry point that cannot be loaded (its module is missing or raises) is skipped with one
logged line naming it and its distribution, and listed as broken: the other plugins still work.
Set EPRPIPE_TRACE_HOOKS=1 to trace hook calls to stderr.
"""

from __future__ import annotations

import importlib.metadata
import logging
import os
import sys
from dataclasses import dataclass

import pluggy

from eprpipe.data.datasets import DatasetSpec
from eprpipe.errors import PluginError
from eprpipe.plugins import hookspecs
from eprpipe.plugins.registry import ArchitectureSpec, Provider, Registry

# kind -> (hook name, spec type); the kind is the word error messages and listings use.
_KINDS: dict[str, tuple[str, type]] = {
    "architecture": ("register_architectures", ArchitectureSpec),
    "dataset": ("register_datasets", DatasetSpec),
}

ENTRY_POINT_GROUP = "eprpipe"
_pm: pluggy.PluginManager | None = None
_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BrokenPlugin:
    """An installed entry point that could not be loaded or registered, and why."""

    plugin: str  # the entry point's name
    distribution: str
    version: str
    target: str  # what the entry point names, e.g. "eprpipe_toy" or "package.module:object"
    error: str  # one line: the exception's type and message

    def __str__(self) -> str:
        return (
            f"plugin {self.plugin!r} of {self.distribution} {self.version} ({self.target}): "
            f"{self.error}"
        )


_broken: list[BrokenPlugin] = []


def load_plugins() -> None:
    """Create the plugin manager and load every ``eprpipe`` entry point, once per process."""
    global _pm
    if _pm is not None:
        return
    pm = pluggy.PluginManager("eprpipe")
    pm.add_hookspecs(hookspecs)
    if os.environ.get("EPRPIPE_TRACE_HOOKS", "0") not in ("", "0"):
        pm.trace.root.setwriter(sys.stderr.write)
        pm.enable_tracing()
    _broken.clear()
    _load_entry_points(pm)
    _pm = pm


# plugin object -> (distribution name, version), for plugins that came through entry points.
_distributions: dict[int, tuple[str, str]] = {}


def _one_line(error: BaseException) -> str:
    return " ".join(f"{type(error).__name__}: {error}".split())


def _skip(broken: BrokenPlugin) -> None:
    """Remember a plugin that cannot be used and say so once, in one line."""
    _broken.append(broken)
    _log.warning("eprpipe: skipped broken %s", broken)


def _load_entry_points(pm: pluggy.PluginManager) -> None:
    """Register every ``eprpipe`` entry point of every installed distribution.

    Unlike pluggy's loader this keys plugins by distribution and entry-point name, so two
    distributions may both call an entry point "lenet" without one being silently dropped.
    An entry point whose module is missing, raises on import or whose hooks do not match
    their specs is skipped (`broken_plugins`).
    """
    seen = set()
    for dist in importlib.metadata.distributions():
        for entry_point in dist.entry_points:
            if entry_point.group != ENTRY_POINT_GROUP:
                continue
            name = f"{dist.metadata['name']}:{entry_point.name}"
            if name in seen:
                continue  # the same distribution found twice on sys.path
            seen.add(name)
            provider = (dist.metadata["name"], dist.version)
            try:
                plugin = entry_point.load()
                pm.register(plugin, name=name)
                pm.check_pending()  # a misspelled hook; the plugins before this one passed
            except Exception as exc:  # third-party code: importing it may raise anything
                if pm.get_plugin(name) is not None:
                    pm.unregister(name=name)
                _skip(BrokenPlugin(entry_point.name, *provider, entry_point.value, _one_line(exc)))
                continue
            _distributions[id(plugin)] = provider


def broken_plugins() -> list[BrokenPlugin]:
    """The entry points that were skipped because they could not be loaded."""
    load_plugins()
    return list(_broken)


def get_plugin_manager() -> pluggy.PluginManager:
    """The process-wide plugin manager, with all plugins loaded."""
    load_plugins()
    assert _pm is not None
    return _pm


def _provider(pm: pluggy.PluginManager, plugin: object) -> Provider:
    name = pm.get_name(plugin) or repr(plugin)
    distribution = _distributions.get(id(plugin))
    if distribution is None:
        return Provider(name, None, None)
    return Provider(name.partition(":")[2], *distribution)


def _implementers(pm: pluggy.PluginManager, kind: str) -> list[object]:
    """Plugins implementing the hook of ``kind``, in registration order."""
    hook = getattr(pm.hook, _KINDS[kind][0])
    return list(dict.fromkeys(impl.plugin for impl in hook.get_hookimpls()))


def _specs_of(pm: pluggy.PluginManager, kind: str, plugin: object) -> list:
    """Call one plugin's hook on its own, so that what it registers can be attributed to it.

    Checks what it registered; raises PluginError naming the plugin on anything wrong.
    """
    others = [p for p in pm.get_plugins() if p is not plugin]
    specs: list[object] = []
    try:
        pm.subset_hook_caller(_KINDS[kind][0], remove_plugins=others)(register=specs.append)
    except ImportError as exc:
        raise PluginError(f"{_provider(pm, plugin)} cannot register {kind}s here: {exc}") from exc
    except Exception as exc:  # third-party code: a bug in its hook is its error, in one line
        raise PluginError(
            f"{_provider(pm, plugin)} failed to register {kind}s: {_one_line(exc)}"
        ) from exc
    spec_type = _KINDS[kind][1]
    for spec in specs:
        if not isinstance(spec, spec_type):
            raise PluginError(
                f"{_provider(pm, plugin)} registered a {type(spec).__name__} as {kind}; "
                f"expected {spec_type.__name__}"
            )
        if not isinstance(spec.name, str) or not spec.name:
            raise PluginError(f"{_provider(pm, plugin)} registered {kind} with an empty name")
    return specs


def _registry(kind: str) -> Registry:
    pm = get_plugin_manager()
    registry: Registry = Registry(kind)
    for plugin in _implementers(pm, kind):
        provider = _provider(pm, plugin)
        for spec in _specs_of(pm, kind, plugin):
            registry.add(spec, provider)
    return registry


def architectures() -> dict[str, ArchitectureSpec]:
    """Every registered architecture by name (sorted). Architecture plugins may import torch."""
    return _registry("architecture").specs()


def datasets() -> dict[str, DatasetSpec]:
    """Every registered dataset by name (sorted). Never imports torch."""
    return _registry("dataset").specs()


def get_architecture(name: str) -> ArchitectureSpec:
    """The architecture called ``name``; PluginError listing the known names if there is none."""
    return _registry("architecture").get(name)


def get_dataset(name: str) -> DatasetSpec:
    """The dataset called ``name``; PluginError listing the known names if there is none."""
    return _registry("dataset").get(name)


@dataclass(frozen=True)
class PluginRow:
    """One line of ``eprpipe plugins``: a registered name and who provides it."""

    kind: str
    name: str
    plugin: str
    distribution: str | None
    version: str | None
    description: str


def plugin_listing() -> list[PluginRow]:
    """Every registered name with its provider, sorted by kind and name.

    Unlike the registries this does not refuse clashing names: it lists both, so the user sees
    who clashes. A plugin whose hook cannot run here (an architecture plugin on a machine
    without torch) gets one row named "-" whose description says why, and so does an entry
    point that could not be loaded at all, as kind "broken".
    """
    pm = get_plugin_manager()
    rows = [
        PluginRow("broken", "-", broken.plugin, broken.distribution, broken.version, broken.error)
        for broken in broken_plugins()
    ]
    for kind in _KINDS:
        for plugin in _implementers(pm, kind):
            who = _provider(pm, plugin)
            try:
                specs = _specs_of(pm, kind, plugin)
            except PluginError as exc:
                rows.append(
                    PluginRow(kind, "-", who.plugin, who.distribution, who.version, str(exc))
                )
                continue
            for spec in specs:
                rows.append(
                    PluginRow(
                        kind, spec.name, who.plugin, who.distribution, who.version, spec.description
                    )
                )
    return sorted(rows, key=lambda row: (row.kind, row.name, row.plugin))
