"""Selectors: choose the final set from the accepted samples. One verb, ``select``.

``KeepAll`` keeps everything. ``LabelBalance`` keeps the label shares a classification task
asked for. ``MMRSelector`` and ``FacilityLocationSelector`` order the accepted samples best first
by quality and diversity over sentence embeddings, taking turns over the labels, and keep the first
``k`` (or ``fraction``) of them.

A selector may also have ``explain(left_out, task, samples) -> list[str]``: for each sample it
left out of ``samples``, the reason it was not kept (the run writes it into ``rejected.jsonl``).
"""

from __future__ import annotations

import abc
import math
from collections import Counter
from typing import Any, Callable, Mapping, Protocol, Sequence, runtime_checkable

import numpy as np

from streamsynth.errors import ConfigError
from streamsynth.eval.student import example_text
from streamsynth.records import Sample
from streamsynth.state import Stateful, component
from streamsynth.task import Task


@runtime_checkable
class Selector(Protocol):
    name: str

    def select(self, samples: Sequence[Sample], task: Task, *, seed: int) -> list[Sample]:
        """Return the kept samples; the ones left out are rejected with a reason by the caller."""
        ...


@component("keep_all")
class KeepAll(Stateful):
    """Keep every sample that passed the checks, in order."""

    name = "keep_all"

    def select(self, samples: Sequence[Sample], task: Task, *, seed: int) -> list[Sample]:
        return [s for s in samples if s.accepted]


@component("label_balance")
class LabelBalance(Stateful):
    """Keep no label more than ``max_ratio`` times as often as the rarest, counting the seeds.

    Why: the generator asks for every label equally often, but checks reject unequally. A small
    synthesizer writes text that sounds positive whatever label it was asked for, and the label
    check rightly rejects most of the "negative" ones. So a run of the sst2 example kept 136
    positive and 40 negative samples, and the benchmark student trained on the seeds plus that set
    scored below the seeds alone: 0.604 on the test split, against 0.636. A skewed label prior is
    the classic harm of imbalanced training data (He and Garcia, "Learning from imbalanced data",
    IEEE TKDE 2009). The measured caps and how the default was chosen are in docs/results.md
    (``bench/label_balance.py``).

    The shares that matter are those a student trains on: the seeds plus the samples. So a label's
    total is its seeds plus its samples, and each label keeps at most ``ceil(max_ratio * rarest
    total) - its seeds`` samples, the ones with the best :func:`sample_quality` (ties: sample
    order); the kept stay in sample order. Counting the seeds keeps one stray sample of a rare
    label from cutting every other label to two, and lets a label with no sample at all cap the
    others by its seeds; a label with no seeds sets no bar (one stray sample of it would cap every
    other label near nothing) but is capped like the others. ``max_ratio=0`` keeps everything. Only
    classification tasks are balanced.
    """

    name = "label_balance"

    def __init__(self, max_ratio: float = 1.5) -> None:
        if not (max_ratio == 0 or 1 <= max_ratio < math.inf):
            raise ConfigError(f"max_ratio must be 0 (off) or a number of at least 1, got {max_ratio!r}")
        self.max_ratio = float(max_ratio)

    def _plan(self, counts: Mapping[str, int], task: Task) -> tuple[dict[str, int], str, dict[str, int]] | None:
        """(most samples to keep per label, the rarest label, each label's seeds + samples), or None: keep all."""
        if not self.max_ratio or not task.label_names:
            return None
        seeds = Counter(e.output for e in task.seeds)
        totals = {lab: seeds[lab] + counts.get(lab, 0) for lab in task.label_names}
        # the labels with seeds set the bar: one stray sample of a label without seeds would otherwise
        # be the rarest and cap every other label near nothing (a label without seeds is capped too)
        live = {lab: n for lab, n in totals.items() if seeds[lab]} or {lab: n for lab, n in totals.items() if n}
        if not live:
            return None
        rarest = min(live, key=lambda lab: (live[lab], lab))
        most = math.ceil(round(self.max_ratio * live[rarest], 9))  # round first: 1.1 * 50 is 55.000000000000007
        caps = {lab: max(0, most - seeds[lab]) for lab in set(counts) | set(task.label_names)}
        return caps, rarest, totals

    def kept_count(self, label_counts: Mapping[str, int], task: Task) -> int:
        """How many samples ``select`` keeps of accepted samples with these label counts (a run
        with a target stops when this reaches the target, so the data set has that many)."""
        plan = self._plan(label_counts, task)
        if plan is None:
            return sum(label_counts.values())
        return sum(min(n, plan[0][lab]) for lab, n in label_counts.items())

    def select(self, samples: Sequence[Sample], task: Task, *, seed: int) -> list[Sample]:
        pool = [s for s in samples if s.accepted]
        plan = self._plan(Counter(s.output for s in pool), task)
        if plan is None:
            return pool
        caps = plan[0]
        by_label: dict[str, list[int]] = {}
        for i, s in enumerate(pool):
            by_label.setdefault(s.output, []).append(i)
        keep: set[int] = set()
        for lab, idx in by_label.items():
            ranked = sorted(idx, key=lambda i: (-sample_quality(pool[i]), i))
            keep.update(ranked[: caps[lab]])
        return [s for i, s in enumerate(pool) if i in keep]

    def explain(self, left_out: Sequence[Sample], task: Task, samples: Sequence[Sample]) -> list[str]:
        """Why each of ``left_out`` was not kept, given the samples ``select`` chose from."""
        counts = Counter(s.output for s in samples if s.accepted)
        plan = self._plan(counts, task)
        if plan is None:
            return ["not chosen by label_balance"] * len(left_out)
        caps, rarest, totals = plan
        seeds = Counter(e.output for e in task.seeds)
        missing = [lab for lab in task.label_names if not counts.get(lab)]
        tail = (f"; {rarest!r}, the rarest, has {totals[rarest]} ({seeds[rarest]} seeds + {counts.get(rarest, 0)} samples), "
                f"and no label may have more than {self.max_ratio:g}x that (generation.max_label_ratio)")
        if missing:
            tail += f"; no sample of {', '.join(map(repr, missing))} passed the checks"
        return [f"label balance: {counts[s.output]} samples of {s.output!r} passed the checks and {seeds[s.output]} seeds "
                f"stand for it; kept at most {caps[s.output]}, the best-scored" + tail for s in left_out]


# -- shared by the embedding selectors and the SynLearner rewards (streamsynth.learn.feedback) ---------------

#: the label-consistency margin (own seed centroid minus nearest other, in cosine) that maps to 0.73:
#: margins on sst2 with MiniLM mostly lie within +-0.1, so a logistic of margin / 0.05 spreads them over (0, 1)
MARGIN_SCALE = 0.05


def margin_to_unit(margin: np.ndarray | float, scale: float = MARGIN_SCALE) -> np.ndarray:
    """A cosine margin mapped to (0, 1) by a logistic: 0 -> 0.5, +scale -> 0.73, -scale -> 0.27."""
    return 1.0 / (1.0 + np.exp(-np.asarray(margin, dtype=np.float64) / scale))


def sample_text(sample: Sample, task: Task) -> str:
    """The text a student (and every embedding score) sees for a sample; a missing field reads as empty."""
    return example_text({f: sample.inputs.get(f, "") for f in task.input_fields}, task.input_fields)


def sample_quality(sample: Sample) -> float:
    """How good a sample is by its own scores, in [0, 1]: its ``reward`` when a reward was given,
    else its ``label_consistency`` margin through :func:`margin_to_unit`, else 1 (no evidence)."""
    if "reward" in sample.scores:
        return float(np.clip(sample.scores["reward"], 0.0, 1.0))
    if "label_consistency" in sample.scores:
        return float(margin_to_unit(sample.scores["label_consistency"]))
    return 1.0


class UsesEmbedder(Stateful):
    """Mixin: an ``embedder`` argument that is not configuration, loaded lazily into ``embedder_``.

    ``embedder`` is anything with ``encode(texts) -> array of unit rows``; None means the packaged
    MiniLM (:class:`streamsynth.eval.embedder.Embedder`), loaded on first use, once per component.
    It never enters ``config_state``, so a component's state is the same whichever embedder it holds.
    """

    embedder: Any = None

    def config_state(self) -> dict[str, Any]:
        state = super().config_state()
        state["params"].pop("embedder", None)
        return state

    def encoder(self) -> Any:
        """The embedder to use: the one given, else the packaged MiniLM (loaded once, kept in ``embedder_``)."""
        if getattr(self, "embedder_", None) is None:
            if self.embedder is not None:
                self.embedder_ = self.embedder
            else:
                from streamsynth.eval.embedder import Embedder

                self.embedder_ = Embedder()
        return self.embedder_

    def embed(self, samples: Sequence[Sample], task: Task) -> np.ndarray:
        """Unit vectors of the samples' texts, one row a sample."""
        return np.asarray(self.encoder().encode([sample_text(s, task) for s in samples]), dtype=np.float64)


def _how_many(n: int, k: int | None, fraction: float | None) -> int:
    if k is not None:
        return min(n, k)
    if fraction is not None:
        return int(round(fraction * n))
    return n


def _check_size(k: int | None, fraction: float | None, balance: float) -> None:
    if k is not None and fraction is not None:
        raise ConfigError(f"give k or fraction, not both (got k={k}, fraction={fraction})")
    if k is not None and (not isinstance(k, int) or k < 0):
        raise ConfigError(f"k must be a whole number >= 0, got {k!r}; or leave it out to rank every sample")
    if fraction is not None and not 0.0 <= fraction <= 1.0:
        raise ConfigError(f"fraction must be within [0, 1], got {fraction!r}")
    if not 0.0 <= balance <= 1.0:
        raise ConfigError(f"balance must be within [0, 1] (1: quality only, 0: diversity only), got {balance!r}")


def label_round_robin(labels: Sequence[str], order: Sequence[str], n: int, pick: Callable[[list[int]], int]) -> list[int]:
    """Greedy selection that takes turns over the labels, so no label is starved.

    ``pick(candidates)`` returns the best of the given indices (which are in sample order) and
    updates whatever the greedy criterion remembers of the chosen; a label whose samples are all
    chosen drops out of the turn. Returns the chosen indices, first chosen first.
    """
    pools = {lab: [i for i, y in enumerate(labels) if y == lab] for lab in order}
    chosen: list[int] = []
    while len(chosen) < n:
        progressed = False
        for lab in order:
            if len(chosen) >= n:
                break
            if pools[lab]:
                best = pick(pools[lab])
                pools[lab].remove(best)
                chosen.append(best)
                progressed = True
        if not progressed:
            break
    return chosen


class _GreedySelector(UsesEmbedder, abc.ABC):
    """The shared frame of the embedding selectors: accepted samples, qualities, similarities, label turns."""

    name = ""

    def __init__(self, k: int | None = None, fraction: float | None = None, balance: float = 0.7, embedder: Any = None) -> None:
        _check_size(k, fraction, balance)
        self.k = k
        self.fraction = fraction
        self.balance = balance
        self.embedder = embedder

    def select(self, samples: Sequence[Sample], task: Task, *, seed: int) -> list[Sample]:
        """The accepted samples, best first (deterministic: ``seed`` is not needed, ties go to sample order)."""
        pool = [s for s in samples if s.accepted]
        n = _how_many(len(pool), self.k, self.fraction)
        if n == 0:
            return []
        vecs = self.embed(pool, task)
        sims = vecs @ vecs.T
        quality = np.array([sample_quality(s) for s in pool])
        labels = [s.output for s in pool]
        order = [lab for lab in task.label_names if lab in labels]
        order += [lab for lab in dict.fromkeys(labels) if lab not in order]
        chosen = label_round_robin(labels, order, n, self._picker(sims, quality))
        return [pool[i] for i in chosen]

    @abc.abstractmethod
    def _picker(self, sims: np.ndarray, quality: np.ndarray) -> Callable[[list[int]], int]:
        """The greedy rule: given the indices chosen so far, the index to take next (each subclass's own)."""


@component("mmr")
class MMRSelector(_GreedySelector):
    """Maximal marginal relevance: quality against similarity to what is already chosen.

    Each turn takes the sample maximising ``balance * quality - (1 - balance) * max cosine to the
    chosen`` among the current label's samples. Carbonell & Goldstein, "The use of MMR,
    diversity-based reranking..." (SIGIR 1998). Why: synthetic sets from one prompt repeat
    themselves; a near-duplicate adds little to a student, so it should come after a new sample.
    With ``k`` and ``fraction`` unset it keeps every accepted sample and only orders them (best
    first), so a caller such as ``DevUtility.best_prefix`` can cut the list where it helps.
    """

    name = "mmr"

    def _picker(self, sims: np.ndarray, quality: np.ndarray) -> Callable[[list[int]], int]:
        nearest = np.zeros(len(quality))  # max similarity to any chosen sample (none yet: 0)

        def pick(candidates: list[int]) -> int:
            idx = np.asarray(candidates)
            gain = self.balance * quality[idx] - (1.0 - self.balance) * nearest[idx]
            best = int(idx[int(np.argmax(gain))])
            np.maximum(nearest, sims[best], out=nearest)
            return best

        return pick


@component("facility_location")
class FacilityLocationSelector(_GreedySelector):
    """Greedy quality-weighted facility location: choose samples that together stand near all of them.

    Coverage is ``sum_j max_{c in chosen} sim(j, c)`` (cosines clipped at 0); each turn takes the
    sample maximising ``balance * quality + (1 - balance) * coverage gain / n`` (the gain divided
    by the number of samples, so both parts lie in [0, 1]). Facility location is the submodular
    coverage objective of data-subset selection (Mirzasoleiman et al., CRAIG, ICML 2020; Kaushal et
    al., SUBMODLIB); the greedy choice is within 1 - 1/e of the best. Unlike MMR it prefers a sample
    that represents many others over an outlier.
    """

    name = "facility_location"

    def _picker(self, sims: np.ndarray, quality: np.ndarray) -> Callable[[list[int]], int]:
        sims = np.clip(sims, 0.0, None)
        covered = np.zeros(len(quality))  # per sample: its best similarity to the chosen

        def pick(candidates: list[int]) -> int:
            idx = np.asarray(candidates)
            coverage = np.maximum(sims[idx] - covered, 0.0).sum(axis=1) / len(quality)
            gain = self.balance * quality[idx] + (1.0 - self.balance) * coverage
            best = int(idx[int(np.argmax(gain))])
            np.maximum(covered, sims[best], out=covered)
            return best

        return pick
