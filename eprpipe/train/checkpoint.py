"""Resumable training: the whole state of a run, saved atomically, restored exactly.

A checkpoint holds everything the next step depends on: the module (latents, decoders,
densities), the optimizer and schedule, the batch order of the current epoch, every random
number generator, the epoch history and the running sums of the epoch. So a run that is
killed and resumed takes the same steps as one that never stopped and writes the same file.
Files are written with `torch.save` to a temporary name and renamed, and read back with
`torch.load(weights_only=True)`: a checkpoint is data, never code.
"""

from __future__ import annotations

import dataclasses
import io
import time
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

import torch

from eprpipe.errors import EprError
from eprpipe.format.atomic import write_atomically
from eprpipe.train.distributed import current_world

FORMAT = "eprpipe-checkpoint"
VERSION = 2  # 2: augmentation seeded per step, no augmenter state


@dataclass(frozen=True)
class CheckpointPolicy:
    """Where and how often a run saves itself, and whether it starts from a saved state."""

    path: Path
    every_steps: int | None = None
    every_seconds: float | None = 600.0
    resume: bool = False

    def __post_init__(self) -> None:
        if self.every_steps is not None and self.every_steps < 1:
            raise EprError(f"checkpoint interval must be at least 1 step, got {self.every_steps}")
        if self.every_seconds is not None and self.every_seconds <= 0:
            raise EprError(f"checkpoint interval must be positive, got {self.every_seconds} s")


class Checkpointer:
    """Saves a run's state when it is due; hands a saved state back to the phase that owns it.

    `identity` (the run's settings) is stored with every checkpoint; resuming with different
    settings is refused, naming the fields that differ, since the result would be neither run.
    """

    def __init__(self, policy: CheckpointPolicy, identity: dict) -> None:
        self.policy = policy
        self.identity = identity
        self.saved: dict = self._load() if policy.resume else {}
        self._last_save = time.monotonic()

    def _load(self) -> dict:
        path = self.policy.path
        if not path.exists():
            raise EprError(f"--resume: no checkpoint at {path}")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # torch raises many types for damaged or foreign files
            raise EprError(f"{path} is not a readable eprpipe checkpoint: {err}") from err
        if not isinstance(state, dict) or state.get("format") != FORMAT:
            raise EprError(f"{path} is not an eprpipe checkpoint")
        if state.get("version") != VERSION:
            raise EprError(f"{path}: checkpoint version {state.get('version')}, need {VERSION}")
        differing = sorted(
            key
            for key in self.identity.keys() | state["identity"].keys()
            if self.identity.get(key) != state["identity"].get(key)
        )
        if differing:
            raise EprError(
                f"{path} was written by a run with other settings ({', '.join(differing)}); "
                "resume with the same settings, or start afresh without --resume"
            )
        return state

    def phase_state(self, phase: str) -> dict | None:
        """The saved state of `phase` if the checkpoint stopped inside it, else None."""
        return self.saved.get("phases", {}).get(phase)

    def finished(self, phase: str) -> dict | None:
        """What a phase that had completed before the checkpoint handed on (e.g. its result)."""
        return self.saved.get("finished", {}).get(phase)

    def due(self, step: int) -> bool:
        every_steps, every_seconds = self.policy.every_steps, self.policy.every_seconds
        if every_steps is not None and step % every_steps == 0:
            return True
        return every_seconds is not None and time.monotonic() - self._last_save >= every_seconds

    def save(self, phase: str, state: dict) -> None:
        """Write the run as it is now: `phase` in progress with `state`, earlier phases done."""
        self.saved.setdefault("phases", {}).clear()
        self.saved["phases"][phase] = state
        self._write()

    def finish(self, phase: str, result: dict) -> None:
        """Record that `phase` completed, with what later phases need from it."""
        self.saved.setdefault("finished", {})[phase] = result
        self.saved.setdefault("phases", {}).pop(phase, None)
        self._write()

    def _write(self) -> None:
        if not current_world().is_main:  # one writer per run, whatever the process count
            return
        buffer = io.BytesIO()
        torch.save(
            {"format": FORMAT, "version": VERSION, "identity": self.identity, **self.saved}, buffer
        )
        write_atomically(self.policy.path, buffer.getvalue())
        self._last_save = time.monotonic()

    def remove(self) -> None:
        """The run is complete and its output written: the checkpoint has served."""
        if current_world().is_main:
            self.policy.path.unlink(missing_ok=True)


def rng_state() -> dict:
    """Every generator a training step draws from (the rate term's noise uses torch's)."""
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def identity_of(config: object, **extra: object) -> dict:
    """A run's settings as plain data, for the mismatch check on resume.

    Modes are stored by their strings: `torch.load(weights_only=True)` reads no enumerations,
    and checkpoints of eprpipe 0.1, which had no enumerations, keep their identity.
    """
    fields = {
        name: value.value if isinstance(value, Enum) else value
        for name, value in dataclasses.asdict(config).items()
    }
    # A run may resume elsewhere, with or without a bar, measuring its test error more or less
    # often: none of these changes what it trains.
    for free in ("progress", "device", "eval_every"):
        fields.pop(free, None)
    return {**fields, **extra}
