"""Selectors: choose the final set from the accepted samples. One verb, ``select``."""

from __future__ import annotations

from typing import Protocol, Sequence, runtime_checkable

from streamsynth.records import Sample
from streamsynth.state import Stateful, component
from streamsynth.task import Task


@runtime_checkable
class Selector(Protocol):
    name: str

    def select(self, samples: Sequence[Sample], task: Task, *, seed: int) -> list[Sample]:
        """Return the kept samples; the ones left out are rejected with a reason by the caller."""
        ...


@component("keep_all")
class KeepAll(Stateful):
    """Keep every sample that passed the checks, in order."""

    name = "keep_all"

    def select(self, samples: Sequence[Sample], task: Task, *, seed: int) -> list[Sample]:
        return [s for s in samples if s.accepted]
