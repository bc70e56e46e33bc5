"""Promises every component of a kind keeps (one test suite, run over each implementation)."""

import asyncio

import pytest

import streamsynth
from streamsynth.backends import Backend, FakeBackend, OpenAIChatBackend
from streamsynth.methods import AttributeConditionedStrategy, Method, SelfConsistencyLabel
from streamsynth.quality import Check, KeepAll, SeedLabelConsistencyCheck, default_checks
from streamsynth.records import CompletionRequest, GenerationParams, Message, Provenance, Sample
from streamsynth.testing import check_backend, check_check, check_method, check_selector
from streamsynth.testing.mock_server import MockOpenAIServer


def test_public_api_is_sorted_and_importable():
    assert streamsynth.__all__ == sorted(streamsynth.__all__)
    for name in streamsynth.__all__:
        assert getattr(streamsynth, name) is not None


_check_backend = check_backend
from streamsynth.testing.contracts import _requests  # noqa: E402


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


def _methods():
    from streamsynth.learn.patterns import ExploringStrategy

    return [AttributeConditionedStrategy(), SelfConsistencyLabel(votes=3), ExploringStrategy()]


@pytest.mark.parametrize("method", _methods(), ids=lambda m: m.name)
def test_every_method_keeps_the_method_contract(method, tiny_task_spec):
    from streamsynth.task import load_task

    check_method(method, load_task(tiny_task_spec))


def _samples():
    texts = ["a bright and clever film about a dog", "a dull , slow mess", "a bright and clever film about a dog", "x"]
    return [Sample(f"s{i}", "tiny", {"text": t}, "positive" if i % 2 == 0 else "negative",
                   Provenance("s", "p", "f", "r", "m", 0, i)) for i, t in enumerate(texts)]


@pytest.mark.parametrize("check", default_checks(), ids=lambda c: c.name)
def test_every_check_keeps_the_check_contract(check, tiny_task_spec):
    from streamsynth.task import load_task

    check_check(check, load_task(tiny_task_spec), _samples())


@pytest.mark.slow
def test_label_check_keeps_the_check_contract(tiny_task_spec):
    from streamsynth.task import load_task

    check_check(SeedLabelConsistencyCheck(), load_task(tiny_task_spec), _samples())


def test_the_ptrue_check_keeps_the_check_contract(tiny_task_spec):
    from streamsynth.quality import PTrueCheck
    from streamsynth.task import load_task

    def judge(request):  # says yes to half of the samples, so both verdicts occur
        return "Yes" if request.sample_index % 2 else "No"

    task, samples = load_task(tiny_task_spec), _samples()
    check_check(PTrueCheck(), task, samples, backend=FakeBackend(judge))
    from streamsynth.testing.contracts import _model_verdicts

    verdicts = _model_verdicts(PTrueCheck(), task, samples, FakeBackend(judge))[0]
    assert {v.passed for v in verdicts} == {True, False}  # the contract saw both kinds of verdict


@pytest.mark.parametrize("selector", ["keep_all", "mmr", "facility_location"])
def test_every_selector_keeps_the_selector_contract(selector, tiny_task_spec, hash_embedder):
    from streamsynth.quality import FacilityLocationSelector, MMRSelector

    selector = {"keep_all": KeepAll(), "mmr": MMRSelector(embedder=hash_embedder),
                "facility_location": FacilityLocationSelector(embedder=hash_embedder)}[selector]
    from streamsynth.task import load_task

    check_selector(selector, load_task(tiny_task_spec), _samples())


def test_methods_plan_purely_and_record_their_attributes(tiny_task_spec):
    from streamsynth.task import load_task

    task = load_task(tiny_task_spec)
    strat = AttributeConditionedStrategy()
    assert isinstance(strat, Method)
    asyncio.run(strat.prepare(task, None))
    a = [strat.plan(task, i, 0) for i in range(10)]
    assert [strat.plan(task, i, 0) for i in (3, 7)] == [a[3], a[7]]
    assert [strat.plan(task, i, 1) for i in range(10)] != a
    assert strat.dump_state()["fitted"]["attributes_"] == {"aspect": ["acting", "plot", "music"], "length": ["short", "long"]}
    assert "fitted" not in strat.config_state()


def test_missing_packaged_model_gives_an_install_hint():
    from streamsynth.errors import BackendUnavailable
    from streamsynth.packaged import package_folder

    with pytest.raises(BackendUnavailable, match="is not installed; run 'pip install no-such-pkg'"):
        package_folder("no_such_pkg_for_streamsynth", what="the test model", install="pip install no-such-pkg")
