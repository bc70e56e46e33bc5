"""A deterministic fake backend for tests: a real implementation of the backend protocol.

Replies are scripted (a list, cycled), computed (a function of the request), or, by default,
seeded pseudo-sentences: the same request always gets the same reply. It counts every request it
serves, so tests can assert how many model calls a run made.
"""

from __future__ import annotations

import asyncio
import random
from typing import Callable, Sequence

from streamsynth.backends.base import BaseBackend
from streamsynth.fingerprint import derive_seed
from streamsynth.records import Completion, CompletionRequest

_WORDS = (
    "the a film story actor scene music plot moment ending character director script camera "
    "quiet bright slow warm sharp odd clever tender bold dull funny long brief strange"
).split()


def seeded_sentence(request: CompletionRequest) -> str:
    rng = random.Random(derive_seed(request.cache_key("fake"), "reply"))
    words = [rng.choice(_WORDS) for _ in range(rng.randint(6, 14))]
    return " ".join(words).capitalize() + "."


class FakeBackend(BaseBackend):
    """Scripted or seeded replies with word-count usage; no network, no model."""

    def __init__(
        self,
        replies: Sequence[str] | Callable[[CompletionRequest], str] | None = None,
        *,
        model: str = "fake",
        latency_s: float = 0.0,
        batch_size: int = 16,
        fail: Callable[[CompletionRequest], str | None] | None = None,
    ) -> None:
        self._replies = replies
        self._model = model
        self.latency_s = latency_s
        self.preferred_batch_size = batch_size
        self._fail = fail
        self.requests: list[CompletionRequest] = []

    @property
    def model_id(self) -> str:
        return f"fake:{self._model}"

    @property
    def calls(self) -> int:
        return len(self.requests)

    def _reply(self, request: CompletionRequest) -> str:
        if self._replies is None:
            return seeded_sentence(request)
        if callable(self._replies):
            return self._replies(request)
        return self._replies[len(self.requests) % len(self._replies)]

    async def complete(self, requests: Sequence[CompletionRequest]) -> list[Completion]:
        if self.latency_s:
            await asyncio.sleep(self.latency_s)
        out = []
        for r in requests:
            error = self._fail(r) if self._fail else None
            text = "" if error else self._reply(r)
            self.requests.append(r)
            words = text.split()
            limit = r.params.max_new_tokens
            finish = "length" if len(words) > limit else "stop"
            text = " ".join(words[:limit]) if finish == "length" else text
            out.append(
                Completion(
                    text=text,
                    model=self.model_id,
                    finish_reason=finish,
                    prompt_tokens=sum(len(m.content.split()) for m in r.messages),
                    completion_tokens=min(len(words), limit),
                    error=error,
                )
            )
        return out
