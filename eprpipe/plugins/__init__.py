"""Plugins: the hook specs, the registries and the pluggy manager that fills them.

May import `eprpipe.data`, pluggy and the standard library; torch only for type checking (an
architecture's factory imports torch when it is called). The manager's functions are exported
here, so that a script asks `eprpipe.plugins.get_dataset(name)` without knowing the modules.
"""

from eprpipe.plugins.manager import (
    ENTRY_POINT_GROUP,
    BrokenPlugin,
    PluginRow,
    architectures,
    broken_plugins,
    datasets,
    get_architecture,
    get_dataset,
    get_plugin_manager,
    load_plugins,
    plugin_listing,
)

__all__ = [
    "ENTRY_POINT_GROUP",
    "BrokenPlugin",
    "PluginRow",
    "architectures",
    "broken_plugins",
    "datasets",
    "get_architecture",
    "get_dataset",
    "get_plugin_manager",
    "load_plugins",
    "plugin_listing",
]
