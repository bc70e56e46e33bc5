"""How long LoRA weight learning of the embedded synthesizer takes (streamsynth.learn.weights).

One ``WeightLearner.fit`` at a realistic size for one task: ``--examples`` SFT examples whose
prompts are the task's real synthesis prompts (``render_messages``: one seed shot, a label,
attributes) and whose completions are real dev sentences of about ``--completion-tokens`` tokens
(standing in for the synthesizer's accepted samples), ``--epochs`` epochs; then GRPO on
``--grpo-prompts`` prompts x ``--num-generations`` samples x ``--grpo-steps`` steps with a
cheap stand-in reward (the spec's length bounds, one line, no copy of the shot; its cost is not
what is measured). Then the adapter is merged into ``LocalHFBackend`` once, timed.

    python bench/weights_time.py --spec examples/sst2.yaml --examples 64 --grpo-steps 2

Writes JSON (command, machine, load average before and after, stats of the fit) and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import sys
import tempfile
import time
from pathlib import Path

from streamsynth.backends.local_hf import LocalHFBackend
from streamsynth.learn.weights import TrainingExample, WeightLearner
from streamsynth.methods.attributed import render_messages, render_shot
from streamsynth.records import Message
from streamsynth.task import load_task


def build_examples(spec: str, n: int, completion_tokens: int, tokenizer, seed: int) -> list[TrainingExample]:
    """``n`` examples: the task's prompts, dev sentences of about ``completion_tokens`` tokens."""
    task = load_task(spec)
    rng = random.Random(seed)
    labels = list(task.label_names) or [""]
    near = {lab: [e for e in task.dev if e.output == lab
                  and abs(len(tokenizer(render_shot(task, e))["input_ids"]) - completion_tokens) <= 10]
            for lab in labels}
    shots_in_prompt = task.generation.examples_in_prompt
    examples = []
    for i in range(n):
        label = labels[i % len(labels)]
        attributes = {name: rng.choice(values) for name, values in task.attributes.items()}
        shots = rng.sample(list(task.seeds_for(label)), k=min(shots_in_prompt, len(task.seeds_for(label))))
        pool = near[label] or [e for e in task.dev if e.output == label]
        completion = render_shot(task, pool[i // len(labels) % len(pool)])
        examples.append(TrainingExample(render_messages(task, label, attributes, shots), completion,
                                        round(rng.uniform(0.6, 1.0), 3)))
    return examples


def stand_in_reward(spec: str):
    """1 for a one-line reply within the spec's length bounds, 0 otherwise; -0.5 for copying the shot."""
    task = load_task(spec)
    lo, hi = task.generation.min_chars, task.generation.max_chars or 10_000

    def reward(prompts: list[tuple[Message, ...]], completions: list[str]) -> list[float]:
        out = []
        for msgs, text in zip(prompts, completions):
            text = text.strip()
            shots = {m.content.strip() for m in msgs if m.role == "assistant"}
            out.append((1.0 if lo <= len(text) <= hi and "\n" not in text else 0.0) - (0.5 if text in shots else 0.0))
        return out

    return reward


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--spec", default="examples/sst2.yaml")
    ap.add_argument("--examples", type=int, default=64, help="SFT examples (all above min_reward)")
    ap.add_argument("--completion-tokens", type=int, default=40, help="about how long each completion is")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--grpo-steps", type=int, default=2)
    ap.add_argument("--grpo-prompts", type=int, default=8)
    ap.add_argument("--num-generations", type=int, default=4)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16"])
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads for the fit (default: torch's)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="bench/results/weights_time.json")
    args = ap.parse_args()

    load_before = os.getloadavg()
    t0 = time.perf_counter()
    backend = LocalHFBackend()
    backend.load()
    base = backend.converted_dir()
    base_load_s = time.perf_counter() - t0
    examples = build_examples(args.spec, args.examples, args.completion_tokens, backend._tokenizer, args.seed)
    tok = backend._tokenizer
    completion_tokens = [len(tok(e.completion)["input_ids"]) for e in examples]
    prompt_tokens = [len(tok(tok.apply_chat_template([m.to_dict() for m in e.messages], tokenize=False,
                                                     add_generation_prompt=True), add_special_tokens=False)["input_ids"])
                     for e in examples]
    learner = WeightLearner(sft_epochs=args.epochs, batch_size=args.batch_size, grpo_steps=args.grpo_steps,
                            grpo_prompts=args.grpo_prompts, num_generations=args.num_generations,
                            max_new_tokens=args.max_new_tokens, dtype=args.dtype, threads=args.threads, seed=args.seed)
    with tempfile.TemporaryDirectory(prefix="weights-time-") as scratch:
        ref = learner.fit(base, examples, reward_fn=stand_in_reward(args.spec) if args.grpo_steps else None,
                          out_dir=Path(scratch) / "adapter", base_model_id=backend.model_id)
        t1 = time.perf_counter()
        tuned = LocalHFBackend(adapter=ref)
        tuned.load()
        merge_s = time.perf_counter() - t1
        model_id = tuned.model_id
    load_after = os.getloadavg()
    stats = {k: v for k, v in ref.stats.items() if k != "config"}
    result = {
        "command": " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "torch_threads": args.threads or "default",
                    "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "default"),
                    "loadavg_before": [round(x, 2) for x in load_before],
                    "loadavg_after": [round(x, 2) for x in load_after]},
        "spec": args.spec, "examples": len(examples),
        "completion_tokens_mean": round(sum(completion_tokens) / len(completion_tokens), 1),
        "prompt_tokens_mean": round(sum(prompt_tokens) / len(prompt_tokens), 1),
        "base_load_s": round(base_load_s, 2), "adapter_merge_load_s": round(merge_s, 2),
        "model_id": model_id, "fit": stats, "config": ref.stats.get("config"),
    }
    rows = [("base model load", base_load_s), ("fit: load + LoRA", stats["load_s"]),
            (f"SFT {stats['sft_examples']} ex x {args.epochs} ep = {stats['sft_steps']} steps", stats["sft_s"]),
            (f"GRPO {stats['grpo_prompts']} prompts x {args.num_generations} x {stats['grpo_steps']} steps", stats["grpo_s"]),
            ("fit total", stats["total_s"]), ("backend load with adapter merged", merge_s)]
    for name, secs in rows:
        print(f"{name:<44}{secs:>9.1f} s")
    print(f"completion tokens (mean) {result['completion_tokens_mean']}, dtype {stats['dtype']}, "
          f"SFT loss {stats['sft_loss_first_epoch']} -> {stats['sft_loss_last_epoch']}, "
          f"GRPO reward {stats.get('mean_reward_before')} -> {stats.get('mean_reward_after')}, "
          f"load average {load_before[0]:.2f} -> {load_after[0]:.2f}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
