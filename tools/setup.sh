#!/usr/bin/env bash
# Create .venv and install eprpipe with its training and test extras, from nothing.
# torch is pinned and installed first: an unpinned torch with none installed pulls a CUDA build.
# Usage: bash tools/setup.sh [demo]   (with "demo", run `eprpipe demo` afterwards)
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip "setuptools>=77"
.venv/bin/python -m pip install --quiet "torch==2.13.0"
.venv/bin/python -m pip install --quiet -e ".[train,test]"
if [ "${1:-}" = "demo" ]; then
    .venv/bin/eprpipe demo
fi
