"""Training keeps freed memory for its next step instead of faulting it in again."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from eprpipe.train import allocator

needs_glibc = pytest.mark.skipif(allocator._glibc() is None, reason="glibc's malloc only")

# A child process allocates 96 MB in 8 MB tensors and one of 64 MB (the size of a VGG-16's
# rate-term temporaries), frees them, and reports from glibc's mallinfo2 how much of it was
# mapped afresh, how large the heap grew and how much of it went back to the kernel.
_CHILD = """
import ctypes, json, sys
import torch

FIELDS = "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost"

class MallInfo(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in FIELDS.split()]

libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = MallInfo
if sys.argv[1] == "keep":
    from eprpipe.train.allocator import keep_freed_memory
    assert keep_freed_memory()
elif sys.argv[1] == "train":
    from eprpipe.train.loop import TensorData, TrainConfig, train_plain
    data = TensorData(torch.randn(8, 4), torch.zeros(8, dtype=torch.long))
    train_plain(torch.nn.Linear(4, 2), data, data, TrainConfig(epochs=1, progress=False))
before = libc.mallinfo2()
blocks = [torch.empty(size << 20, dtype=torch.uint8) for size in [8] * 12 + [64]]
during = libc.mallinfo2()
del blocks
after = libc.mallinfo2()
mapped, given_back = during.hblkhd - before.hblkhd, during.arena - after.arena
print(json.dumps({"mapped": mapped, "heap": during.arena, "given_back": given_back}))
"""

_MB = 1 << 20


def _allocate_and_free(mode: str) -> dict[str, int]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, mode], capture_output=True, text=True, env=env, check=True
    )
    return json.loads(done.stdout)


@needs_glibc
def test_training_keeps_freed_blocks_in_the_heap_for_the_next_step() -> None:
    # The control: glibc's own threshold starts at 128 kB, so each block is mapped afresh and
    # unmapped when freed; every new step would fault its pages in again.
    default = _allocate_and_free("default")
    assert default["mapped"] >= 160 * _MB
    for mode in ("keep", "train"):
        kept = _allocate_and_free(mode)
        assert kept["mapped"] < 8 * _MB, mode  # the blocks came from the heap
        assert kept["heap"] >= 160 * _MB, mode
        assert kept["given_back"] == 0, mode  # which keeps them once they are freed


def test_the_users_own_malloc_settings_win(monkeypatch) -> None:
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "0")
    assert not allocator.keep_freed_memory()
    monkeypatch.delenv("MALLOC_TRIM_THRESHOLD_")
    monkeypatch.setenv("GLIBC_TUNABLES", "glibc.malloc.trim_threshold=0")
    assert not allocator.keep_freed_memory()
