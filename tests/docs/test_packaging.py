"""pyproject.toml reads without a setuptools warning: every `pip install` shows what it emits."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest

PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"


def test_setuptools_reads_the_project_without_a_warning() -> None:
    pytest.importorskip("setuptools", minversion="77")  # SPDX license strings came with 77
    from setuptools.config.pyprojecttoml import apply_configuration
    from setuptools.dist import Distribution

    if not PYPROJECT.exists():
        pytest.skip("an installed copy without its pyproject.toml")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. "`project.license` as a TOML table is deprecated"
        distribution = apply_configuration(Distribution(), PYPROJECT)
    assert distribution.metadata.license_expression == "Apache-2.0"
