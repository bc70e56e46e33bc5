"""The continuous batcher passes the key/value cache under the name the model's forward takes
(transformers 5.x renamed ``past_key_values`` to ``cache``; 5.40 drops the old name)."""

from types import SimpleNamespace

from streamsynth.backends.continuous import _cache_keyword, _out_cache


class NewStyle:
    def forward(self, input_ids=None, attention_mask=None, position_ids=None, cache=None, use_cache=None, **kw):
        return SimpleNamespace(cache="kv-new")


class OldStyle:
    def forward(self, input_ids=None, attention_mask=None, past_key_values=None, use_cache=None):
        return SimpleNamespace(past_key_values="kv-old")


class Wrapped:  # e.g. a PEFT model: only **kwargs, passed through to a model that takes the old name too
    def forward(self, *args, **kwargs):
        return SimpleNamespace(cache=None, past_key_values="kv-wrapped")


def test_the_cache_goes_in_under_the_name_the_forward_takes():
    assert _cache_keyword(NewStyle()) == "cache"
    assert _cache_keyword(OldStyle()) == "past_key_values"
    assert _cache_keyword(Wrapped()) == "past_key_values"


def test_the_cache_comes_back_from_either_field():
    assert _out_cache(NewStyle().forward()) == "kv-new"
    assert _out_cache(OldStyle().forward()) == "kv-old"
    assert _out_cache(Wrapped().forward()) == "kv-wrapped"
