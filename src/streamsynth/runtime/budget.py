"""The budget meter: counts model queries, tokens and dollars, with hard caps.

``max_queries`` caps the queries the synthesis program makes, served fresh or from the cache, so
a run is the same whether or not its cache is warm (and a second run makes zero new calls).
``max_tokens`` caps tokens the same way. ``max_dollars`` caps real spend: fresh calls only.
A query is reserved before it is sent; when the cap is reached ``reserve`` grants fewer (or
none), and the run stops cleanly with what it has.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from streamsynth.records import Completion, Cost


@dataclass(frozen=True, slots=True)
class Prices:
    """Dollars per million prompt and completion tokens."""

    prompt_per_m: float = 0.0
    completion_per_m: float = 0.0

    def dollars(self, prompt_tokens: int, completion_tokens: int) -> float:
        return (prompt_tokens * self.prompt_per_m + completion_tokens * self.completion_per_m) / 1e6


class BudgetMeter:
    def __init__(
        self,
        max_queries: int | None = None,
        *,
        max_tokens: int | None = None,
        max_dollars: float | None = None,
        prices: Prices | None = None,
    ) -> None:
        for name, v in (("max_queries", max_queries), ("max_tokens", max_tokens), ("max_dollars", max_dollars)):
            if v is not None and v < 0:
                raise ValueError(f"{name} must be >= 0, got {v}")
        self.max_queries = max_queries
        self.max_tokens = max_tokens
        self.max_dollars = max_dollars
        self.prices = prices or Prices()
        self._lock = threading.Lock()
        self.reserved = 0
        self.cost = Cost()
        self.failed = 0
        #: completion tokens of fresh calls only (what the model really generated in this run)
        self.generated_tokens = 0

    @property
    def queries(self) -> int:
        """Queries answered so far (fresh and cached)."""
        return self.cost.calls + self.cost.cached_calls

    @property
    def remaining_queries(self) -> int | None:
        return None if self.max_queries is None else max(0, self.max_queries - self.reserved)

    def exhausted_reason(self) -> str | None:
        if self.max_queries is not None and self.reserved >= self.max_queries:
            return f"query budget of {self.max_queries} spent"
        if self.max_tokens is not None and self.cost.tokens >= self.max_tokens:
            return f"token budget of {self.max_tokens} spent"
        if self.max_dollars is not None and self.cost.dollars >= self.max_dollars:
            return f"dollar budget of {self.max_dollars:g} spent"
        return None

    def reserve(self, n: int) -> int:
        """Reserve up to ``n`` queries; returns how many may be sent (0 when exhausted)."""
        with self._lock:
            if self.exhausted_reason() is not None:
                return 0
            granted = n if self.max_queries is None else min(n, self.max_queries - self.reserved)
            self.reserved += granted
            return granted

    def release(self, n: int) -> None:
        """Give back reserved queries that were never sent."""
        with self._lock:
            self.reserved -= n

    def restore(self, cost: Cost, calls: int) -> None:
        """Count work done before (a resumed run's journaled items) as spent."""
        with self._lock:
            self.reserved += calls
            self.cost = self.cost + cost  # (generated_tokens stays: it measures this process's speed)

    def cost_of(self, completion: Completion) -> Cost:
        """What one answered query cost (a cache hit costs no call and no dollars)."""
        fresh = not completion.cached
        return Cost(
            calls=1 if fresh else 0,
            cached_calls=0 if fresh else 1,
            prompt_tokens=completion.prompt_tokens,
            completion_tokens=completion.completion_tokens,
            dollars=self.prices.dollars(completion.prompt_tokens, completion.completion_tokens) if fresh else 0.0,
        )

    def charge(self, completion: Completion) -> Cost:
        """Record one answered query; returns what it cost."""
        c = self.cost_of(completion)
        with self._lock:
            self.cost = self.cost + c
            if not completion.cached:
                self.generated_tokens += completion.completion_tokens
            if not completion.ok:
                self.failed += 1
        return c
