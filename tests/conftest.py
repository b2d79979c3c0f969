"""Test-wide settings: repeatable hypothesis runs on CI; the header names what is under test."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from hypothesis import settings

import eprpipe

settings.register_profile("ci", derandomize=True, deadline=None, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")


def pytest_report_header() -> str:
    """Which eprpipe is under test (checkout or installed copy), and whether torch is there."""
    torch = "installed" if importlib.util.find_spec("torch") else "absent, its tests skip"
    return f"eprpipe: {Path(eprpipe.__file__).parent}; torch: {torch}"
