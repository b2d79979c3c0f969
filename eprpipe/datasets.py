"""Deprecated: the 0.1 path of `eprpipe.data.datasets`,
kept so code written against it keeps working.

Import `DatasetSpec` from `eprpipe` instead; this alias goes away in 0.3.
"""

import sys
import warnings

import eprpipe.data.datasets as _moved

warnings.warn(
    "eprpipe.datasets moved to eprpipe.data.datasets; import DatasetSpec from eprpipe",
    DeprecationWarning,
    stacklevel=2,
)
sys.modules[__name__] = _moved
