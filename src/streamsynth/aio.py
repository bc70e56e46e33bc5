"""Running a coroutine to completion on the fastest event loop at hand.

streamsynth's HTTP path is bound by the client's CPU per request once hundreds of requests are
in flight. uvloop (libuv under asyncio's API) cuts the event loop's share of that cost; it is a
dependency on Linux and macOS, and ``run`` falls back to asyncio's own loop where it is missing
(Windows) or when ``STREAMSYNTH_EVENT_LOOP=asyncio`` asks for the standard one.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any, Callable, Coroutine, TypeVar

T = TypeVar("T")


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's ``new_event_loop`` when installed and not turned off, else None (asyncio's own)."""
    if os.environ.get("STREAMSYNTH_EVENT_LOOP", "").strip().lower() == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def loop_name() -> str:
    """``uvloop`` or ``asyncio``: the loop ``run`` uses (for manifests and benchmark reports)."""
    return "asyncio" if loop_factory() is None else "uvloop"


def run(coro: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run(coro)`` on uvloop when it is there."""
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        return runner.run(coro)
