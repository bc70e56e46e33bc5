"""``generate`` end to end with the fake backend: the library API and the CLI."""

import json
import math
import re

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from streamsynth.api import generate
from streamsynth.backends import FakeBackend
from streamsynth.cli.main import app
from streamsynth.runtime import ResponseCache
from streamsynth.task import load_task

runner = CliRunner()


def model_like_reply(request):
    """Replies the way small models do: preambles, quotes, some junk, some repeats."""
    i = request.sample_index
    prompt = request.messages[-1].content
    label = "positive" if "labeled positive" in prompt else "negative"
    word = "wonderful" if label == "positive" else "tedious"
    kinds = i % 10
    if kinds == 7:
        return ""  # empty
    if kinds == 8:
        return "x" * 1000  # overlong
    if kinds == 9:
        return "The same sentence every time."  # duplicate after the first
    if kinds == 6:
        return "Write one review labeled positive. Reply with the review only."  # echo
    return f'Here is a {label} review: "Review {i}: the {word} film number {i} left me {word}."'


def test_generate_writes_accepted_and_rejected_with_reasons(tiny_task_spec, tmp_path):
    fake = FakeBackend(model_like_reply, batch_size=8)
    cache = ResponseCache(tmp_path / "cache.sqlite")
    report = generate(tiny_task_spec, fake, budget=40, out=tmp_path / "out", seed=0, cache=cache)
    m = report.manifest
    assert fake.calls == 40
    assert m["usage"]["calls"] == 40 and m["usage"]["queries"] == 40
    reasons = m["counts"]["rejected_by_reason"]
    assert reasons == {"empty": 4, "overlong": 4, "echo": 4, "duplicate": 3}
    assert m["counts"]["accepted"] == 40 - 15
    rows = [json.loads(line) for line in (tmp_path / "out" / "samples.jsonl").read_text().splitlines()]
    assert len(rows) == 25
    first = rows[0]
    assert first["text"].startswith("the ") and not first["text"].startswith('"')
    assert "Here is" not in first["text"]
    # the label written is the label the sample was conditioned on
    assert ("wonderful" in first["text"]) == (first["label"] == "positive")
    prov = first["meta"]["provenance"]
    assert prov["strategy"] == "attr_new" and prov["seed_example_ids"] and prov["pattern"].startswith("attr-v2:")
    assert set(prov["conditioning"]["attributes"]) == {"aspect", "length"}
    rejected = [json.loads(line) for line in (tmp_path / "out" / "rejected.jsonl").read_text().splitlines()]
    assert len(rejected) == 15 and all(r["rejected_reason"] for r in rejected)
    table = pq.read_table(tmp_path / "out" / "samples.parquet")
    assert table.num_rows == 25 and {"text", "label", "pattern", "seed_example_ids"} <= set(table.column_names)
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["stopped_reason"] == "query budget of 40 spent"
    assert manifest["versions"]["python"]


def test_labels_are_balanced_and_runs_are_reproducible(tiny_task_spec, tmp_path):
    a = generate(tiny_task_spec, FakeBackend(batch_size=5), budget=30, seed=7)
    b = generate(tiny_task_spec, FakeBackend(batch_size=16), budget=30, seed=7)  # batch size must not matter
    c = generate(tiny_task_spec, FakeBackend(batch_size=5), budget=30, seed=8)
    texts = lambda r: [(s.inputs["text"], s.output) for s in r.result.accepted]
    assert texts(a) == texts(b)
    assert texts(a) != texts(c)
    labels = [s.output for s in a.result.accepted + a.result.rejected]
    assert labels.count("positive") == labels.count("negative") == 15


def test_second_run_makes_zero_model_calls(tiny_task_spec, tmp_path):
    cache = ResponseCache(tmp_path / "cache.sqlite")
    first = FakeBackend(batch_size=8)
    r1 = generate(tiny_task_spec, first, budget=24, out=tmp_path / "out", cache=cache)
    second = FakeBackend(batch_size=8)
    r2 = generate(tiny_task_spec, second, budget=24, out=tmp_path / "out", cache=cache)
    assert first.calls == 24 and second.calls == 0
    assert r2.manifest["usage"]["calls"] == 0 and r2.manifest["usage"]["cached_calls"] == 24
    assert [s.inputs for s in r1.result.accepted] == [s.inputs for s in r2.result.accepted]


def test_budget_cap_stops_cleanly_and_keeps_what_was_written(tiny_task_spec, tmp_path):
    report = generate(tiny_task_spec, FakeBackend(batch_size=4), budget=10, out=tmp_path / "o", max_tokens=120)
    assert report.manifest["stopped_reason"].startswith("token budget")
    n = report.manifest["counts"]["accepted"]
    assert 0 < n < 10
    assert len((tmp_path / "o" / "samples.jsonl").read_text().splitlines()) == n


def test_backend_errors_are_recorded_not_fatal(tiny_task_spec, tmp_path):
    fake = FakeBackend(fail=lambda r: "http 500 after 5 attempts" if r.sample_index % 4 == 0 else None)
    report = generate(tiny_task_spec, fake, budget=12)
    assert report.manifest["counts"]["rejected_by_reason"].get("backend_error") == 3
    assert report.manifest["usage"]["failed_calls"] == 3


def test_output_folder_of_another_run_is_not_overwritten(tiny_task_spec, tmp_path):
    from streamsynth.errors import OutputError

    out = tmp_path / "out"
    generate(tiny_task_spec, FakeBackend(), budget=6, out=out, seed=0)
    before = (out / "samples.jsonl").read_text()
    with pytest.raises(OutputError, match="different task, config or seed"):
        generate(tiny_task_spec, FakeBackend(), budget=6, out=out, seed=1)
    assert (out / "samples.jsonl").read_text() == before
    generate(tiny_task_spec, FakeBackend(), budget=6, out=out, seed=1, overwrite=True)
    assert (out / "samples.jsonl").read_text() != before


def test_cli_generate_then_rerun_from_cache(tiny_task_spec, tmp_path):
    args = ["generate", str(tiny_task_spec), "--backend", "fake", "--budget", "20", "--out", str(tmp_path / "o"),
            "--cache-dir", str(tmp_path / "cache"), "--quiet"]
    r1 = runner.invoke(app, args)
    assert r1.exit_code == 0, r1.output
    assert "accepted" in r1.output
    m1 = json.loads((tmp_path / "o" / "manifest.json").read_text())
    assert m1["usage"]["calls"] == 20
    r2 = runner.invoke(app, args)
    assert r2.exit_code == 0, r2.output
    m2 = json.loads((tmp_path / "o" / "manifest.json").read_text())
    assert m2["usage"]["calls"] == 0 and m2["usage"]["cached_calls"] == 20
    assert "0 new, 20 from cache" in r2.output


def test_cli_bad_spec_gives_a_clear_error_and_no_traceback(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\ndescription: d\nkind: clasification\ndata: {train: t.jsonl}\nfields: {input: text, output: label}\n")
    r = runner.invoke(app, ["generate", str(bad), "--backend", "fake"])
    assert r.exit_code == 2
    assert "field 'kind'" in r.output and "classification" in r.output
    assert "Traceback" not in r.output


def test_cli_missing_spec_and_openai_without_url(tiny_task_spec, tmp_path):
    r = runner.invoke(app, ["generate", str(tmp_path / "nope.yaml")])
    assert r.exit_code == 2 and "no such file" in r.output
    r = runner.invoke(app, ["generate", str(tiny_task_spec), "--backend", "openai", "--out", str(tmp_path / "o")])
    assert r.exit_code == 2 and "--base-url" in r.output


def test_cli_validate(tiny_task_spec):
    r = runner.invoke(app, ["validate", str(tiny_task_spec)], terminal_width=200)
    assert r.exit_code == 0, r.output
    out = r.output
    assert "train.jsonl: 12 rows, 6 chosen" in out  # seed source, its size, seeds chosen
    assert "dev.jsonl: 4 rows" in out and "test         none" in out  # splits found
    # labels with their row counts and seed counts
    assert re.search(r"negative\s*│\s*6\s*│\s*3\s*│", out) and re.search(r"positive\s*│\s*6\s*│\s*3\s*│", out)
    assert "i loved every minute" in out or "a joyful ride" in out or "the acting is superb" in out  # seeds shown


def test_cli_validate_says_what_a_missing_dev_split_costs(tiny_task_spec):
    text = tiny_task_spec.read_text()
    tiny_task_spec.write_text(text.replace("data: {train: train.jsonl, dev: dev.jsonl}", "data: {train: train.jsonl}"))
    r = runner.invoke(app, ["validate", str(tiny_task_spec)], terminal_width=300)
    assert r.exit_code == 0, r.output
    assert "dev          none (a stream's do-no-harm gate cross-validates over the seeds" in r.output
    assert "data.dev" in r.output


def test_cli_generate_against_openai_compatible_server(tiny_task_spec, tmp_path, monkeypatch):
    from streamsynth.testing.mock_server import MockOpenAIServer

    monkeypatch.setenv("TEST_KEY", "sk-secret-value")
    server = MockOpenAIServer(reply=lambda body: "A fine film with a sharp script, take " + str(body.get("seed")),
                              require_api_key="sk-secret-value", faults=["429", "500"], retry_after=0.01)
    with server.run_in_thread() as url:
        r = runner.invoke(app, ["generate", str(tiny_task_spec), "--backend", "openai", "--base-url", url,
                                "--model", "mock", "--api-key-env", "TEST_KEY", "--budget", "12",
                                "--out", str(tmp_path / "o"), "--cache-dir", str(tmp_path / "c"), "--quiet"])
    assert r.exit_code == 0, r.output
    m = json.loads((tmp_path / "o" / "manifest.json").read_text())
    assert m["usage"]["calls"] == 12 and m["counts"]["accepted"] == 12
    for f in (tmp_path / "o").iterdir():
        assert "sk-secret-value" not in f.read_bytes().decode("utf-8", "replace")
    assert "sk-secret-value" not in (tmp_path / "c" / "responses.sqlite").read_bytes().decode("latin-1")


@pytest.mark.parametrize("name", ["sst2", "ag_news", "trec", "emotion", "snli"])
def test_every_shipped_classification_example_generates(name, tmp_path):
    from conftest import REPO
    from streamsynth.program import SynthesisProgram
    from streamsynth.methods import AttributeConditionedStrategy
    from streamsynth.quality import default_checks

    task = load_task(REPO / "examples" / f"{name}.yaml")

    def reply(request):
        if task.kind == "pair_classification":
            return f"Premise: A man walks a dog number {request.sample_index} .\nHypothesis: A person is outside ."
        text = f"A made-up example {request.sample_index} written for the {task.name} data set."
        while len(text) < task.generation.min_chars:  # long enough for the task's length check
            text += " It goes on about the same made-up thing."
        return f'Here is one: "{text}"'

    program = SynthesisProgram([AttributeConditionedStrategy()], checks=default_checks())
    setup = 0 if task.attributes else 1  # without attributes in the spec, one query proposes them
    report = generate(task, FakeBackend(reply), budget=len(task.labels) * 2 + setup, out=tmp_path / name, program=program)
    m = report.manifest
    assert m["usage"]["setup_queries"] == setup
    assert m["counts"]["accepted"] == len(task.labels) * 2, m["counts"]
    assert set(m["counts"]["accepted_by_label"]) == set(task.label_names)
    row = json.loads((tmp_path / name / "samples.jsonl").read_text().splitlines()[0])
    assert set(task.input_fields) <= set(row) and row[task.output_field] in task.label_names


def test_backend_lost_mid_run_keeps_what_was_made(tiny_task_spec, tmp_path):
    from streamsynth.errors import BackendUnavailable

    class DiesAfterOneBatch(FakeBackend):
        async def complete(self, requests):
            if self.calls >= 4:
                raise BackendUnavailable("lost connection to http://127.0.0.1:9/v1: refused; start the server")
            return await super().complete(requests)

    with pytest.raises(BackendUnavailable, match="samples made before it are in"):
        generate(tiny_task_spec, DiesAfterOneBatch(batch_size=4), budget=12, out=tmp_path / "o")
    manifest = json.loads((tmp_path / "o" / "manifest.json").read_text())
    assert manifest["stopped_reason"].startswith("backend failed: lost connection")
    assert manifest["counts"]["accepted"] + manifest["counts"]["rejected"] == 4
    assert len((tmp_path / "o" / "samples.jsonl").read_text().splitlines()) == manifest["counts"]["accepted"]


def test_ctrl_c_stops_cleanly_and_keeps_what_was_made(tiny_task_spec, tmp_path):
    """SIGINT to a real CLI process mid-run: exit 130, samples so far written, cache kept."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from streamsynth.testing.mock_server import MockOpenAIServer

    server = MockOpenAIServer(latency_s=0.3, reply=lambda body: f"A fine film with a sharp script, take {body.get('seed')}.")
    out = tmp_path / "o"
    with server.run_in_thread() as url:
        proc = subprocess.Popen(
            [sys.executable, "-m", "streamsynth", "generate", str(tiny_task_spec), "--backend", "openai",
             "--base-url", url, "--model", "mock", "--concurrency", "2", "--budget", "400", "--out", str(out),
             "--cache-dir", str(tmp_path / "c"), "--quiet"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"},
            # Ctrl-C as a terminal delivers it, whatever the launcher did: a shell's background job
            # (`.ci/run &`) starts with SIGINT ignored, and the child would inherit that
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )
        # wait for the run itself: the start-up imports are slow on a loaded machine
        deadline = time.monotonic() + 180
        while server.count < 10 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.1)
        assert server.count >= 10, f"the run did not start within 180 s (exit {proc.poll()})"
        proc.send_signal(signal.SIGINT)
        output, _ = proc.communicate(timeout=60)
    text = output.decode()
    assert proc.returncode == 130, text
    assert "Traceback" not in text and "interrupted" in text
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["stopped_reason"] == "interrupted"
    made = manifest["counts"]["accepted"] + manifest["counts"]["rejected"]
    assert 0 < made < 400
    assert len((out / "samples.jsonl").read_text().splitlines()) == manifest["counts"]["accepted"]


def test_model_proposes_attributes_once_when_the_spec_has_none(tiny_task_spec, tmp_path):
    import re as _re

    spec = tmp_path / "noattrs.yaml"
    spec.write_text(_re.sub(r"attributes:\n(  .*\n)+", "", tiny_task_spec.read_text()))
    task = load_task(spec)
    assert not task.attributes

    def reply(request):
        if request.sample_index == -1:  # the one-time attribute proposal
            return "Here are some topics:\n1. Family drama\n2. Space adventure\n- Courtroom thriller\n3. Family drama\nok"
        return f"A sample about something, number {request.sample_index}."

    fake = FakeBackend(reply)
    report = generate(task, fake, budget=9)
    assert report.manifest["usage"]["setup_queries"] == 1
    assert sum(r.sample_index == -1 for r in fake.requests) == 1
    attrs = report.manifest["program"]["methods"][0]["fitted"]["attributes_"]
    assert attrs["topic"] == ["Family drama", "Space adventure", "Courtroom thriller"]
    assert {"style", "length"} <= set(attrs)
    topics = {s.provenance.conditioning["attributes"]["topic"] for s in report.result.accepted}
    assert topics <= set(attrs["topic"]) and len(topics) > 1


def test_cli_prepare_with_a_bad_model_path_is_one_clear_line(tmp_path):
    r = runner.invoke(app, ["prepare", "--model", str(tmp_path / "nope.gguf"), "--cache-dir", str(tmp_path)])
    assert r.exit_code == 2
    assert "nope.gguf" in r.output and "Traceback" not in r.output


@pytest.mark.slow
def test_cli_prepare_converts_the_embedded_model_once(model_cache_dir):
    from streamsynth.backends.local_hf import LocalHFBackend

    r = runner.invoke(app, ["prepare", "--cache-dir", str(model_cache_dir)])
    assert r.exit_code == 0, r.output
    folder = LocalHFBackend(cache_dir=model_cache_dir).converted_dir()
    assert (folder / "config.json").is_file() and str(folder) in r.output.replace("\n", "")
    stamp = (folder / "config.json").stat().st_mtime_ns
    r = runner.invoke(app, ["prepare", "--cache-dir", str(model_cache_dir)])
    assert r.exit_code == 0 and (folder / "config.json").stat().st_mtime_ns == stamp  # not converted again


def test_a_label_the_checks_reject_more_often_does_not_tilt_the_data_set(tiny_task_spec, tmp_path):
    def reply(request):  # most "negative" replies are too short to pass the length check
        negative = "labeled negative" in request.messages[-1].content
        if negative and request.sample_index % 4:
            return "bad"
        return f"a {'dull' if negative else 'warm'} film, review number {request.sample_index}"

    report = generate(tiny_task_spec, FakeBackend(reply), budget=40, seed=0, out=tmp_path / "o")
    kept = [s.output for s in report.result.accepted]
    neg = kept.count("negative")
    # capped at 1.5x the rarest, counting the 3 seeds a label: positive + 3 = ceil(1.5 * (negative + 3))
    assert 0 < neg < 20 and kept.count("positive") == math.ceil(1.5 * (neg + 3)) - 3
    by_balance = [s for s in report.result.rejected if s.reject_category == "selection"]
    assert len(by_balance) == 20 - kept.count("positive") and all(s.output == "positive" for s in by_balance)
    rows = [json.loads(line) for line in (tmp_path / "o" / "rejected.jsonl").read_text().splitlines()]
    reasons = [r["rejected_reason"] for r in rows if r["rejected_reason"].startswith("selection")]
    assert len(reasons) == len(by_balance) and all("label balance" in r and "the rarest" in r for r in reasons)
    manifest = json.loads((tmp_path / "o" / "manifest.json").read_text())
    assert manifest["counts"]["accepted"] == len(kept)
    # 0 turns it off: every sample that passed the checks is kept
    off = tiny_task_spec.with_name("off.yaml")
    off.write_text(tiny_task_spec.read_text().replace("label_check: false", "label_check: false, max_label_ratio: 0"))
    everything = generate(off, FakeBackend(reply), budget=40, seed=0)
    assert [s.output for s in everything.result.accepted].count("positive") == 20


def test_a_label_ratio_below_one_is_a_clear_error(tiny_task_spec):
    bad = tiny_task_spec.with_name("bad.yaml")
    bad.write_text(tiny_task_spec.read_text().replace("label_check: false", "label_check: false, max_label_ratio: 0.5"))
    with pytest.raises(Exception, match="max_label_ratio.*0 .keep every sample. or at least 1"):
        load_task(bad)


def test_a_target_counts_the_samples_the_label_balance_keeps(tiny_task_spec, tmp_path):
    def reply(request):  # three in four "negative" replies are too short to pass the length check
        negative = "labeled negative" in request.messages[-1].content
        if negative and request.sample_index % 4:
            return "bad"
        return f"a {'dull' if negative else 'warm'} film, review number {request.sample_index}"

    balanced = generate(tiny_task_spec, FakeBackend(reply), budget=200, seed=0, target=10)
    kept = [s.output for s in balanced.result.accepted]
    # one more negative sample lets 2 more positives in, so the count can pass the target by 2 at most
    assert 10 <= len(kept) <= 12 and kept.count("positive") + 3 <= math.ceil(1.5 * (kept.count("negative") + 3))
    assert balanced.result.stopped_reason == "target"
    off = tiny_task_spec.with_name("off.yaml")
    off.write_text(tiny_task_spec.read_text().replace("label_check: false", "label_check: false, max_label_ratio: 0"))
    tilted = generate(off, FakeBackend(reply), budget=200, seed=0, target=10)
    assert len(tilted.result.accepted) >= 10
    # without the balance the target is met sooner, by a tilted set
    assert tilted.result.stats.queries < balanced.result.stats.queries
    tilted_labels = [s.output for s in tilted.result.accepted]
    assert tilted_labels.count("positive") + 3 > 1.5 * (tilted_labels.count("negative") + 3)
    with pytest.raises(ValueError, match="give a budget with the target"):
        generate(tiny_task_spec, FakeBackend(reply), budget=None, seed=0, target=10)
