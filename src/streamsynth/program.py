"""The synthesis program: methods, checks and a selector, apart from whatever improves it.

A learner reads ``dump_state()`` and builds an improved program (``load_state``); running a
program never changes its configuration. ``synthesize`` runs a ``fresh()`` copy, whose fitted
fields (what it learned during the run, e.g. proposed attributes) are reported in the run's
manifest; the program it was given stays as it was.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from streamsynth.errors import ConfigError
from streamsynth.methods import AttributeConditionedStrategy, Method
from streamsynth.quality import Check, KeepAll, LabelBalance, Selector, default_checks
from streamsynth.quality.label_check import SeedLabelConsistencyCheck
from streamsynth.quality.ptrue import PTrueCheck
from streamsynth.state import load_state
from streamsynth.task import Task


def _state(component: Any, *, fitted: bool) -> dict[str, Any]:
    if fitted and hasattr(component, "dump_state"):
        return component.dump_state()
    if hasattr(component, "config_state"):
        return component.config_state()
    return {"type": getattr(component, "name", type(component).__name__), "params": {}}


@dataclass
class SynthesisProgram:
    methods: list[Method]
    checks: list[Check] = field(default_factory=default_checks)
    selector: Selector = field(default_factory=KeepAll)

    def __post_init__(self) -> None:
        if not self.methods:
            raise ConfigError("a synthesis program needs at least one method")

    # -- state ----------------------------------------------------------------------------
    def dump_state(self) -> dict[str, Any]:
        """Every component's type, parameters (templates included) and fitted fields, as data."""
        return {
            "methods": [_state(m, fitted=True) for m in self.methods],
            "checks": [_state(c, fitted=True) for c in self.checks],
            "selector": _state(self.selector, fitted=True),
        }

    def config_state(self) -> dict[str, Any]:
        """The configuration alone (no fitted fields): what a run's fingerprint covers."""
        return {
            "methods": [_state(m, fitted=False) for m in self.methods],
            "checks": [_state(c, fitted=False) for c in self.checks],
            "selector": _state(self.selector, fitted=False),
        }

    @classmethod
    def load_state(cls, state: Mapping[str, Any]) -> "SynthesisProgram":
        """A new program from ``dump_state`` data."""
        return cls(
            methods=[load_state(m) for m in state["methods"]],
            checks=[load_state(c) for c in state.get("checks", [])],
            selector=load_state(state["selector"]) if state.get("selector") else KeepAll(),
        )

    def fresh(self) -> "SynthesisProgram":
        """An unfitted copy with the same configuration (what a run works on)."""
        def copy(c: Any) -> Any:
            return c.clone() if hasattr(c, "clone") else c

        return SynthesisProgram([copy(m) for m in self.methods], [copy(c) for c in self.checks], copy(self.selector))

    def fitted_state(self) -> dict[str, Any]:
        return {"methods": [_state(m, fitted=True).get("fitted", {}) for m in self.methods]}

    def restore_fitted(self, fitted: Mapping[str, Any]) -> None:
        for m, f in zip(self.methods, fitted.get("methods", [])):
            restore = getattr(m, "restore_fitted", None)
            if restore is not None and f:
                restore(f)


#: the task kinds this version generates (qa and code methods are on the roadmap)
GENERATED_KINDS = ("classification", "pair_classification")


def default_program(task: Task) -> SynthesisProgram:
    """The program streamsynth runs for a task when nothing else is given."""
    if task.kind in GENERATED_KINDS:
        checks = default_checks()
        label_check = task.generation.label_check
        if label_check or (label_check is None and task.kind == "classification"):
            checks.append(SeedLabelConsistencyCheck())
        if task.generation.p_true:
            checks.append(PTrueCheck())
        selector = LabelBalance(task.generation.max_label_ratio) if task.kind == "classification" else KeepAll()
        return SynthesisProgram(methods=[AttributeConditionedStrategy()], checks=checks, selector=selector)
    raise ConfigError(
        f"task '{task.name}' is of kind '{task.kind}'; this version generates classification and "
        "pair_classification tasks only (qa and code methods are on the roadmap)"
    )
