"""Model backends behind one protocol: ``await backend.complete(requests)``."""

from streamsynth.backends.base import Backend, BaseBackend, run_sync
from streamsynth.backends.fake import FakeBackend
from streamsynth.backends.local_hf import LocalHFBackend, embedded_gguf_path
from streamsynth.backends.openai_http import OpenAIChatBackend

__all__ = sorted(
    ["Backend", "BaseBackend", "FakeBackend", "LocalHFBackend", "OpenAIChatBackend", "embedded_gguf_path", "run_sync"]
)
