"""Reflection: turn a finished task's feedback into lessons for the experience store.

Generative Agents (Park et al., arXiv 2304.03442) keep a memory stream and periodically reflect:
the model reads recent memories and writes higher-level insights, stored as memories with an
importance. streamsynth reflects once per task:

- **statistics** (always, no model call): which pattern earned the best and the worst mean reward,
  and what share of samples each check rejected. Importance grows with the spread of rewards.
- **hints** (always): a rejection reason that cost a large share of the samples becomes an
  instruction for the prompt ("Start with the text itself: no introduction."). Retrieved hints are
  the ``guidance`` of the ``guided`` template, which the bandit then has to earn its place: a hint
  that does not help on the next task loses to the other templates.
- **the model's own reflection** (optional, one call): the synthesizer reads its best and worst
  samples and says in one sentence what made the good ones good. Kept with low importance; small
  models often write little of use here, which is why it never goes into prompts unchecked.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from streamsynth.records import GenerationParams, Message, Sample

#: a rejection category -> the instruction that avoids it
HINTS: Mapping[str, str] = {
    "echo": "Start with the text itself: no introduction and no label.",
    "malformed": "Write plain sentences: no lists, no markup, no code.",
    "overlong": "Keep it short.",
    "too_short": "Write a complete sentence.",
    "duplicate": "Pick a fresh subject and wording; do not copy the example.",
    "label_consistency": "Make the label unmistakable from the text alone.",
    "self_consistency": "Make the label unmistakable from the text alone.",
    "empty": "Start with the text itself: no introduction and no label.",
}


@dataclass(frozen=True, slots=True)
class LessonDraft:
    text: str
    importance: float  # 1..10
    kind: str  # "statistics", "hint", "reflection"


def _mean(xs: Sequence[float]) -> float:
    return sum(xs) / len(xs) if xs else 0.0


#: a reward part -> the instruction that raises it (for samples accepted but scored low)
PART_HINTS: Mapping[str, str] = {
    "label": "Make the label unmistakable from the text alone.",
    "quality": "Write one clean, natural example: no introduction, no repetition.",
}


def reflect(task_name: str, samples: Sequence[Sample], rewards: Mapping[str, float], *,
            parts: Mapping[str, Mapping[str, float]] | None = None, min_share: float = 0.1,
            low: float = 0.5) -> list[LessonDraft]:
    """Lessons from one task: pattern statistics, and hints from the commonest rejections and from
    the reward parts (label agreement, quality) that accepted samples scored low on."""
    lessons: list[LessonDraft] = []
    by_pattern: dict[str, list[float]] = {}
    for s in samples:
        by_pattern.setdefault(s.provenance.pattern, []).append(rewards.get(s.id, 0.0))
    scored = sorted(((_mean(r), len(r), p) for p, r in by_pattern.items() if len(r) >= 2), reverse=True)
    if len(scored) >= 2:
        (best, nb, pb), (worst, nw, pw) = scored[0], scored[-1]
        spread = best - worst
        lessons.append(LessonDraft(
            f"On {task_name}, pattern {pb} earned the best mean reward ({best:.2f} over {nb}) and {pw} the worst "
            f"({worst:.2f} over {nw}).", importance=round(min(10.0, 1.0 + 20.0 * spread), 2), kind="statistics"))
    n = len(samples)
    cats = Counter(s.reject_category for s in samples if not s.accepted and s.reject_category)
    for cat, count in cats.most_common():
        share = count / n if n else 0.0
        hint = HINTS.get(cat or "")
        if hint and share >= min_share:
            lessons.append(LessonDraft(
                f"{hint} (on {task_name}, {share:.0%} of samples were rejected as {cat})",
                importance=round(min(10.0, 1.0 + 15.0 * share), 2), kind="hint"))
    given = {hint_text(x.text) for x in lessons if x.kind == "hint"}
    for part, hint in PART_HINTS.items():
        vals = [p[part] for p in (parts or {}).values() if part in p]
        share = sum(v < low for v in vals) / n if n else 0.0
        if vals and share >= min_share and hint not in given:
            given.add(hint)
            lessons.append(LessonDraft(
                f"{hint} (on {task_name}, {share:.0%} of samples scored below {low} on {part})",
                importance=round(min(10.0, 1.0 + 15.0 * share), 2), kind="hint"))
    return lessons


def hint_text(lesson_text: str) -> str:
    """The instruction part of a hint lesson (before its parenthesised evidence)."""
    return lesson_text.split(" (on ", 1)[0].strip()


REFLECT_PROMPT = (
    "You wrote training examples for this task: {description}\n\nGood examples:\n{good}\n\nBad examples:\n{bad}\n\n"
    "In one sentence, what makes the good examples better than the bad ones?"
)


async def model_reflection(task: Any, lm: Any, good: Sequence[str], bad: Sequence[str]) -> str | None:
    """The synthesizer's own one-sentence reflection on its best and worst samples (one call)."""
    if not good or not bad:
        return None
    prompt = REFLECT_PROMPT.format(description=task.description, good="\n".join(f"- {t}" for t in good[:3]),
                                   bad="\n".join(f"- {t}" for t in bad[:3]))
    reply = await lm.complete((Message("user", prompt),), GenerationParams(temperature=0.3, top_p=0.95, max_new_tokens=60),
                              step="reflect")
    text = " ".join(reply.text.split()) if reply.ok else ""
    return text[:300] or None
