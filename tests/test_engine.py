"""The engine under the run loop: multi-call methods, determinism under concurrency, budget
reservation, journal and resume (after a constructed failure and after a real SIGKILL), and
program state."""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from streamsynth.api import generate, run_fingerprint
from streamsynth.backends import FakeBackend
from streamsynth.errors import BackendUnavailable
from streamsynth.methods import AttributeConditionedStrategy, SelfConsistencyLabel
from streamsynth.program import SynthesisProgram, default_program
from streamsynth.quality import default_checks
from streamsynth.records import Verdict
from streamsynth.state import Stateful
from streamsynth.runtime import ResponseCache
from streamsynth.runtime.journal import JOURNAL, read_journal
from streamsynth.task import load_task


def reply(request):
    """Writes reviews; when asked to vote, labels by a word in the text (wrong for every 4th)."""
    prompt = request.messages[-1].content
    if "Which label fits best" in prompt:
        return "positive" if "wonderful" in prompt else "negative"
    i = request.sample_index
    positive = "labeled positive" in prompt
    word = "wonderful" if positive != (i % 4 == 3) else "tedious"
    return f"Review {i}: the {word} film number {i} left me thinking."


class JitterBackend(FakeBackend):
    """Answers each request after a delay drawn from its own key: completion order is scrambled."""

    async def complete(self, requests):
        await asyncio.sleep(random.Random(requests[0].cache_key("j")).random() * 0.004)
        return await super().complete(requests)


def dies_after(n: int, message: str = "lost the server; start it again"):
    """A fake backend that answers ``n`` requests, then is gone for good."""

    class DiesAfter(FakeBackend):
        async def complete(self, requests):
            if self.calls >= n:
                raise BackendUnavailable(message)
            return await super().complete(requests)

    return DiesAfter(reply, batch_size=4)


def rows(report):
    key = lambda s: (s.id, dict(s.inputs), s.output, s.rejected_reason)
    return [key(s) for s in report.result.accepted], sorted(key(s) for s in report.result.rejected)


def sc_program():
    return SynthesisProgram([SelfConsistencyLabel(votes=3)], checks=default_checks())


def test_multi_call_method_votes_and_records_its_steps(tiny_task_spec, tmp_path):
    fake = FakeBackend(reply, batch_size=8)
    report = generate(tiny_task_spec, fake, budget=40, out=tmp_path / "o", program=sc_program())
    res = report.result
    assert res.items == 10 and fake.calls == 40  # 1 write + 3 votes per item, budget spent exactly
    for s in res.accepted + res.rejected:
        steps = [(st.name, st.k) for st in s.provenance.steps]
        assert steps == [("generate", 0), ("vote", 0), ("vote", 1), ("vote", 2)]
        assert len({st.request_fingerprint for st in s.provenance.steps}) == 4
        assert s.cost.calls == 4
    bad = [s for s in res.rejected if s.reject_category == "self_consistency"]
    assert bad and all(s.provenance.sample_index % 4 == 3 for s in bad)
    assert all(s.scores["self_consistency"] == 1.0 for s in res.accepted)
    row = json.loads((tmp_path / "o" / "samples.jsonl").read_text().splitlines()[0])
    assert [st["name"] for st in row["meta"]["provenance"]["steps"]] == ["generate", "vote", "vote", "vote"]


def test_same_data_set_at_concurrency_1_and_64_and_from_cache(tiny_task_spec, tmp_path):
    cache = ResponseCache(tmp_path / "c.sqlite")
    one = generate(tiny_task_spec, JitterBackend(reply, batch_size=1), budget=60, program=sc_program(), max_in_flight=1)
    many = generate(tiny_task_spec, JitterBackend(reply, batch_size=7), budget=60, program=sc_program(),
                    max_in_flight=64, cache=cache)
    fake = JitterBackend(reply, batch_size=16)
    cached = generate(tiny_task_spec, fake, budget=60, program=sc_program(), max_in_flight=64, cache=cache)
    assert rows(one) == rows(many) == rows(cached)
    assert fake.calls == 0 and cached.manifest["usage"]["cached_calls"] == 60


@pytest.mark.parametrize("budget", [1, 7, 41])
def test_budget_never_exceeded_and_items_never_cut(tiny_task_spec, budget):
    fake = JitterBackend(reply, batch_size=5)
    report = generate(tiny_task_spec, fake, budget=budget, program=sc_program(), max_in_flight=64)
    assert fake.calls <= budget and report.result.stats.queries <= budget
    assert fake.calls == (budget // 4) * 4  # only whole items of 4 calls ran
    for s in report.result.accepted + report.result.rejected:
        assert len(s.provenance.steps) == 4


def test_target_gives_the_same_set_whatever_the_concurrency(tiny_task_spec):
    a = generate(tiny_task_spec, JitterBackend(reply, batch_size=1), budget=200, target=7, max_in_flight=1)
    b = generate(tiny_task_spec, JitterBackend(reply, batch_size=9), budget=200, target=7, max_in_flight=50)
    assert rows(a) == rows(b) and len(a.result.accepted) >= 7
    assert a.manifest["stopped_reason"] == "target"


def test_resume_after_a_failure_at_a_constructed_point(tiny_task_spec, tmp_path):
    whole = generate(tiny_task_spec, FakeBackend(reply, batch_size=4), budget=40)

    first = dies_after(12)
    with pytest.raises(BackendUnavailable):
        generate(tiny_task_spec, first, budget=40, out=tmp_path / "o", max_in_flight=4)
    run, fitted, items, cost, calls, _ = read_journal(tmp_path / "o" / JOURNAL)
    assert len(items) == 12 and calls == 12  # every finished item is in the journal
    second = FakeBackend(reply, batch_size=4)
    resumed = generate(tiny_task_spec, second, budget=40, out=tmp_path / "o", max_in_flight=4)
    assert second.calls == 40 - 12  # no finished item is generated again
    assert resumed.result.resumed_items == 12
    assert rows(resumed) == rows(whole)  # nothing lost, nothing duplicated
    assert not (tmp_path / "o" / JOURNAL).exists()  # finished: the output files hold it all


def test_torn_last_journal_line_is_dropped(tiny_task_spec, tmp_path):
    with pytest.raises(BackendUnavailable):
        generate(tiny_task_spec, dies_after(8), budget=20, out=tmp_path / "o", max_in_flight=4)
    path = tmp_path / "o" / JOURNAL
    with path.open("ab") as fh:
        fh.write(b'{"item": 99, "samples": [{"id": "half')  # a write cut by a kill
    resumed = generate(tiny_task_spec, FakeBackend(reply, batch_size=4), budget=20, out=tmp_path / "o")
    assert resumed.result.resumed_items == 8
    assert rows(resumed) == rows(generate(tiny_task_spec, FakeBackend(reply, batch_size=4), budget=20))


def test_journal_of_another_run_is_refused(tiny_task_spec, tmp_path):
    with pytest.raises(BackendUnavailable):
        generate(tiny_task_spec, dies_after(0), budget=20, out=tmp_path / "o")
    from streamsynth.errors import OutputError

    with pytest.raises(OutputError, match="another run|different task, config or seed"):
        generate(tiny_task_spec, FakeBackend(), budget=20, seed=5, out=tmp_path / "o")


_KILL_SCRIPT = """
import sys
from streamsynth.api import generate
from streamsynth.backends import FakeBackend
sys.path.insert(0, {tests!r})
from test_engine import JitterBackend, reply
class Slow(JitterBackend):
    async def complete(self, requests):
        import asyncio
        await asyncio.sleep(0.01)
        return await super().complete(requests)
generate({spec!r}, Slow(reply, batch_size=4), budget=300, out={out!r}, seed=3)
"""


def test_sigkill_at_a_random_moment_then_resume(tiny_task_spec, tmp_path):
    out = tmp_path / "o"
    script = _KILL_SCRIPT.format(tests=str(Path(__file__).parent), spec=str(tiny_task_spec), out=str(out))
    proc = subprocess.Popen([sys.executable, "-c", script], env={**os.environ, "PYTHONUNBUFFERED": "1"})
    journal = out / JOURNAL
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if journal.is_file() and journal.read_bytes().count(b"\n") >= 40:
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    _, _, items, _, calls, _ = read_journal(journal)
    assert 20 <= len(items) < 300
    second = FakeBackend(reply, batch_size=4)
    resumed = generate(tiny_task_spec, second, budget=300, out=out, seed=3)
    assert second.calls == 300 - calls  # journaled items are never asked again
    whole = generate(tiny_task_spec, FakeBackend(reply, batch_size=4), budget=300, seed=3)
    assert rows(resumed) == rows(whole)  # 0 lost, 0 duplicated


def test_program_state_round_trips_and_the_run_never_changes_it(tiny_task_spec):
    task = load_task(tiny_task_spec)
    program = SynthesisProgram([SelfConsistencyLabel(votes=5, templates={"reply": "Only the {noun}, nothing else."})],
                               checks=default_checks())
    state = program.dump_state()
    copy = SynthesisProgram.load_state(json.loads(json.dumps(state)))
    assert copy.dump_state() == state
    before = program.dump_state()
    report = generate(tiny_task_spec, FakeBackend(reply), budget=12, program=program)
    assert program.dump_state() == before  # the run worked on a fresh copy
    assert report.manifest["program"]["methods"][0]["fitted"]["attributes_"]  # what the run learned is reported
    # the template's text is part of the run's identity
    other = SynthesisProgram([SelfConsistencyLabel(votes=5)], checks=default_checks())
    fp = lambda p: run_fingerprint(task, p, "fake:fake", seed=0, budget={})
    assert fp(program) != fp(other) and fp(program) == fp(copy)
    assert "fitted" not in json.dumps(program.config_state())


def test_changed_template_reaches_the_prompt(tiny_task_spec):
    fake = FakeBackend(reply)
    generate(tiny_task_spec, fake, budget=3,
             program=SynthesisProgram([AttributeConditionedStrategy(templates={"reply": "Just the {noun}, please."})]))
    assert all(r.messages[-1].content.endswith("Just the review, please.") for r in fake.requests)


def test_default_program_state_loads(tiny_task_spec):
    program = default_program(load_task(tiny_task_spec))
    assert SynthesisProgram.load_state(program.dump_state()).config_state() == program.config_state()


def test_cli_resume_reruns_the_saved_command(tiny_task_spec, tmp_path):
    from typer.testing import CliRunner

    from streamsynth.cli.main import app

    runner = CliRunner()
    out = tmp_path / "run"
    r = runner.invoke(app, ["generate", str(tiny_task_spec), "--backend", "fake", "--budget", "6", "--out", str(out),
                            "--cache-dir", str(tmp_path / "c"), "--quiet"])
    assert r.exit_code == 0, r.output
    command = json.loads((out / "command.json").read_text())
    assert command["budget"] == 6 and command["backend"] == "fake" and "OPENAI_API_KEY" == command["api_key_env"]
    data = lambda: [(r["id"], r["text"], r["label"]) for r in map(json.loads, (out / "samples.jsonl").read_text().splitlines())]
    before = data()
    r = runner.invoke(app, ["resume", str(out), "--quiet"])
    assert r.exit_code == 0, r.output
    assert data() == before
    assert json.loads((out / "manifest.json").read_text())["usage"]["calls"] == 0  # all from the cache
    r = runner.invoke(app, ["resume", str(tmp_path)])
    assert r.exit_code == 2 and "command.json" in r.output


def test_freed_slots_are_refilled_before_a_finished_batch_is_checked(tiny_task_spec):
    """New items are planned and started before the checks of the batch that freed their slots run."""
    checks = default_checks()
    first = checks[0]
    planned: list[int] = []
    seen: list[int] = []

    class Counting(AttributeConditionedStrategy):
        def plan(self, task, index, seed):
            planned.append(index)
            return super().plan(task, index, seed)

    class Recording(type(first)):
        def verify(self, sample, task):
            seen.append(len(planned))  # items planned when this sample was checked
            return super().verify(sample, task)

    recording = Recording.__new__(Recording)
    recording.__dict__.update(first.__dict__)
    program = SynthesisProgram([Counting()], checks=[recording, *checks[1:]])
    report = generate(tiny_task_spec, FakeBackend(reply, batch_size=1), budget=12, program=program, max_in_flight=2)
    assert len(seen) == 12 and planned[:12] == list(range(12))  # (the 13th plan finds no budget left)
    # two items in flight; when the first finished ones are checked, those that took their slots
    # are already planned and started
    assert seen[0] > 2
    assert rows(report) == rows(generate(tiny_task_spec, FakeBackend(reply, batch_size=1), budget=12,
                                         program=SynthesisProgram([AttributeConditionedStrategy()], checks=default_checks()),
                                         max_in_flight=1))


def test_items_that_use_fewer_calls_than_planned_run_the_same_at_any_concurrency(tiny_task_spec):
    """Every 3rd write fails, so its item skips the 3 votes and hands them back. Which items run
    must not depend on when those calls come back (the first refusal used to stop planning for good)."""

    def some_fail(request):
        return "http 500: server error" if request.step == "" and request.sample_index % 3 == 0 else None

    runs = []
    for batch, in_flight in ((1, 1), (5, 64)):
        fake = FakeBackend(reply, batch_size=batch, fail=some_fail)
        report = generate(tiny_task_spec, fake, budget=20, program=sc_program(), max_in_flight=in_flight)
        runs.append(([s.id for s in report.result.accepted + report.result.rejected], fake.calls))
    assert runs[0] == runs[1]
    # items 0..5: 0 and 3 fail to write (1 call each), the other 4 make 4 calls = 18; item 6 would
    # need 4 reserved with 2 left
    assert len(runs[0][0]) == 6 and runs[0][1] == 18


class _CancelsTheRun(Stateful):
    """A check that is cancelled while it runs (a Ctrl-C landing inside a threaded check)."""

    name = "cancels"

    def __init__(self) -> None:
        self.fired = False

    async def verify_batch(self, samples, task):
        if not self.fired:
            self.fired = True
            asyncio.current_task().cancel()
        await asyncio.sleep(0)
        return [Verdict(self.name, True) for _ in samples]


def test_a_cancel_inside_a_check_leaves_its_chunk_unchecked_not_duplicates_of_itself(tiny_task_spec):
    task = load_task(tiny_task_spec)
    program = SynthesisProgram(default_program(task).methods, checks=[*default_checks(), _CancelsTheRun()])
    report = generate(task, FakeBackend(reply, batch_size=4), budget=40, program=program)
    res = report.result
    assert res.stopped_reason == "interrupted"
    reasons = [s.rejected_reason or "" for s in res.rejected]
    assert any(r.startswith("unchecked") for r in reasons)  # a rerun judges them
    assert not [s for s in res.rejected if (s.rejected_reason or "").endswith(f"same text as sample {s.id}")]
