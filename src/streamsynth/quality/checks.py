"""Checks (verifiers): each looks at one sample and returns a ``Verdict``.

The protocol has one verb, ``verify(sample, task) -> Verdict``. A failed verdict rejects the
sample with a recorded reason; nothing is dropped silently. ``DuplicateCheck`` is a set-level
check: it remembers what it has seen in the current run (``start`` resets it with the seeds).
"""

from __future__ import annotations

import inspect
import re
from typing import Any, Protocol, Sequence, runtime_checkable

from streamsynth.quality.clean import normalize_for_dedup
from streamsynth.records import Sample, Verdict
from streamsynth.state import Stateful, component
from streamsynth.task import Task


@runtime_checkable
class Check(Protocol):
    name: str

    def verify(self, sample: Sample, task: Task) -> Verdict: ...


def calls_per_sample(check: Check) -> int:
    """Model calls ``check`` makes for one sample (0 for checks that do not call the model)."""
    return int(getattr(check, "calls_per_sample", 0) or 0)


async def verify_batch(check: Check, samples: Sequence[Sample], task: Task, lms: Sequence[Any] | None = None) -> list[Verdict]:
    """Verdicts for a batch: the check's own ``verify_batch`` (sync or async) when it has one,
    which may batch model calls or embeddings; else ``verify`` on each sample in turn. A check
    that calls the model (``calls_per_sample`` > 0) gets ``lms``: one model handle per sample,
    bound to the sample's item (the run loop makes them and reserves their budget)."""
    batch = getattr(check, "verify_batch", None)
    if batch is None:
        return [check.verify(s, task) for s in samples]
    if calls_per_sample(check):
        if lms is None or len(lms) != len(samples):
            raise ValueError(f"check {check.name!r} calls the model: give one model handle per sample (lms)")
        out = batch(samples, task, lms)
    else:
        out = batch(samples, task)
    if inspect.isawaitable(out):
        out = await out
    return list(out)


_PASSED: dict[str, Verdict] = {}


def _passed(check: str) -> Verdict:
    """``Verdict(check, True)``, one shared object per check name (a run keeps one per sample and check)."""
    v = _PASSED.get(check)
    if v is None:
        v = _PASSED[check] = Verdict(check, True)
    return v


def _texts(sample: Sample) -> list[str]:
    return [v for v in sample.inputs.values() if isinstance(v, str)]


@component("empty")
class EmptyCheck(Stateful):
    name = "empty"

    def verify(self, sample: Sample, task: Task) -> Verdict:
        fields = [f for f in task.input_fields if not sample.inputs.get(f, "").strip()]
        if fields:
            return Verdict(self.name, False, f"no text for {', '.join(fields)} after cleaning")
        return _passed(self.name)


@component("length")
class LengthCheck(Stateful):
    """Too short or too long, in characters, per input field (bounds from the task spec)."""

    name = "length"

    def __init__(self, min_chars: int | None = None, max_chars: int | None = None) -> None:
        self.min_chars = min_chars
        self.max_chars = max_chars

    def verify(self, sample: Sample, task: Task) -> Verdict:
        lo = self.min_chars if self.min_chars is not None else task.generation.min_chars
        hi = self.max_chars if self.max_chars is not None else task.generation.max_chars
        for f in task.input_fields:
            n = len(sample.inputs.get(f, ""))
            if n > hi:
                return Verdict("overlong", False, f"{f} has {n} characters, more than {hi}")
            if n < lo:
                return Verdict("too_short", False, f"{f} has {n} characters, fewer than {lo}")
        return _passed(self.name)


_MARKUP = re.compile(r"```|<\/?[a-z]+[^>]*>|https?://|\{\s*\"|\[/?INST\]|<\|", re.IGNORECASE)
_LIST_AGAIN = re.compile(r"(?:^|\n)\s*(?:2[.)]|[-*•])\s+\S")


@component("malformed")
class MalformedCheck(Stateful):
    """Markup, code, URLs, chat tokens, several examples in one, or text that is mostly not words."""

    name = "malformed"

    def verify(self, sample: Sample, task: Task) -> Verdict:
        for f, text in sample.inputs.items():
            if f not in task.input_fields:
                continue
            if _MARKUP.search(text):
                return Verdict(self.name, False, f"{f} holds markup, code, a URL or chat tokens")
            if _LIST_AGAIN.search(text):
                return Verdict(self.name, False, f"{f} holds a list or several examples")
            letters = sum(map(str.isalpha, text))
            if text and letters / len(text) < 0.5:
                return Verdict(self.name, False, f"{f} is mostly not letters")
            words = text.lower().split()
            if len(words) >= 8 and len(set(words)) / len(words) < 0.35:
                return Verdict(self.name, False, f"{f} repeats itself")
        return _passed(self.name)


_ECHO = re.compile(
    r"\b(?:write one|reply with|labeled \"|do not copy|examples of|the example only|as an ai|i cannot|i can't|"
    r"language model|here is (?:a|an|the|one)|here's (?:a|an|the|one)|task:|i'?d be happy|happy to help|"
    r"let me know|hope (?:this|that) helps|you're right|i'?m sorry|as an ai|labeled (?:\w+):)",
    re.IGNORECASE,
)


@component("echo")
class EchoCheck(Stateful):
    """The reply repeats the instruction or talks about the task instead of doing it."""

    name = "echo"

    def verify(self, sample: Sample, task: Task) -> Verdict:
        description, labels = self._descriptions(task)
        for text in _texts(sample):
            m = _ECHO.search(text)
            if m:
                return Verdict(self.name, False, f"echoes the instruction ({m.group(0).strip()!r})")
            norm = normalize_for_dedup(text)
            if description is not None and description in norm:
                return Verdict(self.name, False, "repeats the task description")
            for name, desc in labels:
                if desc in norm:
                    return Verdict(self.name, False, f"repeats the description of label {name!r}")
        return _passed(self.name)

    def _descriptions(self, task: Task) -> tuple[str | None, tuple[tuple[str, str], ...]]:
        """The task's and its labels' descriptions, normalized once per task (a Task never changes)."""
        cached = getattr(self, "_described", None)
        if cached is None or cached[0] is not task:
            description = normalize_for_dedup(task.description) if task.description else None
            labels = tuple((lab.name, normalize_for_dedup(lab.description)) for lab in task.labels if lab.description)
            cached = self._described = (task, description, labels)
        return cached[1], cached[2]


@component("duplicate")
class DuplicateCheck(Stateful):
    """Exact duplicate after normalization, of a seed or of an earlier sample in this run."""

    name = "duplicate"

    def __init__(self) -> None:
        self._seen: dict[str, str] = {}

    def start(self, task: Task) -> None:
        self._seen = {}
        for e in task.seeds:
            self._seen.setdefault(self._key(e.inputs, task), f"seed {e.id}")

    @staticmethod
    def _key(inputs, task: Task) -> str:
        return " || ".join(normalize_for_dedup(inputs.get(f, "")) for f in task.input_fields)

    def verify(self, sample: Sample, task: Task) -> Verdict:
        key = self._key(sample.inputs, task)
        first, mine = self._seen.get(key), f"sample {sample.id}"
        if first is not None and first != mine:  # the same sample judged again is not its own copy
            return Verdict(self.name, False, f"same text as {first}")
        self._seen[key] = mine
        return _passed(self.name)


def default_checks() -> list[Check]:
    """The checks every run applies, cheapest first; duplicates last so rejects don't claim texts."""
    return [EmptyCheck(), LengthCheck(), MalformedCheck(), EchoCheck(), DuplicateCheck()]
