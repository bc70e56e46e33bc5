"""P(True): the synthesizer judges its own samples (a check that calls the model).

Kadavath et al., *Language Models (Mostly) Know What They Know* (arXiv 2207.05221): ask the model
whether a proposed answer is true and read the probability it gives to "True". Here the proposed
answer is the sample's label: "Is this text an example of LABEL? Answer Yes or No." The check's
score is P(Yes) = p(yes) / (p(yes) + p(no)) over the first answer token's alternatives when the
backend returns log-probabilities (the local model and OpenAI-compatible servers do); otherwise
the share of ``votes`` sampled answers that say yes (Self-Consistency style; with
log-probabilities every vote reads the same first-token distribution, so keep ``votes=1``). A sample whose
P(Yes) falls below ``threshold`` is rejected with the score in its reason; so is a sample whose
calls all failed (the reason says so).

The check gets one model handle per sample (``lms``): every call is keyed by the sample's item,
the step ``p_true`` and k, so answers are the same at any concurrency and come from the cache on
a rerun; each call is a step of the sample's provenance. The run reserves ``calls_per_sample``
queries per item for it, so the budget is never exceeded. An answer that says neither yes nor no
leaves the sample as it is, with no score: the check cannot judge it.
"""

from __future__ import annotations

import asyncio
import math
import re
from typing import Any, Sequence

from streamsynth.errors import ConfigError
from streamsynth.records import GenerationParams, Message, Sample, Verdict
from streamsynth.state import Stateful, component
from streamsynth.task import Task

DEFAULT_TEMPLATE = (
    "Task: {description}\n\n"
    "Text: {text}\n\n"
    "Is this text a correct example of the label \"{label}\"{label_note}? Answer Yes or No."
)

_YES = re.compile(r"^\W*(yes|true|correct)\b", re.IGNORECASE)
_NO = re.compile(r"^\W*(no|false|incorrect|wrong)\b", re.IGNORECASE)


def _answer(text: str) -> bool | None:
    """Yes (True), no (False) or neither (None) from the start of an answer."""
    if _YES.match(text):
        return True
    if _NO.match(text):
        return False
    return None


def p_yes_from_logprobs(logprobs: Sequence[Any] | None) -> float | None:
    """P(yes) among yes/no over the first answer token's alternatives, or None when they name neither."""
    if not logprobs:
        return None
    first = logprobs[0]
    alternatives = list(first.top) or [(first.token, first.logprob)]
    yes = no = 0.0
    for token, lp in alternatives:
        word = token.strip().lower()
        if word in ("yes", "true"):
            yes += math.exp(lp)
        elif word in ("no", "false"):
            no += math.exp(lp)
    if yes + no == 0.0:
        return None
    return yes / (yes + no)


@component("p_true")
class PTrueCheck(Stateful):
    """Reject a sample when the synthesizer itself gives its label a low probability (P(True))."""

    name = "p_true"

    def __init__(self, threshold: float = 0.5, votes: int = 1, template: str = DEFAULT_TEMPLATE,
                 temperature: float = 1.0) -> None:
        if not 0.0 <= threshold <= 1.0:
            raise ConfigError(f"p_true threshold must be between 0 and 1, got {threshold!r}")
        if not isinstance(votes, int) or votes < 1:
            raise ConfigError(f"p_true votes must be a whole number >= 1, got {votes!r}")
        for field in ("{text}", "{label}"):
            if field not in template:
                raise ConfigError(f"p_true template must contain {field}; it is where the sample goes")
        try:
            template.format(description="", text="", label="", label_note="")
        except (KeyError, IndexError, ValueError) as exc:
            raise ConfigError(f"p_true template does not format ({exc!r}): use only {{description}}, {{text}}, "
                              "{label} and {label_note}, and double any other brace ({{ or }})") from None
        self.threshold = threshold
        self.votes = votes
        self.template = template
        self.temperature = temperature

    @property
    def calls_per_sample(self) -> int:
        """Model calls this check makes for one sample (the run reserves them with the item)."""
        return self.votes

    def verify(self, sample: Sample, task: Task) -> Verdict:
        raise ConfigError("the p_true check calls the model: run it through the engine (verify_batch with lms)")

    def messages(self, sample: Sample, task: Task) -> tuple[Message, ...]:
        text = " | ".join(sample.inputs.get(f, "") for f in task.input_fields)
        described = {lab.name: lab.description for lab in task.labels} if task.is_classification else {}
        note = f" ({described[sample.output]})" if described.get(sample.output) else ""
        prompt = self.template.format(description=task.description, text=text, label=sample.output, label_note=note)
        return (Message("user", prompt),)

    def params(self) -> GenerationParams:
        return GenerationParams(temperature=self.temperature, top_p=1.0, max_new_tokens=3, logprobs=True)

    async def verify_batch(self, samples: Sequence[Sample], task: Task, lms: Sequence[Any]) -> list[Verdict]:
        return list(await asyncio.gather(*(self._judge(s, task, lm) for s, lm in zip(samples, lms))))

    async def _judge(self, sample: Sample, task: Task, lm: Any) -> Verdict:
        answers = await lm.complete_many(self.messages(sample, task), self.params(), self.votes, step=self.name)
        ok = [a for a in answers if a.ok]
        if not ok:  # an outage must not switch the check off unnoticed
            return Verdict(self.name, False, f"could not judge: the model call failed ({answers[0].error})")
        probs = [p for p in (p_yes_from_logprobs(a.logprobs) for a in ok) if p is not None]
        if probs:
            p = sum(probs) / len(probs)
        else:
            said = [v for v in (_answer(a.text) for a in ok) if v is not None]
            if not said:
                return Verdict(self.name, True, "no yes/no answer to judge by")
            p = sum(said) / len(said)
        if p < self.threshold:
            return Verdict(self.name, False, f"the synthesizer gives the label {sample.output!r} P(True) {p:.2f} "
                                             f"< {self.threshold:g}", score=p)
        return Verdict(self.name, True, score=p)
