"""Local model throughput (BENCHMARKS.md section 3, last line).

Generated tokens per second of streamsynth's embedded backend on a task's real prompts and reply
lengths (the default program's items for ``--spec``), in the same run:

- ``static``: padded batches that run until their longest reply ends (the engine before issue 6);
- ``continuous``: continuous batching with the shared-prefix cache, float32 (the default);
- ``continuous_bf16``: the same in bfloat16 (``--dtype bfloat16``);
- ``plain_generate_batch1``: a plain ``model.generate`` loop at batch 1 (on fewer requests: slow);
- ``transformers_cb``: transformers' own continuous batching (``model.generate_batch``, paged
  key/value cache), float32, on the same weights, prompts and sampling settings;
- ``ctranslate2_int8`` / ``ctranslate2_float32``: CTranslate2's ``Generator.generate_batch`` on
  the same weights converted once (cached beside the converted model), batches of
  ``--batch-size`` requests, top-k 100 and the requests' top-p and temperature. Needs ``pip
  install ctranslate2``; without it the arm is reported as not installed.

Every arm gets the same requests (the task's real prompts, its ``max_new_tokens``) and counts
the tokens it generated up to the end of each reply.

    python bench/local_throughput.py --spec examples/sst2.yaml --requests 128 --batch-size 64

``--program explore`` takes a stream's prompts instead (a pattern drawn per item: 1 or 3
demonstration turns, two temperatures); the continuous arms also report the batcher's counters
(prompt tokens prefilled, with padding, cached blocks used, shared heads prefilled).
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

def requests(spec: str, n: int, program: str = "default") -> list[CompletionRequest]:
    """The first ``n`` items of the task's default program (``program="default"``), or of a stream's
    first round (``"explore"``: a pattern drawn per item from the default pattern space, so the
    prompts carry 1 or 3 demonstration turns and two temperatures), as the engine would send them."""
    import asyncio

    from streamsynth.learn.learner import learning_program
    from streamsynth.program import default_program
    from streamsynth.task import load_task

    task = load_task(spec)
    method = (learning_program(task) if program == "explore" else default_program(task)).methods[0]
    asyncio.run(method.prepare(task, None))  # attributes from the spec (or generic ones)
    out = []
    for i in range(n):
        item = method.plan(task, i, 0)
        out.append(CompletionRequest(method.messages(item), item.params, seed=0, sample_index=i))
    return out


def run_arm(backend: LocalHFBackend, reqs: list[CompletionRequest]) -> tuple[int, float, list[str], dict]:
    """Generated tokens, seconds, texts, and the continuous batcher's counters (empty for static)."""
    import asyncio

    async def go():
        t0 = time.perf_counter()
        outs = await backend.complete(reqs)
        dt = time.perf_counter() - t0
        batcher = getattr(backend, "_batcher", None)
        stats = dict(batcher.stats) if batcher is not None else {}
        await backend.aclose()
        return outs, dt, stats

    outs, dt, stats = asyncio.run(go())
    stats = {k: round(v, 2) if isinstance(v, float) else v for k, v in stats.items()}
    return sum(o.completion_tokens for o in outs), dt, [o.text for o in outs], stats


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


def _prompt_ids(tok, r: CompletionRequest) -> list[int]:
    text = tok.apply_chat_template([m.to_dict() for m in r.messages], tokenize=False, add_generation_prompt=True)
    return tok(text, add_special_tokens=False)["input_ids"]


def _until_eos(ids: list[int], eos: int) -> int:
    return ids.index(eos) if eos in ids else len(ids)


def transformers_cb(backend: LocalHFBackend, reqs: list[CompletionRequest], batch_size: int) -> tuple[int, float]:
    """transformers' continuous batching (``generate_batch``) on the backend's loaded model."""
    from transformers import GenerationConfig

    tok, model = backend._tokenizer, backend._model
    p = reqs[0].params
    inputs = [_prompt_ids(tok, r) for r in reqs]
    cfg = GenerationConfig(do_sample=True, temperature=p.temperature, top_p=p.top_p, top_k=100,
                           max_new_tokens=p.max_new_tokens, eos_token_id=tok.eos_token_id,
                           pad_token_id=tok.pad_token_id, max_batch_tokens=batch_size * 256)
    t0 = time.perf_counter()
    outs = model.generate_batch(inputs=inputs, generation_config=cfg, progress_bar=False)
    dt = time.perf_counter() - t0
    return sum(_until_eos(list(o.generated_tokens), tok.eos_token_id) for o in outs.values()), dt


def ctranslate2_arm(backend: LocalHFBackend, reqs: list[CompletionRequest], batch_size: int,
                    compute_type: str) -> tuple[int, float]:
    """CTranslate2 on the same weights (converted once, cached next to the converted model)."""
    import ctranslate2

    folder = backend.model_dir()
    ct2_dir = folder.with_name(folder.name + f"-ct2-{compute_type}")
    if not (ct2_dir / "model.bin").is_file():
        ctranslate2.converters.TransformersConverter(str(folder)).convert(str(ct2_dir), quantization=compute_type,
                                                                            force=True)
    tok = backend._tokenizer
    gen = ctranslate2.Generator(str(ct2_dir), device="cpu", compute_type=compute_type,
                                intra_threads=os.cpu_count() or 1)
    p = reqs[0].params
    tokens = [tok.convert_ids_to_tokens(_prompt_ids(tok, r)) for r in reqs]
    t0 = time.perf_counter()
    results = gen.generate_batch(tokens, max_batch_size=batch_size, sampling_topk=100, sampling_topp=p.top_p,
                                 sampling_temperature=p.temperature, max_length=p.max_new_tokens,
                                 include_prompt_in_result=False, end_token=tok.eos_token)
    dt = time.perf_counter() - t0
    return sum(_until_eos(list(r.sequences_ids[0]), tok.eos_token_id) for r in results), dt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--spec", default="examples/sst2.yaml", help="task spec whose prompts are used")
    ap.add_argument("--model", default=None, help="GGUF file or HF folder (default: embedded SmolLM2-135M-Instruct)")
    ap.add_argument("--requests", type=int, default=128)
    ap.add_argument("--program", choices=("default", "explore"), default="default",
                    help="whose prompts: generate's default program, or a stream's exploring one")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--baseline-requests", type=int, default=16, help="requests for the batch-1 loop (it is slow)")
    ap.add_argument("--arms", default="static,continuous,continuous_bf16,plain_generate_batch1",
                    help="comma-separated; also transformers_cb, ctranslate2_int8, ctranslate2_float32")
    ap.add_argument("--out", default="bench/results/local_throughput.json")
    args = ap.parse_args()

    reqs = requests(args.spec, args.requests, args.program)
    arms = args.arms.split(",")
    result: dict = {
        "command": " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
        "spec": args.spec, "program": args.program, "requests": len(reqs), "batch_size": args.batch_size, "arms": {},
    }
    texts = {}
    for arm in arms:
        if arm == "plain_generate_batch1":
            backend = LocalHFBackend(args.model, continuous=False)
            backend.load()
            tokens, secs = plain_loop(backend, reqs[: args.baseline_requests])
            n = args.baseline_requests
        elif arm == "transformers_cb" or arm.startswith("ctranslate2_"):
            backend = LocalHFBackend(args.model, continuous=False)
            backend.load()
            try:
                if arm == "transformers_cb":
                    tokens, secs = transformers_cb(backend, reqs, args.batch_size)
                else:
                    tokens, secs = ctranslate2_arm(backend, reqs, args.batch_size, arm.removeprefix("ctranslate2_"))
            except ImportError as exc:
                result["arms"][arm] = {"error": f"not installed: {exc}"}
                print(f"{arm:<24} not installed ({exc})", flush=True)
                continue
            except Exception as exc:  # a peer engine that fails here is reported, and the run goes on
                result["arms"][arm] = {"error": f"{type(exc).__name__}: {exc}"[:500]}
                print(f"{arm:<24} failed: {type(exc).__name__}: {str(exc)[:200]}", flush=True)
                continue
            n = len(reqs)
        else:
            backend = LocalHFBackend(args.model, batch_size=args.batch_size, continuous=arm != "static",
                                     dtype="bfloat16" if arm.endswith("bf16") else "float32")
            backend.load()
            tokens, secs, texts[arm], stats = run_arm(backend, reqs)
            n = len(reqs)
        result["arms"][arm] = {"requests": n, "generated_tokens": tokens, "seconds": round(secs, 2),
                               "tokens_per_s": round(tokens / secs, 1)}
        if arm.startswith("continuous") and stats:
            result["arms"][arm]["batcher"] = stats
        print(f"{arm:<24}{n:>6} req{tokens:>8} tokens{secs:>9.1f} s{tokens / secs:>8.1f} tok/s", flush=True)
    if "static" in texts and "continuous" in texts:
        same = sum(a == b for a, b in zip(texts["static"], texts["continuous"]))
        result["continuous_same_texts_as_static"] = f"{same}/{len(reqs)}"
        print(f"continuous float32 gives the same text as static batches for {same} of {len(reqs)} requests")
    base = result["arms"].get("plain_generate_batch1")
    if base:
        result["speedup_vs_batch1"] = {a: round(r["tokens_per_s"] / base["tokens_per_s"], 2)
                                       for a, r in result["arms"].items()
                                       if a != "plain_generate_batch1" and "tokens_per_s" in r}
        print("speed-up over batch 1:", result["speedup_vs_batch1"])
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
