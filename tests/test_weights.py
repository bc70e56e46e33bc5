"""LoRA weight learning of the local synthesizer (streamsynth.learn.weights) and adapters in the backend.

Fast tests use fake model and adapter folders; the ``slow`` ones train the real embedded
SmolLM2-135M-Instruct on the CPU with a handful of short examples and one or two steps.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from streamsynth.backends.local_hf import LocalHFBackend
from streamsynth.errors import ConfigError, DataError
from streamsynth.learn.weights import (
    EXTRA_HINT,
    REF_FILE,
    AdapterRef,
    TrainingExample,
    WeightLearner,
    WeightLearnerConfig,
    adapter_digest,
)
from streamsynth.records import CompletionRequest, GenerationParams, Message

PROMPTS = [f"Write one short positive sentence about the {w} of a movie." for w in ("acting", "plot", "music", "pacing")]


def _examples(reward: float = 0.9) -> list[TrainingExample]:
    return [TrainingExample((Message("user", p),), "Bananas! Bananas are the best movie snack ever.", reward)
            for p in PROMPTS]


def _fake_model_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "base"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "llama"}))
    return folder


def _fake_adapter(folder: Path, weights: bytes = b"w1", targets: list[str] | None = None) -> Path:
    folder.mkdir(parents=True)
    config = {"peft_type": "LORA", "r": 8, "lora_alpha": 16, "target_modules": targets or ["q_proj", "v_proj"],
              "base_model_name_or_path": str(folder)}
    (folder / "adapter_config.json").write_text(json.dumps(config))
    (folder / "adapter_model.safetensors").write_bytes(weights)
    return folder


# -- fast: records, config, errors -----------------------------------------------------------
def test_adapter_ref_json_round_trip(tmp_path):
    ref = AdapterRef(tmp_path / "a", "ab" * 32, "local:m@123", parent="cd" * 32,
                     stats={"sft_examples": 3, "sft_s": 1.5, "config": {"target_modules": ["q_proj"]}})
    again = AdapterRef.from_dict(json.loads(json.dumps(ref.to_dict())))
    assert again == ref and isinstance(again.path, Path)
    with pytest.raises(DataError, match="digest"):
        AdapterRef.from_dict({"path": "x", "base_model_id": "m"})


def test_adapter_digest_names_the_weights_not_the_folder(tmp_path):
    a = adapter_digest(_fake_adapter(tmp_path / "a", targets=["q_proj", "v_proj"]))
    assert len(a) == 64 and int(a, 16) >= 0
    assert adapter_digest(_fake_adapter(tmp_path / "b", targets=["v_proj", "q_proj"])) == a  # a set, saved in any order
    assert adapter_digest(_fake_adapter(tmp_path / "c", weights=b"w2")) != a
    with pytest.raises(ConfigError, match="not a LoRA adapter folder"):
        adapter_digest(tmp_path / "missing")


def test_adapter_ref_load_checks_the_weights(tmp_path):
    folder = _fake_adapter(tmp_path / "a")
    record = {"digest": adapter_digest(folder), "base_model_id": "local:m@1", "parent": None, "stats": {"sft_steps": 2}}
    (folder / REF_FILE).write_text(json.dumps(record))
    ref = AdapterRef.load(folder)
    assert ref.path == folder and ref.stats["sft_steps"] == 2
    (folder / "adapter_model.safetensors").write_bytes(b"changed")
    with pytest.raises(ConfigError, match="no longer match"):
        AdapterRef.load(folder)


@pytest.mark.parametrize("bad, match", [
    ({"num_generations": 1}, "num_generations"),
    ({"lora_r": 0}, "lora_r"),
    ({"sft_lr": 0.0}, "sft_lr"),
    ({"grpo_steps": -1}, "grpo_steps"),
    ({"lora_dropout": 1.0}, "lora_dropout"),
    ({"dtype": "float16"}, "dtype"),
    ({"target_modules": ()}, "target_modules"),
    ({"min_reward": float("nan")}, "min_reward"),
])
def test_config_validation(bad, match):
    with pytest.raises(ConfigError, match=match):
        WeightLearnerConfig(**bad)
    with pytest.raises(ConfigError, match=match):
        WeightLearner(**bad)


def test_unknown_setting_and_bad_example_are_clear_errors():
    with pytest.raises(ConfigError, match="unknown WeightLearner settings.*'lora_rank'"):
        WeightLearner(lora_rank=4)
    assert WeightLearner(WeightLearnerConfig(sft_epochs=1), seed=3).config.seed == 3
    with pytest.raises(DataError, match="reward"):
        TrainingExample((Message("user", "x"),), "y", float("nan"))
    with pytest.raises(DataError, match="messages"):
        TrainingExample((), "y", 1.0)


def test_no_example_above_min_reward_returns_start_unchanged(tmp_path):
    base = _fake_model_folder(tmp_path)
    learner = WeightLearner(min_reward=0.6)
    low = _examples(reward=0.2)
    assert learner.fit(base, low, out_dir=tmp_path / "out") is None
    start = AdapterRef(tmp_path / "prev", "ab" * 32, learner_base_id(base), stats={"sft_steps": 2})
    again = learner.fit(base, low, start=start, out_dir=tmp_path / "out")
    assert (again.path, again.digest, again.parent) == (start.path, start.digest, start.parent)
    assert again.stats["sft_steps"] == 2 and "no example had reward >= min_reward" in again.stats["skipped"]
    assert not (tmp_path / "out").exists() and start.stats == {"sft_steps": 2}


def learner_base_id(base: Path) -> str:
    return LocalHFBackend(base).model_id


def test_start_from_another_base_and_used_out_dir_are_refused(tmp_path):
    base = _fake_model_folder(tmp_path)
    other = AdapterRef(tmp_path / "prev", "ab" * 32, "local:another@123")
    with pytest.raises(ConfigError, match="trained on local:another@123"):
        WeightLearner().fit(base, _examples(), start=other, out_dir=tmp_path / "out")
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "f").write_text("x")
    with pytest.raises(ConfigError, match="new out_dir"):
        WeightLearner().fit(base, _examples(), out_dir=tmp_path / "used")


def test_missing_extra_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "peft", None)  # import peft now raises ImportError
    with pytest.raises(ConfigError, match=r"pip install 'streamsynth\[weights\]'") as err:
        WeightLearner().fit(_fake_model_folder(tmp_path), _examples(), out_dir=tmp_path / "out")
    assert EXTRA_HINT in str(err.value)


def test_backend_adapter_names_its_digest_and_bad_folders_fail_early(tmp_path):
    base = _fake_model_folder(tmp_path)
    adapter = _fake_adapter(tmp_path / "adapter")
    plain, tuned = LocalHFBackend(base), LocalHFBackend(base, adapter=adapter)
    assert tuned.model_id == f"{plain.model_id}+lora:{adapter_digest(adapter)[:12]}"
    assert LocalHFBackend(base, adapter=adapter, dtype="bfloat16").model_id.endswith("+bfloat16+lora:" + adapter_digest(adapter)[:12])
    with pytest.raises(ConfigError, match="not a LoRA adapter folder"):
        LocalHFBackend(base, adapter=tmp_path / "nothing")
    stale = AdapterRef(adapter, "00" * 32, plain.model_id)
    with pytest.raises(ConfigError, match="overwritten"):
        LocalHFBackend(base, adapter=stale)


def test_with_adapter_is_a_new_backend_and_leaves_the_first_as_it_was(tmp_path, monkeypatch):
    import streamsynth.backends.local_hf as local_hf

    base = _fake_model_folder(tmp_path)
    adapter = _fake_adapter(tmp_path / "adapter")
    plain = LocalHFBackend(base, batch_size=8, dtype="bfloat16")
    monkeypatch.setattr(local_hf, "resolve_model", lambda m: pytest.fail("the model was resolved again"))
    tuned = plain.with_adapter(adapter)
    assert tuned.model_id == f"{plain.model_id}+lora:{adapter_digest(adapter)[:12]}"
    assert plain.model_id.endswith("+bfloat16") and "+lora:" not in plain.model_id
    assert (tuned.batch_size, tuned.dtype, tuned.converted_dir()) == (8, "bfloat16", plain.converted_dir())
    assert tuned._lock is not plain._lock and tuned.with_adapter(None).model_id == plain.model_id
    with pytest.raises(ConfigError, match="not a LoRA adapter folder"):
        plain.with_adapter(tmp_path / "nothing")


# -- slow: real training on the embedded model -------------------------------------------------
@pytest.fixture(scope="module")
def base_folder(model_cache_dir) -> Path:
    backend = LocalHFBackend(cache_dir=model_cache_dir)
    backend.load()
    return backend.converted_dir()


SFT = {"sft_epochs": 2, "batch_size": 4, "sft_lr": 5e-3, "max_length": 96}


@pytest.fixture(scope="module")
def first(base_folder, tmp_path_factory) -> AdapterRef:
    out = tmp_path_factory.mktemp("adapters") / "task1"
    examples = [*_examples(), TrainingExample((Message("user", "Say hi."),), "hi", 0.1)]
    return WeightLearner(**SFT).fit(base_folder, examples, out_dir=out)


@pytest.mark.slow
def test_sft_changes_the_adapter_and_lowers_the_loss(base_folder, first):
    from safetensors.torch import load_file

    assert first.stats["sft_examples"] == 4 and first.stats["sft_steps"] == 2  # the low-reward example is left out
    assert first.stats["sft_s"] > 0 and first.stats["grpo_steps"] == 0 and first.parent is None
    assert first.digest == adapter_digest(first.path) and first.base_model_id.startswith("local:")
    tensors = load_file(first.path / "adapter_model.safetensors")
    lora_b = [t for name, t in tensors.items() if "lora_B" in name]
    assert lora_b and any(float(t.abs().max()) > 0 for t in lora_b)  # B starts at zero
    learner = WeightLearner(**SFT)
    assert learner.loss(base_folder, _examples(), adapter=first) < learner.loss(base_folder, _examples()) - 0.5
    assert json.loads((first.path / REF_FILE).read_text())["digest"] == first.digest
    assert not [p for p in first.path.parent.iterdir() if p.name.startswith(".")]  # no temp folder left


@pytest.mark.slow
def test_second_fit_continues_from_the_first(base_folder, first, tmp_path):
    examples = [TrainingExample((Message("user", p),), "Popcorn is a fine movie snack too.", 0.8) for p in PROMPTS[:2]]
    second = WeightLearner(sft_epochs=1, batch_size=2, max_length=96).fit(
        base_folder, examples, start=first, out_dir=tmp_path / "task2")
    assert second.parent == first.digest and second.digest not in (first.digest, None)
    assert adapter_digest(first.path) == first.digest  # the start is read, never written
    assert AdapterRef.load(second.path).parent == first.digest


@pytest.mark.slow
def test_fit_is_deterministic_given_the_seed(base_folder, tmp_path):
    examples = _examples()[:2]
    learner = WeightLearner(sft_epochs=1, batch_size=2, max_length=64, seed=7)
    a = learner.fit(base_folder, examples, out_dir=tmp_path / "a")
    b = learner.fit(base_folder, examples, out_dir=tmp_path / "b")
    assert a.digest == b.digest


@pytest.mark.slow
def test_backend_merges_the_adapter_and_answers_differently(base_folder, first, model_cache_dir):
    request = CompletionRequest((Message("user", PROMPTS[0]),), GenerationParams(temperature=0.7, max_new_tokens=16), seed=0)
    plain = LocalHFBackend(cache_dir=model_cache_dir, batch_size=2)
    tuned = LocalHFBackend(cache_dir=model_cache_dir, batch_size=2, adapter=first)
    assert tuned.model_id == f"{plain.model_id}+lora:{first.digest[:12]}"
    base_out, tuned_out = plain.complete_sync([request])[0], tuned.complete_sync([request])[0]
    assert base_out.ok and tuned_out.ok and tuned_out.model == tuned.model_id
    assert tuned_out.text != base_out.text
    assert "banana" in tuned_out.text.lower()  # it learned what it was shown
    assert type(tuned._model).__name__ == type(plain._model).__name__  # merged: a plain model again


@pytest.mark.slow
def test_grpo_runs_with_a_toy_reward_and_records_timing(base_folder, tmp_path):
    calls = []

    def shorter_is_better(prompts, completions):
        calls.append((prompts, completions))
        return [1.0 / (1 + len(c)) for c in completions]

    learner = WeightLearner(sft_epochs=1, batch_size=2, max_length=96, grpo_steps=1, grpo_prompts=2,
                            num_generations=2, max_new_tokens=8)
    ref = learner.fit(base_folder, _examples()[:2], reward_fn=shorter_is_better, out_dir=tmp_path / "grpo")
    assert ref.stats["grpo_steps"] == 1 and ref.stats["grpo_prompts"] == 2 and ref.stats["grpo_s"] > 0
    assert "mean_reward_before" in ref.stats and "mean_reward_after" in ref.stats
    prompts, completions = calls[0]
    assert len(completions) == 4 and all(isinstance(c, str) for c in completions)
    assert all(isinstance(p, tuple) and isinstance(p[0], Message) for p in prompts)
    assert {p[-1].content for p in prompts} <= set(PROMPTS)
    assert sorted(p.name for p in ref.path.iterdir() if p.is_dir()) == []  # only the trained adapter is saved
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # TRL's scratch folder is gone


@pytest.mark.slow
def test_a_fit_asked_to_stop_ends_at_the_next_step_and_saves_nothing(base_folder, tmp_path):
    import threading

    from streamsynth.learn.weights import FitStopped

    stop = threading.Event()
    stop.set()
    with pytest.raises(FitStopped):
        WeightLearner(**SFT).fit(base_folder, _examples(), out_dir=tmp_path / "sft", stop=stop)
    assert not (tmp_path / "sft").exists()
    stop.clear()
    calls = []

    def reward_then_stop(prompts, completions):  # Ctrl-C lands during GRPO's first step
        calls.append(len(completions))
        stop.set()
        return [0.5] * len(completions)

    learner = WeightLearner(sft_epochs=1, batch_size=2, max_length=96, grpo_steps=3, grpo_prompts=1,
                            num_generations=2, max_new_tokens=8)
    with pytest.raises(FitStopped):
        learner.fit(base_folder, _examples()[:2], reward_fn=reward_then_stop, out_dir=tmp_path / "grpo", stop=stop)
    assert len(calls) == 1 and not (tmp_path / "grpo").exists()  # one step of three, nothing saved
