"""eprpipe: compress neural networks with Entropy Penalized Reparameterization.

The package root stays torch-free: the decode and deploy path imports it on machines
without torch. Training entry points live in `eprpipe.api`.
"""

from __future__ import annotations

import pluggy

__version__ = "0.1.0"

hookimpl = pluggy.HookimplMarker("eprpipe")

__all__ = ["__version__", "hookimpl"]
