"""Synthesis patterns, and the method that explores them.

A pattern is one way of asking for a sample: a template variant, how many real seed examples go
into the prompt, and the sampling temperature (``tpl=contrast|shots=3|temp=0.7``). The attribute
combination is drawn per item as before (AttrPrompt), so every sample records both its pattern and
its attributes, and feedback can be credited to the choice that made it.

``ExploringStrategy`` picks each item's pattern by Thompson sampling from its ``policy`` (a Beta
distribution per pattern: what the learner believes about the pattern's reward). The draw is seeded
by (run seed, item index), so planning stays pure and the data set reproducible. With ``draw="joint"``
every pattern is one arm; with ``draw="factored"`` each dimension (template, shots, temperature) is
drawn on its own from the Beta pooled over the patterns that share the value, so a reward teaches
every pattern with that value: with 16 patterns and about 40 samples a round, a pattern sees 2-3
samples a round, a value 10-20 (factored bandits under an additive reward, as the utility credit
of learn/credit.py assumes; Zimmert and Seldin, AISTATS 2018). The policy is
configuration: a learner writes a new one into a copy of the program (``SynLearner.partial_fit``);
running the program never changes it.

Papers: AttrPrompt (arXiv 2306.15895) for attribute conditioning; SynLearner (arXiv 2605.29940)
for rewarding diverse synthesis patterns; Thompson sampling (Thompson 1933; Chapelle and Li 2011).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace
from typing import Any, Mapping, Sequence

from streamsynth.errors import ConfigError
from streamsynth.learn.credit import pattern_parts
from streamsynth.fingerprint import derive_seed
from streamsynth.methods.attributed import DEFAULT_TEMPLATES, FALLBACK_ATTRIBUTES, AttributeConditionedStrategy, render_messages
from streamsynth.methods.base import Item
from streamsynth.records import Example, GenerationParams, Message
from streamsynth.state import component
from streamsynth.task import Task

#: template variants: overrides of the attribute-conditioned templates. ``{others}`` is the other
#: labels, ``{guidance}`` the hints retrieved from experience.
TEMPLATE_VARIANTS: Mapping[str, Mapping[str, str]] = {
    "plain": {},
    "contrast": {"instruction": "Write {what} labeled {label}{desc}. It must read as {label}, not as {others}."},
    "direct": {"reply": "Reply with the {noun} itself: no introduction, no label, no quotes."},
    "guided": {"reply": "Reply with the {noun} only. {guidance}"},
    # question rephrase (Scale AI, arXiv 2409.19759): the last demonstration, a real seed, said again
    # in other words; the whole last turn, with no new attributes (they would change its meaning)
    "rephrase": {"reply": "Now write the last {noun} again in other words: the same meaning, new wording. "
                          "Reply with the {noun} only."},
}
#: templates whose last turn asks to rewrite the last demonstration (so they need one: shots >= 1)
REWRITE_TEMPLATES = frozenset({"rephrase"})
DEFAULT_VARIANTS = ("plain", "contrast", "direct")
DEFAULT_SHOTS = (1, 3)
DEFAULT_TEMPERATURES = (0.7, 1.0)
#: the dimensions of a pattern space and their defaults (``guided`` joins the templates by itself
#: when experience brought lessons)
DEFAULT_SPACE: Mapping[str, tuple[Any, ...]] = {"templates": DEFAULT_VARIANTS, "shots": DEFAULT_SHOTS,
                                                "temperatures": DEFAULT_TEMPERATURES}


@dataclass(frozen=True, slots=True, order=True)
class Pattern:
    template: str
    shots: int
    temperature: float

    @property
    def id(self) -> str:
        return f"tpl={self.template}|shots={self.shots}|temp={self.temperature:g}"

    @classmethod
    def from_id(cls, pattern_id: str) -> "Pattern":
        try:
            parts = dict(p.split("=", 1) for p in pattern_id.split("|"))
            return cls(parts["tpl"], int(parts["shots"]), float(parts["temp"]))
        except (KeyError, ValueError) as exc:
            raise ConfigError(
                f"pattern {pattern_id!r} is not of the form 'tpl=NAME|shots=N|temp=T'; check the policy's keys"
            ) from exc


def check_space(space: Mapping[str, Sequence[Any]] | None) -> dict[str, tuple[Any, ...]]:
    """A pattern space (``templates``, ``shots``, ``temperatures``; missing ones take their defaults)
    checked and normalized, or a ``ConfigError`` that names the dimension and what is allowed."""
    space = dict(space or {})
    unknown = sorted(set(space) - set(DEFAULT_SPACE))
    if unknown:
        raise ConfigError(f"unknown pattern dimensions {unknown}; the dimensions are {sorted(DEFAULT_SPACE)}")
    out: dict[str, tuple[Any, ...]] = {}
    for dim, default in DEFAULT_SPACE.items():
        values = space.get(dim, default)
        if isinstance(values, (str, int, float)) or not values:
            raise ConfigError(f"patterns.{dim} must be a non-empty list, e.g. {list(default)}; got {values!r}")
        values = tuple(values)
        if any(values.count(v) > 1 for v in values):  # == not hash: a hand-edited value may be a list
            raise ConfigError(f"patterns.{dim} lists a value twice: {list(values)}")
        if dim == "templates":
            bad = [t for t in values if t not in TEMPLATE_VARIANTS or t == "guided"]
            if bad:
                raise ConfigError(f"patterns.templates: unknown or not selectable {bad}; choose from "
                                  f"{sorted(set(TEMPLATE_VARIANTS) - {'guided'})} ('guided' joins by itself when "
                                  "earlier tasks left lessons)")
            out[dim] = tuple(str(t) for t in values)
        elif dim == "shots":
            if not all(isinstance(k, int) and not isinstance(k, bool) and 0 <= k <= 16 for k in values):
                raise ConfigError(f"patterns.shots must be whole numbers from 0 to 16 (seeds shown per prompt); got {list(values)}")
            rewrite = sorted(REWRITE_TEMPLATES.intersection(out["templates"]))
            if rewrite and 0 in values:
                raise ConfigError(f"patterns.shots: {rewrite[0]!r} rewrites a seed shown in the prompt, so every "
                                  f"pattern needs at least one; drop 0 from {list(values)} or {rewrite[0]!r} from the templates")
            out[dim] = tuple(sorted(values))
        else:
            if not all(isinstance(t, (int, float)) and not isinstance(t, bool) and 0 <= t <= 2 for t in values):
                raise ConfigError(f"patterns.temperatures must be numbers from 0 to 2; got {list(values)}")
            out[dim] = tuple(sorted(float(t) for t in values))
    return out


def custom_space(space: Mapping[str, Sequence[Any]] | None) -> dict[str, list[Any]] | None:
    """``space`` checked and normalized (:func:`check_space`), or ``None`` when it is the default one:
    what configuration keeps, so the default leaves fingerprints as they were before spaces existed."""
    checked = check_space(space)
    return None if checked == check_space(None) else {k: list(v) for k, v in checked.items()}


def pattern_space(*, templates: Sequence[str] = DEFAULT_VARIANTS, shots: Sequence[int] = DEFAULT_SHOTS,
                  temperatures: Sequence[float] = DEFAULT_TEMPERATURES, guided: bool = False) -> list[str]:
    """Every combination, as pattern ids (``guided`` adds the template that carries lessons)."""
    names = list(templates) + (["guided"] if guided and "guided" not in templates else [])
    unknown = [t for t in names if t not in TEMPLATE_VARIANTS]
    if unknown:
        raise ConfigError(f"unknown template variants {unknown}; known: {sorted(TEMPLATE_VARIANTS)}")
    return [Pattern(t, k, float(temp)).id for t in names for k in shots for temp in temperatures]


DRAWS = ("joint", "factored")


def factored_choice(policy: Mapping[str, Sequence[float]], seed: int,
                    prior: Mapping[str, Sequence[float]] | None = None) -> str:
    """One Thompson draw per dimension of the pattern ids in ``policy``, seeded.

    ``policy`` is what the task believes now, ``prior`` what it started from (earlier tasks'
    evidence; flat (1, 1) where not given). A value's Beta adds up its patterns' own evidence
    (``alpha_p - prior_alpha_p``, and so for beta) over the patterns ``p`` with that value, and a
    prior pooled from theirs: the evidence-weighted mean of their prior means, worth as many
    pseudo-observations as the strongest of them, so pooling never makes earlier tasks count more
    than they do for one pattern. When the composed pattern is not in ``policy`` (a policy that is
    not a full product of its values), the draw falls back to :func:`thompson_choice`."""
    rng = random.Random(seed)
    prior = prior or {}
    # dim -> value -> [own alpha, own beta, prior successes, prior total, strongest prior]
    pooled: dict[str, dict[str, list[float]]] = {}
    for pid in sorted(policy):
        a, b = (float(x) for x in policy[pid])
        a0, b0 = (float(x) for x in prior.get(pid, (1.0, 1.0)))
        for part in pattern_parts(pid):
            dim, _, value = part.partition("=")
            acc = pooled.setdefault(dim, {}).setdefault(value, [0.0, 0.0, 0.0, 0.0, 0.0])
            acc[0] += max(a - a0, 0.0)
            acc[1] += max(b - b0, 0.0)
            acc[2] += a0 - 1.0
            acc[3] += a0 + b0 - 2.0
            acc[4] = max(acc[4], a0 + b0 - 2.0)
    chosen: dict[str, str] = {}
    for dim in sorted(pooled):
        best_v = -1.0
        for value, (own_a, own_b, succ, total, strongest) in sorted(pooled[dim].items()):
            mean = succ / total if total > 0 else 0.5
            alpha = 1.0 + strongest * mean + own_a
            beta = 1.0 + strongest * (1.0 - mean) + own_b
            v = rng.betavariate(max(alpha, 1e-3), max(beta, 1e-3))
            if v > best_v:
                chosen[dim], best_v = value, v
    order = [part.partition("=")[0] for part in pattern_parts(sorted(policy)[0])]
    pid = "|".join(f"{dim}={chosen[dim]}" for dim in order)
    return pid if pid in policy else thompson_choice(policy, seed)


def thompson_choice(policy: Mapping[str, Sequence[float]], seed: int) -> str:
    """One Thompson-sampling draw over ``policy`` (pattern -> (alpha, beta)), seeded."""
    rng = random.Random(seed)
    best, best_v = "", -1.0
    for pid in sorted(policy):
        a, b = policy[pid]
        v = rng.betavariate(max(float(a), 1e-3), max(float(b), 1e-3))
        if v > best_v:
            best, best_v = pid, v
    return best


@component("explore")
class ExploringStrategy(AttributeConditionedStrategy):
    """Attribute-conditioned new examples, each with a pattern drawn from a Beta policy."""

    name = "explore"

    def __init__(
        self,
        *,
        policy: Mapping[str, Sequence[float]] | None = None,
        guidance: str = "",
        exemplars: Mapping[str, Sequence[str]] | None = None,
        attributes: Mapping[str, Sequence[str]] | None = None,
        params: GenerationParams | Mapping[str, Any] | None = None,
        label_weights: Mapping[str, float] | None = None,
        templates: Mapping[str, str] | None = None,
        draw: str = "joint",
        prior: Mapping[str, Sequence[float]] | None = None,
        space: Mapping[str, Sequence[Any]] | None = None,
    ) -> None:
        if draw not in DRAWS:
            raise ConfigError(f"draw must be one of {list(DRAWS)} (one arm per pattern, or per pattern part); got {draw!r}")
        self.draw = draw
        #: the pattern space a policy is built over when none is given (and the learner's arms):
        #: ``None`` for the default one
        self.space = custom_space(space)
        #: the policy the task started from (the learner's priors): the factored draw pools it apart
        #: from the task's own evidence; ``None``: flat
        self.prior = {str(k): [float(v[0]), float(v[1])] for k, v in sorted(prior.items())} if prior else None
        super().__init__(attributes=attributes, params=params, label_weights=label_weights, templates=templates)
        start = policy if policy else {pid: (1.0, 1.0) for pid in self.arms(guided=bool(guidance))}
        self.policy = {str(k): [float(v[0]), float(v[1])] for k, v in sorted(start.items())}
        for pid, (a, b) in self.policy.items():
            p = Pattern.from_id(pid)
            if p.template not in TEMPLATE_VARIANTS:
                raise ConfigError(f"policy pattern {pid!r} names an unknown template; known: {sorted(TEMPLATE_VARIANTS)}")
            if p.template == "guided" and not guidance:
                raise ConfigError(f"policy pattern {pid!r} needs guidance text; give guidance or drop the pattern")
            if a <= 0 or b <= 0:
                raise ConfigError(f"policy of {pid!r} must have positive alpha and beta, got {a}, {b}")
        self.guidance = guidance
        #: high-reward texts from earlier runs of the same task, per label: extra demonstrations
        self.exemplars = {k: list(v) for k, v in (exemplars or {}).items()}

    def arms(self, *, guided: bool = False) -> list[str]:
        """Every pattern of this explorer's space, as ids (``guided`` adds the template that carries lessons)."""
        return pattern_space(**(self.space or DEFAULT_SPACE), guided=guided)

    def config_state(self) -> dict[str, Any]:
        # the joint draw ignores ``prior``: leave both out, so runs written before the factored draw
        # existed keep their fingerprints (and resume); so for the default space
        state = super().config_state()
        if self.draw == "joint":
            state["params"].pop("draw", None)
            state["params"].pop("prior", None)
        if self.space is None:
            state["params"].pop("space", None)
        return state

    def plan(self, task: Task, index: int, seed: int) -> Item:
        draw_seed = derive_seed(seed, "pattern", index)
        if self.draw == "factored":
            pid = factored_choice(self.policy, draw_seed, self.prior)
        else:
            pid = thompson_choice(self.policy, draw_seed)
        pattern = Pattern.from_id(pid)
        attrs = self.attributes_ or self.attributes or dict(task.attributes) or dict(FALLBACK_ATTRIBUTES)
        rng = random.Random(derive_seed(seed, self.name, index))
        label = self._label_for(task, index, seed)
        chosen = {name: rng.choice(values) for name, values in sorted(attrs.items())}
        if pattern.template in REWRITE_TEMPLATES:
            chosen = {}  # drawn all the same, so no other item's draw moves
        seeds = task.seeds_for(label)
        pool: list[Example] = list(seeds)
        pool += [Example(f"exemplar-{label}-{i}", {task.input_fields[0]: t}, label)
                 for i, t in enumerate(self.exemplars.get(label, ())) if task.kind == "classification"]
        if pattern.template in REWRITE_TEMPLATES and seeds and pattern.shots:
            # the text to say again, shown last, is a real seed (an exemplar is synthetic, and no
            # check knows it to catch a copy); the other shots are drawn as for any template
            source = rng.choice(seeds)
            rest = [e for e in pool if e is not source]
            shots = tuple(rng.sample(rest, min(pattern.shots - 1, len(rest)))) + (source,)
        else:
            shots = tuple(rng.sample(pool, min(pattern.shots, len(pool))))
        base = self._params(task)
        params = replace(base, temperature=pattern.temperature)
        return Item(
            task=task, index=index, seed=seed, method=self.name, max_calls=1, pattern=pid,
            label=label, attributes=chosen, demonstrations=shots, params=params,
            conditioning={"label": label, "attributes": chosen, "template": pattern.template, "shots": pattern.shots,
                          "temperature": pattern.temperature},
        )

    def templates_for(self, item: Item) -> dict[str, str]:
        """The item's template variant over the program's templates, with its blanks filled."""
        pattern = Pattern.from_id(item.pattern)
        merged = {**self.templates, **TEMPLATE_VARIANTS[pattern.template]}
        others = [lab for lab in item.task.label_names if lab != item.label]
        fill = {"{others}": " or ".join(others) or "anything else", "{guidance}": self.guidance}
        out = {}
        for k, v in merged.items():
            for blank, text in fill.items():
                v = v.replace(blank, text.replace("{", "{{").replace("}", "}}"))
            out[k] = v
        return out

    def messages(self, item: Item) -> tuple[Message, ...]:
        templates = self.templates_for(item)
        if Pattern.from_id(item.pattern).template not in REWRITE_TEMPLATES:
            return render_messages(item.task, item.label or "", item.attributes, item.demonstrations, templates)
        if not item.demonstrations:  # a label without seeds has nothing to rewrite: the plain ask
            return render_messages(item.task, item.label or "", item.attributes, (), self.templates)
        task = item.task
        msgs = render_messages(task, item.label or "", {}, item.demonstrations, templates)
        last = templates["reply"].format(noun=task.generation.input_noun)
        if task.kind == "pair_classification":
            a, b = (f.title() for f in task.input_fields)
            last += " " + templates["reply_pair"].format(a=a, b=b)
        return msgs[:-1] + (Message("user", last),)


__all__ = ["DEFAULT_SPACE", "DEFAULT_TEMPLATES", "DRAWS", "REWRITE_TEMPLATES", "check_space", "custom_space", "ExploringStrategy", "Pattern", "TEMPLATE_VARIANTS", "factored_choice", "pattern_space", "thompson_choice"]
