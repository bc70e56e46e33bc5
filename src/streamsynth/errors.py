"""One exception tree for streamsynth.

Every message says what is wrong and what to do about it. Exceptions from the libraries
underneath (aiohttp, transformers, sqlite3, yaml) are translated into these at one boundary,
so callers catch ``StreamsynthError`` and nothing else.
"""

from __future__ import annotations


class StreamsynthError(Exception):
    """Base of every error streamsynth raises on purpose."""


class ConfigError(StreamsynthError):
    """A configuration value is missing or invalid (CLI options, backend settings)."""


class SpecError(ConfigError):
    """A task spec is invalid. ``field`` names the offending field (dotted path)."""

    def __init__(self, message: str, *, field: str | None = None, path: str | None = None):
        self.field = field
        self.path = path
        where = f"{path}: " if path else ""
        at = f"field '{field}': " if field else ""
        super().__init__(f"{where}{at}{message}")


class DataError(StreamsynthError):
    """Task data (JSONL files) cannot be read or does not match the spec."""


class BackendError(StreamsynthError):
    """A model backend failed in a way that stops the run (not a single bad response)."""


class BackendUnavailable(BackendError):
    """The backend cannot be reached or loaded at all (server down, model file missing)."""


class AuthenticationError(BackendError):
    """The server refused our credentials (HTTP 401/403)."""


class RequestFailed(BackendError):
    """One request failed after every retry. Recorded on the sample; the run goes on."""

    def __init__(self, message: str, *, status: int | None = None, retryable: bool = False):
        self.status = status
        self.retryable = retryable
        super().__init__(message)


class BudgetExhausted(StreamsynthError):
    """The hard budget cap was reached. The run stops cleanly and keeps what it wrote."""


class CacheError(StreamsynthError):
    """The response cache cannot be opened or written."""


class OutputError(StreamsynthError):
    """The output folder cannot be written, or would overwrite a different run."""
