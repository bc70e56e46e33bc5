"""Local model throughput (BENCHMARKS.md section 3, last line).

Generated tokens per second of streamsynth's embedded backend on a task's real prompts and reply
lengths (the default program's items for ``--spec``), in the same run:

- ``static``: padded batches that run until their longest reply ends (the engine before issue 6);
- ``continuous``: continuous batching with the shared-prefix cache, float32 (the default);
- ``continuous_bf16``: the same in bfloat16 (``--dtype bfloat16``);
- ``plain_generate_batch1``: a plain ``model.generate`` loop at batch 1 (on fewer requests: slow).

    python bench/local_throughput.py --spec examples/sst2.yaml --requests 128 --batch-size 64
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
from streamsynth.records import CompletionRequest

def requests(spec: str, n: int) -> list[CompletionRequest]:
    """The first ``n`` items of the task's default program, as the engine would send them."""
    import asyncio

    from streamsynth.program import default_program
    from streamsynth.task import load_task

    task = load_task(spec)
    method = default_program(task).methods[0]
    asyncio.run(method.prepare(task, None))  # attributes from the spec (or generic ones)
    out = []
    for i in range(n):
        item = method.plan(task, i, 0)
        out.append(CompletionRequest(method.messages(item), item.params, seed=0, sample_index=i))
    return out


def run_arm(backend: LocalHFBackend, reqs: list[CompletionRequest]) -> tuple[int, float, list[str]]:
    import asyncio

    async def go():
        t0 = time.perf_counter()
        outs = await backend.complete(reqs)
        dt = time.perf_counter() - t0
        await backend.aclose()
        return outs, dt

    outs, dt = asyncio.run(go())
    return sum(o.completion_tokens for o in outs), dt, [o.text for o in outs]


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
    ap.add_argument("--spec", default="examples/sst2.yaml", help="task spec whose prompts are used")
    ap.add_argument("--model", default=None, help="GGUF file or HF folder (default: embedded SmolLM2-135M-Instruct)")
    ap.add_argument("--requests", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--baseline-requests", type=int, default=16, help="requests for the batch-1 loop (it is slow)")
    ap.add_argument("--arms", default="static,continuous,continuous_bf16,plain_generate_batch1")
    ap.add_argument("--out", default="bench/results/local_throughput.json")
    args = ap.parse_args()

    reqs = requests(args.spec, args.requests)
    arms = args.arms.split(",")
    result: dict = {
        "command": " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
        "spec": args.spec, "requests": len(reqs), "batch_size": args.batch_size, "arms": {},
    }
    texts = {}
    for arm in arms:
        if arm == "plain_generate_batch1":
            backend = LocalHFBackend(args.model, continuous=False)
            backend.load()
            tokens, secs = plain_loop(backend, reqs[: args.baseline_requests])
            n = args.baseline_requests
        else:
            backend = LocalHFBackend(args.model, batch_size=args.batch_size, continuous=arm != "static",
                                     dtype="bfloat16" if arm.endswith("bf16") else "float32")
            backend.load()
            tokens, secs, texts[arm] = run_arm(backend, reqs)
            n = len(reqs)
        result["arms"][arm] = {"requests": n, "generated_tokens": tokens, "seconds": round(secs, 2),
                               "tokens_per_s": round(tokens / secs, 1)}
        print(f"{arm:<24}{n:>6} req{tokens:>8} tokens{secs:>9.1f} s{tokens / secs:>8.1f} tok/s", flush=True)
    if "static" in texts and "continuous" in texts:
        same = sum(a == b for a, b in zip(texts["static"], texts["continuous"]))
        result["continuous_same_texts_as_static"] = f"{same}/{len(reqs)}"
        print(f"continuous float32 gives the same text as static batches for {same} of {len(reqs)} requests")
    base = result["arms"].get("plain_generate_batch1")
    if base:
        result["speedup_vs_batch1"] = {a: round(r["tokens_per_s"] / base["tokens_per_s"], 2)
                                       for a, r in result["arms"].items() if a != "plain_generate_batch1"}
        print("speed-up over batch 1:", result["speedup_vs_batch1"])
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
