"""The architecture spec and one typed name registry shared by every kind of plugin object.

Torch-free: an architecture's factory imports torch when it is called, not before.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Generic, TypeVar

from eprpipe.data.datasets import DatasetSpec
from eprpipe.errors import PluginError

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class Recipe:
    """The λ and epochs an architecture's measured recipe uses where the user sets none
    (`eprpipe compress ARCH` without --lambda or --epochs); `measured` says what it reached,
    and where, for the report."""

    lam: float | None = None
    epochs: int | None = None
    measured: str = ""


@dataclass(frozen=True)
class ArchitectureSpec:
    """What an architecture plugin registers.

    ``factory(num_classes=n)`` builds a fresh, randomly initialised module that takes
    normalized float32 input of shape (N, *input_shape) and returns (N, n) logits; eprpipe
    passes the dataset's class count as ``n``, and ``num_classes`` only records the count
    the architecture is meant for (the full contract: `hookspecs.register_architectures`).
    """

    name: str
    factory: Callable[..., torch.nn.Module]
    input_shape: tuple[int, int, int]
    num_classes: int
    description: str
    recipe: Recipe = Recipe()  # no recipe: TrainConfig's defaults


@dataclass(frozen=True)
class Provider:
    """Who registered a name: the plugin (its entry-point name) and the distribution shipping it.

    ``distribution`` and ``version`` are None for a plugin registered by hand, not through an
    entry point.
    """

    plugin: str
    distribution: str | None
    version: str | None

    def __str__(self) -> str:
        if self.distribution is None:
            return f"plugin {self.plugin!r}"
        return f"{self.distribution} {self.version} (plugin {self.plugin!r})"


T = TypeVar("T", ArchitectureSpec, DatasetSpec)


@dataclass(frozen=True)
class Registration(Generic[T]):
    """A spec together with who registered it."""

    spec: T
    provider: Provider


class Registry(Generic[T]):
    """Names of one kind ("architecture", "dataset") mapped to specs, each name taken once."""

    def __init__(self, kind: str):
        self.kind = kind
        self.entries: dict[str, Registration[T]] = {}

    def add(self, spec: T, provider: Provider) -> None:
        taken = self.entries.get(spec.name)
        if taken is not None:
            raise PluginError(
                f"{self.kind} {spec.name!r} is registered twice: by {taken.provider} "
                f"and by {provider}"
            )
        self.entries[spec.name] = Registration(spec, provider)

    def get(self, name: str) -> T:
        entry = self.entries.get(name)
        if entry is None:
            known = ", ".join(sorted(self.entries)) or "none"
            raise PluginError(f"unknown {self.kind} {name!r}; known: {known}")
        return entry.spec

    def specs(self) -> dict[str, T]:
        return {name: entry.spec for name, entry in sorted(self.entries.items())}
