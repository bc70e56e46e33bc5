"""streamsynth: generate fine-tuning and training data with LLMs, and get better at it with every task."""

from streamsynth.api import GenerateReport, agenerate, generate
from streamsynth.errors import (
    AuthenticationError,
    BackendError,
    BackendUnavailable,
    BudgetExhausted,
    CacheError,
    ConfigError,
    DataError,
    OutputError,
    SpecError,
    StreamsynthError,
)
from streamsynth.program import SynthesisProgram, default_program
from streamsynth.records import (
    Completion,
    CompletionRequest,
    Cost,
    Example,
    GenerationParams,
    Message,
    Provenance,
    Sample,
    Verdict,
)
from streamsynth.task import Task, load_task

__version__ = "0.1.0"

__all__ = sorted(
    [
        "AuthenticationError", "BackendError", "BackendUnavailable", "BudgetExhausted", "CacheError",
        "Completion", "CompletionRequest", "ConfigError", "Cost", "DataError", "Example", "GenerateReport",
        "GenerationParams", "Message", "OutputError", "Provenance", "Sample", "SpecError",
        "StreamsynthError", "SynthesisProgram", "Task", "Verdict", "agenerate", "default_program",
        "generate", "load_task",
    ]
)
