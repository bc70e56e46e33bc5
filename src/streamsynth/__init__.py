"""streamsynth: generate fine-tuning and training data with LLMs, and get better at it with every task.

The public names below load on first use (PEP 562), so that ``import streamsynth.cli.main`` (the
``streamsynth`` command) does not pull in the API, pydantic, pyarrow or torch before it can handle
a Ctrl-C: a user who interrupts the command in its first second gets one line, not a traceback.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

#: public name -> the module it lives in
_EXPORTS = {
    **dict.fromkeys(["GenerateReport", "agenerate", "generate"], "streamsynth.api"),
    **dict.fromkeys(
        ["AuthenticationError", "BackendError", "BackendUnavailable", "BudgetExhausted", "CacheError", "ConfigError",
         "DataError", "OutputError", "SpecError", "StreamsynthError"],
        "streamsynth.errors",
    ),
    **dict.fromkeys(["SynthesisProgram", "default_program"], "streamsynth.program"),
    **dict.fromkeys(
        ["Completion", "CompletionRequest", "Cost", "Example", "GenerationParams", "Message", "Provenance", "Sample",
         "Verdict"],
        "streamsynth.records",
    ),
    **dict.fromkeys(["Task", "load_task"], "streamsynth.task"),
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'streamsynth' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])


if TYPE_CHECKING:  # for type checkers and IDEs: the same names, imported eagerly
    from streamsynth.api import GenerateReport, agenerate, generate
    from streamsynth.errors import (
        AuthenticationError, BackendError, BackendUnavailable, BudgetExhausted, CacheError, ConfigError, DataError,
        OutputError, SpecError, StreamsynthError,
    )
    from streamsynth.program import SynthesisProgram, default_program
    from streamsynth.records import (
        Completion, CompletionRequest, Cost, Example, GenerationParams, Message, Provenance, Sample, Verdict,
    )
    from streamsynth.task import Task, load_task
