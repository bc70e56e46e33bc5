"""One contract suite for every component of a kind (scikit-learn's ``check_estimator`` habit).

``check_backend``, ``check_method``, ``check_check`` and ``check_selector`` raise
``AssertionError`` with a message naming the broken promise. Every shipped component passes them
in the project's tests; a user's own component can be checked the same way:

    from streamsynth.testing import check_method
    check_method(MyMethod(), task)
"""

from __future__ import annotations

import asyncio
from typing import Any, Sequence

from streamsynth.records import CompletionRequest, GenerationParams, Message, Sample
from streamsynth.state import load_state


def _requests(n: int) -> list[CompletionRequest]:
    return [CompletionRequest((Message("user", f"say {i}"),), GenerationParams(max_new_tokens=16), seed=0, sample_index=i)
            for i in range(n)]


def check_backend(backend: Any) -> None:
    """A backend: one stable model id, ordered answers, seeded (same request, same answer), empty in, empty out."""
    from streamsynth.backends.base import Backend

    assert isinstance(backend, Backend), f"{type(backend).__name__} lacks model_id or complete()"
    model_id = backend.model_id
    assert model_id and model_id == backend.model_id, "model_id must be a stable, non-empty string"
    out = backend.complete_sync(_requests(5))
    assert len(out) == 5, f"5 requests gave {len(out)} answers"
    assert all(c.ok and isinstance(c.text, str) and c.completion_tokens >= 0 and not c.cached for c in out), out
    assert backend.complete_sync([]) == [], "no requests must give no answers"
    again = backend.complete_sync(_requests(5)[2:3])[0]
    assert again.text == out[2].text, "the same request must get the same answer (seeded sampling)"


def _state_round_trip(component: Any) -> None:
    state = component.dump_state()
    copy = load_state(state)
    assert copy.dump_state() == state, f"{type(component).__name__}: load_state(dump_state()) changed the state"
    assert type(copy) is type(component)


def _run_items(method: Any, task: Any, indices: Sequence[int], seed: int, backend: Any) -> dict[int, list[Sample]]:
    from streamsynth.runtime import BudgetMeter, Engine
    from streamsynth.runtime.lm import ItemLM

    async def main() -> dict[int, list[Sample]]:
        engine = Engine(backend, BudgetMeter(None))
        prepare = getattr(method, "prepare", None)
        if prepare is not None:
            await prepare(task, ItemLM(engine, index=-1, seed=seed, max_calls=8))
        out = {}
        for i in indices:
            item = method.plan(task, i, seed)
            lm = ItemLM(engine, index=i, seed=seed, max_calls=item.max_calls)
            out[i] = await method.run(item, lm)
            assert len(lm.steps) <= item.max_calls
        return out

    return asyncio.run(main())


def check_method(method: Any, task: Any, *, backend: Any = None) -> None:
    """A method: pure plans, state round trip, runs with the fake backend, steps in provenance,
    every rejected sample has a reason, same item gives the same samples, configuration unchanged."""
    from streamsynth.backends.fake import FakeBackend
    from streamsynth.methods.base import Method

    assert isinstance(method, Method), f"{type(method).__name__} lacks name, plan() or run()"
    config = method.config_state()
    a = [method.plan(task, i, 0) for i in range(6)]
    assert a == [method.plan(task, i, 0) for i in range(6)], "plan() must be a pure function of (task, index, seed)"
    assert [method.plan(task, i, 1) for i in range(6)] != a or len(task.seeds) < 2, "the seed must change the plan"
    assert all(item.max_calls >= 1 for item in a), "an item must allow at least one call"
    _state_round_trip(method)
    runs = [_run_items(method, task, range(4), 0, backend or FakeBackend()) for _ in range(2)]
    assert runs[0] == runs[1], "running the same items twice must give the same samples"
    for i, samples in runs[0].items():
        assert samples, f"item {i} gave no sample; give a rejected one with its reason instead"
        for s in samples:
            assert s.provenance.steps, f"sample {s.id} records no model call in its provenance"
            assert s.provenance.sample_index == i
            assert s.accepted or s.rejected_reason, f"sample {s.id} is rejected without a reason"
    assert method.config_state() == config, "running a method must not change its configuration"


def _model_verdicts(check: Any, task: Any, samples: Sequence[Sample], backend: Any) -> list[list[Any]]:
    """A model-calling check's verdicts, each sample with its own handle as the run loop gives them:
    once in order and once in reverse order (returned in the original order), in one event loop."""
    from streamsynth.quality.checks import calls_per_sample, verify_batch
    from streamsynth.runtime import BudgetMeter, Engine
    from streamsynth.runtime.lm import ItemLM

    async def one(engine: Any, batch: list[Sample]) -> list[Any]:
        start = getattr(check, "start", None)
        if start is not None:
            start(task)
        cps = calls_per_sample(check)
        lms = [ItemLM(engine, index=s.provenance.sample_index, seed=s.provenance.seed, max_calls=cps) for s in batch]
        verdicts = await verify_batch(check, batch, task, lms)
        assert all(len(lm.steps) <= cps for lm in lms), f"{check.name} made more calls than calls_per_sample ({cps})"
        return verdicts

    async def main() -> list[list[Any]]:
        engine = Engine(backend, BudgetMeter(None))
        forward = await one(engine, list(samples))
        backward = await one(engine, list(reversed(samples)))
        return [forward, backward[::-1]]

    return asyncio.run(main())


def check_check(check: Any, task: Any, samples: Sequence[Sample], *, backend: Any = None) -> None:
    """A check: a named verdict per sample, the batch form agrees with the single form, state round trip.
    A check that calls the model (``calls_per_sample`` > 0) is run twice through model handles on
    ``backend`` (the fake backend by default) instead: the same verdicts both times, its inputs unchanged."""
    from streamsynth.quality.checks import calls_per_sample, verify_batch

    assert getattr(check, "name", ""), f"{type(check).__name__} has no name"
    if calls_per_sample(check):
        from streamsynth.backends.fake import FakeBackend

        before = [s.to_dict() for s in samples]
        runs = _model_verdicts(check, task, samples, backend or FakeBackend())
        assert [s.to_dict() for s in samples] == before, "a check must not change the samples it is given"
        assert len(runs[0]) == len(samples), "verify_batch must give one verdict per sample"
        assert runs[0] == runs[1], ("a sample must get the same verdict whatever the order of the batch "
                                    "(calls keyed by item, step and k)")
        for v in runs[0]:
            assert v.check, "a verdict must name its check"
            assert v.passed or v.reason, f"a failed verdict of {check.name} must say why"
        _state_round_trip(check)
        return
    start = getattr(check, "start", None)
    if start is not None:
        start(task)
    singles = [check.verify(s, task) for s in samples]
    if start is not None:
        start(task)  # set-level memory (duplicates) begins again
    batch = asyncio.run(verify_batch(check, list(samples), task))
    assert len(batch) == len(singles), "verify_batch must give one verdict per sample"
    for b, v in zip(batch, singles):  # same judgement; scores may differ in the last digits (batched maths)
        assert (b.check, b.passed) == (v.check, v.passed), f"verify_batch must agree with verify: {b} vs {v}"
        assert (b.score is None) == (v.score is None) and (b.score is None or abs(b.score - v.score) < 1e-4), (b, v)
    for v in singles:
        assert v.check, "a verdict must name its check"
        assert v.passed or v.reason, f"a failed verdict of {check.name} must say why"
    _state_round_trip(check)


def check_selector(selector: Any, task: Any, samples: Sequence[Sample]) -> None:
    """A selector: a subset of its input, deterministic for a seed, inputs unchanged, state round trip."""
    before = list(samples)
    a = selector.select(list(samples), task, seed=0)
    assert list(samples) == before, "select() must not change its input"
    ids = {s.id for s in samples}
    assert all(s.id in ids for s in a), "select() may only return samples it was given"
    assert [s.id for s in selector.select(list(samples), task, seed=0)] == [s.id for s in a], "same seed, same selection"
    if getattr(selector, "kept_count", None) is not None:
        from collections import Counter

        counts = Counter(s.output for s in samples if s.accepted)
        assert selector.kept_count(counts, task) == len(a), "kept_count() must say how many select() keeps"
    _state_round_trip(selector)
