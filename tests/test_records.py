import dataclasses

import pytest

from streamsynth.fingerprint import canonical_json, derive_seed, fingerprint
from streamsynth.records import (
    Completion, CompletionRequest, Cost, GenerationParams, Message, Provenance, Sample, TokenLogprob, Verdict,
)


def _prov(**kw):
    base = dict(strategy="s", pattern="p", prompt_fingerprint="f", request_fingerprint="r", model="m", seed=0, sample_index=0)
    base.update(kw)
    return Provenance(**base)


def test_records_are_immutable():
    s = Sample(id="x", task="t", inputs={"text": "hi"}, output="pos", provenance=_prov())
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.output = "neg"  # type: ignore[misc]


def test_failed_verdict_rejects_with_first_reason_and_keeps_scores():
    s = Sample(id="x", task="t", inputs={"text": "hi"}, output="pos", provenance=_prov())
    s2 = s.with_verdict(Verdict("quality", True, score=0.7))
    assert s2.accepted and s2.scores == {"quality": 0.7}
    s3 = s2.with_verdict(Verdict("length", False, "too long")).with_verdict(Verdict("dup", False, "seen"))
    assert not s3.accepted
    assert s3.rejected_reason == "length: too long"
    assert s3.reject_category == "length"
    assert len(s3.verdicts) == 3
    assert s.accepted and s.verdicts == ()  # the original is untouched


def test_sample_to_dict_carries_provenance_cost_and_reason():
    s = Sample(
        id="x", task="t", inputs={"text": "hi"}, output="pos",
        provenance=_prov(seed_example_ids=("train:1",), conditioning={"label": "pos"}),
        cost=Cost(calls=1, prompt_tokens=10, completion_tokens=5),
    ).reject("echo", "repeats the prompt")
    d = s.to_dict()
    assert d["provenance"]["seed_example_ids"] == ["train:1"]
    assert d["cost"]["completion_tokens"] == 5
    assert d["rejected_reason"] == "echo: repeats the prompt"


def test_cost_adds_up():
    c = Cost(1, 0, 10, 5, 0.5) + Cost(0, 1, 3, 2, 0.0)
    assert (c.calls, c.cached_calls, c.tokens, c.dollars) == (1, 1, 20, 0.5)


def test_completion_roundtrip_with_logprobs():
    c = Completion("hi", "m", logprobs=(TokenLogprob("hi", -0.1, (("hi", -0.1), ("yo", -2.0))),))
    back = Completion.from_dict(c.to_dict(), cached=True)
    assert back.cached and back.text == "hi" and back.logprobs[0].top[1] == ("yo", -2.0)


def _req(**kw):
    base = dict(messages=(Message("user", "write"),), params=GenerationParams(), seed=0, sample_index=0)
    base.update(kw)
    return CompletionRequest(**base)


def test_cache_key_depends_on_everything_the_response_depends_on():
    r = _req()
    key = r.cache_key("model-a")
    assert key == _req().cache_key("model-a")  # stable
    variants = [
        r.cache_key("model-b"),
        _req(messages=(Message("user", "write!"),)).cache_key("model-a"),
        _req(messages=(Message("system", "write"),)).cache_key("model-a"),
        _req(params=GenerationParams(temperature=0.5)).cache_key("model-a"),
        _req(params=GenerationParams(max_new_tokens=7)).cache_key("model-a"),
        _req(params=GenerationParams(stop=("\n",))).cache_key("model-a"),
        _req(seed=1).cache_key("model-a"),
        _req(sample_index=1).cache_key("model-a"),
    ]
    assert len(set(variants + [key])) == len(variants) + 1


def test_prompt_fingerprint_ignores_seed_and_index():
    assert _req(seed=3, sample_index=9).prompt_fingerprint() == _req().prompt_fingerprint()


def test_fingerprint_is_order_independent_for_dict_keys():
    assert fingerprint({"a": 1, "b": [1, 2]}) == fingerprint({"b": [1, 2], "a": 1})
    assert canonical_json({"b": 1, "a": 2}) == '{"a":2,"b":1}'
    assert derive_seed(0, 1) != derive_seed(1, 0)
    assert 0 <= derive_seed("x") < 2**63
