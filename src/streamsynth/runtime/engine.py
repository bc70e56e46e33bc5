"""The engine: every model call goes cache, then scheduler; the budget is reserved per item.

- ``Engine.call(request)`` looks the request up in the response cache (in a worker thread, off
  the event loop, the look-ups asked for meanwhile batched into one read), else hands it to the
  scheduler, then queues the answer for the cache. Cache writes are buffered and committed in
  batches by a worker thread.
- The scheduler depends on the backend. A backend that batches (a local model) gets a
  ``MicroBatcher``: requests from all items in flight are gathered into one batch as soon as the
  model is free, so the model never waits for one item. A backend that takes requests one by one
  (an HTTP server) gets each request as its own coroutine; the backend limits requests in flight.
- Budget: the run loop reserves an item's most calls before it starts (``BudgetMeter.reserve``)
  and hands back what the item did not use, so an item is never cut in half and the cap holds
  under any concurrency. The engine only charges what each call cost.
"""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

from streamsynth.backends.base import Backend
from streamsynth.records import Completion, CompletionRequest
from streamsynth.runtime.budget import BudgetMeter
from streamsynth.runtime.cache import ResponseCache


class MicroBatcher:
    """Gather requests from concurrent callers into backend batches of at most ``batch_size``.

    A batch starts as soon as a slot is free (``parallel`` batches at once, 1 for a local model)
    with whatever requests are waiting, so the model is kept busy without waiting for stragglers.
    """

    def __init__(self, backend: Backend, batch_size: int, parallel: int = 1) -> None:
        self.backend = backend
        self.batch_size = max(1, batch_size)
        self.parallel = max(1, parallel)
        self._pending: list[tuple[CompletionRequest, asyncio.Future]] = []
        self._running = 0
        self._kick_scheduled = False

    async def submit(self, request: CompletionRequest) -> Completion:
        fut: asyncio.Future = asyncio.get_running_loop().create_future()
        self._pending.append((request, fut))
        self._schedule()
        return await fut

    #: when the backend is idle, wait this long for more requests before starting a partial batch
    linger_s = 0.005

    def _schedule(self) -> None:
        loop = asyncio.get_running_loop()
        if len(self._pending) >= self.batch_size and self._running < self.parallel:
            self._kick()
        elif not self._kick_scheduled:
            # let the items that are about to call (cache look-ups in flight) join this batch
            self._kick_scheduled = True
            loop.call_later(self.linger_s, self._kick)

    def _kick(self) -> None:
        self._kick_scheduled = False
        while self._pending and self._running < self.parallel:
            batch, self._pending = self._pending[: self.batch_size], self._pending[self.batch_size :]
            batch = [(r, f) for r, f in batch if not f.cancelled()]
            if not batch:
                continue
            self._running += 1
            asyncio.get_running_loop().create_task(self._run(batch))

    async def _run(self, batch: list[tuple[CompletionRequest, asyncio.Future]]) -> None:
        try:
            answers = await self.backend.complete([r for r, _ in batch])
            for (_, fut), answer in zip(batch, answers):
                if not fut.done():
                    fut.set_result(answer)
        except BaseException as exc:  # a fatal backend error reaches every waiting caller
            for _, fut in batch:
                if not fut.done():
                    fut.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
        finally:
            self._running -= 1
            self._kick()


class Engine:
    def __init__(self, backend: Backend, meter: BudgetMeter, cache: ResponseCache | None = None, *,
                 max_in_flight: int | None = None) -> None:
        self.backend = backend
        self.meter = meter
        self.cache = cache
        batching = getattr(backend, "batching", True)
        size = int(getattr(backend, "preferred_batch_size", 32))
        self._batcher = MicroBatcher(backend, size) if batching else None
        # enough items in flight to fill the next batch while one runs, or the server's concurrency
        self.max_in_flight = max_in_flight or (2 * size if batching else int(getattr(backend, "concurrency", 64)) * 2)
        self._to_cache: dict[str, Completion] = {}
        self._flushing: asyncio.Task | None = None
        #: cache reads waiting for the worker thread, and whether a reader is running
        self._wanted: list[tuple[str, asyncio.Future]] = []
        self._reading = False
        self._reader: asyncio.Task | None = None
        # one request straight to a backend that takes them one by one (no task and gather per call)
        self._complete_one = getattr(backend, "complete_one", None) if not batching else None

    @property
    def model_id(self) -> str:
        return self.backend.model_id

    async def call(self, request: CompletionRequest, *, key: str | None = None) -> tuple[Completion, str]:
        """One request through cache and scheduler; returns the answer and its cache key.

        ``key``: the request's cache key when the caller has it already (``request.cache_key``)."""
        if key is None:
            key = request.cache_key(self.backend.model_id)
        if self.cache is not None:
            hit = self._to_cache.get(key)
            if hit is None:
                hit = await self._lookup(key)
            else:
                hit = dataclasses.replace(hit, cached=True)
            if hit is not None:
                self.meter.charge(hit)
                return hit, key
        if self._batcher is not None:
            answer = await self._batcher.submit(request)
        elif self._complete_one is not None:
            answer = await self._complete_one(request)
        else:
            answer = (await self.backend.complete([request]))[0]
        self.meter.charge(answer)
        if self.cache is not None and answer.error is None:
            self._to_cache[key] = answer
            if len(self._to_cache) >= 256 or self._flushing is None or self._flushing.done():
                self._flushing = asyncio.get_running_loop().create_task(self.flush())
        return answer, key

    async def _lookup(self, key: str) -> Completion | None:
        """A cache read in a worker thread, batched: the keys asked for while one read runs go in the next."""
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        self._wanted.append((key, fut))
        if not self._reading:
            self._reading = True
            self._reader = loop.create_task(self._read_wanted())  # (held: the loop keeps only weak references)
        return await fut

    async def _read_wanted(self) -> None:
        try:
            while self._wanted:
                batch, self._wanted = self._wanted, []
                try:
                    found = await asyncio.to_thread(self.cache.get_many, [k for k, _ in batch])
                except BaseException as exc:
                    for _, fut in batch:
                        if not fut.done():
                            fut.set_exception(exc)
                    if not isinstance(exc, Exception):
                        raise
                    continue
                for k, fut in batch:
                    if not fut.done():
                        fut.set_result(found.get(k))
        finally:
            self._reading = False

    async def flush(self) -> None:
        """Commit buffered answers to the cache (in a worker thread)."""
        if self.cache is None or not self._to_cache:
            return
        items, self._to_cache = self._to_cache, {}
        await asyncio.to_thread(self.cache.put_many, items)

    async def aclose(self) -> Any:
        if self._flushing is not None:
            await asyncio.gather(self._flushing, return_exceptions=True)
        await self.flush()
