"""The engine: a backend behind the response cache and the budget meter.

``Engine.complete`` reserves budget, serves what it can from the cache, sends the rest to the
backend, stores the answers and charges the meter. It returns completions for the requests the
budget allowed, in order; ``meter.exhausted_reason()`` says why it returned fewer.
"""

from __future__ import annotations

from typing import Sequence

from streamsynth.backends.base import Backend
from streamsynth.records import Completion, CompletionRequest
from streamsynth.runtime.budget import BudgetMeter
from streamsynth.runtime.cache import ResponseCache


class Engine:
    def __init__(self, backend: Backend, meter: BudgetMeter, cache: ResponseCache | None = None) -> None:
        self.backend = backend
        self.meter = meter
        self.cache = cache

    @property
    def model_id(self) -> str:
        return self.backend.model_id

    @property
    def batch_size(self) -> int:
        return int(getattr(self.backend, "preferred_batch_size", 32))

    async def complete(self, requests: Sequence[CompletionRequest]) -> list[Completion]:
        granted = self.meter.reserve(len(requests))
        requests = list(requests)[:granted]
        if not requests:
            return []
        model_id = self.backend.model_id
        keys = [r.cache_key(model_id) for r in requests]
        hits = self.cache.get_many(keys) if self.cache is not None else {}
        misses = [i for i, k in enumerate(keys) if k not in hits]
        fresh: dict[int, Completion] = {}
        if misses:
            answers = await self.backend.complete([requests[i] for i in misses])
            fresh = dict(zip(misses, answers))
            if self.cache is not None:
                self.cache.put_many({keys[i]: c for i, c in fresh.items() if c.ok})
        out = [hits[k] if k in hits else fresh[i] for i, k in enumerate(keys)]
        for c in out:
            self.meter.charge(c)
        return out
