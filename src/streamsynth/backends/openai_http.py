"""OpenAI-compatible chat completions over bare aiohttp (vLLM, SGLang, Ollama, OpenAI).

One ``aiohttp.ClientSession`` per event loop, created lazily. How many requests are on the wire
is decided by an adaptive limit (``AIMDLimiter`` in ``limits.py``): it starts at ``concurrency``,
grows by one per ``limit`` successes up to ``max_concurrency``, and halves on a 429 or 503 or when
latency climbs well above the least seen (at most once per window). Optional request-per-minute
and token-per-minute limits (``TokenBucket``) pace the sending; the server's ``x-ratelimit-*``
headers (the OpenAI convention) set or tighten them. ``backend.limit`` is the current limit;
``backend.limiter`` holds its counters and ``backend.retries`` counts retries by kind.

Transient failures (429, 5xx, timeouts, dropped or reset connections, malformed bodies, empty
``choices``) are retried with capped exponential backoff and full jitter, honouring
``Retry-After``. A request that still fails comes back as a ``Completion`` with ``error`` set;
bad credentials and an unreachable server raise, since every further request would fail the same
way.

The API key is read from the environment variable named by ``api_key_env`` at request time and
is never stored on the backend, so it cannot leak through ``repr``, errors, logs or the model id.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import os
import random
import re
import time
import urllib.parse
from collections import Counter
from datetime import datetime, timezone
from typing import Any, Sequence

import aiohttp

from streamsynth.backends.base import BaseBackend
from streamsynth.backends.limits import AIMDLimiter, TokenBucket, parse_duration, parse_number, parse_seconds
from streamsynth.errors import AuthenticationError, BackendUnavailable, ConfigError
from streamsynth.records import Completion, CompletionRequest, TokenLogprob

#: statuses below 500 that are worth retrying (every 5xx is retried too)
RETRY_STATUSES = frozenset({408, 429})
#: statuses that mean the credentials were refused
AUTH_STATUSES = frozenset({401, 403})
#: statuses that say the server is overloaded: the concurrency limit halves
OVERLOAD_STATUSES = frozenset({429, 503})
#: rough characters per token, to estimate a request's tokens before sending it
CHARS_PER_TOKEN = 4
#: how many top alternatives to ask for when logprobs are requested
TOP_LOGPROBS = 5
_EXCERPT_CHARS = 200
_PARSE_ERRORS = (KeyError, TypeError, IndexError, ValueError, AttributeError)


def _not_serializable(obj: Any) -> Any:
    raise TypeError(f"Object of type {type(obj).__name__} is not JSON serializable")


try:  # the bytes json.dumps(body) sends, from a C encoder made once (json.dumps makes one per call)
    from json.encoder import c_make_encoder as _c_make_encoder
    from json.encoder import encode_basestring_ascii as _encode_ascii

    _BODY_ENCODER = _c_make_encoder(None, _not_serializable, _encode_ascii, None, ": ", ", ", False, False, True)

    def _dumps_body(body: Any) -> str:
        return "".join(_BODY_ENCODER(body, 0))
except ImportError:  # pragma: no cover - no C accelerator
    _dumps_body = json.dumps


class _Retryable(Exception):
    """One attempt failed in a way a later attempt may not."""

    def __init__(self, kind: str, detail: str = "", retry_after: float | None = None):
        self.kind = kind
        self.detail = detail
        self.retry_after = retry_after
        self.refused = False
        super().__init__(kind)


class _Refused(_Retryable):
    """The server could not be connected to at all."""

    def __init__(self, detail: str):
        super().__init__("connection refused", detail)
        self.refused = True


class OpenAIChatBackend(BaseBackend):
    """Chat completions from any server that speaks the OpenAI ``/chat/completions`` API."""

    #: the engine hands requests over one by one, each its own coroutine; this backend limits what is in flight
    batching = False

    def __init__(
        self,
        *,
        base_url: str,
        model: str,
        api_key_env: str | None = "OPENAI_API_KEY",
        concurrency: int = 64,
        timeout_s: float = 60.0,
        max_retries: int = 4,
        backoff_base_s: float = 0.5,
        backoff_max_s: float = 30.0,
        seed_rng: random.Random | None = None,
        prices: tuple[float, float] | None = None,
        max_concurrency: int | None = None,
        requests_per_minute: float | None = None,
        tokens_per_minute: float | None = None,
    ):
        _validate(base_url, model, concurrency, timeout_s, max_retries, backoff_base_s, backoff_max_s)
        api_key_env = api_key_env or None  # "" as None: no key
        _validate_key_env(api_key_env)
        _validate_limits(concurrency, max_concurrency, requests_per_minute, tokens_per_minute)
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.api_key_env = api_key_env
        self.concurrency = int(concurrency)
        self.timeout_s = float(timeout_s)
        self.max_retries = int(max_retries)
        self.backoff_base_s = float(backoff_base_s)
        self.backoff_max_s = float(backoff_max_s)
        self.prices = prices
        self.preferred_batch_size = self.concurrency * 4
        self._rng = seed_rng if seed_rng is not None else random.Random(0)
        self._session: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._connected_once = False
        self.limiter = AIMDLimiter(self.concurrency, max_concurrency or 4 * self.concurrency)
        self.max_concurrency = self.limiter.max_limit
        #: request and token rate limits: configured here, or learned from the server's headers
        self.request_bucket = TokenBucket(requests_per_minute) if requests_per_minute else None
        self.token_bucket = TokenBucket(tokens_per_minute) if tokens_per_minute else None
        #: retries made, by kind of failure ("http 429", "timeout", "malformed response", ...)
        self.retries: Counter[str] = Counter()

    # -- identity -----------------------------------------------------------------------------

    @property
    def model_id(self) -> str:
        return f"openai:{self.model}@{self.base_url}"

    @property
    def url(self) -> str:
        return self.base_url + "/chat/completions"

    @property
    def limit(self) -> int:
        """Requests allowed in flight now (the adaptive limit)."""
        return self.limiter.limit

    @property
    def max_attempts(self) -> int:
        """First try plus ``max_retries`` retries."""
        return self.max_retries + 1

    def __repr__(self) -> str:
        return (
            f"OpenAIChatBackend(model={self.model!r}, base_url={self.base_url!r}, "
            f"api_key_env={_shown_key_env(self.api_key_env) if self.api_key_env else None!r}, concurrency={self.concurrency})"
        )

    # -- public verbs -------------------------------------------------------------------------

    async def complete(self, requests: Sequence[CompletionRequest]) -> list[Completion]:
        """Complete every request concurrently; results come back in request order."""
        if not requests:
            return []
        self._ensure_session()
        tasks = [asyncio.ensure_future(self._complete_one(r)) for r in requests]
        try:
            return list(await asyncio.gather(*tasks))
        except BaseException:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise

    async def complete_one(self, request: CompletionRequest) -> Completion:
        """``(await complete([request]))[0]``, for a caller that sends requests one by one (the engine)."""
        self._ensure_session()
        return await self._complete_one(request)

    async def aclose(self) -> None:
        """Close the HTTP session. Safe to call twice."""
        session, self._session = self._session, None
        loop, self._loop = self._loop, None
        if session is None or session.closed:
            return
        if loop is asyncio.get_running_loop():
            await session.close()

    def backoff_delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to wait after failed attempt ``attempt`` (0-based): full jitter, capped."""
        if retry_after is not None:
            return min(max(retry_after, 0.0), self.backoff_max_s)
        cap = min(self.backoff_max_s, self.backoff_base_s * (2 ** min(attempt, 60)))
        return self._rng.uniform(0.0, cap)

    def request_body(self, request: CompletionRequest) -> dict[str, Any]:
        """The JSON body sent for ``request``."""
        params = request.params
        body: dict[str, Any] = {
            "model": self.model,
            "messages": [m.to_dict() for m in request.messages],
            "temperature": params.temperature,
            "top_p": params.top_p,
            "max_tokens": params.max_new_tokens,
            "seed": request.sampling_seed,  # (seed, item, step, k): a vote's k answers differ
        }
        if params.stop:
            body["stop"] = list(params.stop)
        if params.logprobs:
            body["logprobs"] = True
            body["top_logprobs"] = TOP_LOGPROBS
        return body

    # -- one request --------------------------------------------------------------------------

    async def _complete_one(self, request: CompletionRequest) -> Completion:
        body = self.request_body(request)
        tokens = self._estimate_tokens(request) if self.token_bucket is not None else 0
        started = time.perf_counter()
        failure: _Retryable | None = None
        all_refused = True
        for attempt in range(self.max_attempts):
            if attempt:
                await asyncio.sleep(self.backoff_delay(attempt - 1, failure.retry_after if failure else None))
            try:
                return await self._attempt(body, tokens, first=attempt == 0)
            except _Retryable as exc:
                failure = exc
                all_refused = all_refused and exc.refused
                if attempt + 1 < self.max_attempts:
                    self.retries[exc.kind] += 1
        assert failure is not None
        if all_refused:
            raise self._unavailable(failure.detail, lost=True)
        return self._failed(failure, time.perf_counter() - started)

    async def _attempt(self, body: dict[str, Any], tokens: int, *, first: bool) -> Completion:
        session = self._ensure_session()
        limiter = self.limiter
        epoch = await limiter.acquire()
        status = 0
        latency: float | None = None
        try:
            await self._pace(tokens)
            started = time.perf_counter()
            try:
                async with session.post(self.url, json=body, headers=self._headers()) as resp:
                    self._connected_once = True
                    raw = await resp.read()
                    status, headers = resp.status, resp.headers
            except aiohttp.ClientConnectorError as exc:
                if first and not self._connected_once:
                    raise self._unavailable(_describe(exc)) from None
                raise _Refused(_describe(exc)) from None
            except (asyncio.TimeoutError, aiohttp.ServerTimeoutError):
                raise _Retryable("timeout") from None
            except aiohttp.ClientError as exc:  # reset, disconnected, truncated payload
                raise _Retryable("connection error", _describe(exc)) from None
            latency = time.perf_counter() - started
        finally:
            limiter.release(epoch, latency_s=latency if 200 <= status < 300 else None,
                            overloaded=status in OVERLOAD_STATUSES)
        if "x-ratelimit-remaining-requests" in headers or "x-ratelimit-remaining-tokens" in headers:
            self._observe_rate_limits(headers)
        completion = self._handle_response(status, headers, raw, latency)
        if tokens and completion.ok and completion.prompt_tokens + completion.completion_tokens:
            self.token_bucket.refund(tokens - completion.prompt_tokens - completion.completion_tokens)
        return completion

    # -- rate limits --------------------------------------------------------------------------

    async def _pace(self, tokens: int) -> None:
        """Wait until the request and token rate limits allow one more request."""
        wait = 0.0
        if self.request_bucket is not None:
            wait = self.request_bucket.reserve(1)
        if self.token_bucket is not None:
            wait = max(wait, self.token_bucket.reserve(tokens))
        if wait > 0:
            await asyncio.sleep(wait)

    def _estimate_tokens(self, request: CompletionRequest) -> int:
        """Tokens a request may count against a token limit before it is answered (as OpenAI counts)."""
        chars = sum(len(m.content) for m in request.messages)
        return chars // CHARS_PER_TOKEN + 4 * len(request.messages) + request.params.max_new_tokens

    def _observe_rate_limits(self, headers: Any) -> None:
        """Set or tighten the rate limits from ``x-ratelimit-*`` headers (requests and tokens)."""
        for kind in ("requests", "tokens"):
            remaining = parse_number(headers.get(f"x-ratelimit-remaining-{kind}"))
            limit = parse_number(headers.get(f"x-ratelimit-limit-{kind}"))
            if remaining is None and limit is None:
                continue
            reset = parse_duration(headers.get(f"x-ratelimit-reset-{kind}"))
            attr = "request_bucket" if kind == "requests" else "token_bucket"
            bucket = getattr(self, attr)
            if bucket is None:
                if not limit:
                    continue  # a remaining count alone says nothing about the rate
                bucket = TokenBucket.from_server(limit)
                setattr(self, attr, bucket)
            bucket.observe(limit, remaining, reset)

    @property
    def rate_limits(self) -> dict[str, float | None]:
        """Requests and tokens per minute now in force (None: no limit)."""
        return {
            "requests_per_minute": self.request_bucket.rate_per_min if self.request_bucket else None,
            "tokens_per_minute": self.token_bucket.rate_per_min if self.token_bucket else None,
        }

    def _handle_response(self, status: int, headers: Any, raw: bytes, latency: float) -> Completion:
        if status in AUTH_STATUSES:
            raise AuthenticationError(self._auth_message(status))
        if status in RETRY_STATUSES or status >= 500:
            raise _Retryable(f"http {status}", retry_after=parse_retry_after(headers.get("Retry-After")))
        if not 200 <= status < 300:
            return self._error_completion(f"http {status}: {self._excerpt(raw)}", latency)
        try:
            return parse_chat_response(json.loads(raw), self.model_id, latency)
        except KeyError as exc:
            raise _Retryable("malformed response", f"no {exc.args[0] if exc.args else '?'!r} field") from None
        except json.JSONDecodeError as exc:
            raise _Retryable("malformed response", f"invalid JSON: {_describe(exc)}") from None
        except _PARSE_ERRORS as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
            raise _Retryable("malformed response", _describe(exc)) from None

    # -- helpers ------------------------------------------------------------------------------

    def _ensure_session(self) -> aiohttp.ClientSession:
        """The session of the running loop, made on first use in that loop."""
        loop = asyncio.get_running_loop()
        if self._session is None or self._session.closed or self._loop is not loop:
            # the limiter decides what is in flight; the pool only has to hold its largest limit
            connector = aiohttp.TCPConnector(limit=self.max_concurrency)
            timeout = aiohttp.ClientTimeout(total=self.timeout_s)
            self._session = aiohttp.ClientSession(connector=connector, timeout=timeout, json_serialize=_dumps_body)
            if self._loop is not loop:
                self.limiter.reset_waiters()  # waiters of another loop are gone with it
            self._loop = loop
        return self._session

    def _api_key(self) -> str | None:
        if not self.api_key_env:
            return None
        return os.environ.get(self.api_key_env) or None

    def _headers(self) -> dict[str, str]:
        key = self._api_key()
        return {"Authorization": f"Bearer {key}"} if key else {}

    def _auth_message(self, status: int) -> str:
        refused = f"{self.base_url} refused the credentials (http {status})"
        if not self.api_key_env:
            return f"{refused}; this server needs an API key: pass api_key_env naming the environment variable that holds it"
        state = "is set but was refused" if self._api_key() else "is not set"
        name = _shown_key_env(self.api_key_env)
        return f"{refused}; the environment variable {name} {state}: set it to a valid API key"

    def _unavailable(self, detail: str, *, lost: bool = False) -> BackendUnavailable:
        what = "lost connection to" if lost else "cannot connect to"
        return BackendUnavailable(f"{what} {self.base_url}: {detail}; start the server or fix --base-url")

    def _excerpt(self, raw: bytes) -> str:
        """A short, one-line, key-free excerpt of an error body."""
        text = raw.decode("utf-8", errors="replace")
        try:
            text = str(json.loads(text)["error"]["message"])
        except _PARSE_ERRORS:
            pass
        text = " ".join(text.split())
        key = self._api_key()
        if key:
            text = text.replace(key, "***")
        return text[:_EXCERPT_CHARS]

    def _failed(self, failure: _Retryable, elapsed: float) -> Completion:
        reason = f"{failure.kind} after {self.max_attempts} attempts"
        if failure.detail:
            reason += f": {failure.detail}"
        return self._error_completion(reason, elapsed)

    def _error_completion(self, reason: str, latency: float) -> Completion:
        return Completion(text="", model=self.model_id, finish_reason="error", latency_s=latency, error=reason)


def parse_chat_response(data: Any, model_id: str, latency_s: float) -> Completion:
    """A ``Completion`` from a chat completion body; raises KeyError/TypeError/... if malformed."""
    choices = data["choices"]
    if not choices:
        raise ValueError("the response has no choices")
    choice = choices[0]
    text = choice["message"]["content"]
    if text is None:
        text = ""
    if not isinstance(text, str):
        raise TypeError(f"message content is {type(text).__name__}, not a string")
    usage = data.get("usage") or {}
    return Completion(
        text=text,
        model=model_id,
        finish_reason=str(choice.get("finish_reason") or "stop"),
        prompt_tokens=int(usage.get("prompt_tokens") or 0),
        completion_tokens=int(usage.get("completion_tokens") or 0),
        latency_s=latency_s,
        logprobs=parse_logprobs(choice.get("logprobs")),
    )


def parse_logprobs(block: Any) -> tuple[TokenLogprob, ...] | None:
    """``choices[0].logprobs.content`` as ``TokenLogprob`` tuples, or None when absent."""
    if not block or block.get("content") is None:
        return None
    return tuple(
        TokenLogprob(
            token=str(item["token"]),
            logprob=float(item["logprob"]),
            top=tuple((str(t["token"]), float(t["logprob"])) for t in item.get("top_logprobs") or ()),
        )
        for item in block["content"]
    )


def parse_retry_after(value: str | None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delay seconds or HTTP date), else None."""
    return parse_seconds(value, _seconds_until)


def _seconds_until(http_date: str) -> float | None:
    try:
        when = email.utils.parsedate_to_datetime(http_date)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max((when - datetime.now(timezone.utc)).total_seconds(), 0.0)


def _describe(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:_EXCERPT_CHARS]


#: how environment variable names usually look: only a name of this form, or one that is set, is
#: ever shown in a message or accepted (a key pasted where the name goes may look like a name:
#: hf_..., gsk_...)
_SHOWN_ENV_NAME = re.compile(r"[A-Z][A-Z0-9_]{0,63}")


def _redacted(url: str) -> str:
    """What an error message may show of ``url``: scheme, host, port and path, never user info,
    query or fragment ('(not shown)' when it does not even start with http:// or https://)."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in ("http", "https"):
        return "(not shown)"
    rest = rest.rpartition("@")[2].split("?", 1)[0].split("#", 1)[0]  # user info may hold '/', '?' or '#'
    return f"{scheme}://{rest}"


def _shown_key_env(api_key_env: str) -> str:
    """``api_key_env`` as a message may name it: itself when it looks like a variable name or is set."""
    if _SHOWN_ENV_NAME.fullmatch(api_key_env) or api_key_env in os.environ:
        return api_key_env
    return "named by api_key_env (--api-key-env)"


def _validate_key_env(api_key_env: str | None) -> None:
    """The NAME of an environment variable, or None; never echoes the value (it may be the key itself)."""
    if api_key_env is not None and (not isinstance(api_key_env, str) or _shown_key_env(api_key_env) != api_key_env):
        raise ConfigError("api_key_env (--api-key-env) takes the NAME of the environment variable that holds the API "
                          "key (usually UPPER_CASE, e.g. OPENAI_API_KEY), not the key itself, and this one is neither "
                          "set nor shaped like a name; set the variable, then pass its name")


def _validate(
    base_url: str,
    model: str,
    concurrency: int,
    timeout_s: float,
    max_retries: int,
    backoff_base_s: float,
    backoff_max_s: float,
) -> None:
    if not base_url.startswith(("http://", "https://")):
        raise ConfigError("base_url must start with http:// or https:// (the value given is not shown: it may hold a "
                          "key); give it as http://HOST:PORT/v1")
    if "@" in base_url.partition("://")[2]:
        raise ConfigError(f"base_url carries credentials (user:password@); they would be written into every sample's "
                          f"provenance and the cache: give {_redacted(base_url)!r} and put the key in an environment "
                          "variable named by api_key_env (--api-key-env)")
    try:
        parts = urllib.parse.urlsplit(base_url)
        parts.port  # noqa: B018 - a port that is not a number raises here
    except ValueError:
        raise ConfigError(f"base_url {_redacted(base_url)!r} is not a valid URL; give it as http://HOST:PORT/v1") from None
    if parts.query or parts.fragment:
        raise ConfigError(f"base_url must not carry a query string or fragment (it may hold a key, and /chat/completions "
                          f"is appended to it): give {_redacted(base_url)!r}")
    if not model:
        raise ConfigError("model must name the served model (e.g. the name vLLM was started with)")
    if concurrency < 1:
        raise ConfigError(f"concurrency must be at least 1, got {concurrency}")
    if timeout_s <= 0:
        raise ConfigError(f"timeout_s must be positive, got {timeout_s}")
    if max_retries < 0:
        raise ConfigError(f"max_retries must be 0 or more, got {max_retries}")
    if backoff_base_s < 0 or backoff_max_s < 0:
        raise ConfigError("backoff_base_s and backoff_max_s must be 0 or more")


def _validate_limits(
    concurrency: int, max_concurrency: int | None, requests_per_minute: float | None, tokens_per_minute: float | None
) -> None:
    if max_concurrency is not None and max_concurrency < concurrency:
        raise ConfigError(f"max_concurrency ({max_concurrency}) must be at least concurrency ({concurrency})")
    for name, value in (("requests_per_minute", requests_per_minute), ("tokens_per_minute", tokens_per_minute)):
        if value is not None and not value > 0:
            raise ConfigError(f"{name} must be positive, got {value}")
