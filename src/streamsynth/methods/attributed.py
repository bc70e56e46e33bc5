"""Attribute-conditioned new examples for classification tasks (AttrPrompt / SynLearner style).

For each sample: the label first, then a sampled combination of attributes (topic, aspect, style,
length, ...), then a few real seed examples of that label in the prompt. The attributes come
from the task spec, or are proposed once per task by the model itself.

Papers: Yu et al., "Large Language Model as Attributed Training Data Generator" (AttrPrompt,
arXiv 2306.15895); SynLearner (StreamSynth, arXiv 2605.29940) conditions its synthesizer the same
way. Self-Instruct (arXiv 2212.10560) found output-first (label-first) generation best for
classification.
"""

from __future__ import annotations

import random
import re
from typing import Any, Mapping, Sequence

from streamsynth.errors import ConfigError
from streamsynth.fingerprint import derive_seed, fingerprint
from streamsynth.methods.base import Item, failed_sample, new_sample
from streamsynth.quality.clean import clean_text
from streamsynth.records import Completion, GenerationParams, Message, Sample
from streamsynth.state import Stateful, component
from streamsynth.task import Task

TEMPLATE_VERSION = "attr-v2"

#: used when the spec gives no attributes and the model proposes none that parse
FALLBACK_ATTRIBUTES: Mapping[str, tuple[str, ...]] = {
    "style": ("casual", "formal", "enthusiastic", "matter-of-fact", "emotional"),
    "length": ("very short", "one sentence", "two sentences"),
}

_PAIR_LINE = re.compile(r"^\s*\**\s*(premise|hypothesis|sentence\s*[12ab])\s*\**\s*[:\-]\s*(.+)$", re.IGNORECASE)


DEFAULT_TEMPLATES: Mapping[str, str] = {
    # {what}: "one movie review sentence" or "a premise and a hypothesis"; {desc}: ": <label description>" or ""
    "instruction": "Write {what} labeled {label}{desc}.",
    "attribute": "{name}: {value}.",
    "reply": "Reply with the {noun} only.",
    "reply_pair": "Reply in exactly two lines, '{a}: ...' and '{b}: ...'.",
}


@component("attr_new")
class AttributeConditionedStrategy(Stateful):
    """Label, attributes, few-shot seeds -> one new example (one model call per item)."""

    name = "attr_new"

    def __init__(
        self,
        *,
        attributes: Mapping[str, Sequence[str]] | None = None,
        examples_in_prompt: int | None = None,
        params: GenerationParams | Mapping[str, Any] | None = None,
        label_weights: Mapping[str, float] | None = None,
        templates: Mapping[str, str] | None = None,
    ) -> None:
        self.attributes = {k: tuple(v) for k, v in (attributes or {}).items()}
        self.examples_in_prompt = examples_in_prompt
        self.params = GenerationParams(**{**params, "stop": tuple(params.get("stop", ()))}) if isinstance(params, Mapping) else params
        self.label_weights = dict(label_weights or {})
        self.templates = {**DEFAULT_TEMPLATES, **(templates or {})}
        unknown = set(self.templates) - set(DEFAULT_TEMPLATES)
        if unknown:
            raise ConfigError(f"unknown template names {sorted(unknown)}; the templates are {sorted(DEFAULT_TEMPLATES)}")
        self.attributes_: dict[str, tuple[str, ...]] = {}
        # what plan() derives from a task and reuses for every item (a Task never changes): not state
        self._planned_for: tuple[Any, ...] | None = None
        self._label_block: tuple[Any, ...] | None = None

    @property
    def template_version(self) -> str:
        """``attr-v2`` for the shipped templates; a fingerprint of the text for changed ones."""
        if self.templates == DEFAULT_TEMPLATES:
            return TEMPLATE_VERSION
        return "attr-" + fingerprint(self.templates)[:8]

    def _task_parts(self, task: Task) -> tuple[dict[str, tuple[Any, ...]], GenerationParams]:
        """The seeds of each label and the sampling parameters, worked out once per task."""
        cached = self._planned_for
        if cached is None or cached[0] is not task or cached[1] is not self.params:
            pools = {name: task.seeds_for(name) for name in task.label_names}
            cached = self._planned_for = (task, self.params, pools, self._params(task))
        return cached[2], cached[3]

    def restore_fitted(self, fitted: Mapping[str, Any]) -> None:
        self.attributes_ = {k: tuple(v) for k, v in (fitted.get("attributes_") or {}).items()}

    def _params(self, task: Task) -> GenerationParams:
        if self.params is not None:
            return self.params
        g = task.generation
        stop = ("\n\n",) if task.kind == "classification" else ()
        return GenerationParams(temperature=g.temperature, top_p=g.top_p, max_new_tokens=g.max_new_tokens, stop=stop)

    def _k(self, task: Task) -> int:
        return task.generation.examples_in_prompt if self.examples_in_prompt is None else self.examples_in_prompt

    # -- prepare: attributes --------------------------------------------------------------
    def setup_calls(self, task: Task) -> int:
        """Model calls ``prepare`` may make: one, to propose attributes when none are given."""
        return 0 if (self.attributes or task.attributes or not task.generation.propose_attributes) else 1

    async def prepare(self, task: Task, lm: Any) -> None:
        if self.attributes:
            self.attributes_ = dict(self.attributes)
        elif task.attributes:
            self.attributes_ = dict(task.attributes)
        elif task.generation.propose_attributes and lm is not None:
            self.attributes_ = await propose_attributes(task, lm)
        else:
            self.attributes_ = dict(FALLBACK_ATTRIBUTES)

    # -- plan ------------------------------------------------------------------------------
    def _label_for(self, task: Task, index: int, seed: int) -> str:
        names = task.label_names
        if not self.label_weights:
            # balanced: each block of len(labels) indices holds every label once, in a seeded order
            # (consecutive items share a block: the last one is kept)
            key = (task, names, type(seed), seed, index // len(names))
            last = self._label_block
            if last is not None and last[0] is task and last[1:5] == key[1:]:
                return last[5][index % len(names)]
            block = list(names)
            random.Random(derive_seed(seed, "labels", index // len(names))).shuffle(block)
            self._label_block = (*key, block)
            return block[index % len(names)]
        weights = [max(0.0, float(self.label_weights.get(n, 1.0))) for n in names]
        return random.Random(derive_seed(seed, "label", index)).choices(names, weights=weights)[0]

    def plan(self, task: Task, index: int, seed: int) -> Item:
        attrs = self.attributes_ or self.attributes or dict(task.attributes) or dict(FALLBACK_ATTRIBUTES)
        rng = random.Random(derive_seed(seed, self.name, index))
        label = self._label_for(task, index, seed)
        chosen = {name: rng.choice(values) for name, values in sorted(attrs.items())}
        pools, params = self._task_parts(task)
        pool = pools[label] if label in pools else task.seeds_for(label)
        shots = tuple(rng.sample(pool, min(self._k(task), len(pool))))
        version = self.template_version
        return Item(
            task=task, index=index, seed=seed, method=self.name, max_calls=1,
            pattern=version + ":" + "|".join(f"{a}={v}" for a, v in chosen.items()),
            label=label, attributes=chosen, demonstrations=shots, params=params,
            conditioning={"label": label, "attributes": chosen, "template": version},
        )

    def messages(self, item: Item) -> tuple[Message, ...]:
        return render_messages(item.task, item.label or "", item.attributes, item.demonstrations, self.templates)

    # -- run ---------------------------------------------------------------------------------
    async def run(self, item: Item, lm: Any) -> list[Sample]:
        completion = await lm.complete(self.messages(item), item.params)
        return [self.parse(item, lm, completion)]

    def parse(self, item: Item, lm: Any, completion: Completion) -> Sample:
        task, label = item.task, item.label or ""
        field0 = task.input_fields[0]
        if not completion.ok:
            return failed_sample(item, lm, completion, field_name=field0)
        if task.kind == "pair_classification":
            pair = parse_pair(completion.text, task.input_fields)
            if pair is None:
                s = new_sample(item, lm, inputs={}, output=label, raw_text=completion.text)
                return s.reject(
                    "malformed", f"expected '{task.input_fields[0].title()}:' and '{task.input_fields[1].title()}:' lines"
                )
            return new_sample(item, lm, inputs=pair, output=label, raw_text=completion.text)
        text = completion.text
        if completion.finish_reason == "length":
            # cut back to the last full sentence; a reply with none is rejected as overlong
            text = trim_to_sentence(text)
            if not text:
                s = new_sample(item, lm, inputs={field0: completion.text}, output=label, raw_text=completion.text)
                return s.reject("overlong", f"reply hit the {item.params.max_new_tokens}-token limit inside its first sentence")
        cleaned = clean_text(text, labels=task.label_names).text
        if len(cleaned) > task.generation.max_chars:
            # several sentences where one was asked for: keep the whole sentences that fit
            cleaned = fit_sentences(cleaned, task.generation.max_chars) or cleaned
        return new_sample(item, lm, inputs={field0: cleaned}, output=label, raw_text=completion.text)


def _quote(text: str, limit: int = 400) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit].rsplit(" ", 1)[0] + " ..."


def label_instruction(task: Task, label: str, templates: Mapping[str, str] = DEFAULT_TEMPLATES) -> str:
    """'Write one movie review sentence labeled negative: the writer dislikes the film.'"""
    noun = task.generation.input_noun
    desc = {lab.name: lab.description for lab in task.labels}.get(label, "")
    if task.kind == "pair_classification":
        a, b = (f.lower() for f in task.input_fields)
        what = f"a {a} and a {b}"
    else:
        what = f"one {noun}"
    return templates["instruction"].format(what=what, label=label, desc=f": {desc}" if desc else "", noun=noun)


def render_shot(task: Task, example: Any) -> str:
    if task.kind == "pair_classification":
        return "\n".join(f"{f.title()}: {_quote(example.inputs[f])}" for f in task.input_fields)
    return _quote(example.inputs[task.input_fields[0]])


def render_messages(task: Task, label: str, attributes: Mapping[str, str], shots: Sequence[Any],
                    templates: Mapping[str, str] = DEFAULT_TEMPLATES) -> tuple[Message, ...]:
    """Few-shot as earlier chat turns, then the instruction with the chosen attributes.

    Measured on sst2 with SmolLM2-135M-Instruct (48 samples per variant, dev split): this shape
    kept 92% of replies and raised dev accuracy of the benchmark student from 0.734 to 0.773;
    the same seeds pasted inline into one long prompt kept 75% and talked about the examples,
    and a system prompt made replies longer and chattier.
    """
    instruction = label_instruction(task, label, templates)
    msgs: list[Message] = []
    for e in shots:
        msgs += [Message("user", instruction), Message("assistant", render_shot(task, e))]
    parts = [instruction]
    parts += [templates["attribute"].format(name=name.replace("_", " ").capitalize(), value=value)
              for name, value in attributes.items()]
    if task.kind == "pair_classification":
        a, b = (f.title() for f in task.input_fields)
        parts.append(templates["reply_pair"].format(a=a, b=b))
    else:
        parts.append(templates["reply"].format(noun=task.generation.input_noun))
    msgs.append(Message("user", " ".join(parts)))
    return tuple(msgs)


_SENTENCE_END = re.compile(r"[.!?][\"'”’)]?(?=\s|$)")


def fit_sentences(text: str, max_chars: int) -> str:
    """The longest prefix of whole sentences that is at most ``max_chars`` long ('' if none)."""
    fitting = [m.end() for m in _SENTENCE_END.finditer(text) if m.end() <= max_chars]
    return text[: fitting[-1]].strip() if fitting else ""


def trim_to_sentence(text: str) -> str:
    """Text up to its last sentence end ('.', '!', '?', optionally closed by a quote), or ''."""
    return fit_sentences(text, len(text))


def parse_pair(text: str, fields: Sequence[str]) -> dict[str, str] | None:
    """Read 'Premise: ...' / 'Hypothesis: ...' lines (the field names, or Sentence 1/2)."""
    found: list[str] = []
    for line in text.splitlines():
        m = _PAIR_LINE.match(line)
        if m and len(found) < 2:
            value = clean_text(m.group(2)).text
            if value:
                found.append(value)
    if len(found) < 2:
        return None
    return {fields[0]: found[0], fields[1]: found[1]}


async def propose_attributes(task: Task, lm: Any, *, n: int = 8) -> dict[str, tuple[str, ...]]:
    """Ask the model once for topics of the task; fall back to generic style and length."""
    noun = task.generation.input_noun
    prompt = (
        f"Task: {task.description}\n\nList {n} different topics that a {noun} for this task could be about. "
        "One topic per line, two to four words each, no numbering, no explanations."
    )
    answer = await lm.complete((Message("user", prompt),), GenerationParams(temperature=0.7, top_p=0.95, max_new_tokens=96),
                               step="propose_attributes")
    topics: list[str] = []
    if answer.ok:
        for line in answer.text.splitlines():
            if line.rstrip().endswith(":"):  # a header such as "Here are some topics:"
                continue
            t = re.sub(r"^\s*(?:[-*•]|\d+[.)])\s*", "", line).strip().strip(".,;\"'*")
            chatty = re.match(r"(?i)(here|sure|certainly|these|i |okay|ok\b)", t)
            if (3 <= len(t) <= 40 and len(t.split()) <= 5 and ":" not in t and not chatty
                    and t.lower() not in {x.lower() for x in topics}):
                topics.append(t)
    attrs = dict(FALLBACK_ATTRIBUTES)
    if len(topics) >= 2:
        attrs = {"topic": tuple(topics[:n]), **attrs}
    return attrs
