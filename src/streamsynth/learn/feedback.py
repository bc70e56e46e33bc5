"""Feedback for SynLearner: per-sample rewards, set diversity, and the utility of a set on dev data.

SynLearner (StreamSynth, arXiv 2605.29940) learns which synthesis patterns to use from a reward
with three parts: does the text carry the label it was written for, is it a well-made example
(valid, the right length, no code or instruction echo, no repetition), and does it add something
new to the set (density-based diversity). Each part here is a component with one verb:

- ``LabelAgreement.score``: agreement of independent signals that the text carries its label.
- ``QualityReward.score``: generation quality plus compliance with the requested attributes.
- ``SetDiversity.score``: StreamSynth's density diversity of each sample within its set.
- ``Reward.score``: the weighted composite, one ``SampleFeedback`` per sample.
- ``DevUtility.evaluate`` / ``best_prefix``: does the set help the benchmark student on dev data
  (or, without dev data, in cross-validation over the seeds)? The "do no harm" gate: keep less,
  or none, when the synthetic data does not help.

Every embedding part takes an optional ``embedder`` (``encode(texts) -> unit rows``); by default
the packaged MiniLM is loaded on first use. Only the seeds and dev data are ever read, never the
test split.
"""

from __future__ import annotations

import dataclasses
import math
import re
import warnings
from collections import Counter
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from streamsynth.errors import ConfigError, DataError
from streamsynth.eval.student import EmbeddingLogRegStudent, example_text
from streamsynth.quality.checks import _MARKUP, EchoCheck
from streamsynth.quality.clean import clean_text, normalize_for_dedup, strip_label_tag
from streamsynth.quality.label_check import SeedLabelConsistencyCheck
from streamsynth.quality.select import UsesEmbedder, margin_to_unit, sample_text
from streamsynth.records import Example, Sample
from streamsynth.state import Stateful, component
from streamsynth.task import Task


def normalized_weights(weights: Mapping[str, float], known: Sequence[str], *, what: str) -> dict[str, float]:
    """``weights`` checked (known names, finite, >= 0, positive sum) and scaled to sum to 1; missing names get 0."""
    unknown = sorted(set(weights) - set(known))
    if unknown:
        raise ConfigError(f"{what}: unknown part {unknown[0]!r}; the parts are {list(known)}")
    for k, v in weights.items():
        if not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
            raise ConfigError(f"{what}: the weight of {k!r} must be a finite number >= 0, got {v!r}")
    total = float(sum(weights.values()))
    if total <= 0:
        raise ConfigError(f"{what}: the weights sum to 0; give at least one part a positive weight")
    return {k: float(weights.get(k, 0.0)) / total for k in known}


def _weighted_mean(parts: Mapping[str, np.ndarray], weights: Mapping[str, float], n: int) -> np.ndarray:
    """Per sample, the weighted mean of the parts that are not NaN there (0.5 when none are)."""
    num, den = np.zeros(n), np.zeros(n)
    for name, values in parts.items():
        w = weights.get(name, 0.0)
        have = ~np.isnan(values)
        num[have] += w * values[have]
        den[have] += w
    out = np.full(n, 0.5)
    np.divide(num, den, out=out, where=den > 0)
    return out


# -- label agreement --------------------------------------------------------------------------------------

LABEL_SIGNALS = ("margin", "classifier", "votes")


def chance_rescaled(p: np.ndarray, num_labels: int) -> np.ndarray:
    """A classifier's probability for the intended label, rescaled so chance (1/K) maps to 0.5.

    Piecewise linear: [0, 1/K] -> [0, 0.5] and [1/K, 1] -> [0.5, 1]. Why: with K labels a raw
    probability of 1/K means "no evidence", and should read the same as the other signals' 0.5.
    """
    chance = 1.0 / num_labels
    p = np.clip(np.asarray(p, dtype=np.float64), 0.0, 1.0)
    return np.where(p < chance, 0.5 * p / chance, 0.5 + 0.5 * (p - chance) / (1.0 - chance))


@dataclass(frozen=True)
class _SeedModel:
    """What ``LabelAgreement`` fits on a task's seeds: label centroids and a classifier."""

    labels: tuple[str, ...]  # labels with seeds, in the task's order (rows of ``centroids``)
    centroids: np.ndarray
    student: EmbeddingLogRegStudent


@component("label_agreement")
class LabelAgreement(UsesEmbedder):
    """Does the TEXT carry the label it was written for? Independent signals, each in [0, 1]:

    - ``margin``: cosine to the own label's seed centroid minus the nearest other label's (the
      ``label_consistency`` check's margin), through a logistic of scale 0.05 (0 -> 0.5).
    - ``classifier``: a logistic regression (C=1, the benchmark student's) fitted on the seed
      embeddings; its probability for the intended label, rescaled by :func:`chance_rescaled` so
      chance level (1/num_labels) is 0.5.
    - ``votes``: ``sample.scores["self_consistency"]``, the share of the synthesizer's own votes
      for the label, where a method recorded it (NaN elsewhere).

    ``score`` is the weighted mean of the signals a sample has (``weights`` over the names above,
    equal by default). A sample whose label is not one of the task's scores 0 on margin and
    classifier; a label without seeds, or a task whose seeds have fewer than two labels, 0.5.
    Only ``task.seeds`` are read. ZeroGen and SuperGen filter generated sets by such agreement;
    SynLearner rewards it.
    """

    name = "label_agreement"

    def __init__(self, embedder: Any = None, weights: Mapping[str, float] | None = None) -> None:
        self.embedder = embedder
        self.weights = dict(weights) if weights is not None else None
        self._weights = normalized_weights(self.weights or dict.fromkeys(LABEL_SIGNALS, 1.0), LABEL_SIGNALS,
                                           what="LabelAgreement weights")
        self._fits: dict[Any, _SeedModel | None] = {}

    def score(self, samples: Sequence[Sample], task: Task) -> np.ndarray:
        return self.score_vectors(self.embed(samples, task), samples, task)

    def signals(self, samples: Sequence[Sample], task: Task) -> dict[str, np.ndarray]:
        return self.signals_vectors(self.embed(samples, task), samples, task)

    def score_vectors(self, vecs: np.ndarray, samples: Sequence[Sample], task: Task) -> np.ndarray:
        """``score`` for samples already embedded (``vecs``: their unit rows)."""
        return _weighted_mean(self.signals_vectors(vecs, samples, task), self._weights, len(samples))

    def signals_vectors(self, vecs: np.ndarray, samples: Sequence[Sample], task: Task) -> dict[str, np.ndarray]:
        """``signals`` for samples already embedded (``vecs``: their unit rows)."""
        n = len(samples)
        votes = np.array([float(s.scores["self_consistency"]) if "self_consistency" in s.scores else np.nan for s in samples])
        margin, classifier = np.full(n, 0.5), np.full(n, 0.5)
        fit = self._fit(task)
        if fit is not None and n:
            own = np.array([fit.labels.index(s.output) if s.output in fit.labels else -1 for s in samples])
            known = own >= 0
            sims = vecs @ fit.centroids.T
            other = np.where(np.arange(len(fit.labels)) == own[:, None], -np.inf, sims).max(axis=1)
            margin[known] = margin_to_unit(sims[known, own[known]] - other[known])
            proba = fit.student.classifier_.predict_proba(vecs)
            classes = fit.student.classes_
            col = np.array([classes.index(s.output) if s.output in classes else -1 for s in samples])
            classifier[known] = chance_rescaled(proba[known, col[known]], len(classes))
            foreign = np.array([bool(task.labels) and s.output not in task.label_names for s in samples])
            margin[foreign] = classifier[foreign] = 0.0
        return {"margin": margin, "classifier": classifier, "votes": votes}

    def _fit(self, task: Task) -> _SeedModel | None:
        """Centroids and classifier on the task's seeds, once per distinct seed set (None: < 2 labels)."""
        key = (task.input_fields, tuple((example_text(e.inputs, task.input_fields), e.output) for e in task.seeds))
        if key not in self._fits:
            self._fits[key] = None
            check = SeedLabelConsistencyCheck(embedder=self.encoder())
            check.start(task)  # the label_consistency check's centroids: one definition of the margin
            if len(check.labels_) >= 2:
                seeds = [e for e in task.seeds if e.output in check.labels_]
                student = EmbeddingLogRegStudent(embedder=self.encoder(), C=1.0)
                student.train([example_text(e.inputs, task.input_fields) for e in seeds], [e.output for e in seeds])
                self._fits[key] = _SeedModel(check.labels_, np.asarray(check.centroids_, dtype=np.float64), student)
        return self._fits[key]


# -- generation quality -----------------------------------------------------------------------------------

QUALITY_PARTS = ("well_formed", "length", "echo", "markup", "repetition", "attributes")

# instruction words that StreamSynth's echo check and clean_text do not already catch
_INSTRUCTION = re.compile(r"\blabell?ed\b|\b(?:sentence|review|label)\s*:", re.IGNORECASE)
_ORDER = re.compile(r"^\s*(?:write|generate|create|compose)\b", re.IGNORECASE)  # an echo for classification only
_CODE = re.compile(
    r"^\s*(?:def|function)\s+\w+\s*\(|^\s*class\s+\w+\s*[:({]|^\s*(?:import\s+\w+|from\s+[\w.]+\s+import\b|#include\b)"
    r"|\w+\.\w+\([^()]*\)|\w+\([^()]*\)\s*[{;]|[;{}]\s*$|[=!]=|=>|&&|\|\|",
    re.MULTILINE,
)
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
_NUMBERS = {"one": 1, "a": 1, "single": 1, "two": 2, "three": 3, "four": 4, "five": 5}
_SENTENCES = re.compile(r"\b(\d+|one|a|single|two|three|four|five)\s+sentences?\b")
#: word-count bounds for length attributes that name no sentence count: (min words, max words)
_LENGTH_WORDS = (("very short", (1, 12)), ("very long", (40, None)), ("short", (1, 25)), ("brief", (1, 25)),
                 ("medium", (10, 50)), ("long", (25, None)), ("detailed", (25, None)), ("paragraph", (40, None)))
_TOPIC_ATTRIBUTES = ("topic", "aspect", "subject", "theme")
_STOPWORDS = frozenset("the a an and or of to in on for with about from by at its it this that is are be "
                       "other general some any".split())


def _sentences(text: str) -> list[str]:
    return [p for p in _SENTENCE_END.split(text.strip()) if normalize_for_dedup(p)]


def length_compliance(value: str, text: str) -> float | None:
    """How well ``text`` fits a length attribute ("very short", "one sentence", "two sentences", ...),
    in [0, 1]; None when the value names no length this understands."""
    v = value.lower()
    m = _SENTENCES.search(v)
    if m:
        want = int(m.group(1)) if m.group(1).isdigit() else _NUMBERS[m.group(1)]
        return 1.0 / (1.0 + abs(len(_sentences(text)) - want))
    words = len(normalize_for_dedup(text).split())
    for phrase, (lo, hi) in _LENGTH_WORDS:
        if phrase in v:
            if words < lo:
                return words / lo
            return 1.0 if hi is None or words <= hi else hi / words
    return None


def topic_compliance(value: str, text: str) -> float | None:
    """1 when a content word of the topic (or a word it begins, up to 5 letters: "plot" ~ "plots")
    is in the text, else 0; None when the topic has no content word."""
    wanted = [w for w in normalize_for_dedup(value).split() if len(w) >= 3 and w not in _STOPWORDS]
    if not wanted:
        return None
    words = normalize_for_dedup(text).split()
    return float(any(t.startswith(w[:5]) for w in wanted for t in words))


def repetition_score(text: str) -> float:
    """1 for text that does not repeat itself, falling to 0 as half its word trigrams, or half its
    sentences, are repeats of earlier ones."""
    words = normalize_for_dedup(text).split()
    grams = list(zip(words, words[1:], words[2:]))
    sentences = [normalize_for_dedup(s) for s in _sentences(text)]
    repeated = max(1 - len(set(grams)) / len(grams) if grams else 0.0,
                   1 - len(set(sentences)) / len(sentences) if sentences else 0.0)
    return float(np.clip(1.0 - 2.0 * repeated, 0.0, 1.0))


def _soft_length(n: int, lo: int, hi: int) -> float:
    if n < lo:
        return n / lo
    return 1.0 if n <= hi else hi / n


@component("quality_reward")
class QualityReward(Stateful):
    """Generation quality of each sample, in [0, 1]: the product of its parts (each in [0, 1], 1 = fine).

    - ``well_formed``: every input field present and not blank (0 or 1).
    - ``length``: each field within ``task.generation.min_chars..max_chars``; outside, the ratio
      to the bound it misses (soft, not a cliff).
    - ``echo``: 0 when the text talks about the task instead of being an example: a chat preamble
      or field tag (``clean_text`` would cut it: "Here is", "Sure", "Sentence:"), the echo check's
      phrases, a label tag ("positive:" at the start, "(positive)" at the end), "labeled", and
      for classification "Write"/"Generate" at the start.
    - ``markup``: 0 for markup, URLs, chat tokens (the malformed check's) or code, where text is
      expected (not judged for code tasks).
    - ``repetition``: :func:`repetition_score`.
    - ``attributes``: compliance with ``provenance.conditioning["attributes"]``: a length attribute
      by sentence or word counts, a topic/aspect/subject by its content words; the mean of those
      judged (1 when none is). It counts half: the product uses ``0.5 + 0.5 * attributes``.

    Mirrors the "generation quality" part of the StreamSynth reward (valid, length, no code or
    instruction echo, no repetition), plus the attribute compliance AttrPrompt conditions on.
    """

    name = "quality_reward"

    def score(self, samples: Sequence[Sample], task: Task) -> np.ndarray:
        parts = self.parts(samples, task)
        out = np.ones(len(samples))
        for name in QUALITY_PARTS:
            out *= 0.5 + 0.5 * parts[name] if name == "attributes" else parts[name]
        return out

    def parts(self, samples: Sequence[Sample], task: Task) -> dict[str, np.ndarray]:
        echo_check = EchoCheck()
        rows = [self._parts(s, task, echo_check) for s in samples]
        return {name: np.array([r[name] for r in rows], dtype=np.float64) for name in QUALITY_PARTS}

    def _parts(self, sample: Sample, task: Task, echo_check: EchoCheck) -> dict[str, float]:
        fields = [sample.inputs.get(f) for f in task.input_fields]
        texts = [t if isinstance(t, str) else "" for t in fields]
        text = sample_text(sample, task)
        g = task.generation
        return {
            "well_formed": float(all(t.strip() for t in texts)),
            "length": min((_soft_length(len(t), g.min_chars, g.max_chars) for t in texts), default=0.0),
            "echo": float(not any(self._echoes(t, task) for t in texts) and echo_check.verify(sample, task).passed),
            "markup": 1.0 if task.kind == "code" else float(not any(_MARKUP.search(t) or _CODE.search(t) for t in texts)),
            "repetition": min((repetition_score(t) for t in texts), default=1.0),
            "attributes": self._attributes(sample, text),
        }

    @staticmethod
    def _echoes(text: str, task: Task) -> bool:
        if not text.strip():
            return False
        if {"preamble", "field_tag"} & set(clean_text(text, labels=task.label_names).notes):
            return True
        if task.label_names and strip_label_tag(text, task.label_names) != text.rstrip():
            return True
        if any(re.match(rf"\s*{re.escape(lab)}\s*:", text, re.IGNORECASE) for lab in task.label_names):
            return True
        return bool(_INSTRUCTION.search(text) or (task.is_classification and _ORDER.match(text)))

    @staticmethod
    def _attributes(sample: Sample, text: str) -> float:
        attrs = sample.provenance.conditioning.get("attributes") or {}
        judged = []
        for name, value in attrs.items():
            key, value = str(name).lower(), str(value)
            if key in ("length", "size"):
                judged.append(length_compliance(value, text))
            elif key in _TOPIC_ATTRIBUTES:
                judged.append(topic_compliance(value, text))
        judged = [x for x in judged if x is not None]
        return float(np.mean(judged)) if judged else 1.0


# -- set diversity ---------------------------------------------------------------------------------------


def density_diversity(vectors: np.ndarray) -> np.ndarray:
    """StreamSynth's density diversity of each vector within its set, in [0, 1].

    With ``s_j`` the cosine similarities of vector i to the others (negatives clipped to 0),
    ``rho_i = sum(s_j^2) / sum(s_j)`` (0 when the sum is 0) is the similarity-weighted mean
    similarity of i's neighbours, and ``d_i = clip(3 * (1 - rho_i), 0, 1)``: 0 for a copy of
    the others, 1 once the typical neighbour is at most 2/3 similar. ``vectors`` are unit rows.
    """
    v = np.asarray(vectors, dtype=np.float64)
    if v.ndim != 2:
        raise DataError(f"density_diversity needs a 2-d array of unit rows, got shape {v.shape}")
    s = np.clip(v @ v.T, 0.0, None)
    np.fill_diagonal(s, 0.0)
    total = s.sum(axis=1)
    rho = np.zeros(len(v))
    np.divide((s**2).sum(axis=1), total, out=rho, where=total > 0)
    return np.clip(3.0 * (1.0 - rho), 0.0, 1.0)


def distinct_n(texts: Sequence[str], n: int) -> float:
    """Distinct word n-grams over all n-grams of the texts (Li et al., 2016, "distinct-n"); 0 for none."""
    if n < 1:
        raise ConfigError(f"distinct_n needs n >= 1, got {n}")
    grams = []
    for text in texts:
        words = normalize_for_dedup(text).split()
        grams += [tuple(words[i:i + n]) for i in range(len(words) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 0.0


@component("set_diversity")
class SetDiversity(UsesEmbedder):
    """Density diversity of each sample within the set passed (see :func:`density_diversity`)."""

    name = "set_diversity"

    def __init__(self, embedder: Any = None) -> None:
        self.embedder = embedder

    def score(self, samples: Sequence[Sample], task: Task) -> np.ndarray:
        return density_diversity(self.embed(samples, task))

    def summary(self, samples: Sequence[Sample], task: Task) -> dict[str, float | int]:
        """Set-level numbers: mean density diversity, distinct-1 and distinct-2, and the set's size."""
        texts = [sample_text(s, task) for s in samples]
        dd = self.score(samples, task)
        return {"density_diversity": float(dd.mean()) if len(dd) else 0.0, "distinct_1": distinct_n(texts, 1),
                "distinct_2": distinct_n(texts, 2), "n": len(samples)}


# -- the composite reward --------------------------------------------------------------------------------

REWARD_PARTS = ("label", "quality", "diversity")
DEFAULT_REWARD_WEIGHTS: Mapping[str, float] = {"label": 0.4, "quality": 0.3, "diversity": 0.3}


@dataclass(frozen=True, slots=True)
class SampleFeedback:
    """One sample's reward and its parts, each in [0, 1]."""

    sample_id: str
    label: float
    quality: float
    diversity: float
    reward: float

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@component("reward")
class Reward(UsesEmbedder):
    """SynLearner's per-sample reward: a weighted mean of label agreement, quality and set diversity.

    ``weights`` over ``label``, ``quality``, ``diversity`` (missing ones are 0) must be >= 0 with a
    positive sum; they are normalized. One embedder serves every part and each text is embedded
    once per call. Diversity is computed within the samples passed together.
    """

    name = "reward"

    def __init__(self, weights: Mapping[str, float] | None = None, embedder: Any = None) -> None:
        self.weights = dict(weights) if weights is not None else dict(DEFAULT_REWARD_WEIGHTS)
        self._weights = normalized_weights(self.weights, REWARD_PARTS, what="Reward weights")
        self.embedder = embedder
        self._label: LabelAgreement | None = None

    def score(self, samples: Sequence[Sample], task: Task) -> list[SampleFeedback]:
        samples = list(samples)
        vecs = self.embed(samples, task)
        if self._label is None:  # kept, so its fit on the seeds is kept too
            self._label = LabelAgreement(embedder=self.encoder())
        parts = {
            "label": self._label.score_vectors(vecs, samples, task),
            "quality": QualityReward().score(samples, task),
            "diversity": density_diversity(vecs),
        }
        reward = sum(self._weights[k] * parts[k] for k in REWARD_PARTS)
        return [SampleFeedback(s.id, float(parts["label"][i]), float(parts["quality"][i]), float(parts["diversity"][i]),
                               float(reward[i])) for i, s in enumerate(samples)]


def with_feedback(samples: Sequence[Sample], feedback: Sequence[SampleFeedback]) -> list[Sample]:
    """The samples with their feedback in ``scores`` (``reward``, ``label_agreement``, ``quality``,
    ``diversity``), where the selectors read ``reward`` from. Matched by sample id."""
    by_id = {f.sample_id: f for f in feedback}
    out = []
    for s in samples:
        f = by_id.get(s.id)
        if f is not None:
            s = dataclasses.replace(s, scores={**s.scores, "reward": f.reward, "label_agreement": f.label,
                                               "quality": f.quality, "diversity": f.diversity})
        out.append(s)
    return out


# -- utility on dev data ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class UtilityResult:
    """Benchmark-student accuracy with seeds alone and with the synthetic samples added.

    ``method`` is "dev" (scored on ``task.dev``) or "cv" (cross-validation over the seeds);
    ``n_eval`` is how many labelled rows were scored (summed over folds and repeats, for "cv").
    """

    method: str
    seed_only: float
    with_synthetic: float
    gain: float
    n_eval: int


#: the dev gate's defaults (the stream's ``selection:`` block starts from them): the prefixes tried,
#: the least gain kept, and how many paired standard errors the gain must exceed (0.5: chosen by
#: replaying the gate, docs/results.md "How sure must the gate be?")
GATE_FRACTIONS: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0)
GATE_MIN_GAIN = 0.005
GATE_CONFIDENCE_Z = 0.5


@dataclass(frozen=True, slots=True)
class PrefixChoice:
    """How many of a ranked list to keep: ``scores`` maps a kept count to its utility (0: seeds alone)."""

    keep: int
    scores: Mapping[int, float]
    seed_only: float
    reason: str


@dataclass(frozen=True)
class _Split:
    """Train on ``train`` (+ synthetic samples), score on the rows whose vectors are ``test_vecs``."""

    train: tuple[Example, ...]
    test_vecs: np.ndarray
    test_labels: np.ndarray
    #: ids of the seeds scored in this split (cross-validation): a sample whose prompt showed one of
    #: them is left out of this split's training, or it would leak the held-out seed into it
    held_out_ids: frozenset[str] = frozenset()
    #: one id per scored row, in the order of ``test_vecs``: repeated cross-validation scores a seed
    #: once per repeat, and the standard error counts each seed once
    test_ids: tuple[str, ...] = ()


@component("dev_utility")
class DevUtility(UsesEmbedder):
    """Does a synthetic set help the benchmark student? (the "do no harm" gate of SynLearner)

    The student is the benchmark's (:class:`EmbeddingLogRegStudent`: logistic regression, ``C``,
    on the embedder's vectors). With ``task.dev`` it is trained on the seeds, and on the seeds plus
    the samples, and both are scored on the dev rows. Without dev rows: stratified ``folds``-fold
    cross-validation over the seeds, repeated ``repeats`` times with different fold draws (train on
    the other folds' seeds plus the samples whose prompts showed none of the held-out seeds, score
    on the held-out seeds; mean over all folds). The test split is never read. Samples are used as
    given: pass the accepted ones. The dev rows' vectors are computed once per task.

    Leaving out the samples that were written from a held-out seed matters: a sample written with
    a seed as its demonstration is often a paraphrase of it, and training on it makes the held-out
    seed easy (measured on trec: cross-validation said 0.58 -> 0.81 with all samples, the test
    split said 0.564 -> 0.558).

    Repeating the cross-validation matters too: with 8 seeds a label, which seeds land in which fold
    moves one draw's estimate by several points (docs/learning.md has the measurements), and the
    gate's choice of a prefix with it. The mean over repeats keeps the rows the same and averages
    that draw out; the standard error of a gain counts each seed once (its differences averaged
    over the repeats), so repeats do not make a gain look surer than the seeds allow.
    """

    name = "dev_utility"

    def __init__(self, embedder: Any = None, C: float = 1.0, folds: int = 4, seed: int = 0, repeats: int = 5) -> None:
        if not C > 0:
            raise ConfigError(f"C must be positive, got {C!r}")
        if not isinstance(folds, int) or folds < 2:
            raise ConfigError(f"folds must be a whole number >= 2, got {folds!r}")
        if not isinstance(repeats, int) or repeats < 1:
            raise ConfigError(f"repeats must be a whole number >= 1, got {repeats!r}")
        self.embedder = embedder
        self.C = C
        self.folds = folds
        self.seed = seed
        self.repeats = repeats
        self._dev: dict[str, tuple[tuple[str, ...], np.ndarray]] = {}  # task name -> (dev texts, their vectors)

    def evaluate(self, task: Task, samples: Sequence[Sample]) -> UtilityResult:
        method, splits = self._splits(task)
        seed_only = _fold_mean(self._correct(task, splits, []))
        with_synthetic = _fold_mean(self._correct(task, splits, list(samples))) if samples else seed_only
        return UtilityResult(method, seed_only, with_synthetic, with_synthetic - seed_only,
                             sum(len(s.test_labels) for s in splits))

    def best_prefix(self, task: Task, ranked: Sequence[Sample], *, fractions: Sequence[float] = GATE_FRACTIONS,
                    min_gain: float = GATE_MIN_GAIN, confidence_z: float = GATE_CONFIDENCE_Z) -> PrefixChoice:
        """Keep the first k of ``ranked`` (best first) for the k among ``fractions`` of it that scores
        best; keep 0 unless that beats seeds alone by more than ``min_gain`` and by more than
        ``confidence_z`` standard errors of the gain (paired over the scored rows: the same rows are
        scored with and without the samples). Ties go to fewer samples."""
        if any(not 0.0 <= f <= 1.0 for f in fractions):
            raise ConfigError(f"fractions must lie within [0, 1], got {list(fractions)}")
        if min_gain < 0:
            raise ConfigError(f"min_gain must be >= 0, got {min_gain}")
        if confidence_z < 0:
            raise ConfigError(f"confidence_z must be >= 0, got {confidence_z}")
        ranked = list(ranked)
        method, splits = self._splits(task)
        correct = {k: self._correct(task, splits, ranked[:k])
                   for k in sorted({int(round(f * len(ranked))) for f in fractions} | {0})}
        scores = {k: _fold_mean(c) for k, c in correct.items()}
        base, seed_only = correct[0], scores[0]
        best = min(scores, key=lambda k: (-scores[k], k))
        where = "dev accuracy" if method == "dev" else f"cross-validated seed accuracy ({self.repeats} repeats)"
        gain = scores[best] - seed_only
        se = _paired_se(correct[best], base, splits) if best > 0 else 0.0
        bar = max(min_gain, confidence_z * se)
        if best > 0 and gain > bar:
            reason = (f"keeping {best} of {len(ranked)}: {where} {scores[best]:.3f} against {seed_only:.3f} with seeds "
                      f"alone (gain {gain:+.3f}, standard error {se:.3f})")
            return PrefixChoice(best, scores, seed_only, reason)
        why = (f"more than {bar:.3f} (max of min_gain {min_gain} and {confidence_z} standard errors, {se:.3f})"
               if best > 0 else f"more than {min_gain}")
        reason = (f"keeping none: no prefix of the {len(ranked)} samples raised the {where} {why} "
                  f"above {seed_only:.3f} with seeds alone (best: {scores[best]:.3f} keeping {best})")
        return PrefixChoice(0, scores, seed_only, reason)

    def leave_out(self, task: Task, samples: Sequence[Sample], groups: Mapping[str, Sequence[str]]) -> tuple[float, dict[str, float]]:
        """Utility with all ``samples``, and without each group's (group name -> sample ids): the
        leave-part-out scores :class:`~streamsynth.learn.credit.PatternCredit` credits patterns with.
        Scored like ``evaluate`` (dev rows, or the repeated seed cross-validation); never the test split."""
        samples = list(samples)
        method, splits = self._splits(task)
        everything = _fold_mean(self._correct(task, splits, samples))
        without = {}
        for name, ids in groups.items():
            drop = set(ids)
            without[name] = _fold_mean(self._correct(task, splits, [s for s in samples if s.id not in drop]))
        return everything, without

    # -- internals --------------------------------------------------------------------------------------
    def _texts(self, examples: Sequence[Example], task: Task) -> list[str]:
        return [example_text(e.inputs, task.input_fields) for e in examples]

    def check(self, task: Task) -> None:
        """Raise ``DataError`` now if ``task`` cannot be scored (no dev split and too few seeds for the
        cross-validation), so a stream says so before it spends a task's budget."""
        if task.dev:
            return
        counts = Counter(e.output for e in task.seeds)
        if len(counts) < 2 or max(counts.values()) < 2:
            raise DataError(
                f"task {task.name!r} has no dev data, and cross-validation over its seeds needs two labels and two "
                f"seeds of some label (its seeds: {len(task.seeds)}, of {len(counts)} distinct labels); add dev data "
                "or more seeds"
            )

    def _splits(self, task: Task) -> tuple[str, list[_Split]]:
        if task.dev:
            texts = tuple(self._texts(task.dev, task))
            cached = self._dev.get(task.name)
            if cached is None or cached[0] != texts:
                cached = self._dev[task.name] = (texts, np.asarray(self.encoder().encode(list(texts))))
            labels = np.array([e.output for e in task.dev], dtype=object)
            return "dev", [_Split(tuple(task.seeds), cached[1], labels, test_ids=tuple(f"dev:{i}" for i in range(len(labels))))]
        return "cv", self._folds(task)

    def _folds(self, task: Task) -> list[_Split]:
        from sklearn.model_selection import StratifiedKFold

        self.check(task)
        seeds = list(task.seeds)
        labels = np.array([e.output for e in seeds], dtype=object)
        counts = Counter(labels.tolist())
        n_splits = max(2, min(self.folds, max(counts.values())))
        vecs = np.asarray(self.encoder().encode(self._texts(seeds, task)))
        parts = []
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # a label with fewer seeds than folds
            for r in range(self.repeats):  # repeat 0 is the single draw of repeats=1
                kfold = StratifiedKFold(n_splits, shuffle=True, random_state=self.seed + r)
                parts += list(kfold.split(vecs, labels))
        ids = [f"seed:{i}" for i in range(len(seeds))]  # by position: two seeds may share an id
        splits = [_Split(tuple(seeds[i] for i in train), vecs[test], labels[test], frozenset(seeds[i].id for i in test),
                         tuple(ids[i] for i in test))
                  for train, test in parts if len(set(labels[train])) >= 2]
        if not splits:
            raise DataError(f"task {task.name!r}: no cross-validation fold has seeds of two labels to train on; add dev data or seeds")
        return splits

    def _correct(self, task: Task, splits: list[_Split], samples: list[Sample]) -> list[np.ndarray]:
        """Per split, which scored rows the student trained on the split's seeds plus ``samples`` gets right."""
        out = []
        for split in splits:
            mine = [s for s in samples if not split.held_out_ids.intersection(s.provenance.seed_example_ids)]
            student = EmbeddingLogRegStudent(embedder=self.encoder(), C=self.C, seed=self.seed)
            student.train(self._texts(split.train, task) + [sample_text(s, task) for s in mine],
                          [e.output for e in split.train] + [s.output for s in mine])
            predicted = np.asarray(student.classifier_.predict(split.test_vecs), dtype=object)
            out.append(predicted.astype(str) == split.test_labels.astype(str))
        return out


def _fold_mean(correct: list[np.ndarray]) -> float:
    """Accuracy: the mean over splits of each split's share of rows right."""
    return float(np.mean([c.mean() for c in correct]))


def _paired_se(with_samples: list[np.ndarray], seeds_only: list[np.ndarray], splits: Sequence[_Split] = ()) -> float:
    """Standard error of the accuracy gain, from the per-row differences (the same rows scored twice).

    A row scored in several splits (repeated cross-validation) counts once, with its differences
    averaged; without ``splits`` (or ids) every scored row is its own."""
    diffs = [a.astype(float) - b.astype(float) for a, b in zip(with_samples, seeds_only)]
    if splits and all(len(sp.test_ids) == len(d) for sp, d in zip(splits, diffs)):
        per_row: dict[str, list[float]] = {}
        for sp, d in zip(splits, diffs):
            for rid, x in zip(sp.test_ids, d):
                per_row.setdefault(rid, []).append(float(x))
        d = np.array([np.mean(v) for v in per_row.values()])
    else:
        d = np.concatenate(diffs) if diffs else np.zeros(0)
    return float(d.std(ddof=1) / np.sqrt(len(d))) if len(d) > 1 else 0.0
