"""The stream end to end on the fake backend: experience carries over, resume, do no harm."""

import asyncio
import json
from pathlib import Path

import pytest

from streamsynth.backends.fake import FakeBackend
from streamsynth.errors import ConfigError, SpecError
from streamsynth.learn.store import ExperienceStore
from streamsynth.learn.stream import arun_stream, load_stream

POS = ["a warm and funny film", "the acting is superb and moving", "i loved every minute of it", "a joyful clever ride",
       "beautifully shot and moving story", "clever script and a great warm cast", "superb funny and joyful", "loved the cast"]
NEG = ["a dull and tedious mess", "the plot makes no sense at all", "i was bored the whole time", "a clumsy waste of talent",
       "painfully slow and flat", "the jokes fall flat and dull", "tedious boring clumsy plot", "a flat dull waste"]

SPEC = """
name: {name}
description: {description}
kind: classification
data: {{train: train.jsonl, dev: dev.jsonl}}
fields: {{input: text, output: label}}
labels:
  - {{name: negative, description: the writer dislikes it}}
  - {{name: positive, description: the writer likes it}}
seeds: {{per_label: 4, seed: 0}}
generation: {{input_noun: review, min_chars: 5, label_check: false, propose_attributes: false}}
"""


@pytest.fixture
def stream_file(tmp_path: Path) -> Path:
    rows = [{"text": t, "label": "positive"} for t in POS] + [{"text": t, "label": "negative"} for t in NEG]
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    dev = [{"text": t + " indeed", "label": y} for t, y in [(POS[0], "positive"), (NEG[0], "negative"), (POS[5], "positive"),
                                                           (NEG[5], "negative"), (POS[6], "positive"), (NEG[6], "negative")]]
    (tmp_path / "dev.jsonl").write_text("".join(json.dumps(r) + "\n" for r in dev))
    (tmp_path / "films.yaml").write_text(SPEC.format(name="films", description="Sentiment of a film review."))
    (tmp_path / "books.yaml").write_text(SPEC.format(name="books", description="Sentiment of a film review, again."))
    f = tmp_path / "stream.yaml"
    f.write_text("tasks: [films.yaml, books.yaml]\nbudget: 24\nrounds: 2\nstore: exp.sqlite\nlearning: [explicit]\n"
                 "reflect_with_model: true\n")
    return f


def label_true(request) -> str:
    """'tpl=direct' prompts get text that carries the asked label, other prompts the other label's."""
    last = request.messages[-1].content
    flip = "no introduction" not in last
    words = (POS if ("labeled positive" in last) != flip else NEG)
    return words[request.sampling_seed % len(words)] + f" number {request.sampling_seed % 97}."


def label_flipped(request) -> str:
    last = request.messages[-1].content
    words = (NEG if "labeled positive" in last else POS)
    return words[request.sampling_seed % len(words)] + f" take {request.sampling_seed % 89}."


def run(stream_file, out, replies, embedder, **kw):
    backends = []

    def make(adapter):
        be = FakeBackend(replies)
        backends.append(be)
        return be

    stream = load_stream(stream_file, **kw)
    outcomes = asyncio.run(arun_stream(stream, out=out, make_backend=make, embedder=embedder))
    return outcomes, sum(b.calls for b in backends)


def test_stream_runs_learns_and_carries_experience(stream_file, tmp_path, hash_embedder):
    outcomes, calls = run(stream_file, tmp_path / "run", label_true, hash_embedder)
    assert [o.task for o in outcomes] == ["films", "books"]
    assert all(o.calls <= 24 for o in outcomes) and calls == sum(o.calls for o in outcomes)
    for o in outcomes:
        folder = Path(o.out_dir)
        manifest = json.loads((folder / "manifest.json").read_text())
        assert manifest["learning"]["message"] == o.message
        assert set(manifest["learning"]["patterns"]) == set(o.patterns)
        rows = [json.loads(x) for x in (folder / "samples.jsonl").read_text().splitlines() if x.strip()]
        assert len(rows) == o.kept
    first, second = outcomes
    assert first.experience["similar_tasks"] == []
    assert [x["task"].split("@")[0] for x in second.experience["similar_tasks"]] == ["films"]
    # task 1 taught that 'direct' prompts write text of the right label: task 2's priors favour them
    best = second.experience["prior_best_patterns"]
    assert best and best[0]["pattern"].startswith("tpl=direct")
    # (per pattern the means are noisy: a few samples each, moved by the utility credit; per template they are not)
    by_template: dict[str, list[float]] = {}
    for p, v in first.patterns.items():
        by_template.setdefault(p.split("|")[0], []).extend([v["mean_reward"]] * v["n"])
    assert max(by_template, key=lambda t: sum(by_template[t]) / len(by_template[t])) == "tpl=direct"
    with ExperienceStore(tmp_path / "exp.sqlite") as st:
        assert [t.name for t in st.tasks()] == ["films", "books"]
        assert any(lesson.kind == "hint" for lesson in st.retrieve_lessons(hash_embedder.encode(["film review"])[0], now=2, k=10))
    progress = json.loads((tmp_path / "run" / "stream.json").read_text())
    assert len(progress["done"]) == 2


def test_experience_changes_what_the_next_task_does(stream_file, tmp_path, hash_embedder):
    with_exp, _ = run(stream_file, tmp_path / "a", label_true, hash_embedder)
    without, _ = run(stream_file, tmp_path / "b", label_true, hash_embedder, learning=[], store=str(tmp_path / "none.sqlite"))
    a = json.loads((Path(with_exp[1].out_dir) / "manifest.json").read_text())["learning"]["policy_start"]
    b = json.loads((Path(without[1].out_dir) / "manifest.json").read_text())["learning"]["policy_start"]
    assert all(v == [1.0, 1.0] for v in b.values())
    assert a != b


def test_the_factored_draw_reaches_every_round(stream_file, tmp_path, hash_embedder):
    stream_file.write_text(stream_file.read_text() + "draw: factored\n")
    outcomes, _ = run(stream_file, tmp_path / "run", label_true, hash_embedder)
    assert [o.task for o in outcomes] == ["films", "books"]
    for o in outcomes:
        for r in ("r0", "r1"):
            manifest = json.loads((Path(o.out_dir) / "rounds" / r / "manifest.json").read_text())
            assert manifest["program"]["methods"][0]["params"]["draw"] == "factored"


def test_a_finished_stream_resumes_without_model_calls(stream_file, tmp_path, hash_embedder):
    run(stream_file, tmp_path / "run", label_true, hash_embedder)
    outcomes, calls = run(stream_file, tmp_path / "run", label_true, hash_embedder)
    assert calls == 0 and len(outcomes) == 2


def test_an_interrupted_stream_resumes_from_the_last_finished_task(stream_file, tmp_path, hash_embedder):
    stream = load_stream(stream_file)
    made = []

    def make_failing(adapter):
        if made:
            raise KeyboardInterrupt  # the user stops the stream as task 2 starts
        made.append(1)
        return FakeBackend(label_true)

    with pytest.raises(KeyboardInterrupt):
        asyncio.run(arun_stream(stream, out=tmp_path / "run", make_backend=make_failing, embedder=hash_embedder))
    progress = json.loads((tmp_path / "run" / "stream.json").read_text())
    assert [d["task"] for d in progress["done"]] == ["films"]
    outcomes, calls = run(stream_file, tmp_path / "run", label_true, hash_embedder)
    assert [o.task for o in outcomes] == ["films", "books"]
    assert 0 < calls <= 24  # only the second task called the model


def test_the_same_stream_run_again_into_a_new_folder_builds_on_the_store(stream_file, tmp_path, hash_embedder):
    first, _ = run(stream_file, tmp_path / "a", label_true, hash_embedder)
    with ExperienceStore(tmp_path / "exp.sqlite") as st:
        lessons_a = st.retrieve_lessons(hash_embedder.encode(["film review"])[0], now=10, k=1000)
        assert max(x.created_at for x in lessons_a) == 1  # the first run's clock: positions 0 and 1
    again, _ = run(stream_file, tmp_path / "b", label_true, hash_embedder)
    # the second run starts from the first one's experience: nothing was rolled back
    start = json.loads((Path(again[0].out_dir) / "manifest.json").read_text())["learning"]["policy_start"]
    assert any(v != [1.0, 1.0] for v in start.values())
    with ExperienceStore(tmp_path / "exp.sqlite") as st:
        lessons_b = st.retrieve_lessons(hash_embedder.encode(["film review"])[0], now=10, k=1000)
        assert len(lessons_b) > len(lessons_a)
        assert max(x.created_at for x in lessons_b) == 3  # its clock went on from the store's: 2 and 3
        assert len({x.split("-")[1] for x in st.snapshots()}) == 2  # each run names its own snapshots


def test_resuming_after_another_run_used_the_store_keeps_that_runs_experience(stream_file, tmp_path, hash_embedder):
    stream = load_stream(stream_file)
    made = []

    def stop_at_task_2(adapter):
        if made:
            raise KeyboardInterrupt
        made.append(1)
        return FakeBackend(label_true)

    with pytest.raises(KeyboardInterrupt):
        asyncio.run(arun_stream(stream, out=tmp_path / "a", make_backend=stop_at_task_2, embedder=hash_embedder))
    run(stream_file, tmp_path / "b", label_true, hash_embedder)  # another run finishes on the same store
    with ExperienceStore(tmp_path / "exp.sqlite") as st:
        tasks_before = len(st.all_pattern_stats())
        lessons_before = len(st.retrieve_lessons(hash_embedder.encode(["film"])[0], now=10, k=1000))
    events: list[dict] = []
    asyncio.run(arun_stream(stream, out=tmp_path / "a", make_backend=lambda a: FakeBackend(label_true),
                            embedder=hash_embedder, on_event=events.append))
    assert any(e["event"] == "note" and "not rolled back" in e["text"] for e in events)
    with ExperienceStore(tmp_path / "exp.sqlite") as st:
        assert len(st.all_pattern_stats()) >= tasks_before  # run b's experience is still there
        assert len(st.retrieve_lessons(hash_embedder.encode(["film"])[0], now=10, k=1000)) > lessons_before


def test_a_damaged_progress_file_is_a_clear_error_and_is_left_as_it_is(stream_file, tmp_path, hash_embedder):
    out = tmp_path / "run"
    out.mkdir()
    for text in ("{not json", "[1, 2]", '{"stream_fingerprint": "%s", "done": [{"task": "films"}]}'):
        fp = load_stream(stream_file).fingerprint
        (out / "stream.json").write_text(text.replace("%s", fp) if "%s" in text else text)
        with pytest.raises(ConfigError, match="stream.json"):
            run(stream_file, out, label_true, hash_embedder)
        assert (out / "stream.json").read_text() == (text.replace("%s", fp) if "%s" in text else text)


def test_an_out_path_that_is_a_file_is_a_one_line_error(stream_file, tmp_path):
    from typer.testing import CliRunner

    from streamsynth.cli.main import app

    (tmp_path / "taken").write_text("a file, not a folder")
    result = CliRunner().invoke(app, ["stream", str(stream_file), "--backend", "fake", "--out", str(tmp_path / "taken"),
                                      "--cache-dir", str(tmp_path / "cache")])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "error:" in result.output and "taken" in result.output


def test_a_task_that_cannot_be_scored_stops_the_stream_before_any_model_call(stream_file, tmp_path, hash_embedder):
    from streamsynth.errors import DataError

    spec = SPEC.format(name="thin", description="Sentiment.").replace(", dev: dev.jsonl", "").replace("per_label: 4", "per_label: 1")
    (tmp_path / "thin.yaml").write_text(spec)  # no dev split, one seed a label: no cross-validation possible
    stream_file.write_text(stream_file.read_text().replace("[films.yaml, books.yaml]", "[films.yaml, thin.yaml]"))
    with pytest.raises(DataError, match="thin.*no dev data"):
        run(stream_file, tmp_path / "run", label_true, hash_embedder)
    assert not (tmp_path / "run" / "01-films").exists()  # the first task did not spend its budget
    assert not (tmp_path / "run" / "stream.json").exists()  # nor was the folder claimed: a fixed file runs there


def test_weights_learning_with_a_remote_backend_is_refused_at_once(stream_file, tmp_path):
    from typer.testing import CliRunner

    from streamsynth.cli.main import app

    result = CliRunner().invoke(app, ["stream", str(stream_file), "--backend", "fake", "--learning", "explicit,weights",
                                      "--out", str(tmp_path / "run"), "--cache-dir", str(tmp_path / "cache")])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "--backend local" in result.output and not (tmp_path / "run").exists()


def test_do_no_harm_keeps_nothing_when_synthetic_data_hurts(stream_file, tmp_path, hash_embedder):
    outcomes, _ = run(stream_file, tmp_path / "run", label_flipped, hash_embedder, learning=[])
    for o in outcomes:
        assert o.kept == 0 and not o.utility["helped"]
        assert "kept no synthetic samples" in o.message
        manifest = json.loads((Path(o.out_dir) / "manifest.json").read_text())
        assert "kept no synthetic samples" in manifest["learning"]["message"]
        rejected = (Path(o.out_dir) / "rejected.jsonl").read_text()
        assert "utility_gate" in rejected or "label" in rejected


def test_another_stream_in_the_same_folder_is_refused(stream_file, tmp_path, hash_embedder):
    run(stream_file, tmp_path / "run", label_true, hash_embedder)
    with pytest.raises(Exception, match="different stream"):
        run(stream_file, tmp_path / "run", label_true, hash_embedder, budget=20)


def test_bad_stream_files_give_clear_errors(tmp_path):
    with pytest.raises(SpecError, match="not found"):
        load_stream(tmp_path / "nope.yaml")
    f = tmp_path / "s.yaml"
    f.write_text("tasks: [missing.yaml]\n")
    with pytest.raises(SpecError, match="missing.yaml not found"):
        load_stream(f)
    f.write_text("tasks: []\n")
    with pytest.raises(SpecError, match="tasks"):
        load_stream(f)
    f.write_text("tasks: [s.yaml]\nlearning: [magic]\n")
    with pytest.raises(SpecError, match="learning"):
        load_stream(f)
    for bad, where in (("credit: {weight: -1}", "credit.weight"), ("credit: {wieght: 1}", "credit.wieght"),
                       ("credit: {weight: .inf}", "credit.weight"), ("credit: {max_shift: 3}", "credit.max_shift"),
                       ("credit: {shrink: -2}", "credit.shrink"),
                       ("selection: {fractions: [0, 1.5]}", "selection.fractions"),
                       ("selection: {fractions: []}", "selection.fractions"),
                       ("reward: {label: 0, quality: 0, diversity: 0}", "reward: .*all 0")):
        f.write_text(f"tasks: [s.yaml]\n{bad}\n")
        with pytest.raises(SpecError, match=where):
            load_stream(f)


def test_default_credit_leaves_the_stream_fingerprint_as_before(tmp_path):
    (tmp_path / "t.yaml").write_text("x")
    f = tmp_path / "s.yaml"
    f.write_text("tasks: [t.yaml]\n")
    plain = load_stream(f)
    f.write_text("tasks: [t.yaml]\ncredit: {weight: 1}\n")
    assert load_stream(f).fingerprint == plain.fingerprint
    f.write_text("tasks: [t.yaml]\ncredit: {weight: 0}\n")
    assert load_stream(f).fingerprint != plain.fingerprint


def test_the_draw_is_read_checked_and_fingerprinted(tmp_path):
    (tmp_path / "t.yaml").write_text("x")
    f = tmp_path / "s.yaml"
    f.write_text("tasks: [t.yaml]\n")
    plain = load_stream(f)
    assert plain.spec.draw == "joint"
    f.write_text("tasks: [t.yaml]\ndraw: joint\n")
    assert load_stream(f).fingerprint == plain.fingerprint  # streams from before the option still resume
    f.write_text("tasks: [t.yaml]\ndraw: factored\n")
    assert load_stream(f).spec.draw == "factored" and load_stream(f).fingerprint != plain.fingerprint
    f.write_text("tasks: [t.yaml]\ndraw: greedy\n")
    with pytest.raises(SpecError, match="draw"):
        load_stream(f)


def test_the_pattern_space_is_read_checked_and_fingerprinted(tmp_path):
    (tmp_path / "t.yaml").write_text("x")
    f = tmp_path / "s.yaml"
    f.write_text("tasks: [t.yaml]\n")
    plain = load_stream(f)
    assert plain.spec.patterns.space() is None
    f.write_text("tasks: [t.yaml]\npatterns: {shots: [3, 1], temperatures: [0.7, 1]}\n")
    assert load_stream(f).fingerprint == plain.fingerprint  # the default, spelt out: streams from before still resume
    f.write_text("tasks: [t.yaml]\npatterns: {shots: [1, 2]}\n")
    changed = load_stream(f)
    assert changed.fingerprint != plain.fingerprint and changed.spec.patterns.space()["shots"] == [1, 2]
    for bad, where in (("patterns: {shots: [1, 40]}", "patterns: .*0 to 16"),
                       ("patterns: {templates: [plain, fancy]}", "patterns: .*choose from"),
                       ("patterns: {temperature: [1]}", "patterns.temperature")):
        f.write_text(f"tasks: [t.yaml]\n{bad}\n")
        with pytest.raises(SpecError, match=where):
            load_stream(f)


def test_a_stream_explores_the_pattern_space_it_is_given(stream_file, tmp_path, hash_embedder):
    stream_file.write_text(stream_file.read_text() + "patterns: {templates: [direct], shots: [1], temperatures: [0.8]}\n")
    outcomes, _ = run(stream_file, tmp_path / "run", label_true, hash_embedder)
    for o in outcomes:
        manifest = json.loads((Path(o.out_dir) / "manifest.json").read_text())
        drawn = {p for p in manifest["learning"]["patterns"]}
        assert drawn and drawn <= {"tpl=direct|shots=1|temp=0.8", "tpl=guided|shots=1|temp=0.8"}
        assert set(manifest["learning"]["policy_start"]) <= {"tpl=direct|shots=1|temp=0.8", "tpl=guided|shots=1|temp=0.8"}


def test_generate_store_explores_the_space_and_draw_of_the_stream_that_wrote_the_store(stream_file, tmp_path, hash_embedder):
    from streamsynth.learn.patterns import Pattern
    from streamsynth.learn.stream import EXPLORER_STATE, program_from_store, stored_explorer
    from streamsynth.task import load_task

    with ExperienceStore(tmp_path / "old.sqlite") as st:  # a store from before streams recorded this
        assert stored_explorer(st) == {"draw": "joint", "space": None}
    stream_file.write_text(stream_file.read_text() + "draw: factored\npatterns: {templates: [direct, plain], shots: [2]}\n")
    run(stream_file, tmp_path / "run", label_true, hash_embedder)
    task = load_task(stream_file.parent / "films.yaml")
    with ExperienceStore(stream_file.parent / "exp.sqlite") as st:
        program, _, explorer = program_from_store(task, st, descriptor=hash_embedder.encode(["films"])[0])
        assert explorer["draw"] == "factored" and explorer["space"]["shots"] == [2]
        method = program.methods[0]
        assert method.draw == "factored"
        assert {Pattern.from_id(p).shots for p in method.policy} == {2}
        assert {Pattern.from_id(p).template for p in method.policy} <= {"direct", "plain", "guided"}
        for bad, why in (({"shots": [99]}, "0 to 16"), ({"shots": [[1]]}, "whole numbers")):  # edited by hand
            st.put_state(EXPLORER_STATE, {"draw": "joint", "space": bad})
            with pytest.raises(ConfigError, match=f"exp.sqlite: the stream settings it holds are not valid.*{why}"):
                stored_explorer(st)


def test_an_interrupted_task_is_not_marked_done_and_the_rerun_finishes_it_as_if_never_stopped(stream_file, tmp_path,
                                                                                               hash_embedder):
    """Ctrl-C in a round: the engine stops and keeps its journal; the stream must not score, remember
    or mark the cut-short task, so the rerun does the rest of it and ends as an uninterrupted run."""
    ref, _ = run(stream_file, tmp_path / "ref", label_true, hash_embedder, store=str(tmp_path / "ref.sqlite"))
    loop_task: dict = {}
    calls = {"n": 0}

    def replies(request):
        calls["n"] += 1
        if calls["n"] == 16:  # round 2 of the first task (24 calls in 2 rounds and a reflection)
            loop_task["loop"].call_soon_threadsafe(loop_task["task"].cancel)
        return label_true(request)

    async def go():
        loop_task.update(task=asyncio.current_task(), loop=asyncio.get_running_loop())
        await arun_stream(load_stream(stream_file), out=tmp_path / "run", make_backend=lambda a: FakeBackend(replies),
                          embedder=hash_embedder)

    with pytest.raises(asyncio.CancelledError):
        asyncio.run(go())
    assert json.loads((tmp_path / "run" / "stream.json").read_text())["done"] == []
    with ExperienceStore(stream_file.parent / "exp.sqlite") as st:
        assert not st.tasks() and not st.all_pattern_stats()  # nothing remembered from the cut-short task
    outcomes, _ = run(stream_file, tmp_path / "run", label_true, hash_embedder)
    for o, r in zip(outcomes, ref):
        assert (o.task, o.calls, o.kept) == (r.task, r.calls, r.kept)
        got = [json.loads(x)["text"] for x in (Path(o.out_dir) / "samples.jsonl").read_text().splitlines()]
        want = [json.loads(x)["text"] for x in (Path(r.out_dir) / "samples.jsonl").read_text().splitlines()]
        assert got == want


def test_a_task_of_a_kind_the_stream_cannot_learn_over_is_refused_before_anything_runs(stream_file, tmp_path, hash_embedder):
    rows = [{"q": f"what is {i} plus {i}?", "a": f"#### {2 * i}"} for i in range(10)]
    (stream_file.parent / "qa.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (stream_file.parent / "sums.yaml").write_text(
        "name: sums\ndescription: Add two numbers.\nkind: qa\ndata: {train: qa.jsonl}\nfields: {input: q, output: a}\n"
        "answer_format: the sum\nseeds: {n: 4, seed: 0}\n")
    stream_file.write_text(stream_file.read_text().replace("[films.yaml, books.yaml]", "[films.yaml, sums.yaml]"))
    with pytest.raises(ConfigError, match=r"sums.yaml: task 'sums' is of kind 'qa'.*remove it") as err:
        run(stream_file, tmp_path / "run", label_true, hash_embedder)
    assert len(str(err.value)) < 300 and not (tmp_path / "run").exists()  # nothing ran, nothing written


def test_weights_learning_over_a_pair_task_is_refused_before_anything_runs(stream_file, tmp_path, hash_embedder):
    snli = Path(__file__).resolve().parents[1] / "examples" / "snli.yaml"
    stream_file.write_text(stream_file.read_text().replace("[films.yaml, books.yaml]", f"[films.yaml, '{snli}']"))
    with pytest.raises(ConfigError, match=r"snli.yaml: task 'snli' is of kind 'pair_classification'.*remove 'weights'"):
        run(stream_file, tmp_path / "run", label_true, hash_embedder, learning=["explicit", "weights"])
    assert not (tmp_path / "run").exists()  # nothing ran, nothing written
    outcomes, _ = run(stream_file, tmp_path / "run2", label_true, hash_embedder, learning=["explicit"])
    assert [o.task for o in outcomes] == ["films", "snli"]  # explicit learning takes a pair task


def test_the_example_stream_loads():
    stream = load_stream(Path(__file__).resolve().parents[1] / "examples" / "stream.yaml")
    assert [p.stem for p in stream.task_paths] == ["sst2", "ag_news", "trec", "emotion"]
    assert stream.spec.learning == ["explicit"] and stream.store_path.name == "experience.sqlite"



class _Adapter:
    def __init__(self, name: str) -> None:
        self.name = name

    def to_dict(self) -> dict:
        return {"name": self.name}


@pytest.mark.parametrize("train_last, fitted", [(True, ["films", "books"]), (False, ["films"])])
def test_weight_fits_follow_each_task_and_train_last_skips_the_final_one(stream_file, tmp_path, hash_embedder, monkeypatch,
                                                                          train_last, fitted):
    import streamsynth.learn.stream as stream_mod

    starts: dict[str, object] = {}

    async def record_fit(task, backend, ctx, extras, *, start, out_dir, spec, seed):
        starts[task.name] = start
        return _Adapter(f"after-{task.name}")

    monkeypatch.setattr(stream_mod, "train_adapter", record_fit)
    written_with: list[object] = []

    def make(adapter):
        written_with.append(adapter)
        return FakeBackend(label_true)

    stream = load_stream(stream_file, learning=["explicit", "weights"])
    outcomes = asyncio.run(arun_stream(stream, out=tmp_path / "run", make_backend=make, embedder=hash_embedder,
                                       train_last=train_last))
    assert list(starts) == fitted
    assert starts["films"] is None  # the first fit starts from the base model
    # a probe of the base model (is there a stored adapter for it? none yet), then task 1 on the base model,
    # then task 2 written with task 1's adapter
    assert [getattr(a, "name", a) for a in written_with] == [None, None, "after-films"]
    assert (outcomes[-1].adapter is not None) == train_last


def test_a_later_stream_with_weights_starts_from_the_adapter_the_store_keeps(stream_file, tmp_path, hash_embedder,
                                                                             monkeypatch):
    import streamsynth.learn.stream as stream_mod
    from streamsynth.learn.weights import AdapterRef, adapter_digest

    folder = tmp_path / "adapter"
    folder.mkdir()
    (folder / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 8, "target_modules": ["q_proj"]}))
    (folder / "adapter_model.safetensors").write_bytes(b"lora weights")
    ref = AdapterRef(folder, adapter_digest(folder), "local:base@0")
    fits: list[object] = []

    async def fit(task, backend, ctx, extras, *, start, out_dir, spec, seed):
        fits.append(start)
        return ref

    monkeypatch.setattr(stream_mod, "train_adapter", fit)
    made: list[object] = []
    events: list[dict] = []

    def make(adapter):
        made.append(adapter)
        return FakeBackend(label_true)

    stream = load_stream(stream_file, learning=["explicit", "weights"])
    asyncio.run(arun_stream(stream, out=tmp_path / "a", make_backend=make, embedder=hash_embedder))
    assert fits[0] is None and made[1] is None  # the first stream starts from the base model
    made.clear(), fits.clear()
    asyncio.run(arun_stream(stream, out=tmp_path / "b", make_backend=make, embedder=hash_embedder, on_event=events.append))
    assert made[1] == ref and fits[0] == ref  # a later stream writes and fits from the adapter the store kept
    assert any(e["event"] == "note" and "starting from the store's LoRA adapter" in e["text"] for e in events)
    (folder / "adapter_model.safetensors").write_bytes(b"overwritten")  # the folder no longer holds those weights
    made.clear(), events.clear()
    asyncio.run(arun_stream(stream, out=tmp_path / "c", make_backend=make, embedder=hash_embedder, on_event=events.append))
    assert made[1] is None and any(e["event"] == "note" and "cannot be used" in e["text"] for e in events)


def test_a_stored_adapter_of_another_model_is_not_used_and_generate_says_so(tmp_path, capsys):
    from types import SimpleNamespace

    from streamsynth.cli.main import _adapter_from_store
    from streamsynth.learn.stream import remember_adapter, stored_adapter
    from streamsynth.learn.weights import AdapterRef, adapter_digest

    folder = tmp_path / "adapter"
    folder.mkdir()
    (folder / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 8}))
    (folder / "adapter_model.safetensors").write_bytes(b"lora weights")
    ref = AdapterRef(folder, adapter_digest(folder), "local:base@0")
    trained_on = SimpleNamespace(model_id="local:smol@aaa+lora:123")
    with ExperienceStore(tmp_path / "exp.sqlite") as st:
        assert stored_adapter(st, trained_on) == (None, "")  # nothing stored yet
        remember_adapter(st, ref, trained_on)
        got, note = stored_adapter(st, SimpleNamespace(model_id="local:smol@aaa"))
        assert got == ref and "starting from" in note
        assert stored_adapter(st, SimpleNamespace(model_id="local:smol@aaa+bfloat16"))[0] == ref  # same weights
        got, note = stored_adapter(st, SimpleNamespace(model_id="local:other@bbb"))
        assert got is None and "trained on local:smol@aaa" in note
    assert _adapter_from_store(tmp_path / "exp.sqlite", SimpleNamespace(model_id="local:other@bbb")) is None
    assert "not on this model" in capsys.readouterr().err


def test_a_fit_stopped_midway_is_redone_into_a_clean_folder(stream_file, tmp_path, hash_embedder, monkeypatch):
    import streamsynth.learn.stream as stream_mod

    stale = tmp_path / "run" / "adapters" / "01-films"
    stale.mkdir(parents=True)
    (stale / "adapter_model.safetensors").write_bytes(b"half written")  # the stream stopped during this fit
    seen: list[bool] = []

    async def fit(task, backend, ctx, extras, *, start, out_dir, spec, seed):
        seen.append(out_dir.exists())
        return _Adapter(f"after-{task.name}")

    monkeypatch.setattr(stream_mod, "train_adapter", fit)
    stream = load_stream(stream_file, learning=["explicit", "weights"])
    asyncio.run(arun_stream(stream, out=tmp_path / "run", make_backend=lambda a: FakeBackend(label_true), embedder=hash_embedder))
    assert seen == [False, False]  # WeightLearner.fit refuses a folder that holds files: it gets an empty one


def test_utility_credit_moves_the_policy_and_the_store(stream_file, tmp_path, hash_embedder):
    """'direct' prompts write text of the asked label, the others of the other label: leaving the
    others' samples out raises dev accuracy, so credit lifts 'direct' above what its rewards say."""
    on, _ = run(stream_file, tmp_path / "on", label_true, hash_embedder, store=str(tmp_path / "on.sqlite"))  # default: on
    off, _ = run(stream_file, tmp_path / "off", label_true, hash_embedder, store=str(tmp_path / "off.sqlite"),
                 credit={"weight": 0})
    learn_on = json.loads((Path(on[0].out_dir) / "manifest.json").read_text())["learning"]
    learn_off = json.loads((Path(off[0].out_dir) / "manifest.json").read_text())["learning"]
    assert learn_off["credit"] == [] and learn_on["credit"]
    # round 1 wrote the same samples in both runs (same seed, same uniform policy); the credit moved the policy
    assert learn_on["policy_start"] == learn_off["policy_start"] and learn_on["policy_end"] != learn_off["policy_end"]
    first = next(entry for entry in learn_on["credit"] if any(p.startswith("tpl=") for p in entry["parts"]))
    tpl = {p: c["value"] for p, c in first["parts"].items() if p.startswith("tpl=")}
    assert tpl["tpl=direct"] > 0 and max(tpl, key=tpl.get) == "tpl=direct"

    def direct_mean(patterns):  # the mean reward of every sample written with the 'direct' template
        got = [(v["n"], v["mean_reward"]) for p, v in patterns.items() if p.startswith("tpl=direct")]
        return sum(n * m for n, m in got) / sum(n for n, _ in got)

    assert direct_mean(on[0].patterns) > direct_mean(off[0].patterns)
    with ExperienceStore(tmp_path / "on.sqlite") as a, ExperienceStore(tmp_path / "off.sqlite") as b:
        stored = []
        for st in (a, b):
            stats = st.all_pattern_stats()
            key = next(k for k in stats if k.startswith("films@"))
            stored.append(direct_mean({p: {"n": v.n, "mean_reward": v.mean} for p, v in stats[key].items()}))
        assert stored[0] == pytest.approx(direct_mean(on[0].patterns), abs=1e-3)  # the store keeps the credited rewards
        assert stored[1] == pytest.approx(direct_mean(off[0].patterns), abs=1e-3)


@pytest.mark.slow  # loads the packaged MiniLM
def test_the_stream_command_runs_on_the_fake_backend_and_prints_per_task(stream_file, tmp_path):
    from typer.testing import CliRunner

    from streamsynth.cli.main import app

    result = CliRunner().invoke(app, ["stream", str(stream_file), "--backend", "fake", "--out", str(tmp_path / "cli"),
                                      "--cache-dir", str(tmp_path / "cache")])
    assert result.exit_code == 0, result.output
    out = result.output
    assert "task 1: films" in out and "task 2: books" in out
    assert out.count("round 1:") == 2 and "dev utility" in out
    assert "utility credit: best " in out  # the round lines name the parts that the student credited
    assert (tmp_path / "cli" / "stream.json").is_file()


def mostly_positive(request) -> str:
    """Text that carries the asked label, but most 'negative' asks get a reply too short to pass."""
    last = request.messages[-1].content
    if "labeled negative" in last and request.sampling_seed % 4:
        return "ok"
    return label_true(request)


def test_the_kept_set_keeps_no_label_more_than_the_tasks_ratio(stream_file, tmp_path, hash_embedder):
    # as generate does (generation.max_label_ratio, 1.5, seeds counted): once the rarest label's
    # samples run out, the rest of the ranked list is one-sided, and the gate must not keep it
    outcomes, _ = run(stream_file, tmp_path / "run", mostly_positive, hash_embedder, learning=[])
    for o in outcomes:
        folder = Path(o.out_dir)
        rejected = [json.loads(x) for x in (folder / "rejected.jsonl").read_text().splitlines() if x.strip()]
        capped = [r for r in rejected if r["rejected_reason"].startswith("selection: label balance")]
        assert capped and {r["output"] for r in capped} == {"positive"}
        assert "generation.max_label_ratio" in capped[0]["rejected_reason"]
        manifest = json.loads((folder / "manifest.json").read_text())
        assert manifest["learning"]["label_cap"] == {"max_label_ratio": 1.5, "capped": len(capped)}
        # what the gate chose from held at most 1.5x the rarest label's seeds + samples
        ranked = [json.loads(x) for x in (folder / "samples.jsonl").read_text().splitlines() if x.strip()]
        ranked += [r for r in rejected if r["rejected_reason"].startswith("utility_gate")]
        labels = [r.get("label") or r.get("output") for r in ranked]
        pos, neg = 4 + labels.count("positive"), 4 + labels.count("negative")
        assert pos <= -(-3 * neg // 2)


def test_a_tasks_manifest_counts_fresh_calls_and_cache_hits_apart(stream_file, tmp_path, hash_embedder):
    from streamsynth.runtime import ResponseCache

    def once(out):
        cache = ResponseCache(tmp_path / "cache.sqlite")
        try:
            stream = load_stream(stream_file, learning=[])
            return asyncio.run(arun_stream(stream, out=out, make_backend=lambda a: FakeBackend(label_true), cache=cache,
                                           embedder=hash_embedder))
        finally:
            cache.close()

    for out, fresh in ((tmp_path / "a", True), (tmp_path / "b", False)):  # b: the same prompts, from the cache
        for o in once(out):
            usage = json.loads((Path(o.out_dir) / "manifest.json").read_text())["usage"]
            rounds = [json.loads(m.read_text())["usage"] for m in sorted(Path(o.out_dir).glob("rounds/r*/manifest.json"))]
            assert usage["queries"] == o.calls == usage["calls"] + usage["cached_calls"]
            assert usage["calls"] >= sum(r["calls"] for r in rounds) and usage["tokens"] >= sum(r["tokens"] for r in rounds)
            assert (usage["cached_calls"] == 0) if fresh else (usage["calls"] == 0 and usage["cached_calls"] == o.calls)
