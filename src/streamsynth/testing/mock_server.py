"""A real OpenAI-compatible chat completions server for tests and throughput benchmarks.

It listens on 127.0.0.1 only (an ephemeral port unless ``port`` is given) and answers
``POST /v1/chat/completions`` with a deterministic reply (``default_reply``: the request's seed
and last user message; ``review_reply``: a short movie-review sentence drawn from the seed; or
any ``reply(body) -> str``). ``GET /v1/models`` lists the model; ``GET /mock/stats`` returns the
counters as JSON (``requests``, ``faults`` by kind, ``rate_limited``), for a client in another
process.

Latency: every answer waits ``latency_s`` plus a uniform draw from ``[0, latency_jitter_s)``
(seeded by ``seed``), before its first byte.

Streaming: a body with ``"stream": true`` is answered with server-sent events, as OpenAI does:
``data: {chat.completion.chunk}`` lines (the role, then one chunk per word, then the finish
reason; a usage chunk when ``stream_options.include_usage`` is set), then ``data: [DONE]``.
Faults are served as plain (non-streamed) responses.

Faults: scripted ones for the first requests (``faults``) and random ones at a seeded rate
(``fault_rate``, drawn from ``fault_kinds``). Fault names (``ALL_FAULT_KINDS``):

- a status code such as ``"429"``, ``"500"``, ``"503"``, ``"400"``: that HTTP error (429 carries
  ``Retry-After`` when ``retry_after`` is set);
- ``"timeout"``: sleep ``timeout_sleep_s`` before answering;
- ``"malformed"``: a 200 with JSON that lacks ``choices``;
- ``"empty_choices"``: a 200 with ``"choices": []``;
- ``"truncated"``: a 200 whose JSON body is cut in half (the connection stays up);
- ``"disconnect"``: drop the connection without answering;
- ``"reset"``: send the headers and half the body, then reset the connection (abort the
  transport) mid-response.

Rate limits (the OpenAI convention): with ``ratelimit_requests_per_min`` (and/or
``ratelimit_tokens_per_min``; a request costs its prompt words plus ``max_tokens``) every answer
carries ``x-ratelimit-limit-requests``, ``x-ratelimit-remaining-requests`` and
``x-ratelimit-reset-requests`` (``"1.5s"``: until the bucket is full again), and the same for
tokens; a request over the limit gets a 429 with those headers and a ``Retry-After``. The
buckets refill continuously and hold ``ratelimit_burst_s`` seconds' worth (60: a full minute).

Use ``async with MockOpenAIServer() as server`` (then ``server.base_url``) in async code, or
``with server.run_in_thread() as base_url`` from synchronous code. From a shell, or as a separate
process for a benchmark: ``python -m streamsynth.testing.mock_server --latency-s 0.2`` prints the
base URL on its first line and serves until it is killed (``--help`` lists the options).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import socket
import struct
import sys
import threading
import time
from collections import Counter
from typing import Any, Callable, Iterator, Sequence

from aiohttp import web

from streamsynth import aio

HOST = "127.0.0.1"
DEFAULT_FAULT_KINDS = ("429", "500", "timeout", "malformed", "truncated")
#: every kind of fault the server can serve
ALL_FAULT_KINDS = ("429", "500", "503", "timeout", "malformed", "empty_choices", "truncated", "disconnect", "reset")
_SPECIAL_FAULTS = frozenset({"timeout", "malformed", "empty_choices", "truncated", "disconnect", "reset"})
_WORDS = (
    ("the acting", "the plot", "the score", "the pacing", "the dialogue", "the camera work", "the cast", "the ending"),
    ("is", "feels", "turns out", "seems", "remains", "proves"),
    ("sharp", "dull", "warm", "clumsy", "gripping", "flat", "tender", "tedious", "bold", "lifeless"),
    ("from start to finish", "for most of its length", "in the best scenes", "despite the budget",
     "whenever the lead is on screen", "in the second half", "without ever trying too hard"),
)


def default_reply(body: dict[str, Any]) -> str:
    """A deterministic reply: the last user message and the request seed."""
    last_user = ""
    for message in body.get("messages") or ():
        if isinstance(message, dict) and message.get("role") == "user":
            last_user = str(message.get("content", ""))
    return f"reply to seed {body.get('seed', 0)}: {last_user}".strip()


def review_reply(body: dict[str, Any]) -> str:
    """A short movie-review sentence drawn from the request's seed (for throughput runs)."""
    rng = random.Random(body.get("seed", 0))
    subject, verb, adjective, where = (rng.choice(words) for words in _WORDS)
    return f"{subject.capitalize()} {verb} {adjective} {where}, take {rng.randrange(10**6)}."


class MockOpenAIServer:
    """An aiohttp server that imitates vLLM / OpenAI chat completions, with fault injection."""

    def __init__(
        self,
        *,
        latency_s: float = 0.0,
        latency_jitter_s: float = 0.0,
        reply: Callable[[dict], str] | None = None,
        faults: Sequence[str] = (),
        fault_rate: float = 0.0,
        fault_kinds: Sequence[str] = DEFAULT_FAULT_KINDS,
        seed: int = 0,
        retry_after: float | None = None,
        timeout_sleep_s: float = 5.0,
        require_api_key: str | None = None,
        model: str = "mock-model",
        ratelimit_requests_per_min: float | None = None,
        ratelimit_tokens_per_min: float | None = None,
        ratelimit_burst_s: float = 60.0,
        keep_requests: bool = True,
        port: int = 0,
    ):
        for name in (*faults, *fault_kinds):
            _check_fault(name)
        if latency_s < 0 or latency_jitter_s < 0:
            raise ValueError("latency_s and latency_jitter_s must be 0 or more")
        self.latency_s = latency_s
        self.latency_jitter_s = latency_jitter_s
        self.reply = reply or default_reply
        self.faults = list(faults)
        self.fault_rate = fault_rate
        self.fault_kinds = tuple(fault_kinds)
        self.retry_after = retry_after
        self.timeout_sleep_s = timeout_sleep_s
        self.require_api_key = require_api_key
        self.model = model
        self.port = port
        #: the request bodies, in arrival order (only while ``keep_requests``)
        self.requests: list[dict[str, Any]] = []
        self.keep_requests = keep_requests
        self.faults_served: list[str] = []
        #: requests answered 429 because a rate limit was reached
        self.rate_limited = 0
        self.base_url: str | None = None
        self._count = 0
        self._rng = random.Random(seed)
        self._latency_rng = random.Random(f"latency:{seed}")
        self._limits = {
            kind: _Bucket(per_min, ratelimit_burst_s)
            for kind, per_min in (("requests", ratelimit_requests_per_min), ("tokens", ratelimit_tokens_per_min))
            if per_min
        }
        self._runner: web.AppRunner | None = None

    def __repr__(self) -> str:
        return f"MockOpenAIServer(base_url={self.base_url!r}, count={self.count})"

    @property
    def count(self) -> int:
        """How many chat completion requests arrived (faulty ones included)."""
        return self._count

    def stats(self) -> dict[str, Any]:
        """The counters ``GET /mock/stats`` returns."""
        return {"requests": self._count, "faults": dict(Counter(self.faults_served)), "rate_limited": self.rate_limited}

    # -- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> str:
        """Listen on 127.0.0.1 (ephemeral port); return the base URL ending in ``/v1``."""
        if self._runner is not None:
            raise RuntimeError("the mock server is already running")
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_get("/v1/models", self._models)
        app.router.add_get("/mock/stats", self._stats)
        runner = web.AppRunner(app, access_log=None, handler_cancellation=True, shutdown_timeout=0.5)
        await runner.setup()
        site = web.TCPSite(runner, HOST, self.port, backlog=4096)
        await site.start()
        self._runner = runner
        port = runner.addresses[0][1]
        self.base_url = f"http://{HOST}:{port}/v1"
        return self.base_url

    async def stop(self) -> None:
        """Stop listening and drop open connections. Safe to call twice."""
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def __aenter__(self) -> "MockOpenAIServer":
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @contextlib.contextmanager
    def run_in_thread(self) -> Iterator[str]:
        """Run the server on its own loop in a background thread; yield its base URL."""
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, name="mock-openai-server", daemon=True)
        thread.start()
        try:
            yield asyncio.run_coroutine_threadsafe(self.start(), loop).result(timeout=30)
        finally:
            try:
                asyncio.run_coroutine_threadsafe(self.stop(), loop).result(timeout=30)
            finally:
                loop.call_soon_threadsafe(loop.stop)
                thread.join(timeout=30)
                loop.close()

    # -- handlers -----------------------------------------------------------------------------

    async def _models(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": self.model, "object": "model"}]})

    async def _stats(self, request: web.Request) -> web.Response:
        return web.json_response(self.stats())

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = await _read_json(request)
        self._count += 1
        if self.keep_requests:
            self.requests.append(body if isinstance(body, dict) else {})
        if not self._authorized(request):
            return _error(401, "Incorrect API key provided", "invalid_api_key")
        if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
            return _error(400, "request body must be a JSON object with a 'messages' list", "invalid_request_error")
        limit_headers, over = self._take_rate_limits(body)
        if over is not None:
            self.rate_limited += 1
            retry = {"Retry-After": f"{over:.3f}"}
            return _error(429, "Rate limit reached; retry after the time in Retry-After", "rate_limit_exceeded",
                          {**limit_headers, **retry})
        fault = self._next_fault()
        if fault is not None:
            self.faults_served.append(fault)
            response = await self._fault(fault, request, body)
            if response is not None:
                return response
        delay = self.draw_latency()
        if delay > 0:
            await asyncio.sleep(delay)
        if body.get("stream"):
            return await self._stream(request, body, limit_headers)
        return web.json_response(self.completion_body(body), headers=limit_headers or None)

    def _take_rate_limits(self, body: dict[str, Any]) -> tuple[dict[str, str], float | None]:
        """Charge the request to the rate limits: the ``x-ratelimit-*`` headers, and the wait if over."""
        if not self._limits:
            return {}, None
        now = time.monotonic()
        costs = {"requests": 1.0, "tokens": float(_prompt_tokens(body) + _int(body.get("max_tokens")))}
        waits = [b.wait(costs[kind], now) for kind, b in self._limits.items()]
        over = max(waits)
        if over <= 0:
            for kind, bucket in self._limits.items():
                bucket.take(costs[kind])
        headers: dict[str, str] = {}
        for kind, bucket in self._limits.items():
            headers[f"x-ratelimit-limit-{kind}"] = str(int(bucket.per_min))
            headers[f"x-ratelimit-remaining-{kind}"] = str(max(int(bucket.tokens), 0))
            headers[f"x-ratelimit-reset-{kind}"] = _format_duration(bucket.until_full())
        return headers, (over if over > 0 else None)

    async def _stream(self, request: web.Request, body: dict[str, Any], headers: dict[str, str]) -> web.StreamResponse:
        """The answer as server-sent events: role, one chunk per word, finish, [usage], [DONE]."""
        full = self.completion_body(body)
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache", **headers})
        await response.prepare(request)
        choice = full["choices"][0]
        head = {k: full[k] for k in ("id", "created", "model")}

        def event(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> bytes:
            chunk = {**head, "object": "chat.completion.chunk",
                     "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}], **extra}
            return b"data: " + json.dumps(chunk).encode() + b"\n\n"

        await response.write(event({"role": "assistant", "content": ""}))
        for token in _tokens(choice["message"]["content"]):
            await response.write(event({"content": token}))
        await response.write(event({}, choice["finish_reason"]))
        if (body.get("stream_options") or {}).get("include_usage"):
            usage = {**head, "object": "chat.completion.chunk", "choices": [], "usage": full["usage"]}
            await response.write(b"data: " + json.dumps(usage).encode() + b"\n\n")
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response

    def draw_latency(self) -> float:
        """The next answer's latency: ``latency_s`` plus a seeded uniform draw below ``latency_jitter_s``."""
        if self.latency_jitter_s > 0:
            return self.latency_s + self._latency_rng.uniform(0.0, self.latency_jitter_s)
        return self.latency_s

    def _authorized(self, request: web.Request) -> bool:
        if self.require_api_key is None:
            return True
        return request.headers.get("Authorization") == f"Bearer {self.require_api_key}"

    def _next_fault(self) -> str | None:
        if self.faults:
            return self.faults.pop(0)
        if self.fault_rate > 0 and self.fault_kinds and self._rng.random() < self.fault_rate:
            return self._rng.choice(self.fault_kinds)
        return None

    async def _fault(self, fault: str, request: web.Request, body: dict[str, Any]) -> web.StreamResponse | None:
        """The faulty response, or None when the fault only delays a normal one."""
        if fault == "timeout":
            await asyncio.sleep(self.timeout_sleep_s)
            return None
        if fault == "malformed":
            return web.json_response({"id": "chatcmpl-mock", "object": "chat.completion"})
        if fault == "empty_choices":
            return web.json_response({**self.completion_body(body), "choices": []})
        if fault == "reset":
            payload = json.dumps(self.completion_body(body)).encode()
            response = web.StreamResponse(headers={"Content-Type": "application/json"})
            response.content_length = len(payload)
            await response.prepare(request)
            await response.write(payload[: len(payload) // 2])
            transport = request.transport
            if transport is not None:
                sock = transport.get_extra_info("socket")
                if sock is not None:  # linger 0: close sends a TCP RST, not a FIN
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                transport.abort()
            raise asyncio.CancelledError  # nothing more can be sent on this connection
        if fault == "truncated":
            text = json.dumps(self.completion_body(body))
            return web.Response(text=text[: len(text) // 2], content_type="application/json")
        if fault == "disconnect":
            if request.transport is not None:
                request.transport.abort()
            return web.Response(status=500)
        status = int(fault)
        headers = {"Retry-After": _format_seconds(self.retry_after)} if status == 429 and self.retry_after is not None else None
        return _error(status, f"mock fault {fault}", "mock_fault", headers)

    # -- the answer ---------------------------------------------------------------------------

    def completion_body(self, body: dict[str, Any]) -> dict[str, Any]:
        """The OpenAI chat completion JSON for a request body."""
        text, finish = _apply_limits(self.reply(body), body.get("stop"), body.get("max_tokens"))
        prompt_tokens = _prompt_tokens(body)
        tokens = _tokens(text)
        choice: dict[str, Any] = {
            "index": 0,
            "message": {"role": "assistant", "content": text},
            "finish_reason": finish,
            "logprobs": None,
        }
        if body.get("logprobs"):
            choice["logprobs"] = {"content": _logprobs(tokens, int(body.get("top_logprobs") or 0))}
        return {
            "id": f"chatcmpl-mock-{self._count}",
            "object": "chat.completion",
            "created": 0,
            "model": str(body.get("model", self.model)),
            "choices": [choice],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": len(tokens),
                "total_tokens": prompt_tokens + len(tokens),
            },
        }


class _Bucket:
    """A server-side rate limit: ``per_min`` units a minute, holding ``burst_s`` seconds' worth."""

    def __init__(self, per_min: float, burst_s: float) -> None:
        self.per_min = float(per_min)
        self.rate = self.per_min / 60.0
        self.capacity = max(1.0, self.rate * burst_s)
        self.tokens = self.capacity
        self.at = time.monotonic()

    def wait(self, cost: float, now: float) -> float:
        """Refill to ``now``; the seconds until ``cost`` units are there (0: they are)."""
        self.tokens = min(self.capacity, self.tokens + (now - self.at) * self.rate)
        self.at = now
        need = min(cost, self.capacity) - self.tokens
        return need / self.rate if need > 0 else 0.0

    def take(self, cost: float) -> None:
        self.tokens -= min(cost, self.capacity)

    def until_full(self) -> float:
        return max(self.capacity - self.tokens, 0.0) / self.rate


def _check_fault(name: str) -> None:
    if name in _SPECIAL_FAULTS or (name.isdigit() and 400 <= int(name) <= 599):
        return
    raise ValueError(f"unknown fault {name!r}: use an HTTP status (400-599) or one of {sorted(_SPECIAL_FAULTS)}")


async def _read_json(request: web.Request) -> Any:
    try:
        return json.loads(await request.read())
    except (ValueError, UnicodeDecodeError):
        return None


def _error(status: int, message: str, code: str, headers: dict[str, str] | None = None) -> web.Response:
    payload = {"error": {"message": message, "type": code, "code": status}}
    return web.json_response(payload, status=status, headers=headers)


def _format_seconds(seconds: float) -> str:
    return str(int(seconds)) if float(seconds).is_integer() else f"{seconds:g}"


def _format_duration(seconds: float) -> str:
    """OpenAI's reset format: ``"20ms"``, ``"1.5s"``, ``"6m0s"``."""
    if seconds < 1:
        return f"{round(seconds * 1000)}ms"
    minutes, rest = divmod(seconds, 60)
    return f"{int(minutes)}m{rest:.0f}s" if minutes else f"{rest:.3g}s"


def _prompt_tokens(body: dict[str, Any]) -> int:
    return sum(len(str(m.get("content", "")).split()) for m in body.get("messages") or () if isinstance(m, dict))


def _int(value: Any) -> int:
    return value if isinstance(value, int) and value > 0 else 0


def _apply_limits(text: str, stop: Any, max_tokens: Any) -> tuple[str, str]:
    """Cut the reply at the first stop string and at ``max_tokens`` words."""
    stops = [stop] if isinstance(stop, str) else list(stop or ())
    for s in stops:
        if s and s in text:
            text = text[: text.index(s)]
    words = text.split()
    if isinstance(max_tokens, int) and 0 <= max_tokens < len(words):
        return " ".join(words[:max_tokens]), "length"
    return text, "stop"


def _tokens(text: str) -> list[str]:
    """Whitespace 'tokens' that join back to the (single-spaced) text."""
    return [w if i == 0 else " " + w for i, w in enumerate(text.split())]


def _logprobs(tokens: list[str], top_k: int) -> list[dict[str, Any]]:
    items = []
    for i, token in enumerate(tokens):
        logprob = -round(0.1 * (i % 7 + 1), 4)
        top = [{"token": token, "logprob": logprob, "bytes": list(token.encode())}]
        top += [{"token": f"{token}~{j}", "logprob": logprob - j, "bytes": None} for j in range(1, top_k)]
        items.append({"token": token, "logprob": logprob, "bytes": list(token.encode()), "top_logprobs": top[:top_k]})
    return items


REPLIES = {"echo": default_reply, "review": review_reply}


def main(argv: Sequence[str] | None = None) -> None:
    """Serve from the command line: print the base URL on the first line, serve until killed."""
    ap = argparse.ArgumentParser(prog="python -m streamsynth.testing.mock_server", description=main.__doc__)
    ap.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (default: any free one)")
    ap.add_argument("--latency-s", type=float, default=0.0, help="fixed latency of every answer")
    ap.add_argument("--latency-jitter-s", type=float, default=0.0, help="plus a uniform draw from [0, this)")
    ap.add_argument("--reply", choices=sorted(REPLIES), default="echo", help="echo: seed and last user message; review: a review sentence")
    ap.add_argument("--fault-rate", type=float, default=0.0, help="share of requests answered with a random fault")
    ap.add_argument("--fault-kinds", default=",".join(DEFAULT_FAULT_KINDS), help=f"comma-separated, from {','.join(ALL_FAULT_KINDS)}")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--retry-after", type=float, default=None, help="Retry-After seconds on a 429 fault")
    ap.add_argument("--timeout-sleep-s", type=float, default=5.0, help="how long a 'timeout' fault sleeps")
    ap.add_argument("--ratelimit-requests-per-min", type=float, default=None)
    ap.add_argument("--ratelimit-tokens-per-min", type=float, default=None)
    ap.add_argument("--model", default="mock-model")
    args = ap.parse_args(argv)
    kinds = [k.strip() for k in args.fault_kinds.split(",") if k.strip()]
    try:
        server = MockOpenAIServer(
            latency_s=args.latency_s, latency_jitter_s=args.latency_jitter_s, reply=REPLIES[args.reply],
            fault_rate=args.fault_rate, fault_kinds=kinds, seed=args.seed, retry_after=args.retry_after,
            timeout_sleep_s=args.timeout_sleep_s, ratelimit_requests_per_min=args.ratelimit_requests_per_min,
            ratelimit_tokens_per_min=args.ratelimit_tokens_per_min, model=args.model, keep_requests=False,
            port=args.port,
        )
    except ValueError as exc:
        ap.error(str(exc))

    async def serve() -> None:
        print(await server.start(), flush=True)
        await asyncio.Event().wait()

    try:
        aio.run(serve())
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
