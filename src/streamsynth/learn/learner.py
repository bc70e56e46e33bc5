"""SynLearner: a program for the next task from experience, and an improved program from feedback.

The program and what improves it are apart (dspy's program and optimizer): the learner reads a
program's state and returns an improved copy; it never changes the program it is given.

- ``fit(program, task, descriptor=..., now=...)`` — before a task: the pattern policy gets priors
  from the reward statistics of similar earlier tasks (similarity of task descriptors, the
  embedded description and label names); lessons retrieved by recency + importance + relevance
  become the ``guided`` template's guidance; high-reward samples of the same task, when it was
  seen before, join the demonstrations.
- ``partial_fit(program, rewards)`` — during a task: each pattern's Beta policy takes the rewards
  its samples earned (alpha += r, beta += 1 - r), so the next round draws better patterns more.
- ``remember(...)`` — after a task: pattern rewards, the task descriptor, lessons and exemplars
  go into the store (``ExperienceStore``).

Without a store the learner still learns within a task (``partial_fit``) and starts every task
from uniform priors.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

from streamsynth.learn.bandit import priors_from_experience
from streamsynth.learn.patterns import ExploringStrategy
from streamsynth.learn.reflect import LessonDraft, hint_text
from streamsynth.program import SynthesisProgram
from streamsynth.records import Sample
from streamsynth.task import Task


@dataclass(frozen=True)
class Experience:
    """What a task starts from: priors, similar tasks, lessons, guidance and exemplars."""

    priors: Mapping[str, tuple[float, float]] = field(default_factory=dict)
    similar: tuple[tuple[str, float], ...] = ()
    lessons: tuple[Any, ...] = ()
    guidance: str = ""
    exemplars: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        best = sorted(self.priors.items(), key=lambda kv: -kv[1][0] / (kv[1][0] + kv[1][1]))[:3]
        return {
            "similar_tasks": [{"task": t, "similarity": round(s, 3)} for t, s in self.similar],
            "prior_best_patterns": [{"pattern": p, "prior_mean": round(a / (a + b), 3), "strength": round(a + b - 2, 2)}
                                    for p, (a, b) in best if a + b > 2],
            "lessons": [getattr(x, "text", str(x)) for x in self.lessons],
            "guidance": self.guidance,
            "exemplars": sum(len(v) for v in self.exemplars.values()),
        }


def task_key(task: Task) -> str:
    """How the store names a task: its name and the fingerprint of its spec and seeds."""
    return f"{task.name}@{task.fingerprint[:12]}"


def descriptor_text(task: Task) -> str:
    labels = "; ".join(f"{lab.name}: {lab.description}" if lab.description else lab.name for lab in task.labels)
    return f"{task.description} Labels: {labels}"


def _explorer(program: SynthesisProgram) -> tuple[int, ExploringStrategy]:
    for i, m in enumerate(program.methods):
        if isinstance(m, ExploringStrategy):
            return i, m
    raise TypeError("SynLearner works on programs with an ExploringStrategy method; build one with learning_program()")


def _with_method(program: SynthesisProgram, i: int, method: Any) -> SynthesisProgram:
    fresh = program.fresh()  # clones of every component: the input program is never touched
    methods = list(fresh.methods)
    methods[i] = method
    return SynthesisProgram(methods, fresh.checks, fresh.selector)


class SynLearner:
    """Learns synthesis patterns, lessons and exemplars across tasks (explicit experience)."""

    def __init__(self, store: Any = None, *, prior_strength: float = 8.0, min_similarity: float = 0.2,
                 lessons: int = 3, exemplars_per_label: int = 2, decay: float = 0.9, max_hints: int = 2) -> None:
        self.store = store
        self.prior_strength = prior_strength
        self.min_similarity = min_similarity
        self.lessons = lessons
        self.exemplars_per_label = exemplars_per_label
        self.decay = decay
        self.max_hints = max_hints

    # -- before a task ---------------------------------------------------------------------
    def experience_for(self, task: Task, descriptor: np.ndarray, *, now: float, arms: Sequence[str]) -> Experience:
        if self.store is None:
            return Experience()
        key = task_key(task)
        similar = tuple(self.store.similar_tasks(descriptor, exclude=key, k=5))
        stats = self.store.all_pattern_stats()
        sim = dict(similar)
        if key in stats:
            sim[key] = 1.0  # the same task seen before: its own statistics count fully
        priors = priors_from_experience({k: v for k, v in stats.items() if k in sim}, sim, arms=arms,
                                        max_strength=self.prior_strength, min_similarity=self.min_similarity)
        found = self.store.retrieve_lessons(descriptor, now=now, k=self.lessons * 3, decay=self.decay)
        hints: list[str] = []
        for lesson in found:
            if lesson.kind == "hint" and hint_text(lesson.text) not in hints and len(hints) < self.max_hints:
                hints.append(hint_text(lesson.text))
        used = tuple(found[: self.lessons])
        exemplars: dict[str, tuple[str, ...]] = {}
        if self.exemplars_per_label and task.kind == "classification":
            for lab in task.label_names:
                got = self.store.exemplars(key, label=lab, k=self.exemplars_per_label, min_reward=0.6)
                if got:
                    exemplars[lab] = tuple(e.inputs[task.input_fields[0]] for e in got if task.input_fields[0] in e.inputs)
        return Experience(priors=priors, similar=similar, lessons=used, guidance=" ".join(hints), exemplars=exemplars)

    def fit(self, program: SynthesisProgram, task: Task, *, descriptor: np.ndarray, now: float) -> tuple[SynthesisProgram, Experience]:
        """A copy of ``program`` whose explorer starts from experience (priors, guidance, exemplars)."""
        i, explorer = _explorer(program)
        probe = self.experience_for(task, descriptor, now=now, arms=explorer.arms(guided=True))
        arms = explorer.arms(guided=bool(probe.guidance))
        priors = {pid: probe.priors.get(pid, (1.0, 1.0)) for pid in arms}
        method = explorer.clone(policy={p: list(v) for p, v in priors.items()},
                                prior={p: list(v) for p, v in priors.items()} if explorer.draw == "factored" else None,
                                guidance=probe.guidance,
                                exemplars={k: list(v) for k, v in probe.exemplars.items()})
        return _with_method(program, i, method), probe

    # -- during a task ---------------------------------------------------------------------
    def partial_fit(self, program: SynthesisProgram, rewards: Mapping[str, Sequence[float]]) -> SynthesisProgram:
        """A copy of ``program`` whose policy took ``rewards`` (pattern -> rewards of its samples)."""
        i, explorer = _explorer(program)
        policy = {p: list(v) for p, v in explorer.policy.items()}
        for pid, rs in rewards.items():
            if pid not in policy:
                continue  # a pattern the program no longer offers
            policy[pid][0] += float(sum(rs))
            policy[pid][1] += float(sum(1.0 - r for r in rs))
        return _with_method(program, i, explorer.clone(policy=policy))

    # -- after a task ----------------------------------------------------------------------
    def remember(self, task: Task, descriptor: np.ndarray, samples: Sequence[Sample], rewards: Mapping[str, float], *,
                 now: float, lessons: Sequence[LessonDraft], embed: Any, kept: Sequence[Sample] = (),
                 meta: Mapping[str, Any] | None = None, exemplars: int = 8,
                 pattern_rewards: Mapping[str, float] | None = None) -> None:
        """Write what the task taught into the store: rewards per pattern, lessons, exemplars.

        ``pattern_rewards`` (sample id -> reward) are what the patterns earned, when they differ from
        the samples' own ``rewards`` (utility credit, learn/credit.py); exemplars go by ``rewards``."""
        if self.store is None:
            return
        from streamsynth.learn.store import Exemplar

        key = task_key(task)
        self.store.add_task(key, name=task.name, descriptor=descriptor, labels=task.label_names, meta=dict(meta or {}))
        by_pattern: dict[str, list[float]] = {}
        earned = pattern_rewards if pattern_rewards is not None else rewards
        for s in samples:
            by_pattern.setdefault(s.provenance.pattern, []).append(float(earned.get(s.id, 0.0)))
        for pid, rs in sorted(by_pattern.items()):
            self.store.record_rewards(key, pid, rs)
        if lessons:
            vecs = embed([x.text for x in lessons])
            for x, v in zip(lessons, vecs):
                self.store.add_lesson(key, x.text, importance=x.importance, embedding=v, created_at=now, kind=x.kind)
        best = sorted(kept, key=lambda s: (-rewards.get(s.id, 0.0), s.id))
        per_label: dict[str, int] = {}
        chosen = []
        for s in best:
            if per_label.get(s.output, 0) < exemplars:
                per_label[s.output] = per_label.get(s.output, 0) + 1
                chosen.append(Exemplar(label=s.output, inputs=dict(s.inputs), reward=float(rewards.get(s.id, 0.0)),
                                       pattern=s.provenance.pattern))
        if chosen:
            self.store.add_exemplars(key, chosen)


def learning_program(task: Task, base: SynthesisProgram | None = None, *, embedder: Any = None,
                     selector: Any = None, draw: str = "joint",
                     space: Mapping[str, Sequence[Any]] | None = None) -> SynthesisProgram:
    """The default program with its method replaced by an ``ExploringStrategy`` (uniform policy).

    ``embedder`` (not configuration) is shared with checks that embed, so one model is loaded.
    ``selector`` replaces the base's (``generate --store`` keeps the default label balance; the
    stream's rounds pass ``KeepAll``); ``draw`` is how the explorer draws patterns (``joint``: one
    arm per pattern; ``factored``: one per pattern part, learn/patterns.py); ``space`` the pattern
    space it explores (``templates``, ``shots``, ``temperatures``; ``None``: the default)."""
    from streamsynth.program import default_program

    base = base or default_program(task)
    checks = []
    for c in base.checks:
        c = c.clone() if hasattr(c, "clone") else c
        if embedder is not None and hasattr(c, "embedder") and getattr(c, "embedder") is None:
            c.embedder = embedder
        checks.append(c)
    return SynthesisProgram([ExploringStrategy(draw=draw, space=space)], checks, selector if selector is not None else base.selector)
