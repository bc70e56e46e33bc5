"""Thompson sampling over synthesis patterns, with priors carried over from similar tasks.

Each arm (a pattern id such as ``"tpl=contrast|shots=4|temp=0.7"``) has a Beta(alpha, beta)
belief about its mean reward. A fractional reward r in [0, 1] counts as r successes and 1 - r
failures (Agrawal & Goyal 2012). The bandit is immutable: ``update`` returns a new one, so a
learner can keep the bandit of every step and a failed step changes nothing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any, Mapping, Sequence

import numpy as np

from streamsynth.errors import ConfigError
from streamsynth.learn.store import PatternStats, check_rewards


@dataclass(frozen=True)
class ThompsonBandit:
    """Arms with one Beta(alpha, beta) each; ``alpha[i]``/``beta[i]`` belong to ``arms[i]``."""

    arms: tuple[str, ...]
    alpha: tuple[float, ...]
    beta: tuple[float, ...]

    def __post_init__(self) -> None:
        try:
            arms = tuple(self.arms)
            alpha = tuple(float(a) for a in self.alpha)
            beta = tuple(float(b) for b in self.beta)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"a bandit needs a list of arm ids and numeric alpha and beta lists: {exc}") from exc
        if not arms or not all(isinstance(a, str) and a for a in arms):
            raise ConfigError(f"a bandit needs at least one arm, each a non-empty pattern id; got {arms!r}")
        if len(set(arms)) != len(arms):
            raise ConfigError(f"bandit arms must be distinct; {sorted(a for a in set(arms) if arms.count(a) > 1)} repeat")
        if len(alpha) != len(arms) or len(beta) != len(arms):
            raise ConfigError(
                f"a bandit needs one alpha and one beta per arm: {len(arms)} arms, {len(alpha)} alphas, {len(beta)} betas"
            )
        if not all(math.isfinite(x) and x > 0 for x in alpha + beta):
            raise ConfigError(f"bandit alpha and beta must be finite and > 0; got alpha={alpha}, beta={beta}")
        object.__setattr__(self, "arms", arms)
        object.__setattr__(self, "alpha", alpha)
        object.__setattr__(self, "beta", beta)

    @classmethod
    def uniform(cls, arms: Sequence[str], alpha: float = 1.0, beta: float = 1.0) -> ThompsonBandit:
        """Every arm starts at the same Beta(alpha, beta); (1, 1) is the flat prior."""
        return cls(tuple(arms), (alpha,) * len(arms), (beta,) * len(arms))

    @classmethod
    def with_priors(cls, arms: Sequence[str], priors: Mapping[str, tuple[float, float]]) -> ThompsonBandit:
        """Arms start at ``priors[arm]`` (alpha, beta); an arm without a prior starts at (1, 1)."""
        extra = sorted(set(priors) - set(arms))
        if extra:
            raise ConfigError(f"priors given for arms the bandit does not have: {extra}; arms are {list(arms)}")
        return cls(
            tuple(arms),
            tuple(priors.get(a, (1.0, 1.0))[0] for a in arms),
            tuple(priors.get(a, (1.0, 1.0))[1] for a in arms),
        )

    def _index(self, arm: str) -> int:
        try:
            return self.arms.index(arm)
        except ValueError:
            raise ConfigError(f"unknown bandit arm {arm!r}; arms are {list(self.arms)}") from None

    def update(self, arm: str, rewards: Sequence[float] | float) -> ThompsonBandit:
        """A new bandit with ``rewards`` (each in [0, 1]) observed on ``arm``; this one is unchanged."""
        i = self._index(arm)
        r = check_rewards(rewards, f"rewards of arm {arm!r}")
        alpha, beta = list(self.alpha), list(self.beta)
        alpha[i] += float(r.sum())
        beta[i] += float(r.size - r.sum())
        return replace(self, alpha=tuple(alpha), beta=tuple(beta))

    def allocate(self, n: int, seed: int) -> list[str]:
        """``n`` arm choices, each the argmax of one Thompson draw per arm (a batch: the beliefs do
        not change within it). The same ``seed`` gives the same choices."""
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ConfigError(f"the number of samples to allocate must be a whole number >= 0; got {n!r}")
        rng = np.random.default_rng(seed)
        draws = rng.beta(np.array(self.alpha), np.array(self.beta), size=(n, len(self.arms)))
        return [self.arms[i] for i in draws.argmax(axis=1)]

    def means(self) -> dict[str, float]:
        """Posterior mean reward of every arm: alpha / (alpha + beta)."""
        return {a: al / (al + be) for a, al, be in zip(self.arms, self.alpha, self.beta)}

    def to_state(self) -> dict[str, Any]:
        """JSON-safe data that ``from_state`` turns back into an equal bandit."""
        return {"arms": list(self.arms), "alpha": list(self.alpha), "beta": list(self.beta)}

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> ThompsonBandit:
        missing = [k for k in ("arms", "alpha", "beta") if k not in state]
        if missing:
            raise ConfigError(f"bandit state lacks {missing}; pass what ThompsonBandit.to_state() returned")
        return cls(tuple(state["arms"]), tuple(state["alpha"]), tuple(state["beta"]))


def priors_from_experience(
    stats_by_task: Mapping[str, Mapping[str, PatternStats]],
    similarity: Mapping[str, float],
    *,
    arms: Sequence[str],
    max_strength: float = 8.0,
    min_similarity: float = 0.0,
) -> dict[str, tuple[float, float]]:
    """Beta priors for ``arms`` from the rewards they earned on earlier, similar tasks.

    A task t counts with weight ``w_t = min(similarity[t], 1)`` if ``similarity[t] > 0`` and
    ``>= min_similarity``; tasks missing from ``similarity``, dissimilar or negative ones count 0.
    For an arm with ``n_t`` rewards of mean ``m_t`` on task t:

        c_t  = w_t * n_t                               (effective count from task t)
        mean = sum_t c_t * m_t / sum_t c_t             (similarity- and count-weighted mean)
        s    = min(sum_t c_t, max_strength)            (the prior is worth at most max_strength rewards)
        alpha = 1 + s * mean,  beta = 1 + s * (1 - mean)

    so a few rewards on this task can overrule what other tasks suggest. An arm no counted task
    tried keeps the flat prior (1, 1).
    """
    if not (isinstance(max_strength, (int, float)) and math.isfinite(max_strength) and max_strength >= 0):
        raise ConfigError(f"max_strength must be a finite number >= 0 (pseudo-observations); got {max_strength!r}")
    if not (isinstance(min_similarity, (int, float)) and math.isfinite(min_similarity)):
        raise ConfigError(f"min_similarity must be a finite number; got {min_similarity!r}")
    weights = {t: min(float(s), 1.0) for t, s in sorted(similarity.items()) if s > 0 and s >= min_similarity}
    priors: dict[str, tuple[float, float]] = {}
    for arm in arms:
        seen = [(w * st.n, st.mean) for t, w in weights.items() if (st := stats_by_task.get(t, {}).get(arm)) and st.n > 0]
        total = sum(c for c, _ in seen)
        if total <= 0:
            priors[arm] = (1.0, 1.0)
            continue
        mean = sum(c * m for c, m in seen) / total
        s = min(total, float(max_strength))
        priors[arm] = (1.0 + s * mean, 1.0 + s * (1.0 - mean))
    return priors
