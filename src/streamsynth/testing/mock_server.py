"""A real OpenAI-compatible chat completions server for tests and throughput benchmarks.

It listens on 127.0.0.1 only (an ephemeral port), answers ``POST /v1/chat/completions`` with a
deterministic reply, and can inject faults: scripted ones for the first requests (``faults``) and
random ones at a seeded rate (``fault_rate``). Fault names:

- a status code such as ``"429"``, ``"500"``, ``"400"``: that HTTP error (429 carries
  ``Retry-After`` when ``retry_after`` is set);
- ``"timeout"``: sleep ``timeout_sleep_s`` before answering;
- ``"malformed"``: a 200 with JSON that lacks ``choices``;
- ``"truncated"``: a 200 whose JSON body is cut in half;
- ``"disconnect"``: drop the connection without answering.

Use ``async with MockOpenAIServer() as server`` (then ``server.base_url``) in async code, or
``with server.run_in_thread() as base_url`` from synchronous code.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import threading
from typing import Any, Callable, Iterator, Sequence

from aiohttp import web

HOST = "127.0.0.1"
DEFAULT_FAULT_KINDS = ("429", "500", "timeout", "malformed", "truncated")
_SPECIAL_FAULTS = frozenset({"timeout", "malformed", "truncated", "disconnect"})


def default_reply(body: dict[str, Any]) -> str:
    """A deterministic reply: the last user message and the request seed."""
    last_user = ""
    for message in body.get("messages") or ():
        if isinstance(message, dict) and message.get("role") == "user":
            last_user = str(message.get("content", ""))
    return f"reply to seed {body.get('seed', 0)}: {last_user}".strip()


class MockOpenAIServer:
    """An aiohttp server that imitates vLLM / OpenAI chat completions, with fault injection."""

    def __init__(
        self,
        *,
        latency_s: float = 0.0,
        reply: Callable[[dict], str] | None = None,
        faults: Sequence[str] = (),
        fault_rate: float = 0.0,
        fault_kinds: Sequence[str] = DEFAULT_FAULT_KINDS,
        seed: int = 0,
        retry_after: float | None = None,
        timeout_sleep_s: float = 5.0,
        require_api_key: str | None = None,
        model: str = "mock-model",
    ):
        for name in (*faults, *fault_kinds):
            _check_fault(name)
        self.latency_s = latency_s
        self.reply = reply or default_reply
        self.faults = list(faults)
        self.fault_rate = fault_rate
        self.fault_kinds = tuple(fault_kinds)
        self.retry_after = retry_after
        self.timeout_sleep_s = timeout_sleep_s
        self.require_api_key = require_api_key
        self.model = model
        self.requests: list[dict[str, Any]] = []
        self.faults_served: list[str] = []
        self.base_url: str | None = None
        self._rng = random.Random(seed)
        self._runner: web.AppRunner | None = None

    def __repr__(self) -> str:
        return f"MockOpenAIServer(base_url={self.base_url!r}, count={self.count})"

    @property
    def count(self) -> int:
        """How many chat completion requests arrived (faulty ones included)."""
        return len(self.requests)

    # -- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> str:
        """Listen on 127.0.0.1 (ephemeral port); return the base URL ending in ``/v1``."""
        if self._runner is not None:
            raise RuntimeError("the mock server is already running")
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_get("/v1/models", self._models)
        runner = web.AppRunner(app, access_log=None, handler_cancellation=True, shutdown_timeout=0.5)
        await runner.setup()
        site = web.TCPSite(runner, HOST, 0)
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

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = await _read_json(request)
        self.requests.append(body if isinstance(body, dict) else {})
        if not self._authorized(request):
            return _error(401, "Incorrect API key provided", "invalid_api_key")
        if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
            return _error(400, "request body must be a JSON object with a 'messages' list", "invalid_request_error")
        fault = self._next_fault()
        if fault is not None:
            self.faults_served.append(fault)
            response = await self._fault(fault, request, body)
            if response is not None:
                return response
        if self.latency_s > 0:
            await asyncio.sleep(self.latency_s)
        return web.json_response(self.completion_body(body))

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
        prompt_tokens = sum(len(str(m.get("content", "")).split()) for m in body["messages"] if isinstance(m, dict))
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
            "id": f"chatcmpl-mock-{self.count}",
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
