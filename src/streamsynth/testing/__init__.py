"""Test tooling that ships with streamsynth: a mock OpenAI-compatible server and the contract suite."""

from streamsynth.testing.contracts import check_backend, check_check, check_method, check_selector

__all__ = sorted(["check_backend", "check_check", "check_method", "check_selector"])
