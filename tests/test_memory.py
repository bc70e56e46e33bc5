"""release_memory gives fragmented free heap back to the OS (glibc) and never fails elsewhere."""

import os
import sys

import pytest

from streamsynth.runtime.memory import release_memory


def _rss_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="malloc_trim is glibc's")
def test_release_memory_returns_fragmented_free_heap_to_the_os():
    blocks = [bytes(2000) + bytes([i % 256]) for i in range(150_000)]  # ~300 MB of malloc'd blocks
    survivors = blocks[::200]  # one in 200 stays alive, so the freed space is full of holes
    del blocks
    before = _rss_bytes()
    assert release_memory() is True
    after = _rss_bytes()
    assert before - after > 100 * 2**20, (before, after)
    assert len(survivors) == 750


def test_release_memory_collects_reference_cycles():
    import gc
    import weakref

    class Node:
        pass

    a, b = Node(), Node()
    a.other, b.other = b, a
    ref = weakref.ref(a)
    del a, b
    gc.disable()
    try:
        release_memory()
    finally:
        gc.enable()
    assert ref() is None
