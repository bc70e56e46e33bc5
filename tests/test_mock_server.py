"""The mock OpenAI server itself: streaming, latency, rate-limit headers, faults, stats, CLI."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time

import aiohttp
import pytest

from streamsynth.testing.mock_server import ALL_FAULT_KINDS, MockOpenAIServer, review_reply

BODY = {"model": "mock-model", "messages": [{"role": "user", "content": "say something nice"}], "seed": 5}


async def post(server: MockOpenAIServer, body: dict, session: aiohttp.ClientSession):
    async with session.post(server.base_url + "/chat/completions", json=body) as resp:
        return resp.status, resp.headers, await resp.read()


def test_stream_sends_sse_chunks_then_done():
    server = MockOpenAIServer(reply=lambda body: "a fine film indeed")

    async def go():
        async with server, aiohttp.ClientSession() as session:
            _, _, plain = await post(server, BODY, session)
            stream_body = {**BODY, "stream": True, "stream_options": {"include_usage": True}}
            async with session.post(server.base_url + "/chat/completions", json=stream_body) as resp:
                assert resp.status == 200 and resp.headers["Content-Type"].startswith("text/event-stream")
                events = []
                async for line in resp.content:  # read as a client would, line by line
                    line = line.strip()
                    if line:
                        assert line.startswith(b"data: ")
                        events.append(line[len(b"data: "):])
            return json.loads(plain), events

    plain, events = asyncio.run(go())
    assert events[-1] == b"[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert text == plain["choices"][0]["message"]["content"] == "a fine film indeed"
    finishes = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]]
    assert finishes[-1] == "stop" and set(finishes[:-1]) == {None}
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"] == plain["usage"]


def test_stream_without_usage_has_no_usage_chunk():
    server = MockOpenAIServer()

    async def go():
        async with server, aiohttp.ClientSession() as session:
            _, _, raw = await post(server, {**BODY, "stream": True}, session)
            return raw

    events = [e for e in asyncio.run(go()).split(b"\n\n") if e]
    assert events[-1] == b"data: [DONE]"
    assert all(json.loads(e[6:])["choices"] for e in events[:-1])


def test_latency_is_fixed_plus_seeded_jitter():
    def draws(seed):
        server = MockOpenAIServer(latency_s=0.1, latency_jitter_s=0.2, seed=seed)
        return [server.draw_latency() for _ in range(50)]

    assert draws(3) == draws(3) and draws(3) != draws(4)
    assert all(0.1 <= d < 0.3 for d in draws(3)) and max(draws(3)) - min(draws(3)) > 0.1
    assert MockOpenAIServer(latency_s=0.2).draw_latency() == 0.2
    with pytest.raises(ValueError):
        MockOpenAIServer(latency_jitter_s=-1)


def test_latency_is_applied():
    server = MockOpenAIServer(latency_s=0.1, latency_jitter_s=0.1)

    async def go():
        async with server, aiohttp.ClientSession() as session:
            started = time.perf_counter()
            await asyncio.gather(*(post(server, BODY, session) for _ in range(5)))
            return time.perf_counter() - started

    assert 0.1 <= asyncio.run(go()) < 1.0  # concurrent: about the slowest draw, not five in a row


def test_rate_limit_headers_and_429_when_exhausted():
    server = MockOpenAIServer(ratelimit_requests_per_min=120, ratelimit_burst_s=1.0)  # 2 a second, 2 at once

    async def go():
        async with server, aiohttp.ClientSession() as session:
            return [await post(server, BODY, session) for _ in range(3)]

    (s1, h1, _), (s2, h2, _), (s3, h3, raw3) = asyncio.run(go())
    assert (s1, s2, s3) == (200, 200, 429)
    assert h1["x-ratelimit-limit-requests"] == "120" and h1["x-ratelimit-remaining-requests"] == "1"
    assert h2["x-ratelimit-remaining-requests"] == "0" and h2["x-ratelimit-reset-requests"].endswith("ms")
    assert 0 < float(h3["Retry-After"]) <= 0.5
    assert json.loads(raw3)["error"]["code"] == 429 and server.rate_limited == 1


def test_token_rate_limit_counts_prompt_and_max_tokens():
    server = MockOpenAIServer(ratelimit_tokens_per_min=6000, ratelimit_burst_s=1.0)  # 100 tokens at once

    async def go():
        async with server, aiohttp.ClientSession() as session:
            return [await post(server, {**BODY, "max_tokens": 40}, session) for _ in range(3)]

    statuses = [s for s, _, _ in asyncio.run(go())]
    assert statuses == [200, 200, 429]  # 3 prompt words + 40 each: the third would pass 100


@pytest.mark.parametrize("fault", ALL_FAULT_KINDS)
def test_every_fault_kind_is_served(fault):
    server = MockOpenAIServer(faults=[fault], timeout_sleep_s=0.05)

    async def go():
        async with server, aiohttp.ClientSession() as session:
            try:
                first = await post(server, BODY, session)
            except aiohttp.ClientError as exc:
                first = exc
            return first, await post(server, BODY, session)

    first, (status, _, raw) = asyncio.run(go())
    assert status == 200 and json.loads(raw)["choices"]  # the next request is answered normally
    assert server.faults_served == [fault]
    if fault.isdigit():
        assert first[0] == int(fault)
    elif fault in ("disconnect", "reset"):
        assert isinstance(first, aiohttp.ClientError)
    elif fault == "empty_choices":
        assert json.loads(first[2])["choices"] == []
    elif fault == "malformed":
        assert "choices" not in json.loads(first[2])
    elif fault == "truncated":
        with pytest.raises(ValueError):
            json.loads(first[2])
    else:  # timeout: answered late but answered
        assert first[0] == 200


def test_unknown_fault_is_refused():
    with pytest.raises(ValueError, match="unknown fault 'explode'"):
        MockOpenAIServer(faults=["explode"])


def test_stats_endpoint():
    server = MockOpenAIServer(faults=["500", "reset"], keep_requests=False)

    async def go():
        async with server, aiohttp.ClientSession() as session:
            for _ in range(3):
                try:
                    await post(server, BODY, session)
                except aiohttp.ClientError:
                    pass
            async with session.get(server.base_url.removesuffix("/v1") + "/mock/stats") as resp:
                return await resp.json()

    assert asyncio.run(go()) == {"requests": 3, "faults": {"500": 1, "reset": 1}, "rate_limited": 0}
    assert server.count == 3 and server.requests == []  # counted, bodies not kept


def test_review_reply_is_deterministic_per_seed():
    assert review_reply({"seed": 1}) == review_reply({"seed": 1}) != review_reply({"seed": 2})
    assert review_reply({"seed": 1}).endswith(".")


def test_command_line_server_prints_its_url_and_serves():
    proc = subprocess.Popen([sys.executable, "-m", "streamsynth.testing.mock_server", "--reply", "review"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:") and url.endswith("/v1")

        async def go():
            async with aiohttp.ClientSession() as session:
                async with session.post(url + "/chat/completions", json=BODY) as resp:
                    return json.loads(await resp.read())

        answer = asyncio.run(go())
        assert answer["choices"][0]["message"]["content"] == review_reply(BODY)
    finally:
        proc.kill()
        proc.wait()


def test_command_line_bad_fault_is_one_clear_line():
    r = subprocess.run([sys.executable, "-m", "streamsynth.testing.mock_server", "--fault-kinds", "429,boom"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "unknown fault 'boom'" in r.stderr.strip().splitlines()[-1]
