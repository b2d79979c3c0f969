"""Deprecated: the 0.1 path of `eprpipe.plugins.registry`,
kept so code written against it keeps working.

Import `ArchitectureSpec` from `eprpipe` instead; this alias goes away in 0.3.
"""

import sys
import warnings

import eprpipe.plugins.registry as _moved

warnings.warn(
    "eprpipe.registry moved to eprpipe.plugins.registry; import ArchitectureSpec from eprpipe",
    DeprecationWarning,
    stacklevel=2,
)
sys.modules[__name__] = _moved
