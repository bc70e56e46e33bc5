"""SynLearner feedback: label agreement, quality, set diversity, the composite reward, dev utility."""

from __future__ import annotations

import numpy as np
import pytest

from streamsynth.errors import ConfigError, DataError
from streamsynth.learn.feedback import (
    DevUtility,
    LabelAgreement,
    QualityReward,
    Reward,
    SampleFeedback,
    SetDiversity,
    chance_rescaled,
    density_diversity,
    distinct_n,
    with_feedback,
)
from streamsynth.records import Example, Provenance, Sample
from streamsynth.state import load_state
from streamsynth.task import Task
from streamsynth.task.sources import DataSource
from streamsynth.task.task import Label

SEEDS = [("a wonderful joyful film", "positive"), ("superb brilliant acting", "positive"),
         ("a delightful wonderful story", "positive"), ("a dull tedious film", "negative"),
         ("awful boring acting", "negative"), ("a clumsy dull story", "negative")]
CLEAN = "The acting was superb and the story kept me hooked until the very end."


def make_task(seeds=SEEDS, dev=(), *, kind="classification", test_source=None, name="t") -> Task:
    labels = (Label("negative"), Label("positive")) if kind == "classification" else ()
    return Task(
        name=name, description="Classify the sentiment of a short movie review.", kind=kind, input_fields=("text",),
        output_field="label", labels=labels,
        seeds=tuple(Example(f"seeds:{i}", {"text": t}, y) for i, (t, y) in enumerate(seeds)),
        dev=tuple(Example(f"dev:{i}", {"text": t}, y) for i, (t, y) in enumerate(dev)), test_source=test_source,
    )


def sample(text, label="positive", *, i=0, scores=None, attributes=None, inputs=None) -> Sample:
    cond = {"attributes": attributes} if attributes else {}
    return Sample(f"s{i}", "t", inputs if inputs is not None else {"text": text}, label,
                  Provenance("s", "p", "f", "r", "m", 0, i, conditioning=cond), scores=scores or {})


# -- label agreement ---------------------------------------------------------------------------------------

def test_label_agreement_is_high_near_own_seeds_and_low_near_the_other_labels(hash_embedder):
    la = LabelAgreement(embedder=hash_embedder)
    task = make_task()
    text = "a wonderful and joyful brilliant film"
    right, wrong = la.score([sample(text, "positive"), sample(text, "negative", i=1)], task)
    assert right > 0.7 and wrong < 0.3
    signals = la.signals([sample(text, "positive"), sample(text, "negative", i=1)], task)
    assert set(signals) == {"margin", "classifier", "votes"}
    assert signals["margin"][0] > 0.5 > signals["margin"][1]
    assert signals["classifier"][0] > 0.5 > signals["classifier"][1]
    assert np.isnan(signals["votes"]).all()


def test_vote_signal_is_used_when_present(hash_embedder):
    task = make_task()
    text = "a film"  # neutral: margin and classifier near 0.5
    yes = sample(text, scores={"self_consistency": 1.0})
    no = sample(text, i=1, scores={"self_consistency": 0.0})
    none = sample(text, i=2)
    a = LabelAgreement(embedder=hash_embedder).score([yes, no, none], task)
    assert a[0] > a[2] > a[1]
    only_votes = LabelAgreement(embedder=hash_embedder, weights={"votes": 1.0}).score([yes, no, none], task)
    assert only_votes.tolist() == [1.0, 0.0, 0.5]  # no vote: no evidence


def test_label_agreement_without_two_seed_labels_is_neutral(hash_embedder):
    task = make_task(seeds=[("a wonderful film", "positive"), ("superb acting", "positive")])
    out = LabelAgreement(embedder=hash_embedder).score([sample("a dull film", "negative"), sample("great", i=1)], task)
    assert out.tolist() == [0.5, 0.5]
    assert LabelAgreement(embedder=hash_embedder).score([], make_task()).shape == (0,)


def test_a_label_the_task_does_not_have_scores_zero(hash_embedder):
    out = LabelAgreement(embedder=hash_embedder).score([sample("a wonderful film", "neutral")], make_task())
    assert out.tolist() == [0.0]


def test_label_agreement_reads_seeds_only_and_fits_once(hash_embedder):
    trap = make_task(dev=[("a wonderful film", "negative")] * 20)  # dev says the opposite; it must not matter
    la = LabelAgreement(embedder=hash_embedder)
    assert la.score([sample("a wonderful joyful film")], trap)[0] > 0.7
    calls = hash_embedder.calls
    la.score([sample("a wonderful joyful film")], trap)
    assert hash_embedder.calls == calls + 1  # the samples only: the seed fit is kept


def test_chance_rescaled_maps_chance_to_one_half():
    assert chance_rescaled(np.array([0.0, 0.25, 1.0, 0.625]), 4).tolist() == [0.0, 0.5, 1.0, 0.75]
    assert chance_rescaled(np.array([0.5]), 2).tolist() == [0.5]


def test_label_agreement_weights_are_validated():
    with pytest.raises(ConfigError, match="unknown part 'vote'"):
        LabelAgreement(weights={"vote": 1.0})
    with pytest.raises(ConfigError, match="sum to 0"):
        LabelAgreement(weights={"votes": 0.0})


# -- quality -----------------------------------------------------------------------------------------------

def _quality(*samples, task=None):
    task = task or make_task()
    return QualityReward().score(list(samples), task), QualityReward().parts(list(samples), task)


def test_quality_is_high_for_a_clean_example():
    score, parts = _quality(sample(CLEAN))
    assert score.tolist() == [1.0]
    assert all(v.tolist() == [1.0] for v in parts.values())


@pytest.mark.parametrize("text", [
    "Here is a positive review: " + CLEAN,
    "Sure! " + CLEAN,
    "positive: " + CLEAN,
    "Sentence: " + CLEAN,
    CLEAN + " (positive)",
    "Write a review labeled positive. " + CLEAN,
])
def test_quality_penalises_instruction_echo(text):
    score, parts = _quality(sample(text))
    assert parts["echo"].tolist() == [0.0] and score[0] == 0.0


@pytest.mark.parametrize("text", ["def review(film): return film.score > 3", "<b>Great</b> film, loved it.",
                                  "A great film, see https://example.com for more.", "if (score == 5) { print(score); }"])
def test_quality_penalises_code_and_markup(text):
    score, parts = _quality(sample(text))
    assert parts["markup"].tolist() == [0.0] and score[0] == 0.0


def test_code_tasks_may_hold_code():
    task = make_task(kind="code", seeds=[("def f(x): return x", "def f(x): return x")])
    _, parts = _quality(sample("Write a function add(a, b) that returns a + b;"), task=task)
    assert parts["markup"].tolist() == [1.0] and parts["echo"].tolist() == [1.0]


def test_quality_penalises_repetition():
    score, parts = _quality(sample("A great film. A great film. A great film. A great film."),
                            sample("the film is good the film is good the film is good the film is good", i=1))
    assert parts["repetition"].max() < 0.3 and score.max() < 0.3


def test_quality_penalises_wrong_length_softly():
    long = "A slow film. " * 60  # 780 characters, over the default 600
    score, parts = _quality(sample("Bad."), sample(long.strip(), i=1))
    assert parts["length"][0] == pytest.approx(4 / 12)
    assert parts["length"][1] == pytest.approx(600 / len(long.strip()))
    assert 0 < score[0] < 1


def test_quality_wants_every_input_field():
    score, parts = _quality(sample("", inputs={}), sample("   ", i=1))
    assert parts["well_formed"].tolist() == [0.0, 0.0] and score.tolist() == [0.0, 0.0]


def test_quality_checks_length_and_topic_attributes():
    one = "The plot twists kept me guessing all night."
    three = "The plot is thin. The jokes land. I laughed."
    score, parts = _quality(
        sample(one, attributes={"length": "one sentence", "aspect": "plot"}),
        sample(three, i=1, attributes={"length": "one sentence"}),
        sample(three, i=2, attributes={"length": "three sentences", "topic": "the music"}),
        sample(CLEAN, i=3, attributes={"length": "very short"}),
        sample(one, i=4, attributes={"style": "formal"}),  # not judged
    )
    assert parts["attributes"].tolist() == pytest.approx([1.0, 1 / 3, 0.5, 12 / 14, 1.0])
    assert score[0] == 1.0 and score[1] == pytest.approx(0.5 + 0.5 / 3)


# -- diversity ---------------------------------------------------------------------------------------------

def test_density_diversity_formula():
    assert density_diversity(np.tile([[1.0, 0.0]], (3, 1))).tolist() == [0.0, 0.0, 0.0]  # identical
    assert density_diversity(np.eye(3)).tolist() == [1.0, 1.0, 1.0]  # orthogonal
    v = np.array([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]])
    # s12 = 0.6, s13 = 0, s23 = 0.8: rho = 0.36/0.6, 1.0/1.4, 0.64/0.8; d = clip(3(1 - rho))
    assert density_diversity(v) == pytest.approx([1.0, 3 * (1 - 1 / 1.4), 0.6])
    assert density_diversity(np.array([[1.0, 0.0], [-1.0, 0.0]])).tolist() == [1.0, 1.0]  # negatives clipped


def test_distinct_n():
    assert distinct_n(["a b a b"], 1) == 0.5
    assert distinct_n(["a b a b"], 2) == pytest.approx(2 / 3)
    assert distinct_n(["Good film", "good FILM!"], 2) == 0.5
    assert distinct_n([], 1) == 0.0
    with pytest.raises(ConfigError):
        distinct_n(["a"], 0)


def test_set_diversity_scores_within_the_set(hash_embedder):
    task = make_task()
    samples = [sample("superb acting and story", i=0), sample("superb acting and story", i=1),
               sample("a clumsy slow plot with dull songs", i=2)]
    d = SetDiversity(embedder=hash_embedder).score(samples, task)
    assert d[0] == d[1] < d[2] == 1.0
    summary = SetDiversity(embedder=hash_embedder).summary(samples, task)
    assert summary["n"] == 3 and summary["density_diversity"] == pytest.approx(d.mean())
    assert summary["distinct_1"] == pytest.approx(11 / 15)


# -- composite -------------------------------------------------------------------------------------------

def test_reward_weights_are_validated_and_normalized(hash_embedder):
    for bad, msg in (({"label": -1.0}, ">= 0"), ({"label": 0, "quality": 0}, "sum to 0"), ({"style": 1.0}, "unknown part")):
        with pytest.raises(ConfigError, match=msg):
            Reward(weights=bad)
    task = make_task()
    samples = [sample(CLEAN), sample("Here is a review: dull.", "negative", i=1)]
    only_label = Reward(weights={"label": 5.0}, embedder=hash_embedder).score(samples, task)
    assert [f.reward for f in only_label] == [f.label for f in only_label]
    default = Reward(embedder=hash_embedder).score(samples, task)
    for f in default:
        assert isinstance(f, SampleFeedback)
        assert f.reward == pytest.approx(0.4 * f.label + 0.3 * f.quality + 0.3 * f.diversity)
    assert [f.sample_id for f in default] == ["s0", "s1"] and default[1].quality == 0.0


def test_reward_embeds_each_sample_text_once(hash_embedder, monkeypatch):
    seen: list[str] = []
    encode = hash_embedder.encode
    monkeypatch.setattr(hash_embedder, "encode", lambda texts: (seen.extend(texts), encode(texts))[1])
    samples = [sample("a superb film", i=0), sample("a dull mess", "negative", i=1)]
    Reward(embedder=hash_embedder).score(samples, make_task())
    assert seen.count("a superb film") == 1 and seen.count("a dull mess") == 1


def test_reward_state_round_trips_without_the_embedder(hash_embedder):
    r = Reward(weights={"label": 1.0, "quality": 1.0}, embedder=hash_embedder)
    state = r.dump_state()
    assert state == {"type": "reward", "params": {"weights": {"label": 1.0, "quality": 1.0}}}
    assert load_state(state).dump_state() == state


def test_with_feedback_puts_the_reward_in_scores():
    s = [sample(CLEAN, i=0), sample(CLEAN, i=1)]
    out = with_feedback(s, [SampleFeedback("s1", 0.5, 0.6, 0.7, 0.55)])
    assert out[0] is s[0] and out[1].scores["reward"] == 0.55 and out[1].scores["quality"] == 0.6


# -- dev utility -----------------------------------------------------------------------------------------

POS_WORDS = ["delightful", "charming", "moving", "brilliant", "touching", "lovely", "gripping", "stunning"]
NEG_WORDS = ["tedious", "clumsy", "boring", "bland", "dreary", "lifeless", "muddled", "grating"]
FEW_SEEDS = [("wonderful film", "positive"), ("superb film", "positive"), ("dull film", "negative"), ("awful film", "negative")]


def _pairs(words, label, noun, step):
    return [(f"a {words[i]} and {words[(i + step) % len(words)]} {noun}", label) for i in range(len(words))]


DEV = _pairs(POS_WORDS, "positive", "movie", 1) + _pairs(NEG_WORDS, "negative", "movie", 1)
HELPFUL = _pairs(POS_WORDS, "positive", "story", 3) + _pairs(NEG_WORDS, "negative", "story", 3)


@pytest.fixture
def no_reading(monkeypatch):
    """Any attempt to read rows (the test split) fails the test."""
    import streamsynth.task.sources as sources
    import streamsynth.task.task as task_module

    def trap(*a, **k):
        raise AssertionError("DevUtility read rows from a data source (the test split?)")

    monkeypatch.setattr(sources, "read_rows", trap)
    monkeypatch.setattr(task_module, "read_rows", trap)


def _samples(pairs, flip=False):
    other = {"positive": "negative", "negative": "positive"}
    return [sample(t, other[y] if flip else y, i=i) for i, (t, y) in enumerate(pairs)]


def test_dev_utility_scores_on_dev_and_never_reads_test(hash_embedder, no_reading):
    test = DataSource("jsonl", "/nonexistent/test.jsonl")
    task = make_task(FEW_SEEDS, DEV, test_source=test)
    result = DevUtility(embedder=hash_embedder).evaluate(task, _samples(HELPFUL))
    assert result.method == "dev" and result.n_eval == len(DEV)
    assert result.with_synthetic > result.seed_only and result.gain == pytest.approx(result.with_synthetic - result.seed_only)
    assert result.with_synthetic == 1.0


def test_dev_utility_cross_validates_over_seeds_without_dev(hash_embedder, no_reading):
    seeds = [(f"a {w} movie", "positive") for w in POS_WORDS[:4]] + [(f"a {w} movie", "negative") for w in NEG_WORDS[:4]]
    task = make_task(seeds, test_source=DataSource("jsonl", "/nonexistent/test.jsonl"))
    du = DevUtility(embedder=hash_embedder, folds=4)
    result = du.evaluate(task, _samples(HELPFUL))
    assert result.method == "cv" and result.n_eval == du.repeats * len(seeds)  # each seed once per repeat
    assert result.with_synthetic > result.seed_only
    assert du.evaluate(task, []).gain == 0.0
    assert du.evaluate(task, _samples(HELPFUL)) == result  # folds are seeded


def test_dev_utility_explains_when_it_cannot_cross_validate(hash_embedder):
    with pytest.raises(DataError, match="add dev data"):
        DevUtility(embedder=hash_embedder).evaluate(make_task(FEW_SEEDS[1:3]), [])  # one seed a label
    with pytest.raises(DataError, match="add dev data"):
        DevUtility(embedder=hash_embedder).evaluate(make_task(FEW_SEEDS[:2]), [])  # one label
    with pytest.raises(ConfigError):
        DevUtility(folds=1)


def test_best_prefix_keeps_helpful_samples(hash_embedder, no_reading):
    task = make_task(FEW_SEEDS, DEV)
    choice = DevUtility(embedder=hash_embedder).best_prefix(task, _samples(HELPFUL))
    assert choice.keep > 0 and set(choice.scores) == {0, 4, 8, 12, 16}
    assert choice.scores[0] == choice.seed_only and choice.scores[choice.keep] > choice.seed_only
    assert choice.keep == min(k for k, v in choice.scores.items() if v == max(choice.scores.values()))  # ties: fewer
    assert f"keeping {choice.keep} of 16" in choice.reason


def test_best_prefix_keeps_none_of_label_flipped_noise(hash_embedder, no_reading):
    task = make_task(FEW_SEEDS, DEV)
    choice = DevUtility(embedder=hash_embedder).best_prefix(task, _samples(HELPFUL, flip=True))
    assert choice.keep == 0 and choice.reason.startswith("keeping none")
    assert max(choice.scores.values()) == choice.seed_only and choice.scores[16] < choice.seed_only


def test_best_prefix_gate_needs_more_than_min_gain(hash_embedder):
    task = make_task(FEW_SEEDS, DEV)
    du = DevUtility(embedder=hash_embedder)
    assert du.best_prefix(task, _samples(HELPFUL), min_gain=1.0).keep == 0
    with pytest.raises(ConfigError):
        du.best_prefix(task, [], fractions=(0, 1.5))


def test_dev_texts_are_embedded_once_per_task(hash_embedder, monkeypatch):
    seen: list[str] = []
    encode = hash_embedder.encode
    monkeypatch.setattr(hash_embedder, "encode", lambda texts: (seen.extend(texts), encode(texts))[1])
    task = make_task(FEW_SEEDS, DEV)
    du = DevUtility(embedder=hash_embedder)
    du.evaluate(task, _samples(HELPFUL))
    du.best_prefix(task, _samples(HELPFUL))
    assert seen.count(DEV[0][0]) == 1


def test_dev_utility_state_round_trips(hash_embedder):
    du = DevUtility(embedder=hash_embedder, C=0.5, folds=3, seed=7, repeats=2)
    state = du.dump_state()
    assert state == {"type": "dev_utility", "params": {"C": 0.5, "folds": 3, "seed": 7, "repeats": 2}}
    assert load_state(state).dump_state() == state


def _copies_of(task, *, named: bool):
    """One sample per seed, with the seed's own text and label; ``named``: its provenance names the seed."""
    import dataclasses

    out = []
    for i, e in enumerate(task.seeds):
        s = sample(e.inputs["text"], e.output, i=i)
        if named:
            s = dataclasses.replace(s, provenance=dataclasses.replace(s.provenance, seed_example_ids=(e.id,)))
        out.append(s)
    return out


def test_cross_validation_leaves_out_samples_written_from_a_held_out_seed(hash_embedder, no_reading):
    # every seed has words of its own: seeds alone cannot get a held-out one right, its copy can
    words = ["apple", "river", "cloud", "stone", "tiger", "piano", "lemon", "candle", "forest", "mirror",
             "rocket", "garden", "violin", "desert", "pillow", "harbor"]
    seeds = [(f"{w} {w}s {w}ish", ("positive", "negative")[i % 2]) for i, w in enumerate(words)]
    task = make_task(seeds)
    du = DevUtility(embedder=hash_embedder, folds=4)
    leaky = du.evaluate(task, _copies_of(task, named=False))  # a copy of every held-out seed is trained on
    fair = du.evaluate(task, _copies_of(task, named=True))
    assert leaky.method == fair.method == "cv"
    assert leaky.with_synthetic == 1.0 and leaky.gain > 0.2
    assert fair.gain < leaky.gain - 0.2 and fair.with_synthetic < 0.9


def test_best_prefix_gate_needs_a_gain_beyond_its_standard_error(hash_embedder, no_reading):
    task = make_task(FEW_SEEDS, DEV)
    du = DevUtility(embedder=hash_embedder)
    assert du.best_prefix(task, _samples(HELPFUL), confidence_z=0.0).keep > 0
    strict = du.best_prefix(task, _samples(HELPFUL), confidence_z=50.0)
    assert strict.keep == 0 and "standard errors" in strict.reason
    with pytest.raises(ConfigError):
        du.best_prefix(task, [], confidence_z=-1)


def _eight_seeds():
    return [(f"a {w} movie", "positive") for w in POS_WORDS[:4]] + [(f"a {w} movie", "negative") for w in NEG_WORDS[:4]]


def test_repeated_cross_validation_draws_new_folds_and_keeps_the_first_draw(hash_embedder, no_reading):
    task = make_task(_eight_seeds())
    one = DevUtility(embedder=hash_embedder, folds=4, repeats=1)._splits(task)[1]
    three = DevUtility(embedder=hash_embedder, folds=4, repeats=3)._splits(task)[1]
    assert len(one) == 4 and len(three) == 12
    held_out = [sp.held_out_ids for sp in three]
    assert held_out[:4] == [sp.held_out_ids for sp in one]  # repeats=1 is the first draw
    assert held_out[4:8] != held_out[:4]  # a later repeat draws other folds
    for r in range(3):  # every repeat scores every seed exactly once
        ids = [i for sp in three[4 * r : 4 * r + 4] for i in sp.test_ids]
        assert sorted(ids) == sorted(f"seed:{i}" for i in range(8))
    with pytest.raises(ConfigError, match="repeats"):
        DevUtility(repeats=0)


def test_gain_standard_error_counts_each_seed_once_across_repeats():
    from streamsynth.learn.feedback import _paired_se, _Split

    def split(ids):
        return _Split((), np.zeros((len(ids), 2)), np.array(["a"] * len(ids), dtype=object), test_ids=tuple(ids))

    rows = [f"seed:{i}" for i in range(8)]
    gained = np.array([1, 1, 0, 0, 0, 0, 0, 0], dtype=bool)  # two of eight rows won, none lost
    base = np.zeros(8, dtype=bool)
    once = _paired_se([gained], [base], [split(rows)])
    five = _paired_se([gained] * 5, [base] * 5, [split(rows)] * 5)  # the same verdicts in five repeats
    assert once == pytest.approx(np.std([1, 1, 0, 0, 0, 0, 0, 0], ddof=1) / np.sqrt(8))
    assert five == pytest.approx(once)  # not once / sqrt(5): the seeds are the same eight
    assert _paired_se([gained] * 5, [base] * 5) < once  # (what treating every scored row as new would say)
