"""Test tooling: a real OpenAI-compatible mock server for tests and benchmarks."""
