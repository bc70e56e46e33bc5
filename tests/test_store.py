"""The experience store: round trips, similarity, rewards, lessons, exemplars, snapshots."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from streamsynth.errors import ConfigError, DataError
from streamsynth.learn.store import Exemplar, ExperienceStore


def vec(*xs: float) -> np.ndarray:
    return np.array(xs, dtype=np.float32)


@pytest.fixture
def store(tmp_path: Path):
    with ExperienceStore(tmp_path / "exp.sqlite") as s:
        s.add_task("sst2", name="SST-2", descriptor=vec(1, 0, 0), labels=["negative", "positive"], meta={"kind": "sentiment"})
        yield s


def test_round_trip_after_close_and_reopen(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "folder" / "exp.sqlite"
    with ExperienceStore(path) as s:
        s.add_task("sst2", name="SST-2", descriptor=vec(3, 4, 0), labels=["negative", "positive"], meta={"n": 2})
        s.add_task("trec", name="TREC", descriptor=vec(0, 0, 1), labels=["DESC", "LOC"])
        s.record_rewards("sst2", "tpl=plain|shots=0|temp=0.7", [1.0, 0.0])
        lesson_id = s.add_lesson("sst2", "contrast templates help", importance=7, embedding=vec(1, 1, 0), created_at=0)
        s.add_exemplars("sst2", [Exemplar("positive", {"text": "a joyful ride"}, 0.9, "p1")])
        s.put_state("stream", {"done": ["sst2"], "adapter": None})
    with ExperienceStore(path) as s:
        tasks = s.tasks()
        assert [(t.key, t.name, t.labels, t.position) for t in tasks] == [
            ("sst2", "SST-2", ("negative", "positive"), 0),
            ("trec", "TREC", ("DESC", "LOC"), 1),
        ]
        np.testing.assert_allclose(tasks[0].descriptor, [0.6, 0.8, 0.0], rtol=1e-6)  # stored as a unit vector
        assert tasks[0].meta == {"n": 2} and tasks[1].meta == {}
        st = s.pattern_stats("sst2")["tpl=plain|shots=0|temp=0.7"]
        assert (st.n, st.mean, st.var) == (2, 0.5, 0.25)
        [lesson] = s.retrieve_lessons(vec(1, 1, 0), now=0)
        assert (lesson.id, lesson.text, lesson.importance, lesson.task_key) == (lesson_id, "contrast templates help", 7.0, "sst2")
        assert s.exemplars("sst2") == [Exemplar("positive", {"text": "a joyful ride"}, 0.9, "p1")]
        assert s.get_state("stream") == {"done": ["sst2"], "adapter": None}
        assert s.get_state("missing") is None
        assert s._conn().execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_add_task_upserts_and_keeps_its_position(store: ExperienceStore) -> None:
    store.add_task("ag_news", name="AG News", descriptor=vec(0, 1, 0), labels=["world", "sports"])
    store.add_task("sst2", name="SST-2 v2", descriptor=vec(0, 0, 1), labels=["neg", "pos"], meta={"v": 2})
    assert [(t.key, t.name, t.position) for t in store.tasks()] == [("sst2", "SST-2 v2", 0), ("ag_news", "AG News", 1)]
    assert store.tasks()[0].meta == {"v": 2}


def test_add_task_rejects_bad_descriptors_and_labels(store: ExperienceStore) -> None:
    with pytest.raises(DataError, match="non-zero"):
        store.add_task("x", name="x", descriptor=vec(0, 0, 0), labels=["a"])
    with pytest.raises(DataError, match="same embedder"):
        store.add_task("x", name="x", descriptor=vec(1, 0), labels=["a"])
    with pytest.raises(DataError, match="list of strings"):
        store.add_task("x", name="x", descriptor=vec(1, 0, 0), labels="ab")
    assert [t.key for t in store.tasks()] == ["sst2"]


def test_similar_tasks_best_first(store: ExperienceStore) -> None:
    store.add_task("emotion", name="Emotion", descriptor=vec(0.9, 0.1, 0), labels=["joy"])
    store.add_task("trec", name="TREC", descriptor=vec(0, 0, 1), labels=["DESC"])
    store.add_task("anti", name="anti", descriptor=vec(-1, 0, 0), labels=["a"])
    got = store.similar_tasks(vec(1, 0, 0))
    assert [k for k, _ in got] == ["sst2", "emotion", "trec", "anti"]
    assert got[0][1] == pytest.approx(1.0) and got[2][1] == pytest.approx(0.0) and got[3][1] == pytest.approx(-1.0)
    assert [k for k, _ in store.similar_tasks(vec(1, 0, 0), exclude="sst2", k=2)] == ["emotion", "trec"]
    with pytest.raises(DataError, match="dimensions"):
        store.similar_tasks(vec(1, 0))


def test_rewards_accumulate_per_task_and_pattern(store: ExperienceStore) -> None:
    store.add_task("trec", name="TREC", descriptor=vec(0, 0, 1), labels=["DESC"])
    store.record_rewards("sst2", "a", [1.0, 0.0])
    store.record_rewards("sst2", "a", [0.5])
    store.record_rewards("sst2", "b", [0.25])
    store.record_rewards("trec", "a", [0.75])
    a = store.pattern_stats("sst2")["a"]
    assert a.n == 3 and a.mean == pytest.approx(0.5) and a.var == pytest.approx(1 / 6)
    assert store.pattern_stats("sst2")["b"].mean == pytest.approx(0.25)
    assert store.pattern_stats("nowhere") == {}
    everything = store.all_pattern_stats()
    assert list(everything) == ["sst2", "trec"] and list(everything["sst2"]) == ["a", "b"]
    assert everything["trec"]["a"].n == 1


@pytest.mark.parametrize("bad", [[0.5, 1.5], [-0.1], [float("nan")], [float("inf")], ["high"]])
def test_bad_rewards_are_refused_and_nothing_is_written(store: ExperienceStore, bad: list) -> None:
    store.record_rewards("sst2", "a", [1.0])
    with pytest.raises(DataError, match=r"\[0, 1\]"):
        store.record_rewards("sst2", "a", bad)
    assert store.pattern_stats("sst2")["a"].n == 1


def test_writes_for_an_unknown_task_say_to_add_it(store: ExperienceStore) -> None:
    with pytest.raises(DataError, match=r"unknown task 'nope'.*add_task"):
        store.record_rewards("nope", "a", [1.0])
    with pytest.raises(DataError, match="add_task"):
        store.add_lesson("nope", "x", importance=5, embedding=vec(1, 0), created_at=0)
    with pytest.raises(DataError, match="add_task"):
        store.add_exemplars("nope", [Exemplar("a", {"text": "x"}, 0.5)])


def _three_lessons(store: ExperienceStore) -> dict[str, int]:
    """One lesson best on each part: the newest, the most important, the most relevant to (1, 0)."""
    return {
        "relevant": store.add_lesson("sst2", "relevant", importance=2, embedding=vec(1, 0), created_at=0),
        "important": store.add_lesson("sst2", "important", importance=9, embedding=vec(0, 1), created_at=1),
        "recent": store.add_lesson("sst2", "recent", importance=1, embedding=vec(0.2, 1), created_at=10),
    }


@pytest.mark.parametrize(
    "weights, first", [((1, 0, 0), "recent"), ((0, 1, 0), "important"), ((0, 0, 1), "relevant")]
)
def test_each_part_of_the_lesson_score_can_decide(store: ExperienceStore, weights: tuple, first: str) -> None:
    _three_lessons(store)
    got = store.retrieve_lessons(vec(1, 0), now=10, weights=weights, decay=0.9)
    assert got[0].text == first
    assert [g.score for g in got] == sorted((g.score for g in got), reverse=True)


def test_lesson_parts_are_normalized_and_summed(store: ExperienceStore) -> None:
    ids = _three_lessons(store)
    got = {g.text: g for g in store.retrieve_lessons(vec(1, 0), now=10, decay=0.9)}
    assert got["recent"].recency_score == 1.0 and got["relevant"].recency_score == 0.0
    assert got["important"].importance_score == 1.0 and got["recent"].importance_score == 0.0
    assert got["relevant"].relevance_score == 1.0 and got["important"].relevance_score == 0.0
    assert got["relevant"].relevance == pytest.approx(1.0) and got["important"].relevance == pytest.approx(0.0)
    for g in got.values():
        assert g.score == pytest.approx(g.recency_score + g.importance_score + g.relevance_score)
    best = max(got.values(), key=lambda g: g.score)
    assert [g.id for g in store.retrieve_lessons(vec(1, 0), now=10, k=1)] == [ids[best.text]]


def test_recency_decays_with_now_and_decay(store: ExperienceStore) -> None:
    store.add_lesson("sst2", "old", importance=5, embedding=vec(1, 0), created_at=0)
    store.add_lesson("sst2", "mid", importance=5, embedding=vec(1, 0), created_at=9)
    store.add_lesson("sst2", "new", importance=5, embedding=vec(1, 0), created_at=10)
    at10 = {g.text: g for g in store.retrieve_lessons(vec(1, 0), now=10, decay=0.5)}
    at20 = {g.text: g for g in store.retrieve_lessons(vec(1, 0), now=20, decay=0.5)}
    assert at10["new"].recency == 1.0 and at10["mid"].recency == pytest.approx(0.5)
    assert at20["new"].recency == pytest.approx(0.5**10)  # raw recency decays as time passes
    assert [g.text for g in at20.values()] == ["new", "mid", "old"]
    # the normalized part depends on the gaps between lessons and on decay, not on now
    assert at20["mid"].recency_score == pytest.approx(at10["mid"].recency_score)
    slow = {g.text: g for g in store.retrieve_lessons(vec(1, 0), now=10, decay=0.99)}
    assert slow["mid"].recency_score > 0.85 > 0.55 > at10["mid"].recency_score
    # before any lesson was written, all are equally new: ties go to the lower id
    assert [g.text for g in store.retrieve_lessons(vec(1, 0), now=-1)] == ["old", "mid", "new"]


def test_lesson_retrieval_filters_and_validates(store: ExperienceStore) -> None:
    store.add_task("trec", name="TREC", descriptor=vec(0, 0, 1), labels=["DESC"])
    store.add_lesson("sst2", "mine", importance=5, embedding=vec(1, 0), created_at=0)
    store.add_lesson("trec", "theirs", importance=5, embedding=vec(1, 0), created_at=0)
    assert [g.text for g in store.retrieve_lessons(vec(1, 0), now=0, exclude_task="sst2")] == ["theirs"]
    assert store.retrieve_lessons(vec(1, 0), now=0, k=0) == []
    with pytest.raises(DataError, match="1 to 10"):
        store.add_lesson("sst2", "x", importance=11, embedding=vec(1, 0), created_at=0)
    with pytest.raises(ConfigError, match="decay"):
        store.retrieve_lessons(vec(1, 0), now=0, decay=1.5)
    with pytest.raises(ConfigError, match="weights"):
        store.retrieve_lessons(vec(1, 0), now=0, weights=(1, -1, 1))
    with pytest.raises(DataError, match="dimensions"):
        store.retrieve_lessons(vec(1, 0, 0), now=0)


def test_exemplars_best_first_with_label_filter(store: ExperienceStore) -> None:
    store.add_exemplars(
        "sst2",
        [
            Exemplar("positive", {"text": "fine"}, 0.6, "p1"),
            Exemplar("negative", {"text": "dull"}, 0.95, "p2"),
            Exemplar("positive", {"text": "superb"}, 0.9, "p1"),
            Exemplar("positive", {"text": "tie-later"}, 0.6, "p3"),
        ],
    )
    assert [e.text for e in store.exemplars("sst2")] == ["dull", "superb", "fine", "tie-later"]
    assert [e.text for e in store.exemplars("sst2", label="positive", k=2)] == ["superb", "fine"]
    assert [e.text for e in store.exemplars("sst2", min_reward=0.9)] == ["dull", "superb"]
    # the same sample again keeps the higher reward and its pattern
    store.add_exemplars("sst2", [Exemplar("positive", {"text": "fine"}, 0.99, "p9"), Exemplar("negative", {"text": "dull"}, 0.1, "px")])
    assert store.exemplars("sst2", k=2) == [
        Exemplar("positive", {"text": "fine"}, 0.99, "p9"),
        Exemplar("negative", {"text": "dull"}, 0.95, "p2"),
    ]
    pair = Exemplar("entailment", {"premise": "a", "hypothesis": "b"}, 0.5)
    assert json.loads(pair.text) == {"premise": "a", "hypothesis": "b"}


def test_a_batch_with_one_bad_exemplar_writes_nothing(store: ExperienceStore) -> None:
    with pytest.raises(DataError, match=r"\[0, 1\]"):
        store.add_exemplars("sst2", [Exemplar("positive", {"text": "ok"}, 0.5), Exemplar("positive", {"text": "bad"}, 2.0)])
    assert store.exemplars("sst2") == []


def test_state_must_be_json(store: ExperienceStore) -> None:
    store.put_state("progress", {"task": 1})
    store.put_state("progress", {"task": 2})
    assert store.get_state("progress") == {"task": 2}
    with pytest.raises(DataError, match="JSON"):
        store.put_state("bad", {"x": object()})
    with pytest.raises(DataError, match="mapping"):
        store.put_state("bad", [1, 2])  # type: ignore[arg-type]


def test_snapshot_and_restore_roll_back_later_writes(store: ExperienceStore) -> None:
    store.record_rewards("sst2", "a", [1.0])
    path = store.snapshot("after-sst2")
    assert path == store.path.with_name("exp.sqlite.snapshots") / "after-sst2.sqlite" and path.is_file()
    store.record_rewards("sst2", "a", [0.0, 0.0])
    store.add_task("trec", name="TREC", descriptor=vec(0, 0, 1), labels=["DESC"])
    store.put_state("stream", {"at": 2})
    store.snapshot("after-trec")
    assert store.snapshots() == ["after-sst2", "after-trec"]

    store.restore("after-sst2")
    assert store.pattern_stats("sst2")["a"].n == 1
    assert [t.key for t in store.tasks()] == ["sst2"] and store.get_state("stream") is None
    store.record_rewards("sst2", "a", [0.5])  # the restored store takes writes
    assert store.pattern_stats("sst2")["a"].n == 2
    store.restore("after-trec")
    assert [t.key for t in store.tasks()] == ["sst2", "trec"] and store.get_state("stream") == {"at": 2}


def test_restore_survives_reopen(tmp_path: Path) -> None:
    path = tmp_path / "exp.sqlite"
    with ExperienceStore(path) as s:
        s.add_task("sst2", name="SST-2", descriptor=vec(1, 0), labels=["a"])
        s.snapshot("t0")
        s.add_task("trec", name="TREC", descriptor=vec(0, 1), labels=["b"])
        s.restore("t0")
    with ExperienceStore(path) as s:
        assert [t.key for t in s.tasks()] == ["sst2"]


def test_unknown_or_bad_snapshot_names(store: ExperienceStore) -> None:
    store.snapshot("t1")
    with pytest.raises(DataError, match=r"no snapshot 'nope'.*\['t1'\]"):
        store.restore("nope")
    with pytest.raises(ConfigError, match="not allowed"):
        store.snapshot("../escape")


def test_a_file_that_is_not_a_store_is_refused(tmp_path: Path) -> None:
    text = tmp_path / "notes.sqlite"
    text.write_text("just some notes, not a database at all " * 100)
    with pytest.raises(DataError, match="not a streamsynth experience store"):
        ExperienceStore(text)
    assert text.read_text().startswith("just some notes")

    other = tmp_path / "other.sqlite"
    with sqlite3.connect(other) as db:
        db.execute("CREATE TABLE users (name TEXT)")
    with pytest.raises(DataError, match="SQLite file but not a streamsynth experience store"):
        ExperienceStore(other)


def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "exp.sqlite"
    ExperienceStore(path).close()
    db = sqlite3.connect(path)
    db.execute("UPDATE store_info SET value = '99' WHERE name = 'schema_version'")
    db.commit()
    db.close()
    with pytest.raises(DataError, match="newer streamsynth.*v99.*upgrade"):
        ExperienceStore(path)


def test_a_closed_store_says_so(tmp_path: Path) -> None:
    s = ExperienceStore(tmp_path / "exp.sqlite")
    s.close()
    s.close()
    with pytest.raises(DataError, match="closed"):
        s.tasks()


def test_a_write_that_fails_halfway_leaves_nothing(store: ExperienceStore) -> None:
    with pytest.raises(RuntimeError):
        with store._write() as db:
            db.execute("INSERT INTO state (key, value) VALUES ('half', '{}')")
            raise RuntimeError("crash in the middle of a task's writes")
    assert store.get_state("half") is None
    store.put_state("whole", {"ok": True})  # and the store still takes writes
    assert store.get_state("whole") == {"ok": True}
