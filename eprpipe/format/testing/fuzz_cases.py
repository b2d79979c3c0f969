"""The fuzzer's cases: every case family by name, and case I of run K drawn from an RNG seeded
with "K:I", so that a case is reproduced from those two numbers and the seed list alone.

Family 12 (filesystem) is drawn here too: its bytes, and a plan of where they go (a FIFO, a
symlink, a device node...) that the runner (eprpipe.fuzzing) carries out.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import NamedTuple

from eprpipe.format.testing.fuzz_bytes import (
    bit_flips,
    deep,
    padding_allowance,
    size_fields,
    splice,
    truncation,
    zstd_frames,
)
from eprpipe.format.testing.fuzz_graphs import graph_lies, onnx_graphs
from eprpipe.format.testing.fuzz_manifests import manifests, typed_manifest
from eprpipe.format.testing.fuzz_seeds import Mutator, Seed

# --- strategy 12: non-regular inputs and outputs --------------------------------------------

INPUT_KINDS = (
    "regular", "fifo", "fifo-writer", "symlink", "symlink-chain", "symlink-loop",
    "dangling-symlink", "char-zero", "char-null", "directory", "sparse", "sparse-tail",
)  # fmt: skip
OUTPUT_KINDS = (
    "new", "char-null", "char-zero", "fifo", "directory", "input", "symlink-to-input",
    "hardlink-to-input", "symlink-to-device", "dangling-symlink", "symlink-loop",
)  # fmt: skip
BYTES_BEHIND = ("bit-flips", "truncation", "deep", "manifest", "typed-manifest", "graph-lies")


@dataclass(frozen=True)
class FsPlan:
    """Where a filesystem case puts its bytes (input) and where `decode -o` points (output)."""

    input: str
    output: str

    def describe(self) -> str:
        return f"input {self.input}, -o {self.output}"


def draw_fs_plan(rng: random.Random) -> FsPlan:
    """Either side hostile, or both: a third of the cases keep the input a regular file."""
    plan = FsPlan(rng.choice(INPUT_KINDS), rng.choice(OUTPUT_KINDS))
    return replace(plan, input="regular") if rng.random() < 0.3 else plan


def filesystem(rng: random.Random, seed: Seed, seeds: Sequence[Seed]) -> bytes:
    """Strategy 12: the bytes behind a non-regular input or before a hostile `-o` (FsPlan,
    drawn by make_case): mostly the seed itself, so commands reach the output; else a mutant."""
    if rng.random() < 0.6:
        return seed.data
    return STRATEGIES[rng.choice(BYTES_BEHIND)](rng, seed, seeds)


STRATEGIES: dict[str, Mutator] = {
    "bit-flips": bit_flips,
    "truncation": truncation,
    "splice": splice,
    "size-fields": size_fields,
    "deep": deep,
    "zstd": zstd_frames,
    "onnx": onnx_graphs,
    "manifest": manifests,
    "typed-manifest": typed_manifest,
    "padding-allowance": padding_allowance,
    "graph-lies": graph_lies,
    "filesystem": filesystem,
}
IMAGE_TARGETED = frozenset({"typed-manifest", "graph-lies", "filesystem"})  # aimed at eval


class Case(NamedTuple):
    """One case: its family, seed index and bytes; filesystem cases also say where they go."""

    strategy: str
    seed: int
    data: bytes
    fs: FsPlan | None = None


def make_case(
    run_seed: int, index: int, seeds: Sequence[Seed], strategies: Sequence[str] = ()
) -> Case:
    """Case `index` of run `run_seed` over `strategies` (default: all), the same everywhere."""
    rng = random.Random(f"{run_seed}:{index}")
    strategy = rng.choice(sorted(strategies or STRATEGIES))
    seed_index = rng.randrange(len(seeds))
    images = [i for i, seed in enumerate(seeds) if seed.takes_images]
    if strategy in IMAGE_TARGETED and images and rng.random() < 0.75:
        seed_index = rng.choice(images)  # a seed `eval --dataset digits` runs to the end
    data = STRATEGIES[strategy](rng, seeds[seed_index], seeds)
    return Case(strategy, seed_index, data, draw_fs_plan(rng) if strategy == "filesystem" else None)


def case_strategy(run_seed: int, index: int, strategies: Sequence[str] = ()) -> str:
    """The strategy of a case without building it (for a case whose worker had to be killed)."""
    return random.Random(f"{run_seed}:{index}").choice(sorted(strategies or STRATEGIES))
