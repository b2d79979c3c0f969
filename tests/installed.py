"""What eprpipe's own plugins register, apart from any other eprpipe plugin installed beside it.

Tests compare with these, never with every registered name, so they pass whatever else is
installed in the environment.
"""

from __future__ import annotations

from eprpipe.plugins.manager import plugin_listing


def builtin_names(kind: str) -> list[str]:
    """The names of ``kind`` ("architecture", "dataset") the eprpipe distribution registers."""
    rows = plugin_listing()
    return sorted(row.name for row in rows if row.kind == kind and row.distribution == "eprpipe")
