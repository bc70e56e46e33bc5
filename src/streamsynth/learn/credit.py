"""Credit synthesis patterns with what their samples do to the student, not only with per-sample rewards.

The per-sample reward (label agreement, quality, diversity) says whether a sample looks right. It
does not see whether samples of a kind help the model the data is for: on ag_news, samples written
with three demonstrations lowered a held-out score that samples written with one raised, while
both earned the same rewards (docs/results.md, "Which pattern parts write samples that help?").

``PatternCredit.credit`` measures it during a task. A pattern id is made of parts
(``tpl=contrast|shots=3|temp=0.7``). For every part ``v`` with at least ``min_part`` samples it
trains the benchmark student on the seeds plus all accepted samples, and on the seeds plus all but
part ``v``'s samples, on dev data (or the repeated seed cross-validation when there is none; never
the test split), as :meth:`DevUtility.leave_out` does:

    c_v  = U(all) - U(all without v's samples)          leave-part-out contribution
    m_v  = c_v / n_v                                     per sample of v
    u_v  = N * (m_v - sum_{v' in dim} c_v' / sum_{v' in dim} n_v') * n_v / (n_v + shrink)
                                                         per-sample value relative to the parts of its
                                                         dimension, in accuracy over a set of N samples,
                                                         shrunk toward 0 when the part is small
    shift(s) = clip(weight * sum over the parts v of s's pattern of u_v, -max_shift, max_shift)

``u_v`` is how much more a set of N samples like part v's would add than the average of its
dimension (template, shots or temperature): parts of one dimension are compared with each other,
so a dimension where every sample has the same value shifts nothing, and before shrinkage the shifts
of a dimension sum to zero over its samples (the mean reward of a task stays where it was; after
shrinkage it moves a little toward the larger parts' side). ``m_v`` of a small part is mostly noise (one student's luck divided by a
few samples, then scaled by N), so its value is shrunk toward the dimension's mean by
``n_v / (n_v + shrink)``, the posterior-mean weight of ``n_v`` noisy observations against a prior
worth ``shrink`` of them (empirical-Bayes shrinkage, Efron and Morris 1975): with ``shrink`` 10 a
part of 3 samples keeps 23% of its raw value, one of 40 keeps 80%. The learner adds ``shift(s)`` to
the sample's reward (clipped to [0, 1]) before the pattern policy and the experience store see it. This is data valuation by groups
(leave-one-out over a group of samples, as in Data Shapley's leave-one-out baseline, Ghorbani &
Zou 2019) applied to the choices that made the samples.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from streamsynth.errors import ConfigError
from streamsynth.records import Sample
from streamsynth.task import Task

#: how many samples' worth of prior pulls a part's per-sample value toward its dimension's mean
CREDIT_SHRINK = 10.0


def pattern_parts(pattern_id: str) -> tuple[str, ...]:
    """The parts of a pattern id (``"tpl=plain|shots=1|temp=1"`` -> its three ``name=value`` parts)."""
    return tuple(p for p in pattern_id.split("|") if "=" in p) if pattern_id else ()


def _dimension(part: str) -> str:
    return part.split("=", 1)[0]


@dataclass(frozen=True)
class PartCredit:
    """One pattern part: its samples, the utility without them, and what it is worth per sample."""

    n: int
    without: float
    contribution: float
    value: float

    def to_dict(self) -> dict[str, float]:
        return {"n": self.n, "without": round(self.without, 4), "contribution": round(self.contribution, 4),
                "value": round(self.value, 4)}


@dataclass(frozen=True)
class CreditResult:
    """What ``PatternCredit.credit`` found: utility with every sample, each part's credit, and the
    reward shift of every sample (sample id -> shift; 0 for samples whose parts were not credited)."""

    utility: float
    parts: Mapping[str, PartCredit] = field(default_factory=dict)
    shift: Mapping[str, float] = field(default_factory=dict)

    def apply(self, rewards: Mapping[str, float]) -> dict[str, float]:
        """``rewards`` with every sample's shift added, each clipped to [0, 1]; a new dict."""
        return {sid: min(1.0, max(0.0, float(r) + self.shift.get(sid, 0.0))) for sid, r in rewards.items()}

    def summary(self) -> dict[str, Any]:
        return {"utility": round(self.utility, 4), "parts": {p: c.to_dict() for p, c in sorted(self.parts.items())}}


class PatternCredit:
    """Leave-part-out utility credit for the parts of synthesis patterns (see the module docstring).

    ``utility`` is a :class:`~streamsynth.learn.feedback.DevUtility` (it owns the student, the dev
    rows and the cross-validation); ``weight`` scales the shift (0 turns credit off), ``max_shift``
    bounds it, parts with fewer than ``min_part`` samples are not credited (too few to tell), and
    ``shrink`` (samples' worth of prior at the dimension's mean; 0: none) tempers small parts.
    """

    def __init__(self, utility: Any, *, weight: float = 1.0, max_shift: float = 0.5, min_part: int = 3,
                 shrink: float = CREDIT_SHRINK) -> None:
        if not (isinstance(weight, (int, float)) and math.isfinite(weight) and weight >= 0):
            raise ConfigError(f"credit weight must be a number >= 0 (0 turns credit off); got {weight!r}")
        if not (isinstance(max_shift, (int, float)) and 0 <= max_shift <= 1):
            raise ConfigError(f"credit max_shift must lie within [0, 1] (a reward shift); got {max_shift!r}")
        if isinstance(min_part, bool) or not isinstance(min_part, int) or min_part < 1:
            raise ConfigError(f"credit min_part must be a whole number >= 1; got {min_part!r}")
        if isinstance(shrink, bool) or not (isinstance(shrink, (int, float)) and math.isfinite(shrink) and shrink >= 0):
            raise ConfigError(f"credit shrink must be a number >= 0 (samples' worth of prior; 0: none); got {shrink!r}")
        self.utility = utility
        self.weight = float(weight)
        self.max_shift = float(max_shift)
        self.min_part = min_part
        self.shrink = float(shrink)

    def credit(self, task: Task, samples: Sequence[Sample]) -> CreditResult:
        """Credit the pattern parts of ``samples`` (the accepted ones) by leave-part-out utility."""
        samples = [s for s in samples if s.accepted]
        groups: dict[str, list[str]] = {}
        for s in samples:
            for part in pattern_parts(s.provenance.pattern):
                groups.setdefault(part, []).append(s.id)
        n_all = len(samples)
        # a dimension is compared within itself: it needs two values with enough samples each
        by_dim: dict[str, list[str]] = {}
        for part, ids in groups.items():
            if len(ids) >= self.min_part:
                by_dim.setdefault(_dimension(part), []).append(part)
        by_dim = {d: parts for d, parts in by_dim.items() if len(parts) >= 2}
        counted = {p: groups[p] for parts in by_dim.values() for p in parts}
        if self.weight == 0 or not counted:
            return CreditResult(utility=float("nan"))  # nothing to compare: no student is trained
        everything, without = self.utility.leave_out(task, samples, counted)
        contribution = {p: everything - without[p] for p in counted}
        dim_mean = {d: sum(contribution[p] for p in parts) / sum(len(counted[p]) for p in parts)
                    for d, parts in by_dim.items()}
        credits = {}
        for p in counted:
            n = len(counted[p])
            value = n_all * (contribution[p] / n - dim_mean[_dimension(p)]) * n / (n + self.shrink)
            credits[p] = PartCredit(len(counted[p]), without[p], contribution[p], value)
        shift = {}
        for s in samples:
            total = sum(credits[p].value for p in pattern_parts(s.provenance.pattern) if p in credits)
            shift[s.id] = min(self.max_shift, max(-self.max_shift, self.weight * total))
        return CreditResult(utility=everything, parts=credits, shift=shift)


__all__ = ["CREDIT_SHRINK", "CreditResult", "PartCredit", "PatternCredit", "pattern_parts"]
