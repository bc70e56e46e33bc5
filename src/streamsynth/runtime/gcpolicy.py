"""Garbage-collector settings for a run: fewer collections while many requests are in flight.

With thousands of requests in flight, each with its futures, buffers and connection objects, and
the run's finished samples kept in memory, CPython's default thresholds (a young collection every
700 new objects, a full one every 100 young ones) spend a large share of a run's CPU in the
collector: measured on the HTTP benchmark (10,000 requests, 2,048 in flight), about 3 of 7.5 CPU
seconds, nearly all of it in full collections that walk every live object again and again.

``throughput_gc()`` raises the thresholds for the duration of a run (young collections every
10,000 new objects, older generations 50x less often) and puts back what was set before. Cyclic
garbage is still collected, only in fewer, larger sweeps. Nested or overlapping runs share one
setting; the first in sets it and the last out restores it. It leaves the collector alone when it
is disabled, or already set at least that lazily, or when ``STREAMSYNTH_GC_TUNING=0``.
"""

from __future__ import annotations

import contextlib
import gc
import os
import threading
from typing import Iterator

#: (young, middle, old) thresholds during a run; see gc.set_threshold
RUN_THRESHOLDS = (10_000, 50, 50)

_lock = threading.Lock()  # runs in several threads (each with its own loop) share the setting too
_depth = 0
_saved: tuple[int, ...] | None = None


@contextlib.contextmanager
def throughput_gc() -> Iterator[None]:
    """Raise the collector's thresholds while the block runs (see the module docstring)."""
    global _depth, _saved
    with _lock:
        if _depth == 0:
            old = gc.get_threshold()
            wanted = tuple(max(a, b) for a, b in zip(old, RUN_THRESHOLDS))
            enabled = os.environ.get("STREAMSYNTH_GC_TUNING", "1") != "0" and gc.isenabled() and old[0] > 0
            if enabled and wanted != tuple(old):
                _saved = tuple(old)
                gc.set_threshold(*wanted)
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0 and _saved is not None:
                gc.set_threshold(*_saved)
                _saved = None
