"""The AIMD concurrency limiter and the token buckets, pure (a fake clock, no server)."""

from __future__ import annotations

import asyncio

import pytest

from streamsynth.backends.limits import AIMDLimiter, TokenBucket, parse_duration, parse_number


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def fill(limiter: AIMDLimiter) -> list[int]:
    """Take every free slot; the windows they were taken in."""
    taken = []
    while (epoch := limiter.try_acquire()) is not None:
        taken.append(epoch)
    return taken


def test_limit_starts_at_initial_and_caps_slots():
    limiter = AIMDLimiter(4)
    assert limiter.limit == 4 and limiter.max_limit == 16
    assert len(fill(limiter)) == 4 and limiter.in_flight == 4
    assert limiter.try_acquire() is None


def test_a_burst_of_overloads_halves_once():
    limiter = AIMDLimiter(16, latency_factor=None)
    epochs = fill(limiter)
    for epoch in epochs:  # all sixteen requests of the burst come back 429
        limiter.release(epoch, overloaded=True)
    assert limiter.limit == 8 and limiter.decreases == 1  # one decrease per window, not sixteen
    # a request sent under the new limit that is refused again halves it again
    again = limiter.try_acquire()
    limiter.release(again, overloaded=True)
    assert limiter.limit == 4 and limiter.decreases == 2


def test_decrease_has_a_floor():
    limiter = AIMDLimiter(3, min_limit=1, latency_factor=None)
    for _ in range(5):
        limiter.release(limiter.try_acquire(), overloaded=True)
    assert limiter.limit == 1 and limiter.decreases == 5
    assert limiter.try_acquire() is not None and limiter.try_acquire() is None


def test_additive_increase_one_per_limit_successes_up_to_max():
    limiter = AIMDLimiter(4, 6, latency_factor=None)
    successes = 0
    while limiter.limit < 6:
        epochs = fill(limiter)
        limiter.release(epochs[0], latency_s=0.1)  # the others stay in flight: the limit is in use
        for e in epochs[1:]:
            limiter.release(e)
        successes += 1
        assert successes < 100
    assert successes == 4 + 5  # +1 after 4 successes at limit 4, +1 after 5 at limit 5
    assert limiter.increases == 2
    for _ in range(50):
        epochs = fill(limiter)
        for e in epochs:
            limiter.release(e, latency_s=0.1)
    assert limiter.limit == 6  # never above max_limit


def test_no_growth_while_the_limit_is_not_used():
    limiter = AIMDLimiter(8, latency_factor=None)
    for _ in range(100):  # one request at a time: 1 of 8 slots
        limiter.release(limiter.try_acquire(), latency_s=0.1)
    assert limiter.limit == 8 and limiter.increases == 0


def test_success_from_before_a_decrease_does_not_count():
    limiter = AIMDLimiter(4, latency_factor=None)
    old = fill(limiter)
    limiter.release(old[0], overloaded=True)
    assert limiter.limit == 2
    for e in old[1:]:
        limiter.release(e, latency_s=0.1)
    assert limiter.limit == 2 and limiter.increases == 0


def run_window(limiter: AIMDLimiter, latency: float, n: int) -> None:
    for _ in range(n):
        epochs = fill(limiter)
        limiter.release(epochs[0], latency_s=latency)
        for e in epochs[1:]:
            limiter.release(e)


def test_latency_well_above_the_baseline_halves_once_per_window():
    limiter = AIMDLimiter(8, 8, min_samples=4)
    run_window(limiter, 0.20, 8)  # one window of 8 answers: the baseline
    assert limiter.baseline_latency == pytest.approx(0.20) and limiter.limit == 8
    run_window(limiter, 0.30, 8)  # 1.5x: not "well above"
    assert limiter.decreases == 0
    run_window(limiter, 0.60, 7)  # the window is not complete yet
    assert limiter.decreases == 0
    run_window(limiter, 0.60, 1)
    assert limiter.limit == 4 and limiter.decreases == 1
    run_window(limiter, 0.60, 3)  # a new window starts after the decrease
    assert limiter.decreases == 1


def test_latency_floor_ignores_tiny_absolute_rises():
    limiter = AIMDLimiter(4, 4, min_samples=4, latency_floor_s=0.05)
    run_window(limiter, 0.001, 4)
    run_window(limiter, 0.010, 4)  # 10x, but only 9 ms more
    assert limiter.decreases == 0


def test_baseline_is_a_window_mean_not_the_quickest_answer():
    # replies of very different lengths: the quickest is 10x quicker than the mean
    limiter = AIMDLimiter(4, 4, min_samples=4)
    for _ in range(20):
        for latency in (0.1, 1.0, 1.5, 1.4):
            run_window(limiter, latency, 1)
    assert limiter.decreases == 0 and limiter.baseline_latency == pytest.approx(1.0)


def test_baseline_creeps_up_when_the_server_is_slower_for_good():
    limiter = AIMDLimiter(64, 64, min_samples=4, baseline_drift=0.1)
    run_window(limiter, 0.2, 64)
    for _ in range(30):  # other users made the server 3x slower, whatever our limit
        run_window(limiter, 0.6, max(4, limiter.limit))
    assert 1 <= limiter.decreases <= 6
    assert limiter.limit >= 64 // 2**6


def test_latency_rule_can_be_switched_off():
    limiter = AIMDLimiter(4, 4, latency_factor=None, min_samples=1)
    run_window(limiter, 0.1, 10)
    run_window(limiter, 5.0, 10)
    assert limiter.decreases == 0


def test_acquire_waits_and_wakes_in_order():
    async def go():
        limiter = AIMDLimiter(2, latency_factor=None)
        order = []

        async def worker(name):
            epoch = await limiter.acquire()
            order.append(name)
            await asyncio.sleep(0.01)
            limiter.release(epoch, latency_s=0.01)

        await asyncio.gather(*(worker(i) for i in range(6)))
        return limiter, order

    limiter, order = asyncio.run(go())
    assert order == list(range(6)) and limiter.in_flight == 0


def test_cancelled_waiter_gives_its_slot_on():
    async def go():
        limiter = AIMDLimiter(1, latency_factor=None)
        first = await limiter.acquire()
        waiting = asyncio.ensure_future(limiter.acquire())
        third = asyncio.ensure_future(limiter.acquire())
        await asyncio.sleep(0)
        waiting.cancel()
        limiter.release(first)
        await asyncio.wait_for(third, 1)
        return limiter

    limiter = asyncio.run(go())
    assert limiter.in_flight == 1 and not limiter._waiters


def test_growth_wakes_waiters():
    async def go():
        limiter = AIMDLimiter(1, 2, latency_factor=None)
        a = await limiter.acquire()
        waiter = asyncio.ensure_future(limiter.acquire())
        await asyncio.sleep(0)
        limiter.on_success(a, 0.1)  # 1 success at limit 1: the limit becomes 2, the waiter gets in
        await asyncio.wait_for(waiter, 1)
        return limiter

    limiter = asyncio.run(go())
    assert limiter.limit == 2 and limiter.in_flight == 2


# -- token buckets ------------------------------------------------------------------------


def test_bucket_paces_at_its_rate():
    clock = FakeClock()
    bucket = TokenBucket(600, clock=clock)  # 10 a second, holds one second's worth
    assert bucket.capacity == 10
    waits = [bucket.reserve(1) for _ in range(15)]
    assert waits[:10] == [0.0] * 10
    assert waits[10:] == pytest.approx([0.1, 0.2, 0.3, 0.4, 0.5])  # each its own slot: no herd
    clock.now += 10
    assert bucket.reserve(1) == 0.0  # refilled (to capacity only)
    assert bucket.tokens == pytest.approx(9)


def test_bucket_costs_larger_than_capacity_wait_longer():
    clock = FakeClock()
    bucket = TokenBucket(60_000, clock=clock)  # 1000 tokens a second
    assert bucket.reserve(3000) == pytest.approx(2.0)
    bucket.refund(500)
    assert bucket.reserve(0) == pytest.approx(1.5)


def test_bucket_follows_server_headers():
    clock = FakeClock()
    bucket = TokenBucket.from_server(1200, clock=clock)  # 20 a second
    assert bucket.rate_per_min == 1200
    bucket.observe(1200, 3, None)  # the server has 3 left
    assert [bucket.reserve(1) for _ in range(4)] == pytest.approx([0, 0, 0, 0.05])
    bucket.observe(1200, 0, 2.0)  # none left, full again in 2 s: wait that long
    assert bucket.reserve(1) == pytest.approx(2.0)
    bucket.observe(600, None, None)  # the server lowered the limit
    assert bucket.rate_per_min == 600


def test_configured_limit_wins_when_it_is_lower():
    bucket = TokenBucket(300, clock=FakeClock())
    bucket.observe(6000, 100, None)
    assert bucket.rate_per_min == 300
    bucket.observe(120, 100, None)
    assert bucket.rate_per_min == 120


def test_parse_duration_and_number():
    assert parse_duration("1s") == 1.0
    assert parse_duration("6m0s") == 360.0
    assert parse_duration("20ms") == pytest.approx(0.02)
    assert parse_duration("1h2m3.5s") == pytest.approx(3723.5)
    assert parse_duration("0.5") == 0.5 and parse_duration("-2") == 0.0
    assert parse_duration("soon") is None and parse_duration("") is None and parse_duration("5x") is None
    assert parse_duration("1s junk") is None
    assert parse_number("60") == 60.0 and parse_number("-1") is None and parse_number("nan") is None
    assert parse_number(None) is None


def test_bad_rates_are_refused():
    with pytest.raises(ValueError):
        TokenBucket(0)
    with pytest.raises(ValueError):
        AIMDLimiter(0)
