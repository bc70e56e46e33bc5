"""OpenAIChatBackend against the real mock server (aiohttp on 127.0.0.1)."""

from __future__ import annotations

import asyncio
import random
import socket
import time

import pytest

from streamsynth.backends.openai_http import OpenAIChatBackend, parse_retry_after
from streamsynth.errors import AuthenticationError, BackendUnavailable, ConfigError
from streamsynth.fingerprint import derive_seed
from streamsynth.records import CompletionRequest, GenerationParams, Message
from streamsynth.testing.mock_server import ALL_FAULT_KINDS, MockOpenAIServer

KEY_ENV = "STREAMSYNTH_TEST_API_KEY"
SECRET = "sk-test-very-secret-value-123"


def make_backend(base_url: str, **kwargs) -> OpenAIChatBackend:
    options = dict(model="mock-model", api_key_env=None, backoff_base_s=0.01, backoff_max_s=0.05, timeout_s=5.0)
    options.update(kwargs)
    return OpenAIChatBackend(base_url=base_url, **options)


def request(text: str = "hello there", *, index: int = 0, **params) -> CompletionRequest:
    return CompletionRequest(
        messages=(Message("system", "be brief"), Message("user", text)),
        params=GenerationParams(**params),
        seed=7,
        sample_index=index,
    )


async def complete_with(server: MockOpenAIServer, requests, **kwargs):
    """Start ``server``, run the batch through a fresh backend, close both."""
    async with server:
        async with make_backend(server.base_url, **kwargs) as backend:
            return await backend.complete(requests)


def test_normal_completion_with_usage():
    server = MockOpenAIServer()
    [c] = asyncio.run(complete_with(server, [request("hello there")]))
    assert c.ok and c.error is None
    assert c.text == f"reply to seed {derive_seed(7, 0)}: hello there"
    assert c.finish_reason == "stop"
    assert c.prompt_tokens == 4 and c.completion_tokens == len(c.text.split())
    assert c.latency_s > 0 and c.logprobs is None
    assert c.model.startswith("openai:mock-model@http://127.0.0.1:")
    body = server.requests[0]
    assert body["model"] == "mock-model" and body["max_tokens"] == 96
    assert body["seed"] == derive_seed(7, 0)
    assert "stop" not in body and "logprobs" not in body


def test_request_body_stop_and_max_tokens():
    server = MockOpenAIServer(reply=lambda body: "one two three four five")
    reqs = [request(stop=("four",)), request(max_new_tokens=2)]
    first, second = asyncio.run(complete_with(server, reqs))
    assert server.requests[0]["stop"] == ["four"]
    assert first.text.strip() == "one two three"
    assert second.text == "one two" and second.finish_reason == "length"


def test_concurrent_requests_come_back_in_order():
    server = MockOpenAIServer(latency_s=0.05)
    reqs = [request(f"question {i}", index=i) for i in range(40)]
    started = time.perf_counter()
    out = asyncio.run(complete_with(server, reqs, concurrency=16))
    elapsed = time.perf_counter() - started
    assert [c.text.split(": ", 1)[1] for c in out] == [f"question {i}" for i in range(40)]
    assert all(c.ok for c in out) and server.count == 40
    assert elapsed < 40 * 0.05 / 2  # ran concurrently, not one after another


def test_retry_on_429_honours_retry_after():
    server = MockOpenAIServer(faults=["429"], retry_after=0.4)
    started = time.perf_counter()
    [c] = asyncio.run(complete_with(server, [request()], backoff_max_s=5.0))
    assert c.ok
    assert time.perf_counter() - started >= 0.4
    assert server.count == 2


def test_retry_after_is_capped_by_backoff_max():
    server = MockOpenAIServer(faults=["429"], retry_after=30)
    started = time.perf_counter()
    [c] = asyncio.run(complete_with(server, [request()], backoff_max_s=0.1))
    assert c.ok and server.count == 2
    assert time.perf_counter() - started < 2.0


def test_retry_on_500_then_success():
    server = MockOpenAIServer(faults=["500", "503"])
    [c] = asyncio.run(complete_with(server, [request()]))
    assert c.ok and server.count == 3


def test_persistent_500_returns_error_completion():
    server = MockOpenAIServer(faults=["500"] * 10)
    [c] = asyncio.run(complete_with(server, [request()], max_retries=2))
    assert not c.ok and c.error == "http 500 after 3 attempts"
    assert c.text == "" and server.count == 3


def test_timeout_is_retried_then_succeeds():
    server = MockOpenAIServer(faults=["timeout"], timeout_sleep_s=1.0)
    [c] = asyncio.run(complete_with(server, [request()], timeout_s=0.3))
    assert c.ok and server.count == 2


def test_every_attempt_timing_out_returns_error_completion():
    server = MockOpenAIServer(faults=["timeout"] * 3, timeout_sleep_s=1.0)
    started = time.perf_counter()
    [c] = asyncio.run(complete_with(server, [request()], timeout_s=0.3, max_retries=2))
    assert c.error == "timeout after 3 attempts"
    assert server.count == 3
    assert time.perf_counter() - started < 5.0


@pytest.mark.parametrize("fault", ["malformed", "truncated", "disconnect"])
def test_bad_bodies_and_dropped_connections_are_retried(fault):
    server = MockOpenAIServer(faults=[fault])
    [c] = asyncio.run(complete_with(server, [request()]))
    assert c.ok and server.count == 2


def test_persistent_malformed_reports_reason():
    server = MockOpenAIServer(faults=["truncated"] * 3)
    [c] = asyncio.run(complete_with(server, [request()], max_retries=2))
    assert c.error.startswith("malformed response after 3 attempts")


@pytest.mark.parametrize("status", ["400", "404", "422"])
def test_client_errors_are_not_retried(status):
    server = MockOpenAIServer(faults=[status])
    [c, d] = asyncio.run(complete_with(server, [request(), request(index=1)], concurrency=1))
    assert c.error == f"http {status}: mock fault {status}"
    assert d.ok and server.count == 2


def test_401_raises_without_leaking_the_key(monkeypatch):
    monkeypatch.setenv(KEY_ENV, SECRET)
    server = MockOpenAIServer(require_api_key="the-right-key")

    async def go():
        async with server:
            backend = make_backend(server.base_url, api_key_env=KEY_ENV)
            try:
                with pytest.raises(AuthenticationError) as info:
                    await backend.complete([request(), request(index=1)])
            finally:
                await backend.aclose()
            return backend, info.value

    backend, error = asyncio.run(go())
    assert KEY_ENV in str(error)
    assert SECRET not in str(error) and SECRET not in repr(backend)
    assert SECRET not in backend.model_id and SECRET not in repr(vars(backend))


@pytest.mark.parametrize("base_url, api_key_env, what", [
    ("http://127.0.0.1:8000/v1", SECRET, "NAME of the environment variable"),  # the key where its variable's name goes
    ("http://u:" + SECRET + "@127.0.0.1:8000/v1", None, "carries credentials"),
    ("http://127.0.0.1:8000/v1?key=" + SECRET, None, "query string"),
    ("htp://u:" + SECRET + "@127.0.0.1:8000/v1", None, "must start with http"),
    ("u:" + SECRET + "@127.0.0.1:8000/v1", None, "must start with http"),  # the scheme forgotten
    ("http://u:pa/" + SECRET + "@127.0.0.1:8000/v1", None, "carries credentials"),  # a '/' in the password
    ("http://127.0.0.1:8000/v1", "gsk_" + SECRET.replace("-", "_"), "NAME of the environment variable"),
])
def test_a_key_given_where_it_would_be_stored_is_refused_without_echoing_it(base_url, api_key_env, what):
    with pytest.raises(ConfigError, match=what) as err:
        OpenAIChatBackend(base_url=base_url, model="m", api_key_env=api_key_env)
    assert SECRET not in str(err.value)


def test_a_key_passed_as_the_variable_name_is_never_shown(monkeypatch):
    key = "gsk_" + SECRET.replace("-", "_")
    monkeypatch.setenv(key, "")  # set (empty), so the name is accepted: messages must still not show it
    backend = OpenAIChatBackend(base_url="http://127.0.0.1:8000/v1", model="m", api_key_env=key)
    monkeypatch.delenv(key)
    assert key not in backend._auth_message(401) and key not in repr(backend)
    assert "OPENAI_API_KEY" in OpenAIChatBackend(base_url="http://127.0.0.1:8000/v1", model="m")._auth_message(401)


def test_right_key_is_sent(monkeypatch):
    monkeypatch.setenv(KEY_ENV, SECRET)
    server = MockOpenAIServer(require_api_key=SECRET)
    [c] = asyncio.run(complete_with(server, [request()], api_key_env=KEY_ENV))
    assert c.ok


def test_missing_key_message_names_the_variable(monkeypatch):
    monkeypatch.delenv(KEY_ENV, raising=False)
    server = MockOpenAIServer(require_api_key="whatever")
    with pytest.raises(AuthenticationError, match=f"{KEY_ENV} is not set"):
        asyncio.run(complete_with(server, [request()], api_key_env=KEY_ENV))


def test_connection_refused_raises_backend_unavailable():
    with socket.socket() as sock:  # bound but not listening: connections are refused
        sock.bind(("127.0.0.1", 0))
        base_url = f"http://127.0.0.1:{sock.getsockname()[1]}/v1"
        backend = make_backend(base_url)
        started = time.perf_counter()
        with pytest.raises(BackendUnavailable, match="cannot connect to .*start the server or fix --base-url"):
            backend.complete_sync([request(index=i) for i in range(5)])
        assert time.perf_counter() - started < 2.0


def test_logprobs_parsed():
    server = MockOpenAIServer(reply=lambda body: "alpha beta gamma")
    [c] = asyncio.run(complete_with(server, [request(logprobs=True)]))
    assert server.requests[0]["logprobs"] is True and server.requests[0]["top_logprobs"] == 5
    assert c.logprobs is not None and [t.token for t in c.logprobs] == ["alpha", " beta", " gamma"]
    assert "".join(t.token for t in c.logprobs) == c.text
    first = c.logprobs[0]
    assert first.logprob == pytest.approx(-0.1) and len(first.top) == 5
    assert first.top[0] == ("alpha", pytest.approx(-0.1))


def test_jitter_is_deterministic_under_a_seeded_rng():
    def delays(seed: int) -> list[float]:
        backend = make_backend("http://127.0.0.1:9/v1", seed_rng=random.Random(seed), backoff_base_s=0.5, backoff_max_s=4.0)
        return [backend.backoff_delay(a) for a in range(8)]

    assert delays(3) == delays(3)
    assert delays(3) != delays(4)
    caps = [min(4.0, 0.5 * 2**a) for a in range(8)]
    assert all(0.0 <= d <= cap for d, cap in zip(delays(3), caps))
    default = make_backend("http://127.0.0.1:9/v1", backoff_base_s=0.5, backoff_max_s=4.0)
    assert default.backoff_delay(0) == make_backend("http://127.0.0.1:9/v1", backoff_base_s=0.5, backoff_max_s=4.0).backoff_delay(0)


def test_retry_after_parsing():
    assert parse_retry_after("2") == 2.0
    assert parse_retry_after("0.5") == 0.5
    assert parse_retry_after(None) is None and parse_retry_after("soon") is None
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # in the past
    future = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + 100))
    assert 90 <= parse_retry_after(future) <= 101


def test_identity_and_sizing():
    backend = make_backend("http://127.0.0.1:8000/v1/", concurrency=8, prices=(0.5, 1.5))
    assert backend.model_id == "openai:mock-model@http://127.0.0.1:8000/v1"
    assert backend.preferred_batch_size == 32 and backend.prices == (0.5, 1.5)
    assert backend.url == "http://127.0.0.1:8000/v1/chat/completions"


def test_session_survives_a_new_event_loop():
    with MockOpenAIServer().run_in_thread() as base_url:
        backend = make_backend(base_url)
        assert backend.complete_sync([request()])[0].ok
        assert backend.complete_sync([request()])[0].ok


def test_run_in_thread_serves_sync_callers():
    server = MockOpenAIServer()
    with server.run_in_thread() as base_url:
        assert base_url.startswith("http://127.0.0.1:") and base_url.endswith("/v1")
        out = make_backend(base_url).complete_sync([request(index=i) for i in range(3)])
    assert all(c.ok for c in out) and server.count == 3


def test_server_gone_mid_run_raises_after_retries():
    async def go():
        server = MockOpenAIServer()
        async with server:
            backend = make_backend(server.base_url, max_retries=2)
            assert (await backend.complete([request()]))[0].ok
        try:
            with pytest.raises(BackendUnavailable, match="lost connection to"):
                await backend.complete([request(index=1)])
        finally:
            await backend.aclose()

    asyncio.run(go())


def test_random_faults_are_absorbed_by_retries():
    server = MockOpenAIServer(fault_rate=0.3, fault_kinds=["429", "500", "malformed", "truncated"], seed=1)
    out = asyncio.run(complete_with(server, [request(index=i) for i in range(30)], max_retries=8))
    assert all(c.ok for c in out)
    assert server.count == 30 + len(server.faults_served) and server.faults_served


# -- every fault kind: retried, and recorded with its reason after the last retry -----------

#: what the Completion says when every attempt met the fault (max_retries=2)
FAULT_REASONS = {
    "429": "http 429 after 3 attempts",
    "500": "http 500 after 3 attempts",
    "503": "http 503 after 3 attempts",
    "timeout": "timeout after 3 attempts",
    "malformed": "malformed response after 3 attempts: no 'choices' field",
    "empty_choices": "malformed response after 3 attempts: the response has no choices",
    "truncated": "malformed response after 3 attempts: invalid JSON: ",
    "disconnect": "connection error after 3 attempts: ",
    "reset": "connection error after 3 attempts: ",
}
FAULT_KIND = {"429": "http 429", "500": "http 500", "503": "http 503", "timeout": "timeout", "malformed": "malformed response",
              "empty_choices": "malformed response", "truncated": "malformed response",
              "disconnect": "connection error", "reset": "connection error"}


def test_every_fault_kind_has_a_pinned_reason():
    assert set(FAULT_REASONS) == set(ALL_FAULT_KINDS)


def _timeout_for(fault: str) -> float:
    """The client's timeout: short where the fault is a stalled reply (the server sleeps 1 s), else
    long enough that a loaded machine's slow answer is not a second fault."""
    return 0.3 if fault == "timeout" else 10.0


@pytest.mark.parametrize("fault", ALL_FAULT_KINDS)
def test_each_fault_kind_is_retried_then_succeeds(fault):
    server = MockOpenAIServer(faults=[fault], timeout_sleep_s=1.0)

    async def go():
        async with server:
            async with make_backend(server.base_url, timeout_s=_timeout_for(fault)) as backend:
                return await backend.complete([request()]), backend

    [c], backend = asyncio.run(go())
    assert c.ok and c.text.startswith("reply to seed") and server.count == 2
    assert server.faults_served == [fault]
    assert backend.retries == {FAULT_KIND[fault]: 1}


@pytest.mark.parametrize("fault", ALL_FAULT_KINDS)
def test_each_fault_kind_after_max_retries_records_its_reason(fault):
    server = MockOpenAIServer(faults=[fault] * 3, timeout_sleep_s=1.0)

    async def go():
        async with server:
            async with make_backend(server.base_url, timeout_s=_timeout_for(fault), max_retries=2) as backend:
                failed = await backend.complete([request()])
                return failed + await backend.complete([request(index=1)]), backend

    [c, d], backend = asyncio.run(go())
    assert not c.ok and c.finish_reason == "error" and c.text == ""
    assert c.error.startswith(FAULT_REASONS[fault]), c.error
    assert "\n" not in c.error and len(c.error) < 300
    assert d.ok and server.count == 4  # three attempts, then the next request is fine
    assert backend.retries == {FAULT_KIND[fault]: 2}


# -- adaptive concurrency and rate limits ---------------------------------------------------


def test_limit_shrinks_on_a_burst_of_429s_and_grows_back():
    server = MockOpenAIServer(faults=["429"] * 8)

    async def go():
        async with server:
            async with make_backend(server.base_url, concurrency=8, max_concurrency=12, backoff_max_s=0.01) as backend:
                first = await backend.complete([request(index=i) for i in range(8)])
                after_burst = (backend.limit, backend.limiter.decreases)
                more = await backend.complete([request(index=i) for i in range(8, 208)])
                return backend, first + more, after_burst

    backend, out, (limit_after_burst, decreases) = asyncio.run(go())
    assert all(c.ok for c in out)
    # eight 429s of one window: one halving to 4 (and maybe +1 from the eight retries that succeeded)
    assert limit_after_burst in (4, 5) and decreases == 1
    assert backend.limiter.increases >= 8 and backend.limit == 12  # grew back, up to max_concurrency
    assert backend.retries == {"http 429": 8}


def test_limit_halves_when_latency_climbs():
    server = MockOpenAIServer(latency_s=0.005)

    async def go():
        async with server:
            async with make_backend(server.base_url, concurrency=4, max_concurrency=4) as backend:
                await backend.complete([request(index=i) for i in range(48)])
                steady = backend.limit
                server.latency_s = 0.15  # the server starts queueing
                await backend.complete([request(index=i) for i in range(48, 72)])
                return backend, steady

    backend, steady = asyncio.run(go())
    assert steady == 4
    assert backend.limiter.decreases >= 1 and backend.limit <= 2


def test_rate_limit_headers_are_learned_and_obeyed():
    # 100 requests a second, holding one second's worth; the client is told nothing but headers
    server = MockOpenAIServer(ratelimit_requests_per_min=6000, ratelimit_burst_s=1.0)

    async def go():
        async with server:
            async with make_backend(server.base_url, concurrency=64, backoff_max_s=0.5) as backend:
                started = time.perf_counter()
                out = await backend.complete([request(index=i) for i in range(200)])
                return backend, out, time.perf_counter() - started

    backend, out, elapsed = asyncio.run(go())
    assert all(c.ok for c in out)
    assert backend.rate_limits == {"requests_per_minute": 6000.0, "tokens_per_minute": None}
    assert server.rate_limited <= 10  # paced by the headers, not by 429s
    assert elapsed >= 0.8  # 100 over the first second's worth, at 100 a second


def test_token_limit_header_is_learned():
    server = MockOpenAIServer(ratelimit_tokens_per_min=90_000)

    async def go():
        async with server:
            async with make_backend(server.base_url) as backend:
                await backend.complete([request()])
                return backend

    backend = asyncio.run(go())
    assert backend.rate_limits == {"requests_per_minute": None, "tokens_per_minute": 90_000.0}


def test_configured_requests_per_minute_paces_sending():
    server = MockOpenAIServer()
    started = time.perf_counter()
    out = asyncio.run(complete_with(server, [request(index=i) for i in range(100)], concurrency=64,
                                    requests_per_minute=3000))  # 50 a second, one second's worth at once
    elapsed = time.perf_counter() - started
    assert all(c.ok for c in out)
    assert 0.9 <= elapsed < 4.0


def test_configured_tokens_per_minute_paces_sending():
    server = MockOpenAIServer(reply=lambda body: "one two three")
    reqs = [request(index=i, max_new_tokens=20) for i in range(8)]
    started = time.perf_counter()
    out = asyncio.run(complete_with(server, reqs, concurrency=64, tokens_per_minute=9000))  # 150 tokens a second
    elapsed = time.perf_counter() - started
    assert all(c.ok for c in out)
    # each request reserves 32 tokens (prompt estimate + max_tokens): 256, of which 150 at once
    assert 0.5 <= elapsed < 3.0


def test_limit_options_are_checked():
    with pytest.raises(ConfigError, match="max_concurrency"):
        make_backend("http://127.0.0.1:9/v1", concurrency=8, max_concurrency=4)
    with pytest.raises(ConfigError, match="requests_per_minute must be positive"):
        make_backend("http://127.0.0.1:9/v1", requests_per_minute=0)
    backend = make_backend("http://127.0.0.1:9/v1", concurrency=8)
    assert backend.limit == 8 and backend.max_concurrency == 32
    assert backend.limiter.increases == 0 and backend.limiter.decreases == 0
