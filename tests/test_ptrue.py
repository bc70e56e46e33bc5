"""The P(True) check: a check that calls the model, run by the engine with its budget reserved."""

from __future__ import annotations

import asyncio
import json

import pytest

from streamsynth.api import generate
from streamsynth.backends import FakeBackend
from streamsynth.errors import BackendUnavailable, ConfigError
from streamsynth.methods import AttributeConditionedStrategy
from streamsynth.program import SynthesisProgram
from streamsynth.quality import PTrueCheck, default_checks
from streamsynth.quality.ptrue import p_yes_from_logprobs
from streamsynth.records import TokenLogprob
from streamsynth.runtime import ResponseCache
from streamsynth.state import load_state


def reply(request):
    """Writes reviews (every 3rd one off-label); as a judge, says yes only when word and label agree."""
    prompt = request.messages[-1].content
    if "Answer Yes or No" in prompt:
        says_good = "wonderful" in prompt
        asked_positive = 'label "positive"' in prompt
        return "Yes." if says_good == asked_positive else "No, it is not."
    i = request.sample_index
    positive = "labeled positive" in prompt
    word = "wonderful" if positive != (i % 3 == 2) else "tedious"
    return f"Review {i}: the {word} film number {i} left me thinking."


def program(**kw):
    return SynthesisProgram([AttributeConditionedStrategy()], checks=[*default_checks(), PTrueCheck(**kw)])


def test_ptrue_rejects_off_label_samples_and_records_its_calls_as_steps(tiny_task_spec, tmp_path):
    fake = FakeBackend(reply, batch_size=8)
    report = generate(tiny_task_spec, fake, budget=30, out=tmp_path / "o", program=program())
    res = report.result
    assert fake.calls == 30 and res.items == 15  # each item: 1 write + 1 judgement, reserved together
    judged = [s for s in res.accepted + res.rejected if any(st.name == "p_true" for st in s.provenance.steps)]
    assert len(judged) == 15
    for s in judged:
        assert [st.name for st in s.provenance.steps] == ["generate", "p_true"] and s.cost.calls == 2
    bad = [s for s in res.rejected if s.reject_category == "p_true"]
    assert bad and all(s.provenance.sample_index % 3 == 2 for s in bad)
    assert "P(True) 0.00" in bad[0].rejected_reason
    assert all(s.scores["p_true"] == 1.0 for s in res.accepted)
    row = json.loads((tmp_path / "o" / "samples.jsonl").read_text().splitlines()[0])
    assert [st["name"] for st in row["meta"]["provenance"]["steps"]] == ["generate", "p_true"]


def test_ptrue_same_data_set_at_any_concurrency_and_from_cache(tiny_task_spec, tmp_path):
    key = lambda r: [(s.id, s.output, s.rejected_reason) for s in r.result.accepted + r.result.rejected]
    cache = ResponseCache(tmp_path / "c.sqlite")
    one = generate(tiny_task_spec, FakeBackend(reply, batch_size=1), budget=40, program=program(), max_in_flight=1)
    many = generate(tiny_task_spec, FakeBackend(reply, batch_size=7), budget=40, program=program(), max_in_flight=64,
                    cache=cache)
    fake = FakeBackend(reply)
    again = generate(tiny_task_spec, fake, budget=40, program=program(), max_in_flight=64, cache=cache)
    assert key(one) == key(many) == key(again) and fake.calls == 0


@pytest.mark.parametrize("budget", [1, 2, 9, 33])
def test_budget_covers_the_checks_calls_and_is_never_exceeded(tiny_task_spec, budget):
    fake = FakeBackend(reply, batch_size=5)
    report = generate(tiny_task_spec, fake, budget=budget, program=program(votes=2), max_in_flight=64)
    assert fake.calls == (budget // 3) * 3 <= budget  # whole items only: 1 write + 2 votes
    assert report.result.stats.queries == fake.calls and report.result.items == budget // 3
    assert not [s for s in report.result.rejected if s.reject_category in ("budget", "unchecked")]


def test_ptrue_reads_log_probabilities_when_the_backend_gives_them():
    first = TokenLogprob("Yes", -0.2, top=(("Yes", -0.2), (" no", -1.8), ("Maybe", -3.0)))
    p = p_yes_from_logprobs((first,))
    assert p == pytest.approx(0.832, abs=1e-3)
    assert p_yes_from_logprobs((TokenLogprob("Maybe", -0.1),)) is None and p_yes_from_logprobs(None) is None


def test_ptrue_state_round_trips_and_bad_settings_are_clear():
    check = PTrueCheck(threshold=0.7, votes=3)
    again = load_state(check.dump_state())
    assert isinstance(again, PTrueCheck) and again.get_params() == check.get_params()
    with pytest.raises(ConfigError, match="threshold"):
        PTrueCheck(threshold=1.5)
    with pytest.raises(ConfigError, match=r"\{text\}"):
        PTrueCheck(template="Is it {label}?")


def test_spec_turns_the_check_on_for_the_default_program(tiny_task_spec):
    from streamsynth.program import default_program
    from streamsynth.task import load_task

    text = tiny_task_spec.read_text().replace("label_check: false}", "label_check: false, p_true: true}")
    tiny_task_spec.write_text(text)
    assert [c.name for c in default_program(load_task(tiny_task_spec)).checks][-1] == "p_true"
    fake = FakeBackend(reply)
    report = generate(tiny_task_spec, fake, budget=12)
    assert fake.calls == 12 and report.result.items == 6
    assert any(s.reject_category == "p_true" for s in report.result.rejected)


def test_budget_held_for_the_check_comes_back_when_a_sample_is_rejected_before_it(tiny_task_spec):
    """Every other sample is empty (rejected before P(True)): its held call goes to more items, and
    which items run does not depend on concurrency."""

    def half_empty(request):
        if "Answer Yes or No" not in request.messages[-1].content and request.sample_index % 2:
            return ""
        return reply(request)

    runs = []
    for batch, in_flight in ((1, 1), (7, 64)):
        fake = FakeBackend(half_empty, batch_size=batch)
        report = generate(tiny_task_spec, fake, budget=30, program=program(), max_in_flight=in_flight)
        runs.append(([s.id for s in report.result.accepted + report.result.rejected], fake.calls, report.result.items))
    assert runs[0] == runs[1]
    ids, calls, items = runs[0]
    # items 0-18: 10 judged (2 calls each) + 9 empty (1 call); item 19 would need 2 with 1 left.
    # Without the handed-back calls only 15 items (30 / 2 reserved each) would have run.
    assert items == 19 and calls == 29


def test_backend_lost_during_the_check_keeps_every_sample_with_a_reason(tiny_task_spec, tmp_path):
    """The backend dies while judging: every written sample is still in the output, the unjudged
    ones rejected as 'unchecked' with why; nothing vanishes and no call is made after the loss."""

    class DiesAtFirstJudgement(FakeBackend):
        async def complete(self, requests):
            if any("Answer Yes or No" in r.messages[-1].content for r in requests):
                raise BackendUnavailable("lost connection to the server; start it again")
            return await super().complete(requests)

    fake = DiesAtFirstJudgement(reply, batch_size=4)
    with pytest.raises(BackendUnavailable, match="samples made before it are in"):
        generate(tiny_task_spec, fake, budget=20, out=tmp_path / "o", program=program())
    manifest = json.loads((tmp_path / "o" / "manifest.json").read_text())
    assert manifest["stopped_reason"].startswith("backend failed")
    written = manifest["counts"]["accepted"] + manifest["counts"]["rejected"]
    assert written == manifest["usage"]["items"] and written > 0
    rejected = [json.loads(line) for line in (tmp_path / "o" / "rejected.jsonl").read_text().splitlines()]
    unchecked = [r for r in rejected if (r["rejected_reason"] or "").startswith("unchecked")]
    assert unchecked and all("rerun to check it" in r["rejected_reason"] for r in unchecked)


def test_resumed_run_with_the_check_gives_the_uninterrupted_data_set(tiny_task_spec, tmp_path):
    key = lambda r: [(s.id, s.output, s.rejected_reason) for s in r.result.accepted + r.result.rejected]
    whole = generate(tiny_task_spec, FakeBackend(reply, batch_size=4), budget=30, program=program())

    class DiesAfter(FakeBackend):
        async def complete(self, requests):
            if self.calls >= 13:
                raise BackendUnavailable("lost the server; start it again")
            return await super().complete(requests)

    with pytest.raises(BackendUnavailable):
        generate(tiny_task_spec, DiesAfter(reply, batch_size=4), budget=30, out=tmp_path / "o", program=program(),
                 max_in_flight=4)
    again = FakeBackend(reply, batch_size=4)
    resumed = generate(tiny_task_spec, again, budget=30, out=tmp_path / "o", program=program(), max_in_flight=4)
    assert resumed.result.resumed_items > 0
    assert key(resumed) == key(whole)


class TwoReviews(AttributeConditionedStrategy):
    """Writes two samples per item from one call (the second a copy with another id)."""

    def __init__(self, max_samples: int = 2, **kw) -> None:
        super().__init__(**kw)
        self.max_samples = max_samples

    def plan(self, task, index, seed):
        import dataclasses

        return dataclasses.replace(super().plan(task, index, seed), max_samples=self.max_samples)

    async def run(self, item, lm):
        import dataclasses

        [first] = await super().run(item, lm)
        return [first, dataclasses.replace(first, id=first.id + "-b")]


@pytest.mark.parametrize("max_samples", [2, 1])
def test_items_with_several_samples_are_judged_the_same_at_any_concurrency(tiny_task_spec, max_samples):
    key = lambda r: [(s.id, s.rejected_reason) for s in r.result.accepted + r.result.rejected]
    prog = lambda: SynthesisProgram([TwoReviews(max_samples)], checks=[*default_checks()[:1], PTrueCheck()])
    runs = [generate(tiny_task_spec, FakeBackend(reply, batch_size=b), budget=15, program=prog(), max_in_flight=n)
            for b, n in ((1, 1), (7, 64))]
    assert key(runs[0]) == key(runs[1])
    out = runs[0].result
    over = [s for s in out.rejected if s.reject_category == "budget"]
    if max_samples == 2:  # 1 write + 2 judgements an item
        assert out.items == 5 and not over
    else:  # the plan under-declared: each item's second sample finds no reserved call, said so
        assert out.items == 7 and len(over) == 7 and all("max_samples" in s.rejected_reason for s in over)


def test_a_failed_judgement_rejects_with_the_reason(tiny_task_spec):
    fake = FakeBackend(reply, fail=lambda r: "http 500: server error" if r.step == "p_true" else None)
    report = generate(tiny_task_spec, fake, budget=8, program=program())
    failed = [s for s in report.result.rejected if s.reject_category == "p_true"]
    assert failed and all("could not judge: the model call failed (http 500" in s.rejected_reason for s in failed)
    assert not report.result.accepted


def test_with_a_target_the_check_pays_for_no_sample_past_the_cut(tiny_task_spec):
    runs = []
    for batch, in_flight in ((1, 1), (7, 64)):
        fake = FakeBackend(reply, batch_size=batch)
        report = generate(tiny_task_spec, fake, budget=200, target=4, program=program(), max_in_flight=in_flight)
        judged = sum(1 for r in fake.requests if r.step == "p_true")
        runs.append(([s.id for s in report.result.accepted], judged))
    assert runs[0] == runs[1] and len(runs[0][0]) == 4


class SameIdTwice(TwoReviews):
    """A method bug: its two samples of an item share one id."""

    async def run(self, item, lm):
        [first, _] = await super().run(item, lm)
        return [first, first]


def test_a_method_that_writes_two_samples_with_one_id_is_a_clear_error(tiny_task_spec):
    # the checks tell samples apart by id (a duplicate's own copy is not a duplicate), so two samples
    # with one id would pass the duplicate check: the run stops and names the method and the fix
    prog = SynthesisProgram([SameIdTwice(2)], checks=default_checks())
    with pytest.raises(ConfigError, match=r"several samples with the id .*\(new_sample\(\.\.\., k=1\)"):
        generate(tiny_task_spec, FakeBackend(reply), budget=6, program=prog)
