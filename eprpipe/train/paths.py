"""Where training writes: checked before a run starts, so that no work is lost at its end."""

from __future__ import annotations

import os
from pathlib import Path

from eprpipe.errors import EprError
from eprpipe.format.atomic import check_output_path


def check_writable(path: Path, inputs: tuple[Path, ...] = ()) -> None:
    """Fail before training, not after, when the output cannot be written: a missing or
    read-only directory, or a target write_atomically refuses (a device, a FIFO, an input)."""
    check_output_path(path, inputs=inputs)
    parent = path.resolve().parent
    if not parent.is_dir():
        raise EprError(f"cannot write {path}: directory {parent} does not exist")
    if not os.access(parent, os.W_OK):
        raise EprError(f"cannot write {path}: directory {parent} is not writable")
