"""Immutable records that flow through streamsynth.

A record never changes after it is made: ``dataclasses.replace`` (or the ``with_*`` helpers)
returns a new one. Every sample carries where it came from (provenance), what it cost, how it
was judged (verdicts and scores) and, when it was rejected, why.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal, Mapping

from streamsynth.fingerprint import canonical_json, derive_seed, fingerprint_text, json_str

Role = Literal["system", "user", "assistant"]


@dataclass(frozen=True, slots=True)
class Message:
    role: Role
    content: str

    def to_dict(self) -> dict[str, str]:
        return {"role": self.role, "content": self.content}


@dataclass(frozen=True, slots=True)
class GenerationParams:
    """Sampling parameters. Part of every cache key."""

    temperature: float = 0.8
    top_p: float = 0.95
    max_new_tokens: int = 96
    stop: tuple[str, ...] = ()
    logprobs: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "temperature": self.temperature,
            "top_p": self.top_p,
            "max_new_tokens": self.max_new_tokens,
            "stop": list(self.stop),
            "logprobs": self.logprobs,
        }


@dataclass(frozen=True, slots=True)
class CompletionRequest:
    """One chat completion to make. ``seed`` and ``sample_index`` make sampling reproducible."""

    messages: tuple[Message, ...]
    params: GenerationParams = GenerationParams()
    seed: int = 0
    sample_index: int = 0
    #: which call of the item this is: a step name and a repeat number (self-consistency's k-th answer)
    step: str = ""
    k: int = 0

    @property
    def sampling_seed(self) -> int:
        """The seed a backend samples this request with: a function of (seed, item, step, k) only."""
        if not self.step and not self.k:
            return derive_seed(self.seed, self.sample_index)
        return derive_seed(self.seed, self.sample_index, self.step, self.k)

    def key_material(self, model_id: str) -> dict[str, Any]:
        """Everything a response depends on; the cache key is its fingerprint."""
        material = {
            "model": model_id,
            "messages": [m.to_dict() for m in self.messages],
            "params": self.params.to_dict(),
            "seed": self.seed,
            "sample_index": self.sample_index,
        }
        if self.step or self.k:  # single-call methods keep the keys they always had
            material["step"], material["k"] = self.step, self.k
        return material

    def cache_key(self, model_id: str) -> str:
        """``fingerprint(self.key_material(model_id))``, built without the intermediate dicts."""
        return fingerprint_text(self._key_text(model_id, messages_json(self.messages)))

    def fingerprints(self, model_id: str) -> tuple[str, str]:
        """``(cache_key(model_id), prompt_fingerprint())``, the messages serialized once for both."""
        msgs = messages_json(self.messages)
        return fingerprint_text(self._key_text(model_id, msgs)), fingerprint_text(msgs)[:16]

    def _key_text(self, model_id: str, msgs: str) -> str:
        # canonical_json(key_material): keys in sorted order (k, messages, model, params, sample_index, seed, step)
        tail = f',"model":{_scalar(model_id)},"params":{params_json(self.params)},' \
               f'"sample_index":{_scalar(self.sample_index)},"seed":{_scalar(self.seed)}'
        if self.step or self.k:
            return f'{{"k":{_scalar(self.k)},"messages":{msgs}{tail},"step":{_scalar(self.step)}}}'
        return f'{{"messages":{msgs}{tail}}}'

    def prompt_fingerprint(self) -> str:
        """Fingerprint of the prompt alone (no seed, no index): groups samples by prompt."""
        return fingerprint_text(messages_json(self.messages))[:16]


def _scalar(v: Any) -> str:
    """A str or int exactly as ``canonical_json`` writes it (anything else goes through it)."""
    t = type(v)
    if t is str:
        return json_str(v)
    if t is int:
        return int.__repr__(v)
    return canonical_json(v)


def messages_json(messages: tuple[Message, ...] | list[Message]) -> str:
    """``canonical_json([m.to_dict() for m in messages])``, without the intermediate dicts."""
    parts = []
    for m in messages:
        if type(m) is Message and type(m.role) is str and type(m.content) is str:
            parts.append(f'{{"content":{json_str(m.content)},"role":{json_str(m.role)}}}')
        else:
            parts.append(canonical_json(m.to_dict()))
    return "[" + ",".join(parts) + "]"


#: id(params) -> (params, canonical JSON of params.to_dict()); the object is held so its id stays its own
_PARAMS_JSON: dict[int, tuple["GenerationParams", str]] = {}


def params_json(params: GenerationParams) -> str:
    """``canonical_json(params.to_dict())``, remembered per params object (they are immutable)."""
    hit = _PARAMS_JSON.get(id(params))
    if hit is not None and hit[0] is params:
        return hit[1]
    text = canonical_json(params.to_dict())
    if type(params.stop) is not tuple:  # a list could change under us: not remembered
        return text
    if len(_PARAMS_JSON) >= 1024:
        _PARAMS_JSON.clear()
    _PARAMS_JSON[id(params)] = (params, text)
    return text


@dataclass(frozen=True, slots=True)
class TokenLogprob:
    token: str
    logprob: float
    top: tuple[tuple[str, float], ...] = ()


@dataclass(frozen=True, slots=True)
class Completion:
    """A model's answer to one request, with its usage. ``error`` is set when it failed."""

    text: str
    model: str
    finish_reason: str = "stop"
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_s: float = 0.0
    cached: bool = False
    logprobs: tuple[TokenLogprob, ...] | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_dict(self) -> dict[str, Any]:
        d = {
            "text": self.text,
            "model": self.model,
            "finish_reason": self.finish_reason,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "latency_s": self.latency_s,
            "error": self.error,
            "logprobs": None,
        }
        if self.logprobs is not None:
            d["logprobs"] = [
                {"token": t.token, "logprob": t.logprob, "top": [list(x) for x in t.top]}
                for t in self.logprobs
            ]
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], *, cached: bool = False) -> "Completion":
        lps = d.get("logprobs")
        return cls(
            text=d["text"],
            model=d["model"],
            finish_reason=d.get("finish_reason", "stop"),
            prompt_tokens=int(d.get("prompt_tokens", 0)),
            completion_tokens=int(d.get("completion_tokens", 0)),
            latency_s=float(d.get("latency_s", 0.0)),
            cached=cached,
            error=d.get("error"),
            logprobs=None
            if lps is None
            else tuple(
                TokenLogprob(x["token"], float(x["logprob"]), tuple(tuple(t) for t in x.get("top", ())))
                for x in lps
            ),
        )


@dataclass(frozen=True, slots=True)
class Cost:
    """What producing something cost. ``calls`` are fresh model calls; cache hits are free."""

    calls: int = 0
    cached_calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    dollars: float = 0.0

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def __add__(self, other: "Cost") -> "Cost":
        return Cost(
            self.calls + other.calls,
            self.cached_calls + other.cached_calls,
            self.prompt_tokens + other.prompt_tokens,
            self.completion_tokens + other.completion_tokens,
            self.dollars + other.dollars,
        )

    def __sub__(self, other: "Cost") -> "Cost":
        return Cost(
            self.calls - other.calls,
            self.cached_calls - other.cached_calls,
            self.prompt_tokens - other.prompt_tokens,
            self.completion_tokens - other.completion_tokens,
            self.dollars - other.dollars,
        )

    def to_dict(self) -> dict[str, Any]:
        # explicit: dataclasses.asdict deep-copies and was a hot spot when journaling every item
        return {"calls": self.calls, "cached_calls": self.cached_calls, "prompt_tokens": self.prompt_tokens,
                "completion_tokens": self.completion_tokens, "dollars": self.dollars}


@dataclass(frozen=True, slots=True)
class Example:
    """A real example from the task's data (a seed, a dev or test row)."""

    id: str
    inputs: Mapping[str, str]
    output: str

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "inputs": dict(self.inputs), "output": self.output}


@dataclass(frozen=True, slots=True)
class Step:
    """One model call an item made: which step, which request, what it cost, how it ended."""

    name: str
    k: int
    request_fingerprint: str
    cached: bool
    cost: Cost
    outcome: str = "ok"  # "ok", or "error: <reason>"

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "k": self.k, "request_fingerprint": self.request_fingerprint,
                "cached": self.cached, "cost": self.cost.to_dict(), "outcome": self.outcome}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Step":
        return cls(d["name"], int(d["k"]), d["request_fingerprint"], bool(d["cached"]), Cost(**d["cost"]), d.get("outcome", "ok"))


@dataclass(frozen=True, slots=True)
class Provenance:
    """Where a sample came from: enough to credit feedback to the choice that made it."""

    strategy: str
    pattern: str
    prompt_fingerprint: str
    request_fingerprint: str
    model: str
    seed: int
    sample_index: int
    conditioning: Mapping[str, Any] = field(default_factory=dict)
    seed_example_ids: tuple[str, ...] = ()
    parents: tuple[str, ...] = ()
    #: every model call the item made, in order (a multi-call method has several)
    steps: tuple[Step, ...] = ()

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Provenance":
        return cls(
            strategy=d["strategy"], pattern=d["pattern"], prompt_fingerprint=d["prompt_fingerprint"],
            request_fingerprint=d["request_fingerprint"], model=d["model"], seed=int(d["seed"]),
            sample_index=int(d["sample_index"]), conditioning=dict(d.get("conditioning") or {}),
            seed_example_ids=tuple(d.get("seed_example_ids") or ()), parents=tuple(d.get("parents") or ()),
            steps=tuple(Step.from_dict(x) for x in d.get("steps") or ()),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "steps": [x.to_dict() for x in self.steps],
            "strategy": self.strategy,
            "pattern": self.pattern,
            "prompt_fingerprint": self.prompt_fingerprint,
            "request_fingerprint": self.request_fingerprint,
            "model": self.model,
            "seed": self.seed,
            "sample_index": self.sample_index,
            "conditioning": dict(self.conditioning),
            "seed_example_ids": list(self.seed_example_ids),
            "parents": list(self.parents),
        }


@dataclass(frozen=True, slots=True)
class Verdict:
    """One check's judgement of a sample."""

    check: str
    passed: bool
    reason: str = ""
    score: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"check": self.check, "passed": self.passed, "reason": self.reason, "score": self.score}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Verdict":
        return cls(d["check"], bool(d["passed"]), d.get("reason", ""), d.get("score"))


@dataclass(frozen=True, slots=True)
class Sample:
    """A synthetic example with its provenance, judgements and cost."""

    id: str
    task: str
    inputs: Mapping[str, str]
    output: str
    provenance: Provenance
    raw_text: str = ""
    cost: Cost = Cost()
    verdicts: tuple[Verdict, ...] = ()
    scores: Mapping[str, float] = field(default_factory=dict)
    rejected_reason: str | None = None

    @property
    def accepted(self) -> bool:
        return self.rejected_reason is None

    def with_verdict(self, verdict: Verdict) -> "Sample":
        """Add a verdict; a failed one rejects the sample (the first failure is the reason)."""
        reason = self.rejected_reason
        if not verdict.passed and reason is None:
            reason = f"{verdict.check}: {verdict.reason}" if verdict.reason else verdict.check
        scores = dict(self.scores)
        if verdict.score is not None:
            scores[verdict.check] = verdict.score
        if type(self) is not Sample:  # a subclass may have more fields
            return dataclasses.replace(self, verdicts=self.verdicts + (verdict,), rejected_reason=reason, scores=scores)
        # (what dataclasses.replace makes, without its per-call introspection: this runs for every check of every sample)
        return Sample(self.id, self.task, self.inputs, self.output, self.provenance, self.raw_text, self.cost,
                      self.verdicts + (verdict,), scores, reason)

    def reject(self, check: str, reason: str) -> "Sample":
        return self.with_verdict(Verdict(check=check, passed=False, reason=reason))

    @property
    def reject_category(self) -> str | None:
        """The check that rejected the sample (the part of the reason before ':')."""
        if self.rejected_reason is None:
            return None
        return self.rejected_reason.split(":", 1)[0]

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "task": self.task,
            "inputs": dict(self.inputs),
            "output": self.output,
            "provenance": self.provenance.to_dict(),
            "raw_text": self.raw_text,
            "cost": self.cost.to_dict(),
            "verdicts": [v.to_dict() for v in self.verdicts],
            "scores": dict(self.scores),
            "rejected_reason": self.rejected_reason,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Sample":
        """The inverse of ``to_dict`` (journals and resumed runs read samples back with it)."""
        return cls(
            id=d["id"], task=d["task"], inputs=dict(d["inputs"]), output=d["output"],
            provenance=Provenance.from_dict(d["provenance"]), raw_text=d.get("raw_text", ""),
            cost=Cost(**d.get("cost") or {}), verdicts=tuple(Verdict.from_dict(v) for v in d.get("verdicts") or ()),
            scores=dict(d.get("scores") or {}), rejected_reason=d.get("rejected_reason"),
        )
