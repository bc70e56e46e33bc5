import asyncio

import pytest

from streamsynth.backends import FakeBackend
from streamsynth.records import Completion, CompletionRequest, GenerationParams, Message
from streamsynth.runtime import BudgetMeter, Engine, Prices, ResponseCache


def _reqs(n, start=0):
    return [CompletionRequest((Message("user", "hello"),), GenerationParams(), seed=0, sample_index=i) for i in range(start, start + n)]


def test_cache_persists_across_instances(tmp_path):
    path = tmp_path / "c.sqlite"
    cache = ResponseCache(path)
    cache.put_many({"k1": Completion("one", "m", prompt_tokens=3, completion_tokens=1)})
    cache.put_many({"bad": Completion("", "m", error="http 500")})  # errors are never cached
    cache.close()
    again = ResponseCache(path)
    got = again.get_many(["k1", "bad", "missing"])
    assert list(got) == ["k1"]
    assert got["k1"].cached and got["k1"].text == "one" and got["k1"].prompt_tokens == 3
    assert len(again) == 1


def test_cache_open_error_is_clear(tmp_path):
    from streamsynth.errors import CacheError

    (tmp_path / "f").write_text("x")
    with pytest.raises(CacheError, match="cannot open the response cache"):
        ResponseCache(tmp_path / "f" / "sub" / "c.sqlite")


def test_budget_cap_grants_only_what_is_left():
    m = BudgetMeter(5)
    assert m.reserve(3) == 3
    assert m.reserve(3) == 2
    assert m.reserve(1) == 0
    assert m.exhausted_reason() == "query budget of 5 spent"


def test_token_and_dollar_caps():
    m = BudgetMeter(None, max_tokens=10)
    m.charge(Completion("x", "m", prompt_tokens=6, completion_tokens=5))
    assert m.reserve(1) == 0 and "token budget" in m.exhausted_reason()
    d = BudgetMeter(None, max_dollars=0.01, prices=Prices(1000.0, 1000.0))
    d.charge(Completion("x", "m", prompt_tokens=5, completion_tokens=5))
    assert d.cost.dollars == pytest.approx(0.01)
    assert "dollar budget" in d.exhausted_reason()
    cached = d.charge(Completion("x", "m", prompt_tokens=5, completion_tokens=5, cached=True))
    assert cached.dollars == 0 and cached.calls == 0 and cached.cached_calls == 1


def test_budget_rejects_negative_caps():
    with pytest.raises(ValueError, match="max_queries"):
        BudgetMeter(-1)


async def _call_all(eng, reqs):
    out = await asyncio.gather(*(eng.call(r) for r in reqs))
    await eng.aclose()  # commits the buffered cache writes
    return [c for c, _ in out]


def test_engine_serves_cache_hits_without_calling_the_backend(tmp_path):
    cache = ResponseCache(tmp_path / "c.sqlite")
    fake = FakeBackend()
    eng = Engine(fake, BudgetMeter(100), cache)
    first = asyncio.run(_call_all(eng, _reqs(4)))
    assert fake.calls == 4 and not any(c.cached for c in first)
    eng2 = Engine(fake, BudgetMeter(100), cache)
    second = asyncio.run(_call_all(eng2, _reqs(6)))
    assert fake.calls == 6  # only the two new ones
    assert [c.text for c in second[:4]] == [c.text for c in first]
    assert eng2.meter.cost.calls == 2 and eng2.meter.cost.cached_calls == 4


def test_engine_batches_concurrent_calls_and_does_not_cache_failures(tmp_path):
    cache = ResponseCache(tmp_path / "c.sqlite")
    sizes = []

    class Counting(FakeBackend):
        async def complete(self, requests):
            sizes.append(len(requests))
            return await super().complete(requests)

    fake = Counting(fail=lambda r: "http 500 after 5 attempts" if r.sample_index == 1 else None, batch_size=4)
    eng = Engine(fake, BudgetMeter(None), cache)
    out = asyncio.run(_call_all(eng, _reqs(10)))
    assert sum(sizes) == 10 and max(sizes) == 4 and len(sizes) <= 4  # concurrent callers share backend batches
    assert out[1].error and eng.meter.failed == 1
    assert len(cache) == 9
