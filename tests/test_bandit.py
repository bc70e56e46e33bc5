"""Thompson sampling over patterns, and priors carried over from similar tasks."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from streamsynth.errors import ConfigError, DataError
from streamsynth.learn.bandit import ThompsonBandit, priors_from_experience
from streamsynth.learn.store import ExperienceStore, PatternStats

ARMS = ("tpl=plain|shots=0|temp=0.7", "tpl=contrast|shots=4|temp=0.7", "tpl=plain|shots=4|temp=1.0")
PLAIN, CONTRAST, HOT = ARMS


def stats(pattern: str, n: int, mean: float) -> PatternStats:
    """n rewards of which a fraction ``mean`` are 1 and the rest 0."""
    ones = round(n * mean)
    return PatternStats(pattern, n, float(ones), float(ones))


def test_allocation_is_deterministic_by_seed() -> None:
    bandit = ThompsonBandit.uniform(ARMS)
    assert bandit.allocate(60, seed=7) == bandit.allocate(60, seed=7)
    assert bandit.allocate(60, seed=7) != bandit.allocate(60, seed=8)
    assert set(bandit.allocate(60, seed=7)) == set(ARMS)
    assert bandit.allocate(0, seed=1) == []
    with pytest.raises(ConfigError, match="whole number"):
        bandit.allocate(-1, seed=1)


def test_update_returns_a_new_bandit_and_leaves_the_old_one() -> None:
    old = ThompsonBandit.uniform(ARMS)
    new = old.update(CONTRAST, [1.0, 0.25])
    assert old.alpha == (1.0, 1.0, 1.0) and old.beta == (1.0, 1.0, 1.0)
    assert new.alpha == (1.0, 2.25, 1.0) and new.beta == (1.0, 1.75, 1.0)
    assert new.means()[CONTRAST] == pytest.approx(2.25 / 4) and old.means()[CONTRAST] == 0.5
    assert new.update(PLAIN, 0.5).alpha == (1.5, 2.25, 1.0)  # one reward may be a bare number
    with pytest.raises(ConfigError, match="unknown bandit arm 'nope'"):
        old.update("nope", [1.0])
    with pytest.raises(DataError, match=r"\[0, 1\]"):
        old.update(PLAIN, [1.2])


def test_a_clearly_better_arm_gets_most_of_the_allocation() -> None:
    rng = np.random.default_rng(0)
    bandit = ThompsonBandit.uniform(ARMS)
    for arm, p in ((PLAIN, 0.2), (CONTRAST, 0.9), (HOT, 0.3)):
        bandit = bandit.update(arm, (rng.random(20) < p).astype(float).tolist())
    counts = Counter(bandit.allocate(200, seed=1))
    assert counts[CONTRAST] > 0.8 * 200
    assert max(bandit.means(), key=bandit.means().get) == CONTRAST


def test_state_round_trips_through_json() -> None:
    bandit = ThompsonBandit.uniform(ARMS).update(HOT, [0.3, 0.9])
    back = ThompsonBandit.from_state(json.loads(json.dumps(bandit.to_state())))
    assert back == bandit and back.allocate(20, seed=3) == bandit.allocate(20, seed=3)
    with pytest.raises(ConfigError, match="lacks"):
        ThompsonBandit.from_state({"arms": list(ARMS)})


def test_bad_bandits_are_refused() -> None:
    with pytest.raises(ConfigError, match="distinct"):
        ThompsonBandit.uniform([PLAIN, PLAIN])
    with pytest.raises(ConfigError, match="at least one arm"):
        ThompsonBandit.uniform([])
    with pytest.raises(ConfigError, match="> 0"):
        ThompsonBandit.uniform(ARMS, alpha=0.0)
    with pytest.raises(ConfigError, match="one alpha and one beta per arm"):
        ThompsonBandit(ARMS, (1.0, 1.0), (1.0, 1.0, 1.0))
    with pytest.raises(ConfigError, match="does not have"):
        ThompsonBandit.with_priors(ARMS, {"typo": (2.0, 1.0)})


def test_priors_from_a_similar_task_shift_allocation_a_dissimilar_one_does_not() -> None:
    earlier = {"sst2": {CONTRAST: stats(CONTRAST, 40, 0.9), PLAIN: stats(PLAIN, 40, 0.1)}}
    flat = ThompsonBandit.uniform(ARMS)

    similar = ThompsonBandit.with_priors(ARMS, priors_from_experience(earlier, {"sst2": 0.9}, arms=ARMS))
    counts = Counter(similar.allocate(300, seed=5))
    assert counts[CONTRAST] > counts[HOT] > counts[PLAIN]
    assert counts[CONTRAST] > 1.5 * Counter(flat.allocate(300, seed=5))[CONTRAST]

    for sim in ({"sst2": 0.0}, {"sst2": -0.8}, {}, {"sst2": 0.2, "other": 1.0}):
        min_sim = 0.5 if "other" in sim else 0.0
        priors = priors_from_experience(earlier, sim, arms=ARMS, min_similarity=min_sim)
        assert priors == {a: (1.0, 1.0) for a in ARMS}
        assert ThompsonBandit.with_priors(ARMS, priors).allocate(300, seed=5) == flat.allocate(300, seed=5)


def test_max_strength_caps_the_prior() -> None:
    earlier = {"sst2": {CONTRAST: stats(CONTRAST, 1000, 0.75)}}
    alpha, beta = priors_from_experience(earlier, {"sst2": 1.0}, arms=ARMS, max_strength=8.0)[CONTRAST]
    assert (alpha, beta) == pytest.approx((1 + 8 * 0.75, 1 + 8 * 0.25))
    alpha, beta = priors_from_experience(earlier, {"sst2": 1.0}, arms=ARMS, max_strength=2.0)[CONTRAST]
    assert alpha + beta - 2 == pytest.approx(2.0)
    # below the cap the prior is worth similarity * n rewards
    few = {"sst2": {CONTRAST: stats(CONTRAST, 4, 0.75)}}
    alpha, beta = priors_from_experience(few, {"sst2": 0.5}, arms=ARMS, max_strength=8.0)[CONTRAST]
    assert (alpha, beta) == pytest.approx((1 + 2 * 0.75, 1 + 2 * 0.25))
    with pytest.raises(ConfigError, match="max_strength"):
        priors_from_experience(few, {"sst2": 0.5}, arms=ARMS, max_strength=-1.0)


def test_priors_weight_tasks_by_similarity_and_count() -> None:
    earlier = {"near": {HOT: stats(HOT, 10, 1.0)}, "far": {HOT: stats(HOT, 10, 0.0)}}
    alpha, beta = priors_from_experience(earlier, {"near": 0.6, "far": 0.2}, arms=ARMS, max_strength=100.0)[HOT]
    # counts 6 and 2: mean (6*1 + 2*0) / 8
    assert (alpha, beta) == pytest.approx((1 + 6.0, 1 + 2.0))


def test_priors_from_a_store(tmp_path: Path) -> None:
    with ExperienceStore(tmp_path / "exp.sqlite") as store:
        store.add_task("sst2", name="SST-2", descriptor=np.array([1.0, 0.0]), labels=["neg", "pos"])
        store.add_task("trec", name="TREC", descriptor=np.array([0.0, 1.0]), labels=["DESC"])
        store.record_rewards("sst2", CONTRAST, [1.0] * 6)
        store.record_rewards("trec", CONTRAST, [0.0] * 6)
        similarity = dict(store.similar_tasks(np.array([1.0, 0.1])))
        priors = priors_from_experience(store.all_pattern_stats(), similarity, arms=ARMS, min_similarity=0.5)
    assert priors[CONTRAST] == pytest.approx((1 + 6 * similarity["sst2"], 1.0))
    assert priors[PLAIN] == (1.0, 1.0)
