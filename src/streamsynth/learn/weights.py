"""LoRA weight learning for the local synthesizer: SFT on high-reward samples, then GRPO.

What: ``WeightLearner.fit`` takes the base model folder of the local synthesizer (the converted
embedded SmolLM2-135M-Instruct: ``LocalHFBackend().converted_dir()`` after ``load()``) and the
task's synthesis prompts with the completions the synthesizer wrote and their rewards, and
returns an ``AdapterRef``: a LoRA adapter saved with ``save_pretrained``, named by the sha256 of
its weights. ``LocalHFBackend(adapter=ref)`` merges it into the weights for generation.

Why: StreamSynth / SynLearner (arXiv 2605.29940) improves the synthesizer itself across a stream
of tasks: per task, LoRA SFT on the high-quality samples, then GRPO with the task's weighted
reward, and the result is carried to the next task. Here the carry is the adapter: ``fit(...,
start=previous_ref)`` loads the previous adapter and goes on training it (``parent`` records its
digest), so the chain of refs is the synthesizer's history.

- SFT: LoRA (Hu et al., arXiv 2106.09685) on the examples with ``reward >= min_reward`` (the
  best ``max_sft_examples`` of them), prompt rendered with the tokenizer's chat template and
  ``add_generation_prompt=True``, cross-entropy on the completion tokens (+ end of turn) only.
  A small loop of our own: left padding, and logits only for the completion positions (the
  49,152-word output layer over the prompt tokens would be wasted work).
- GRPO (Shao et al., DeepSeekMath, arXiv 2402.03300) with TRL's ``GRPOTrainer``: each step
  samples ``num_generations`` completions for each of ``grpo_prompts`` prompts, scores them with
  ``reward_fn``, and takes one optimizer step on the group-relative advantages
  ``(r - mean_group) / std_group`` with the clipped policy ratio and, when ``beta > 0``, a KL
  penalty to the reference: TRL keeps a frozen copy of the adapter as it was when GRPO began
  (after this task's SFT), so the KL does not pull the carried-in experience back to the base
  model (a reference of the adapter-disabled model would). It runs on the CPU as it is
  (measured in docs/methods/weight-learning.md); TRL's gradient checkpointing is turned off
  (135M parameters fit, and recomputation only costs time).
- On a CPU with native bfloat16 (``dtype="auto"``) forward and backward run under bfloat16
  autocast (SFT of 64 examples: 133 s against 171 s in float32 on 2 cores); the LoRA weights
  and the optimizer stay float32.
- Deterministic given ``seed``: python, numpy and torch generators are seeded inside ``fit`` and
  restored afterwards, the data order comes from ``random.Random(seed)``.
- Never mutates its inputs; writes only ``out_dir`` (atomically: a temp folder, then a rename).

Needs the optional ``weights`` extra (peft, trl); importing this module does not.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import os
import random
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from streamsynth.errors import ConfigError, DataError
from streamsynth.records import Message
from streamsynth.runtime.memory import release_memory

EXTRA_HINT = "weight learning needs the 'weights' extra: pip install 'streamsynth[weights]'"
#: attention and MLP projections of Llama-style models (SmolLM2, Llama, Qwen2, Mistral)
LLAMA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
#: the AdapterRef (without its path) saved beside the adapter, so a folder describes itself
REF_FILE = "streamsynth-adapter.json"
_WEIGHT_FILES = ("adapter_model.safetensors", "adapter_model.bin")
# adapter_config.json keys that change what the weights mean (its base path and peft version do not)
_CONFIG_KEYS = ("peft_type", "r", "lora_alpha", "target_modules", "use_rslora", "use_dora", "bias",
                "fan_in_fan_out", "modules_to_save", "layers_to_transform")

#: scores completions: (prompts as message tuples, completion texts) -> one reward per completion
RewardFn = Callable[[list[tuple[Message, ...]], list[str]], list[float]]


@dataclass(frozen=True)
class TrainingExample:
    """One synthesis prompt, the completion the synthesizer wrote for it, and its reward."""

    messages: tuple[Message, ...]
    completion: str
    reward: float

    def __post_init__(self) -> None:
        if not self.messages or not all(isinstance(m, Message) for m in self.messages):
            raise DataError("TrainingExample.messages must be a non-empty tuple of Message (the synthesis prompt)")
        if not isinstance(self.completion, str):
            raise DataError(f"TrainingExample.completion must be a str, got {type(self.completion).__name__}")
        if not isinstance(self.reward, (int, float)) or not math.isfinite(self.reward):
            raise DataError(f"TrainingExample.reward must be a finite number, got {self.reward!r}")


@dataclass(frozen=True)
class AdapterRef:
    """A saved LoRA adapter: where it is, what it is (sha256 of its weights) and where it came from.

    ``parent`` is the digest of the adapter this one continued from (None for the first task);
    ``stats`` holds counts and timings of the fit (see ``WeightLearner.fit``).
    """

    path: Path
    digest: str
    base_model_id: str
    parent: str | None = None
    stats: Mapping[str, Any] = field(default_factory=dict, hash=False)

    def to_dict(self) -> dict[str, Any]:
        return {"path": str(self.path), "digest": self.digest, "base_model_id": self.base_model_id,
                "parent": self.parent, "stats": dict(self.stats)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AdapterRef:
        missing = [k for k in ("path", "digest", "base_model_id") if k not in data]
        if missing:
            raise DataError(f"adapter record lacks {missing}; it must come from AdapterRef.to_dict()")
        return cls(Path(data["path"]), str(data["digest"]), str(data["base_model_id"]),
                   data.get("parent"), dict(data.get("stats") or {}))

    @classmethod
    def load(cls, folder: str | os.PathLike) -> AdapterRef:
        """The ref saved beside an adapter by ``fit``, pointing at ``folder`` (folders may move)."""
        folder = Path(folder)
        try:
            data = json.loads((folder / REF_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ConfigError(f"{folder}: no readable {REF_FILE} ({exc}); is it a folder written by WeightLearner.fit?") from exc
        ref = cls.from_dict({**data, "path": str(folder)})
        if adapter_digest(folder) != ref.digest:
            raise ConfigError(f"{folder}: the adapter weights no longer match {REF_FILE}; fit it again")
        return ref


def adapter_digest(folder: str | os.PathLike) -> str:
    """sha256 (hex) of a LoRA adapter folder's weight file(s) and the config keys that shape them.

    Raises ``ConfigError`` when the folder is not a saved peft adapter.
    """
    folder = Path(folder)
    config_path = folder / "adapter_config.json"
    weights = [folder / n for n in _WEIGHT_FILES if (folder / n).is_file()]
    if not folder.is_dir() or not config_path.is_file() or not weights:
        raise ConfigError(
            f"{folder}: not a LoRA adapter folder (it needs adapter_config.json and "
            f"{' or '.join(_WEIGHT_FILES)}); give the folder WeightLearner.fit wrote"
        )
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise ConfigError(f"{config_path}: not valid JSON ({exc}); save the adapter again") from exc
    shape = {k: config.get(k) for k in _CONFIG_KEYS}
    if isinstance(shape["target_modules"], list):  # peft saves a set: its order is arbitrary
        shape["target_modules"] = sorted(shape["target_modules"])
    h = hashlib.sha256(json.dumps(shape, sort_keys=True).encode())
    for path in weights:
        h.update(path.name.encode())
        with path.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


def require_extra(*modules: str) -> None:
    """Import ``modules`` or raise ``ConfigError`` naming the ``weights`` extra."""
    import importlib

    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError as exc:
            raise ConfigError(f"{EXTRA_HINT} ({name} is not importable: {exc})") from exc


@dataclass(frozen=True)
class WeightLearnerConfig:
    """Settings of ``WeightLearner`` (defaults: small enough for a 2-core CPU)."""

    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.05
    target_modules: tuple[str, ...] = LLAMA_TARGETS
    sft_epochs: int = 2
    sft_lr: float = 2e-4
    batch_size: int = 8
    min_reward: float = 0.6
    max_sft_examples: int = 128
    #: longest prompt + completion in tokens; longer ones keep the completion (up to half) and the prompt's end
    max_length: int = 512
    grpo_steps: int = 8
    grpo_prompts: int = 8
    num_generations: int = 4
    max_new_tokens: int = 64
    temperature: float = 1.0
    beta: float = 0.04
    grpo_lr: float = 1e-5
    clip_epsilon: float = 0.2
    #: "auto" (bfloat16 autocast where the CPU or GPU has it natively), "float32" or "bfloat16"
    dtype: str = "auto"
    device: str = "cpu"
    #: torch's CPU threads during fit (restored after); None keeps torch's. On a shared, loaded
    #: 2-core machine 1 thread ran an SFT step 3-4x faster than 2 spin-waiting ones (see the doc)
    threads: int | None = None
    #: recompute activations in the backward pass: bounded memory (see the module docstring)
    gradient_checkpointing: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        positive = ("lora_r", "lora_alpha", "sft_epochs", "batch_size", "max_sft_examples", "max_length",
                    "grpo_prompts", "max_new_tokens")
        for name in positive:
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"WeightLearner {name} must be a whole number >= 1, got {value!r}")
        if not isinstance(self.grpo_steps, int) or self.grpo_steps < 0:
            raise ConfigError(f"WeightLearner grpo_steps must be a whole number >= 0 (0 skips GRPO), got {self.grpo_steps!r}")
        if not isinstance(self.num_generations, int) or self.num_generations < 2:
            raise ConfigError(f"WeightLearner num_generations must be >= 2 (GRPO compares completions within a group), "
                              f"got {self.num_generations!r}")
        for name in ("sft_lr", "grpo_lr", "temperature"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not value > 0 or not math.isfinite(value):
                raise ConfigError(f"WeightLearner {name} must be a number > 0, got {value!r}")
        if not 0 <= self.lora_dropout < 1:
            raise ConfigError(f"WeightLearner lora_dropout must be in [0, 1), got {self.lora_dropout!r}")
        if not self.beta >= 0 or not 0 < self.clip_epsilon < 1:
            raise ConfigError(f"WeightLearner needs beta >= 0 and 0 < clip_epsilon < 1, got {self.beta!r}, {self.clip_epsilon!r}")
        if not math.isfinite(self.min_reward):
            raise ConfigError(f"WeightLearner min_reward must be a finite number, got {self.min_reward!r}")
        if not self.target_modules or isinstance(self.target_modules, str):
            raise ConfigError("WeightLearner target_modules must be a non-empty tuple of module names, e.g. ('q_proj', 'v_proj')")
        if self.dtype not in ("auto", "float32", "bfloat16"):
            raise ConfigError(f"WeightLearner dtype must be auto, float32 or bfloat16, got {self.dtype!r}")
        if self.threads is not None and (not isinstance(self.threads, int) or self.threads < 1):
            raise ConfigError(f"WeightLearner threads must be None (torch's default) or >= 1, got {self.threads!r}")

    def to_dict(self) -> dict[str, Any]:
        return {f.name: (list(v) if isinstance(v := getattr(self, f.name), tuple) else v)
                for f in dataclasses.fields(self)}


class WeightLearner:
    """LoRA SFT then GRPO of a local causal LM, continuing a previous adapter when given one."""

    def __init__(self, config: WeightLearnerConfig | None = None, **overrides: Any) -> None:
        base = config or WeightLearnerConfig()
        unknown = sorted(set(overrides) - {f.name for f in dataclasses.fields(WeightLearnerConfig)})
        if unknown:
            raise ConfigError(f"unknown WeightLearner settings {unknown}; see WeightLearnerConfig for the names")
        self.config = dataclasses.replace(base, **overrides) if overrides else base

    # -- the verb ------------------------------------------------------------------------
    def fit(
        self,
        base_folder: str | os.PathLike,
        examples: Sequence[TrainingExample],
        *,
        reward_fn: RewardFn | None = None,
        start: AdapterRef | None = None,
        out_dir: str | os.PathLike,
        base_model_id: str | None = None,
        stop: threading.Event | None = None,
    ) -> AdapterRef | None:
        """Train a LoRA adapter on ``examples`` (and ``reward_fn``) and save it to ``out_dir``.

        - ``stop``: set from another thread to end the fit at the next optimizer step, with
          ``FitStopped`` and nothing saved (a stream interrupted during its fit).
        - ``start``: the previous task's adapter; it is loaded and trained further (its LoRA
          shape wins over this config's), and the result's ``parent`` is its digest.
        - ``reward_fn``: when given and ``grpo_steps > 0``, GRPO follows SFT on the examples'
          distinct prompts.
        - ``base_model_id``: recorded on the ref (default: the id ``LocalHFBackend`` gives the
          folder); a ``start`` trained on another base is refused.
        - No example with ``reward >= min_reward``: nothing is trained and ``start`` comes back
          (None when there was none), its stats saying why.

        Stats: ``sft_examples``, ``sft_steps``, ``sft_s``, ``sft_loss_first_epoch``,
        ``sft_loss_last_epoch``, ``grpo_prompts``, ``grpo_steps``, ``grpo_s``,
        ``mean_reward_before`` / ``mean_reward_after`` (mean reward of the first / last GRPO
        step's own samples), ``load_s``, ``total_s``, ``dtype`` and the config.
        """
        cfg = self.config
        t0 = time.perf_counter()
        base_folder = Path(base_folder)
        out_dir = Path(out_dir)
        examples = list(examples)
        if not all(isinstance(e, TrainingExample) for e in examples):
            raise DataError("fit takes a sequence of TrainingExample(messages, completion, reward)")
        base_id = base_model_id or _folder_model_id(base_folder)
        if start is not None and start.base_model_id != base_id:
            raise ConfigError(f"the start adapter was trained on {start.base_model_id}, not on {base_id}; "
                              "give fit the same base folder (or base_model_id) it was trained on")
        if out_dir.exists() and any(out_dir.iterdir()):
            raise ConfigError(f"{out_dir} already exists and is not empty; give each fit a new out_dir")
        chosen = _select(examples, cfg.min_reward, cfg.max_sft_examples)
        if not chosen:
            why = f"no example had reward >= min_reward ({cfg.min_reward}) among {len(examples)}; nothing trained"
            return None if start is None else dataclasses.replace(start, stats={**start.stats, "skipped": why})
        run_grpo = reward_fn is not None and cfg.grpo_steps > 0
        require_extra("peft", *(("trl", "datasets") if run_grpo else ()))
        if start is not None and adapter_digest(start.path) != start.digest:
            raise ConfigError(f"{start.path}: the adapter weights do not match start.digest; was the folder overwritten?")

        dtype = _resolve_dtype(cfg.dtype, cfg.device)
        stats: dict[str, Any] = {"dtype": dtype, "config": cfg.to_dict()}
        with _seeded(cfg.seed), _torch_threads(cfg.threads):
            tok, model = _load(base_folder, cfg, start=start, trainable=True)
            try:
                stats["load_s"] = round(time.perf_counter() - t0, 2)
                stats.update(_sft(model, tok, chosen, cfg, dtype, stop))
                release_memory()
                if run_grpo:
                    prompts = _distinct_prompts(examples, cfg.seed)
                    stats.update(_grpo(model, tok, prompts, reward_fn, cfg, dtype, workdir=out_dir.parent, stop=stop))
                else:
                    stats.update(grpo_prompts=0, grpo_steps=0, grpo_s=0.0)
                stats["total_s"] = round(time.perf_counter() - t0, 2)
                return _save_atomic(model, out_dir, base_id, None if start is None else start.digest, stats)
            finally:
                del tok, model
                release_memory()

    def loss(
        self,
        base_folder: str | os.PathLike,
        examples: Sequence[TrainingExample],
        *,
        adapter: AdapterRef | None = None,
    ) -> float:
        """Mean cross-entropy per completion token of ``examples`` (all of them, any reward)
        under the base model, or the base model with ``adapter``: to check what a fit learned."""
        examples = list(examples)
        if not examples:
            raise DataError("loss needs at least one TrainingExample")
        require_extra("peft")
        cfg = self.config
        dtype = _resolve_dtype(cfg.dtype, cfg.device)
        import torch

        with _seeded(cfg.seed), _torch_threads(cfg.threads), torch.no_grad():
            tok, model = _load(Path(base_folder), cfg, start=adapter, trainable=False)
            model.eval()
            encoded = [_encode(tok, e, cfg.max_length) for e in examples]
            total, count = 0.0, 0
            for i in range(0, len(encoded), cfg.batch_size):
                loss_sum, n = _completion_loss(model, encoded[i: i + cfg.batch_size], tok.pad_token_id, cfg.device, dtype)
                total, count = total + float(loss_sum), count + n
        return total / count


# -- loading and saving ----------------------------------------------------------------------
def _folder_model_id(folder: Path) -> str:
    from streamsynth.backends.local_hf import resolve_model

    resolved = resolve_model(folder)  # ConfigError when the folder is no model folder
    if resolved.is_gguf:
        raise ConfigError(f"{folder}: weight learning needs a Hugging Face model folder, not a GGUF file; "
                          "use LocalHFBackend(...).converted_dir() after load()")
    return f"local:{resolved.name}@{resolved.digest[:12]}"


def _resolve_dtype(dtype: str, device: str) -> str:
    if dtype != "auto":
        return dtype
    if device == "cpu":
        from streamsynth.backends.local_hf import cpu_has_native_bf16

        return "bfloat16" if cpu_has_native_bf16() else "float32"
    import torch

    return "bfloat16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "float32"


def _load(base_folder: Path, cfg: WeightLearnerConfig, *, start: AdapterRef | None, trainable: bool) -> tuple[Any, Any]:
    """Tokenizer and a peft model: the base with ``start`` (trainable or frozen) or a fresh LoRA."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from peft import LoraConfig, PeftModel, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    try:
        tok = AutoTokenizer.from_pretrained(base_folder, local_files_only=True)
        base = AutoModelForCausalLM.from_pretrained(base_folder, local_files_only=True, dtype="float32")
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot load the base model from {base_folder}: {exc}; give a Hugging Face model "
                          "folder such as LocalHFBackend().converted_dir() after load()") from exc
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    base.to(cfg.device)
    if start is not None:
        try:
            model = PeftModel.from_pretrained(base, start.path, is_trainable=trainable)
        except (OSError, ValueError, RuntimeError, KeyError) as exc:
            raise ConfigError(f"cannot apply the adapter {start.path} to {base_folder}: {exc}") from exc
    else:
        lora = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                          target_modules=list(cfg.target_modules), task_type="CAUSAL_LM")
        try:
            model = get_peft_model(base, lora)
        except ValueError as exc:
            raise ConfigError(f"LoRA target_modules {list(cfg.target_modules)} do not fit {base_folder}: {exc}") from exc
    return tok, model


def _save_atomic(model: Any, out_dir: Path, base_id: str, parent: str | None, stats: dict[str, Any]) -> AdapterRef:
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        model.save_pretrained(tmp, selected_adapters=["default"])  # not TRL's frozen "ref" copy
        ref = AdapterRef(out_dir, adapter_digest(tmp), base_id, parent, stats)
        record = {k: v for k, v in ref.to_dict().items() if k != "path"}
        (tmp / REF_FILE).write_text(json.dumps(record, indent=2), encoding="utf-8")
        if out_dir.is_dir() and not any(out_dir.iterdir()):
            out_dir.rmdir()
        os.replace(tmp, out_dir)  # atomic: a reader sees the whole adapter or none
    except OSError as exc:
        raise ConfigError(f"cannot write the adapter to {out_dir}: {exc}; give fit a new, writable out_dir") from exc
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return ref


@contextlib.contextmanager
def _seeded(seed: int) -> Iterator[None]:
    """Seed python, numpy and torch for the block, then give the caller its generators back."""
    import numpy as np
    import torch

    py_state, np_state = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)
        try:
            yield
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)


@contextlib.contextmanager
def _torch_threads(threads: int | None) -> Iterator[None]:
    """Run the block with ``threads`` torch CPU threads (None: as they are), then restore them."""
    import torch

    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


# -- SFT -----------------------------------------------------------------------------------
def _select(examples: list[TrainingExample], min_reward: float, limit: int) -> list[TrainingExample]:
    """The best ``limit`` examples at or above ``min_reward`` (ties keep their order)."""
    good = [e for e in examples if e.reward >= min_reward]
    return sorted(good, key=lambda e: -e.reward)[:limit]


def _encode(tok: Any, example: TrainingExample, max_length: int) -> tuple[list[int], int]:
    """Token ids of prompt + completion + end of turn, and how many of them are the completion."""
    prompt = tok.apply_chat_template([m.to_dict() for m in example.messages], tokenize=False,
                                     add_generation_prompt=True)
    prompt_ids = tok(prompt, add_special_tokens=False)["input_ids"]
    completion_ids = tok(example.completion, add_special_tokens=False)["input_ids"][: max_length // 2 - 1]
    completion_ids = completion_ids + [tok.eos_token_id]
    prompt_ids = prompt_ids[-(max_length - len(completion_ids)):]
    return prompt_ids + completion_ids, len(completion_ids)


def _completion_loss(model: Any, batch: list[tuple[list[int], int]], pad_id: int, device: str, dtype: str) -> tuple[Any, int]:
    """Summed cross-entropy of the completion tokens of a batch, and their count.

    Rows are left-padded, so every completion ends at the last position and the logits of the
    last ``max completion + 1`` positions cover them all.
    """
    import torch

    width = max(len(ids) for ids, _ in batch)
    keep = max(n for _, n in batch) + 1
    ids = torch.tensor([[pad_id] * (width - len(r)) + r for r, _ in batch], device=device)
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r, _ in batch], device=device)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    target_mask = torch.zeros(len(batch), keep - 1, device=device)
    for row, (_, n) in enumerate(batch):
        target_mask[row, keep - 1 - n:] = 1.0
    with torch.autocast(device_type=device.split(":")[0], dtype=torch.bfloat16, enabled=dtype == "bfloat16"):
        logits = model(input_ids=ids, attention_mask=mask, position_ids=positions, logits_to_keep=keep).logits
    logits = logits[:, :-1].float()
    targets = ids[:, width - keep + 1:]
    losses = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction="none")
    return (losses * target_mask.reshape(-1)).sum(), int(target_mask.sum())


class FitStopped(Exception):
    """A fit ended early because its ``stop`` event was set; nothing was saved."""


def _check_stop(stop: threading.Event | None) -> None:
    if stop is not None and stop.is_set():
        raise FitStopped("the LoRA fit was stopped before it finished; nothing was saved")


def _sft(model: Any, tok: Any, chosen: list[TrainingExample], cfg: WeightLearnerConfig, dtype: str,
         stop: threading.Event | None = None) -> dict[str, Any]:
    import torch

    t0 = time.perf_counter()
    encoded = [_encode(tok, e, cfg.max_length) for e in chosen]
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.sft_lr, weight_decay=0.0)
    order_rng = random.Random(cfg.seed)
    if cfg.gradient_checkpointing:
        # non-reentrant checkpointing needs no input that requires grad (LoRA leaves the embedding frozen)
        hf_model = model.base_model.model  # transformers 5.23 renamed the method
        if hasattr(hf_model, "activation_checkpointing_enable"):
            hf_model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            hf_model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.train()
    steps, epoch_losses = 0, []
    for _ in range(cfg.sft_epochs):
        order = list(range(len(encoded)))
        order_rng.shuffle(order)
        total, count = 0.0, 0
        for i in range(0, len(order), cfg.batch_size):
            _check_stop(stop)
            loss_sum, n = _completion_loss(model, [encoded[j] for j in order[i: i + cfg.batch_size]],
                                           tok.pad_token_id, cfg.device, dtype)
            (loss_sum / n).backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            steps += 1
            total, count = total + float(loss_sum.detach()), count + n
        epoch_losses.append(total / count)
    return {"sft_examples": len(chosen), "sft_steps": steps, "sft_s": round(time.perf_counter() - t0, 2),
            "sft_loss_first_epoch": round(epoch_losses[0], 4), "sft_loss_last_epoch": round(epoch_losses[-1], 4)}


# -- GRPO ----------------------------------------------------------------------------------
def _distinct_prompts(examples: list[TrainingExample], seed: int) -> list[tuple[Message, ...]]:
    prompts = list(dict.fromkeys(e.messages for e in examples))
    random.Random(seed).shuffle(prompts)
    return prompts


def _trl_reward(reward_fn: RewardFn) -> Callable[..., list[float]]:
    """``reward_fn`` in the shape TRL calls: chat prompts and completions as lists of dicts."""

    def reward(prompts: list[Any], completions: list[Any], **_: Any) -> list[float]:
        msgs = [tuple(Message(m["role"], m["content"]) for m in p) for p in prompts]
        texts = [c[-1]["content"] if isinstance(c, list) else str(c) for c in completions]
        values = list(reward_fn(msgs, texts))
        if len(values) != len(texts):
            raise ConfigError(f"reward_fn returned {len(values)} rewards for {len(texts)} completions; return one each")
        return [float(v) for v in values]

    reward.__name__ = "reward"  # TRL logs each reward function under its name
    return reward


def _grpo(model: Any, tok: Any, prompts: list[tuple[Message, ...]], reward_fn: RewardFn,
          cfg: WeightLearnerConfig, dtype: str, *, workdir: Path, stop: threading.Event | None = None) -> dict[str, Any]:
    """GRPO with TRL: one optimizer step per ``grpo_prompts x num_generations`` samples."""
    from datasets import Dataset
    from transformers.trainer_callback import PrinterCallback, ProgressCallback, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    class _StopWhenAsked(TrainerCallback):
        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
            if stop is not None and stop.is_set():
                control.should_training_stop = True
            return control

    _check_stop(stop)

    t0 = time.perf_counter()
    # transformers 5.23 renamed the setting
    names = {f.name for f in dataclasses.fields(GRPOConfig)}
    checkpointing = {"activation_checkpointing" if "activation_checkpointing" in names else "gradient_checkpointing":
                     cfg.gradient_checkpointing}
    per_step = min(cfg.grpo_prompts, len(prompts))
    data = Dataset.from_list([{"prompt": [m.to_dict() for m in p]} for p in prompts[: per_step * cfg.grpo_steps]])
    workdir.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=".grpo-", dir=workdir))
    try:
        args = GRPOConfig(
            output_dir=str(scratch), max_steps=cfg.grpo_steps, learning_rate=cfg.grpo_lr,
            per_device_train_batch_size=cfg.num_generations,  # one prompt's group per micro-batch
            gradient_accumulation_steps=per_step, steps_per_generation=per_step,
            num_generations=cfg.num_generations, max_completion_length=cfg.max_new_tokens,
            temperature=cfg.temperature, beta=cfg.beta, epsilon=cfg.clip_epsilon, seed=cfg.seed,
            use_cpu=cfg.device == "cpu", bf16=dtype == "bfloat16", **checkpointing,
            disable_dropout=True, save_strategy="no", report_to="none", logging_steps=1,
            disable_tqdm=True, dataloader_num_workers=0,
        )
        trainer = GRPOTrainer(model=model, reward_funcs=[_trl_reward(reward_fn)], args=args,
                              train_dataset=data, processing_class=tok)
        for callback in (PrinterCallback, ProgressCallback):
            trainer.remove_callback(callback)
        trainer.add_callback(_StopWhenAsked())
        trainer.train()
        _check_stop(stop)
        logged = [h for h in trainer.state.log_history if "reward" in h]
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    stats: dict[str, Any] = {"grpo_prompts": per_step, "grpo_steps": len(logged), "grpo_s": round(time.perf_counter() - t0, 2)}
    if logged:
        stats["mean_reward_before"] = round(float(logged[0]["reward"]), 4)
        stats["mean_reward_after"] = round(float(logged[-1]["reward"]), 4)
        stats["grpo_completion_tokens_mean"] = round(float(logged[-1].get("completions/mean_length", 0.0)), 1)
    return stats
