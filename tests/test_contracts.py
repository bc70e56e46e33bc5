"""Promises every component of a kind keeps (one test suite, run over each implementation)."""

import asyncio

import pytest

import streamsynth
from streamsynth.backends import Backend, FakeBackend, OpenAIChatBackend
from streamsynth.methods import AttributeConditionedStrategy, Strategy
from streamsynth.quality import Check, default_checks
from streamsynth.records import CompletionRequest, GenerationParams, Message
from streamsynth.testing.mock_server import MockOpenAIServer


def test_public_api_is_sorted_and_importable():
    assert streamsynth.__all__ == sorted(streamsynth.__all__)
    for name in streamsynth.__all__:
        assert getattr(streamsynth, name) is not None


def _requests(n):
    return [
        CompletionRequest((Message("user", f"say {i}"),), GenerationParams(max_new_tokens=16), seed=0, sample_index=i)
        for i in range(n)
    ]


def _check_backend(backend):
    assert isinstance(backend, Backend)
    model_id = backend.model_id
    assert model_id and model_id == backend.model_id
    out = backend.complete_sync(_requests(5))
    assert len(out) == 5
    assert all(c.ok and isinstance(c.text, str) and c.completion_tokens >= 0 and not c.cached for c in out)
    assert backend.complete_sync([]) == []
    again = backend.complete_sync(_requests(5)[2:3])[0]
    assert again.text == out[2].text  # same request, same answer (seeded)


def test_fake_backend_contract():
    _check_backend(FakeBackend())


def test_openai_backend_contract():
    server = MockOpenAIServer()
    with server.run_in_thread() as url:
        _check_backend(OpenAIChatBackend(base_url=url, model="mock", api_key_env=None, backoff_base_s=0.01))


@pytest.mark.slow
def test_local_backend_contract(model_cache_dir):
    from streamsynth.backends import LocalHFBackend

    _check_backend(LocalHFBackend(cache_dir=model_cache_dir, batch_size=4))


def test_backends_run_from_async_code():
    async def main():
        b = FakeBackend()
        return await b.complete(_requests(3))

    assert len(asyncio.run(main())) == 3


def test_complete_sync_refuses_inside_a_running_loop():
    from streamsynth.errors import ConfigError

    async def main():
        FakeBackend().complete_sync(_requests(1))

    with pytest.raises(ConfigError, match="await backend.complete"):
        asyncio.run(main())


@pytest.mark.parametrize("check", default_checks(), ids=lambda c: c.name)
def test_every_check_has_a_name_and_returns_a_verdict(check, tiny_task_spec):
    from streamsynth.records import Provenance, Sample
    from streamsynth.task import load_task

    task = load_task(tiny_task_spec)
    assert isinstance(check, Check) and check.name
    if hasattr(check, "start"):
        check.start(task)
    s = Sample("x", "tiny", {"text": "a bright and clever film about a dog"}, "positive",
               Provenance("s", "p", "f", "r", "m", 0, 0))
    v = check.verify(s, task)
    assert v.passed, v
    assert v.check


def test_strategies_are_pure_in_index_and_seed(tiny_task_spec):
    from streamsynth.task import load_task

    task = load_task(tiny_task_spec)
    strat = AttributeConditionedStrategy()
    assert isinstance(strat, Strategy)
    asyncio.run(strat.prepare(task, None, seed=0))
    a = strat.propose(task, range(10), seed=0)
    b = strat.propose(task, [3, 7], seed=0)
    assert [p.request for p in b] == [a[3].request, a[7].request]
    assert [p.request for p in strat.propose(task, range(10), seed=1)] != [p.request for p in a]
    assert strat.state()["attributes"] == {"aspect": ["acting", "plot", "music"], "length": ["short", "long"]}


def test_missing_packaged_model_gives_an_install_hint():
    from streamsynth.errors import BackendUnavailable
    from streamsynth.packaged import package_folder

    with pytest.raises(BackendUnavailable, match="is not installed; run 'pip install no-such-pkg'"):
        package_folder("no_such_pkg_for_streamsynth", what="the test model", install="pip install no-such-pkg")
