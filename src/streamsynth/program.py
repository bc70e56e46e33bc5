"""The synthesis program: strategies, checks and a selector, apart from whatever improves it.

A learner reads ``state()`` and builds an improved program; running a program never changes
how it was configured (per-run memory such as the duplicate check's is reset at each start).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from streamsynth.errors import ConfigError
from streamsynth.methods import AttributeConditionedStrategy, Strategy
from streamsynth.quality import Check, KeepAll, Selector, default_checks
from streamsynth.quality.label_check import SeedLabelConsistencyCheck
from streamsynth.task import Task


@dataclass
class SynthesisProgram:
    strategies: list[Strategy]
    checks: list[Check] = field(default_factory=default_checks)
    selector: Selector = field(default_factory=KeepAll)

    def state(self) -> dict[str, Any]:
        return {
            "strategies": [s.state() for s in self.strategies],
            "checks": [c.name for c in self.checks],
            "selector": self.selector.name,
        }


def default_program(task: Task) -> SynthesisProgram:
    """The program streamsynth runs for a task when nothing else is given."""
    if task.kind in ("classification", "pair_classification"):
        checks = default_checks()
        label_check = task.generation.label_check
        if label_check or (label_check is None and task.kind == "classification"):
            checks.append(SeedLabelConsistencyCheck())
        return SynthesisProgram(strategies=[AttributeConditionedStrategy()], checks=checks)
    raise ConfigError(
        f"task '{task.name}' is of kind '{task.kind}'; this version generates classification and "
        "pair_classification tasks only (qa and code strategies are on the roadmap)"
    )
