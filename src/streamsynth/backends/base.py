"""The backend protocol: one verb, ``complete``, for a batch of chat requests.

The same protocol serves a local model that batches requests into one forward pass and an HTTP
server that takes many requests in flight: the caller hands over a batch, the backend decides how
to run it. ``complete`` is async; ``complete_sync`` runs it from synchronous code.

A request that fails after every retry comes back as a ``Completion`` with ``error`` set, so one
bad response never stops a run. Errors that make every further request pointless (bad
credentials, no server, missing model file) are raised as ``BackendError`` subclasses.
"""

from __future__ import annotations

import abc
import asyncio
from typing import Protocol, Sequence, runtime_checkable

from streamsynth.errors import ConfigError
from streamsynth.records import Completion, CompletionRequest
from streamsynth import aio


@runtime_checkable
class Backend(Protocol):
    """Anything that turns chat requests into completions."""

    @property
    def model_id(self) -> str:
        """Identity of the model and its weights; part of every cache key."""
        ...

    async def complete(self, requests: Sequence[CompletionRequest]) -> list[Completion]:
        """Complete every request; the result is in the same order as ``requests``."""
        ...


class BaseBackend(abc.ABC):
    """Convenience base: the sync twin, batch sizing and closing."""

    #: how many requests the caller should hand over at once for best throughput
    preferred_batch_size: int = 32

    @property
    @abc.abstractmethod
    def model_id(self) -> str: ...

    @abc.abstractmethod
    async def complete(self, requests: Sequence[CompletionRequest]) -> list[Completion]: ...

    def complete_sync(self, requests: Sequence[CompletionRequest]) -> list[Completion]:
        """Run ``complete`` from synchronous code (not from inside a running event loop)."""
        return run_sync(self.complete(requests), self.aclose)

    async def aclose(self) -> None:
        """Release connections or models. Safe to call twice."""

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc) -> None:
        await self.aclose()


def run_sync(coro, closer=None):
    """Run a coroutine to completion from synchronous code."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:
        coro.close()
        raise ConfigError(
            "complete_sync() was called inside a running event loop; use 'await backend.complete(...)' there"
        )

    async def _main():
        try:
            return await coro
        finally:
            if closer is not None:
                await closer()

    return aio.run(_main())
