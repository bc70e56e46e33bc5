"""Leave-part-out utility credit for synthesis patterns (learn/credit.py)."""

from __future__ import annotations

import pytest

from streamsynth.errors import ConfigError
from streamsynth.learn.credit import PatternCredit, pattern_parts
from streamsynth.learn.feedback import DevUtility
from streamsynth.records import Provenance, Sample
from streamsynth.task.sources import DataSource

from test_feedback import DEV, FEW_SEEDS, HELPFUL, make_task, no_reading  # noqa: F401  (a fixture)

OTHER = {"positive": "negative", "negative": "positive"}


def _sample(i, text, label, pattern, accepted=True):
    s = Sample(f"s{i}", "t", {"text": text}, label, Provenance("explore", pattern, "f", "r", "m", 0, i))
    return s if accepted else s.reject("label_check", "test")


def _mixed(good="tpl=good|shots=1|temp=1", bad="tpl=bad|shots=1|temp=1"):
    """Helpful samples from one pattern, the same texts with flipped labels from another."""
    out = [_sample(i, t, y, good) for i, (t, y) in enumerate(HELPFUL)]
    out += [_sample(100 + i, t, OTHER[y], bad) for i, (t, y) in enumerate(HELPFUL[:2])]
    return out


def test_pattern_parts():
    assert pattern_parts("tpl=plain|shots=1|temp=1") == ("tpl=plain", "shots=1", "temp=1")
    assert pattern_parts("") == () and pattern_parts("attributed") == ()


def test_credit_rewards_the_part_whose_samples_help_and_docks_the_one_that_hurts(hash_embedder, no_reading):
    task = make_task(FEW_SEEDS, DEV, test_source=DataSource("jsonl", "/nonexistent/test.jsonl"))
    found = PatternCredit(DevUtility(embedder=hash_embedder), min_part=2).credit(task, _mixed())
    good, bad = found.parts["tpl=good"], found.parts["tpl=bad"]
    assert (good.n, bad.n) == (16, 2)
    assert good.contribution > 0 > bad.contribution  # leaving the flipped labels out raises dev accuracy
    assert good.value > 0 > bad.value
    n_all, mean = 18, (good.contribution + bad.contribution) / 18
    # relative to their dimension, each shrunk by n / (n + 10)
    assert good.value == pytest.approx(n_all * (good.contribution / 16 - mean) * 16 / 26)
    assert bad.value == pytest.approx(n_all * (bad.contribution / 2 - mean) * 2 / 12)
    assert found.shift["s0"] == pytest.approx(min(0.5, good.value))
    # shots and temperature have one value each: nothing to compare, no credit
    assert set(found.parts) == {"tpl=good", "tpl=bad"}
    assert all(found.shift[f"s{i}"] > 0 for i in range(16)) and all(found.shift[f"s{100 + i}"] < 0 for i in range(2))
    assert max(abs(v) for v in found.shift.values()) <= 0.5


def test_shrinkage_tempers_small_parts_more_than_large_ones(hash_embedder, no_reading):
    task = make_task(FEW_SEEDS, DEV)
    raw = PatternCredit(DevUtility(embedder=hash_embedder), min_part=2, shrink=0).credit(task, _mixed())
    good, bad = raw.parts["tpl=good"], raw.parts["tpl=bad"]
    assert good.value * good.n + bad.value * bad.n == pytest.approx(0, abs=1e-9)  # unshrunk: relative to the dimension
    shrunk = PatternCredit(DevUtility(embedder=hash_embedder), min_part=2, shrink=10).credit(task, _mixed())
    assert shrunk.parts["tpl=good"].value == pytest.approx(good.value * 16 / 26)
    assert shrunk.parts["tpl=bad"].value == pytest.approx(bad.value * 2 / 12)  # the 2-sample part keeps a sixth
    assert abs(shrunk.shift["s100"]) < abs(raw.shift["s100"])
    assert shrunk.parts["tpl=good"].contribution == good.contribution  # the measured drop is not changed


def test_apply_adds_the_shift_and_clips_to_unit_range(hash_embedder):
    task = make_task(FEW_SEEDS, DEV)
    found = PatternCredit(DevUtility(embedder=hash_embedder), max_shift=1.0, min_part=2).credit(task, _mixed())
    rewards = {"s0": 0.99, "s100": 0.01, "unknown": 0.4}
    out = found.apply(rewards)
    assert out["s0"] == 1.0 and out["s100"] == 0.0 and out["unknown"] == 0.4
    assert rewards == {"s0": 0.99, "s100": 0.01, "unknown": 0.4}  # a new dict


def test_no_credit_without_two_parts_to_compare_or_with_weight_zero(hash_embedder, monkeypatch):
    task = make_task(FEW_SEEDS, DEV)
    du = DevUtility(embedder=hash_embedder)
    same = _mixed(bad="tpl=good|shots=1|temp=1")  # one pattern: nothing to compare
    assert PatternCredit(du).credit(task, same).shift == {}
    # a part under min_part samples is not compared (the flipped part has 2)
    assert PatternCredit(du, min_part=3).credit(task, _mixed()).parts == {}
    called = []
    monkeypatch.setattr(du, "leave_out", lambda *a, **k: called.append(1))
    assert PatternCredit(du, weight=0, min_part=2).credit(task, _mixed()).shift == {} and not called


def test_rejected_samples_are_not_credited(hash_embedder):
    task = make_task(FEW_SEEDS, DEV)
    samples = _mixed()[:16] + [_sample(100 + i, t, y, "tpl=bad|shots=1|temp=1", accepted=False) for i, (t, y) in enumerate(HELPFUL[:2])]
    found = PatternCredit(DevUtility(embedder=hash_embedder), min_part=2).credit(task, samples)
    assert found.parts == {} and "s100" not in found.shift


def test_credit_settings_are_validated(hash_embedder):
    for bad in ({"weight": -1}, {"weight": float("inf")}, {"max_shift": 2}, {"min_part": 0}, {"min_part": 1.5},
                {"shrink": -1}, {"shrink": float("nan")}, {"shrink": True}):
        with pytest.raises(ConfigError):
            PatternCredit(DevUtility(embedder=hash_embedder), **bad)


def test_leave_out_matches_evaluate(hash_embedder, no_reading):
    task = make_task(FEW_SEEDS, DEV)
    du = DevUtility(embedder=hash_embedder)
    samples = _mixed()
    everything, without = du.leave_out(task, samples, {"bad": ["s100", "s101"]})
    assert everything == du.evaluate(task, samples).with_synthetic
    assert without["bad"] == du.evaluate(task, samples[:16]).with_synthetic


def test_leave_out_cross_validates_over_the_seeds_without_dev(hash_embedder, no_reading):
    seeds = [(f"a {w} movie", "positive") for w in ("wonderful", "superb", "brilliant", "delightful")]
    seeds += [(f"a {w} movie", "negative") for w in ("dull", "awful", "boring", "tedious")]
    task = make_task(seeds, test_source=DataSource("jsonl", "/nonexistent/test.jsonl"))
    du = DevUtility(embedder=hash_embedder, folds=4)
    samples = _mixed()
    everything, without = du.leave_out(task, samples, {"bad": ["s100", "s101"]})
    assert everything == du.evaluate(task, samples).with_synthetic
    assert without["bad"] == du.evaluate(task, samples[:16]).with_synthetic
