"""Local model throughput (BENCHMARKS.md section 3, last line).

Generated tokens per second of streamsynth's embedded backend (batched, per-row seeded sampling)
against a plain ``model.generate`` loop at batch 1 on the same model, machine and run.

    python bench/local_throughput.py --requests 64 --batch-size 32 --max-new-tokens 48
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

from streamsynth.backends.local_hf import LocalHFBackend
from streamsynth.records import CompletionRequest, GenerationParams, Message

TOPICS = ["acting", "plot", "music", "pacing", "dialogue", "visuals", "humor", "directing"]


def requests(n: int, max_new_tokens: int) -> list[CompletionRequest]:
    params = GenerationParams(temperature=0.9, top_p=0.95, max_new_tokens=max_new_tokens)
    return [
        CompletionRequest(
            (Message("user", f"Write one sentence from a movie review about the {TOPICS[i % len(TOPICS)]}."),),
            params, seed=0, sample_index=i,
        )
        for i in range(n)
    ]


def plain_loop(backend: LocalHFBackend, reqs: list[CompletionRequest]) -> tuple[int, float]:
    """The baseline: one ``generate`` call per request, HF's own sampling."""
    import torch

    tok, model = backend._tokenizer, backend._model
    t0 = time.perf_counter()
    generated = 0
    for r in reqs:
        text = tok.apply_chat_template([m.to_dict() for m in r.messages], tokenize=False, add_generation_prompt=True)
        enc = tok(text, return_tensors="pt", add_special_tokens=False)
        with torch.inference_mode():
            out = model.generate(**enc, do_sample=True, temperature=r.params.temperature, top_p=r.params.top_p,
                                 max_new_tokens=r.params.max_new_tokens, pad_token_id=tok.pad_token_id)
        new = out[0, enc["input_ids"].shape[1]:].tolist()
        generated += new.index(tok.eos_token_id) if tok.eos_token_id in new else len(new)
    return generated, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="GGUF file or HF folder (default: embedded SmolLM2-135M-Instruct)")
    ap.add_argument("--requests", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--max-new-tokens", type=int, default=48)
    ap.add_argument("--baseline-requests", type=int, default=16, help="requests for the batch-1 loop (it is slow)")
    ap.add_argument("--out", default="bench/results/local_throughput.json")
    args = ap.parse_args()

    backend = LocalHFBackend(args.model, batch_size=args.batch_size)
    backend.load()
    reqs = requests(args.requests, args.max_new_tokens)
    backend.complete_blocking(reqs[:2])  # warm-up
    t0 = time.perf_counter()
    outs = backend.complete_blocking(reqs)
    ours_s = time.perf_counter() - t0
    ours_tokens = sum(o.completion_tokens for o in outs)
    base_tokens, base_s = plain_loop(backend, reqs[: args.baseline_requests])
    result = {
        "command": " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
        "model": backend.model_id,
        "streamsynth": {"requests": len(reqs), "batch_size": args.batch_size, "generated_tokens": ours_tokens,
                        "seconds": round(ours_s, 2), "tokens_per_s": round(ours_tokens / ours_s, 1)},
        "plain_generate_batch1": {"requests": args.baseline_requests, "generated_tokens": base_tokens,
                                  "seconds": round(base_s, 2), "tokens_per_s": round(base_tokens / base_s, 1)},
    }
    result["speedup"] = round(result["streamsynth"]["tokens_per_s"] / result["plain_generate_batch1"]["tokens_per_s"], 2)
    print(f"{'arm':<28}{'tokens':>8}{'seconds':>9}{'tok/s':>8}")
    for name in ("streamsynth", "plain_generate_batch1"):
        r = result[name]
        print(f"{name:<28}{r['generated_tokens']:>8}{r['seconds']:>9}{r['tokens_per_s']:>8}")
    print(f"speed-up: {result['speedup']}x")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
