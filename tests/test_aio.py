"""streamsynth.aio: coroutines run on uvloop when it is installed, on asyncio's loop when asked."""

import asyncio

import pytest

from streamsynth import aio


async def _loop_module() -> str:
    return type(asyncio.get_running_loop()).__module__


def test_run_uses_uvloop_when_installed(monkeypatch):
    pytest.importorskip("uvloop")
    monkeypatch.delenv("STREAMSYNTH_EVENT_LOOP", raising=False)
    assert aio.loop_name() == "uvloop"
    assert aio.run(_loop_module()).startswith("uvloop")


def test_standard_loop_on_request(monkeypatch):
    monkeypatch.setenv("STREAMSYNTH_EVENT_LOOP", "asyncio")
    assert aio.loop_name() == "asyncio"
    assert aio.run(_loop_module()).startswith("asyncio")


def test_run_returns_the_result_and_raises_the_error():
    async def ok():
        return 42

    async def bad():
        raise ValueError("boom")

    assert aio.run(ok()) == 42
    with pytest.raises(ValueError, match="boom"):
        aio.run(bad())
