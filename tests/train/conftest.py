"""The training wing needs torch: without it (the torch-free CI job) this folder is skipped."""

import pytest

pytest.importorskip("torch")
