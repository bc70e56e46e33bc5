"""``ItemLM``: the model handle a method gets for one item.

Every call is keyed by (item, step, k), never by a shared counter, so what a call returns does not
depend on which other items run at the same time or in which order they finish. Each call is
recorded as a ``Step`` (name, request fingerprint, cost, cached or not, outcome) that ends up in
the provenance of the item's samples. An item may make at most ``max_calls`` calls: that many
were reserved from the budget before it started.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Sequence

from streamsynth.errors import ConfigError
from streamsynth.records import Completion, CompletionRequest, Cost, GenerationParams, Message, Step

if TYPE_CHECKING:
    from streamsynth.runtime.engine import Engine


class ItemLM:
    def __init__(self, engine: "Engine", *, index: int, seed: int, max_calls: int) -> None:
        self.engine = engine
        self.index = index
        self.seed = seed
        self.max_calls = max_calls
        self.steps: list[Step] = []
        self.cost = Cost()
        self.prompt_fingerprint: str | None = None

    @property
    def model_id(self) -> str:
        return self.engine.model_id

    @property
    def calls_left(self) -> int:
        return self.max_calls - len(self.steps)

    def request(self, messages: Sequence[Message], params: GenerationParams, *, step: str, k: int = 0) -> CompletionRequest:
        # the first call of an item keeps the plain (seed, index) key, as single-call methods always had
        plain = not self.steps and k == 0 and step == "generate"
        return CompletionRequest(tuple(messages), params, seed=self.seed, sample_index=self.index,
                                 step="" if plain else step, k=k)

    async def complete(self, messages: Sequence[Message], params: GenerationParams, *, step: str = "generate",
                       k: int = 0) -> Completion:
        """One model call; a failed call comes back with ``error`` set (and is a step too)."""
        if self.calls_left <= 0:
            raise ConfigError(
                f"item {self.index} made more model calls than its plan allowed ({self.max_calls}); "
                "raise max_calls in the method's plan()"
            )
        req = self.request(messages, params, step=step, k=k)
        key = self._key(req)
        completion, key = await self.engine.call(req, key=key)
        self._record(req, completion, key)
        return completion

    def _key(self, req: CompletionRequest) -> str:
        """The request's cache key; the item's prompt fingerprint too on its first call (one serialization)."""
        if self.prompt_fingerprint is None:
            key, self.prompt_fingerprint = req.fingerprints(self.engine.model_id)
            return key
        return req.cache_key(self.engine.model_id)

    def _record(self, req: CompletionRequest, completion: Completion, key: str) -> None:
        if self.prompt_fingerprint is None:
            self.prompt_fingerprint = req.prompt_fingerprint()
        cost = self.engine.meter.cost_of(completion)
        self.cost = cost if not self.steps else self.cost + cost
        outcome = "ok" if completion.error is None else f"error: {completion.error}"
        self.steps.append(Step(req.step or "generate", req.k, key[:16], completion.cached, cost, outcome))

    async def complete_many(self, messages: Sequence[Message], params: GenerationParams, n: int, *,
                            step: str = "generate") -> list[Completion]:
        """``n`` samples of the same prompt (k = 0..n-1), all in flight at once; steps recorded in k order."""
        if n > self.calls_left:
            raise ConfigError(
                f"item {self.index} asked for {n} calls with {self.calls_left} left of the {self.max_calls} its plan "
                "allowed; raise max_calls in the method's plan()"
            )
        reqs = [CompletionRequest(tuple(messages), params, seed=self.seed, sample_index=self.index, step=step, k=k)
                for k in range(n)]
        results = await asyncio.gather(*(self.engine.call(r, key=self._key(r)) for r in reqs))
        for req, (completion, key) in zip(reqs, results):
            self._record(req, completion, key)
        return [c for c, _ in results]
