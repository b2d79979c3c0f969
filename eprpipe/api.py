"""Deprecated: the 0.1 path of `eprpipe.train.api`,
kept so code written against it keeps working.

Import `compress_module` from `eprpipe.train` instead; this alias goes away in 0.3.
"""

import sys
import warnings

import eprpipe.train.api as _moved

warnings.warn(
    "eprpipe.api moved to eprpipe.train.api; import compress_module from eprpipe.train",
    DeprecationWarning,
    stacklevel=2,
)
sys.modules[__name__] = _moved
