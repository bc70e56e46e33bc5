"""How many requests an HTTP backend keeps on the wire, and how fast it sends them.

- ``AIMDLimiter``: an adaptive concurrency limit (additive increase, multiplicative decrease,
  as TCP does). It starts at ``initial``; every ``limit`` successes while the limit is in use
  add 1 (never above ``max_limit``); an overload signal (a 429 or 503) or a latency that rises
  well above the least seen halves it (never below ``min_limit``). It does not grow while the
  current window's latency is that high.

  Latency is judged per window of answers (at least ``limit`` of them, one round trip's worth):
  a window whose mean latency exceeds ``latency_factor`` (2) x the baseline, and the baseline by
  ``latency_floor_s``, is a decrease. The baseline is the least window mean seen, not the least
  single latency: an LLM's shortest reply is far quicker than its typical one, and against the
  single minimum the limit would fall to 1 on a healthy server. The baseline also creeps up
  (``baseline_drift`` of the gap per window) so a server that became slower for good (other
  users) stops cutting the limit after a few windows.

  At most one decrease per window: each request remembers the window (``epoch``) it was sent in,
  and a decrease opens a new one, so the signals of requests sent under the old limit (the rest
  of a burst of 429s, their slow answers) are ignored.
- ``TokenBucket``: requests per minute or tokens per minute. ``reserve(cost)`` always succeeds at
  once and returns how long to wait before sending (the bucket may go negative), so waiters never
  wake together to fight over one token. ``observe(limit, remaining, reset_s)`` applies what a
  server said in its ``x-ratelimit-*`` headers.

Both are plain objects: the decisions are synchronous and take their time from ``clock``, so
tests drive them with a fake clock. Only ``AIMDLimiter.acquire`` awaits (for a free slot).
"""

from __future__ import annotations

import asyncio
import collections
import math
import re
import time
from typing import Callable

Clock = Callable[[], float]

_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ms|h|m|s)")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


class AIMDLimiter:
    """An adaptive limit on requests in flight; see the module docstring."""

    def __init__(
        self,
        initial: int,
        max_limit: int | None = None,
        *,
        min_limit: int = 1,
        decrease_factor: float = 0.5,
        latency_factor: float | None = 2.0,
        latency_floor_s: float = 0.05,
        min_samples: int = 16,
        baseline_drift: float = 0.1,
    ) -> None:
        if initial < 1:
            raise ValueError(f"the initial limit must be at least 1, got {initial}")
        self.min_limit = max(1, int(min_limit))
        self.max_limit = max(int(max_limit if max_limit is not None else initial * 4), int(initial))
        self.decrease_factor = float(decrease_factor)
        self.latency_factor = latency_factor
        self.latency_floor_s = float(latency_floor_s)
        self.min_samples = int(min_samples)
        self.baseline_drift = float(baseline_drift)
        self.limit = int(initial)
        self.in_flight = 0
        #: the decrease window: bumped by every decrease
        self.epoch = 0
        self.increases = 0
        self.decreases = 0
        #: the least mean latency of a window (creeping up slowly), and the last window's mean
        self.baseline_latency: float | None = None
        self.window_latency: float | None = None
        self._window_n = 0
        self._window_sum = 0.0
        self._successes = 0  # successes towards the next increase
        self._waiters: collections.deque[asyncio.Future] = collections.deque()

    def __repr__(self) -> str:
        return (f"AIMDLimiter(limit={self.limit}, in_flight={self.in_flight}, max_limit={self.max_limit}, "
                f"increases={self.increases}, decreases={self.decreases})")

    # -- slots --------------------------------------------------------------------------------

    def try_acquire(self) -> int | None:
        """Take a slot if one is free (and nobody waits): the window it was taken in, else None."""
        if self.in_flight < self.limit and not self._waiters:
            self.in_flight += 1
            return self.epoch
        return None

    async def acquire(self) -> int:
        """Wait for a slot (first come, first served); returns the window it was taken in."""
        if self.in_flight < self.limit and not self._waiters:
            self.in_flight += 1
            return self.epoch
        fut = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        try:
            await fut  # the slot is counted in in_flight by whoever woke us
        except BaseException:
            if fut.done() and not fut.cancelled():
                self._free_slot()  # woken and cancelled at once: hand the slot on
            else:
                try:
                    self._waiters.remove(fut)
                except ValueError:
                    pass
            raise
        return self.epoch

    def release(self, epoch: int, *, latency_s: float | None = None, overloaded: bool = False) -> None:
        """Give the slot back, with what the request taught: its latency if it succeeded, or overload."""
        if overloaded:
            self.on_overload(epoch)
        elif latency_s is not None:
            self.on_success(epoch, latency_s)
        self._free_slot()

    def _free_slot(self) -> None:
        self.in_flight -= 1
        self._wake()

    def _wake(self) -> None:
        waiters = self._waiters
        while waiters and self.in_flight < self.limit:
            fut = waiters.popleft()
            if not fut.done():
                self.in_flight += 1
                fut.set_result(None)

    def reset_waiters(self) -> None:
        """Forget slots and waiters (a new event loop: the old one's requests are gone)."""
        self._waiters.clear()
        self.in_flight = 0

    # -- control ------------------------------------------------------------------------------

    def on_success(self, epoch: int, latency_s: float) -> None:
        """A request sent in window ``epoch`` succeeded after ``latency_s`` seconds."""
        if epoch != self.epoch:
            return  # sent under the old limit: says nothing about the new one
        if self.latency_factor is not None:
            self._window_n += 1
            self._window_sum += latency_s
            if self._window_n >= self.min_samples and self._window_n >= self.limit and self._end_window():
                self._decrease()
                return
        # grow only while the limit is in use (a limit nobody reaches teaches nothing) and
        # the latency of this window so far is not high
        if 2 * self.in_flight >= self.limit and self.limit < self.max_limit and not self._slow_so_far():
            self._successes += 1
            if self._successes >= self.limit:
                self._successes = 0
                self.limit += 1
                self.increases += 1
                self._wake()

    def on_overload(self, epoch: int) -> None:
        """The server said it is overloaded (429, 503) to a request sent in window ``epoch``."""
        if epoch == self.epoch:
            self._decrease()

    def _slow_so_far(self) -> bool:
        base = self.baseline_latency
        if self.latency_factor is None or base is None or not self._window_n:
            return False
        return self._window_sum / self._window_n > self.latency_factor * base

    def _end_window(self) -> bool:
        """Close the latency window; True when its mean says the server is queueing."""
        mean = self._window_sum / self._window_n
        self._window_n, self._window_sum = 0, 0.0
        self.window_latency = mean
        base = self.baseline_latency
        if base is None or mean <= base:
            self.baseline_latency = mean
            return False
        self.baseline_latency = base + self.baseline_drift * (mean - base)
        assert self.latency_factor is not None
        return mean > self.latency_factor * base and mean - base > self.latency_floor_s

    def _decrease(self) -> None:
        self.epoch += 1
        self.decreases += 1
        self.limit = max(self.min_limit, int(self.limit * self.decrease_factor))
        self._successes = 0
        self._window_n, self._window_sum = 0, 0.0


class TokenBucket:
    """``rate_per_min`` units per minute, holding at most ``burst_s`` seconds' worth.

    ``reserve(cost)`` takes ``cost`` units now and returns the seconds to wait before using them
    (0 when the bucket held enough). Costs larger than the bucket are allowed: they wait longer.
    """

    def __init__(self, rate_per_min: float, *, burst_s: float = 1.0, clock: Clock = time.monotonic) -> None:
        if rate_per_min <= 0:
            raise ValueError(f"a rate limit must be positive, got {rate_per_min}")
        self.clock = clock
        self.burst_s = float(burst_s)
        self.configured = float(rate_per_min)
        self.server_limit: float | None = None
        self._set_rate(self.configured)
        self.tokens = self.capacity
        self._at = clock()

    def __repr__(self) -> str:
        return f"TokenBucket(rate_per_min={self.rate_per_min:g}, tokens={self.tokens:.1f}/{self.capacity:g})"

    @property
    def rate_per_min(self) -> float:
        return self.rate_per_s * 60.0

    def _set_rate(self, per_min: float) -> None:
        self.rate_per_s = per_min / 60.0
        self.capacity = max(1.0, self.rate_per_s * self.burst_s)

    def _refill(self) -> float:
        now = self.clock()
        if now > self._at:
            self.tokens = min(self.capacity, self.tokens + (now - self._at) * self.rate_per_s)
            self._at = now
        return now

    def reserve(self, cost: float) -> float:
        """Take ``cost`` units; the seconds to wait before sending."""
        self._refill()
        self.tokens -= cost
        return -self.tokens / self.rate_per_s if self.tokens < 0 else 0.0

    def refund(self, units: float) -> None:
        """Give back units reserved but not used (an estimate that was too high)."""
        self._refill()
        self.tokens = min(self.capacity, self.tokens + units)

    def observe(self, limit: float | None, remaining: float | None, reset_s: float | None) -> None:
        """What the server said: its limit per minute, what is left, and when it is full again."""
        self._refill()
        if limit is not None and limit > 0 and limit != self.server_limit:
            self.server_limit = float(limit)
            self._set_rate(min(self.configured, self.server_limit))
            self.tokens = min(self.tokens, self.capacity)
        if remaining is None:
            return
        if remaining <= 0 and reset_s is not None:
            # nothing left: the next unit comes when the server says, not before
            self.tokens = min(self.tokens, 1.0 - reset_s * self.rate_per_s)
        else:
            self.tokens = min(self.tokens, float(remaining))

    @classmethod
    def from_server(cls, limit: float, *, burst_s: float = 1.0, clock: Clock = time.monotonic) -> "TokenBucket":
        """A bucket for a limit only the server set (none was configured)."""
        bucket = cls(limit, burst_s=burst_s, clock=clock)
        bucket.configured = float("inf")
        bucket.server_limit = float(limit)
        return bucket


def parse_seconds(value: str | None, fallback: Callable[[str], float | None]) -> float | None:
    """Seconds from a header: a plain number (negative: 0), else what ``fallback`` makes of the text."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        return fallback(value)
    return max(seconds, 0.0) if math.isfinite(seconds) else None


def parse_duration(value: str | None) -> float | None:
    """Seconds from a rate-limit reset value: ``"1s"``, ``"6m0s"``, ``"20ms"``, ``"0.5"``; else None."""
    return parse_seconds(value, _duration_parts)


def _duration_parts(value: str) -> float | None:
    parts = _DURATION_PART.findall(value)
    if not parts or "".join(n + u for n, u in parts) != value:
        return None
    return sum(float(n) * _UNIT_S[u] for n, u in parts)


def parse_number(value: str | None) -> float | None:
    """A header's number, or None when absent or not a number."""
    if value is None:
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    return number if number >= 0 and math.isfinite(number) else None
