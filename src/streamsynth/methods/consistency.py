"""Self-consistency label check as a method: write an example, then let the model label it k
times and keep the example only when the majority vote agrees with the label it was written for.

Paper: Wang et al., "Self-Consistency Improves Chain of Thought Reasoning in Language Models"
(arXiv 2203.11171): sample several answers and take the majority. Here the vote is over labels of
a generated text, which makes it a label-consistency filter that needs no seeds.

Calls per item: 1 (write) + ``votes`` (label), all keyed by (item, step, k) and recorded as
steps of the sample's provenance.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Any, Mapping, Sequence

from streamsynth.methods.attributed import AttributeConditionedStrategy
from streamsynth.methods.base import Item
from streamsynth.records import GenerationParams, Message, Sample, Verdict
from streamsynth.state import component
from streamsynth.task import Task

VOTE_PROMPT = "Task: {description}\n\n{noun}: {text}\n\nWhich label fits best: {labels}? Answer with the label only."


def read_label(reply: str, labels: Sequence[str]) -> str | None:
    """The first label named in a reply (whole word, any case), or None."""
    best: tuple[int, str] | None = None
    for lab in labels:
        m = re.search(rf"(?<!\w){re.escape(lab)}(?!\w)", reply, re.IGNORECASE)
        if m and (best is None or m.start() < best[0]):
            best = (m.start(), lab)
    return best[1] if best else None


@component("self_consistency_label")
class SelfConsistencyLabel(AttributeConditionedStrategy):
    """Attribute-conditioned writing, then a k-vote label check by the same model."""

    name = "sc_label"

    def __init__(self, *, votes: int = 3, vote_temperature: float = 0.7, vote_prompt: str = VOTE_PROMPT,
                 attributes: Mapping[str, Sequence[str]] | None = None, examples_in_prompt: int | None = None,
                 params: GenerationParams | Mapping[str, Any] | None = None,
                 label_weights: Mapping[str, float] | None = None, templates: Mapping[str, str] | None = None) -> None:
        super().__init__(attributes=attributes, examples_in_prompt=examples_in_prompt, params=params,
                         label_weights=label_weights, templates=templates)
        if votes < 1:
            raise ValueError(f"votes must be >= 1, got {votes}")
        self.votes = votes
        self.vote_temperature = vote_temperature
        self.vote_prompt = vote_prompt

    def plan(self, task: Task, index: int, seed: int) -> Item:
        item = super().plan(task, index, seed)
        from dataclasses import replace

        return replace(item, method=self.name, max_calls=1 + self.votes)

    async def run(self, item: Item, lm: Any) -> list[Sample]:
        task = item.task
        completion = await lm.complete(self.messages(item), item.params)
        sample = self.parse(item, lm, completion)
        if not sample.accepted:
            return [sample]
        text = " / ".join(sample.inputs.get(f, "") for f in task.input_fields)
        prompt = self.vote_prompt.format(description=task.description, noun=task.generation.input_noun.capitalize(),
                                         text=text, labels=", ".join(task.label_names))
        params = GenerationParams(temperature=self.vote_temperature, top_p=0.95, max_new_tokens=8)
        replies = await lm.complete_many((Message("user", prompt),), params, self.votes, step="vote")
        votes = [read_label(r.text, task.label_names) if r.ok else None for r in replies]
        counts = Counter(v for v in votes if v is not None)
        share = counts.get(item.label, 0) / self.votes
        winner = counts.most_common(1)[0][0] if counts else None
        # the sample's steps now include the votes; rebuild it so its provenance and cost are complete
        sample = self.parse(item, lm, completion)
        passed = winner == item.label and counts[winner] > self.votes / 2
        reason = "" if passed else f"the model's vote was {dict(counts) or 'unreadable'}, not a majority for {item.label!r}"
        return [sample.with_verdict(Verdict("self_consistency", passed, reason, score=share))]
