#!/usr/bin/env python
"""Which parts of a synthesis pattern write samples that help the student? A held-out look.

    python bench/pattern_utility.py --spec examples/ag_news.yaml \
        --task-run bench/results/stream-within-fwd-s0-work/within-fwd-s0/02-ag_news --held-out 1000

``--task-run`` is one task folder of a stream run (``NN-TASK``): its candidates are the samples
the gate kept (``samples.jsonl``) and those it turned away (``rejected.jsonl``, ``utility_gate``),
each with the pattern that wrote it (``tpl=...|shots=...|temp=...``). For every value of every
pattern part (template, shots, temperature) this trains the benchmark student on the seeds plus
only the candidates with that value, and on the seeds plus all the others, and scores both on
``--held-out`` rows of the train split that are not seeds (one seeded draw). Neither the dev nor
the test split is read, so the figures can guide a design without touching what the stream or the
benchmark scores on. Subsets are small (tens of samples), so one run is an anecdote, not a law.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from student_eval import load, rows_to_xy  # noqa: E402

from streamsynth.eval import Embedder, EmbeddingLogRegStudent, example_text  # noqa: E402
from streamsynth.task import read_rows  # noqa: E402
from streamsynth.task.spec import resolve_source  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--spec", required=True, help="the task's spec (classification, with data.train)")
    p.add_argument("--task-run", required=True, help="the task's folder (NN-TASK) of a stream run")
    p.add_argument("--held-out", type=int, default=1000, help="non-seed train rows to score on")
    p.add_argument("--seed", type=int, default=0, help="the draw of the held-out rows")
    p.add_argument("--out", default=None, help="JSON result file (default: print only)")
    return p.parse_args(argv)


def candidates(folder: Path, task: Any) -> list[tuple[str, str, str]]:
    """(text, label, pattern) of every sample the gate ranked: kept, then turned away."""
    out = []
    kept = folder / "samples.jsonl"
    if not kept.is_file():
        raise SystemExit(f"error: {folder} holds no samples.jsonl; give a task folder (NN-TASK) of a stream run")
    for line in kept.read_text(encoding="utf-8").splitlines():
        if line.strip():
            row = json.loads(line)
            text = example_text({f: str(row[f]) for f in task.input_fields}, task.input_fields)
            out.append((text, str(row[task.output_field]), row["meta"]["provenance"]["pattern"]))
    rejected = folder / "rejected.jsonl"
    for line in (rejected.read_text(encoding="utf-8").splitlines() if rejected.is_file() else []):
        if line.strip():
            row = json.loads(line)
            if str(row.get("rejected_reason") or "").startswith("utility_gate"):
                text = example_text({f: str(row["inputs"].get(f, "")) for f in task.input_fields}, task.input_fields)
                out.append((text, str(row["output"]), row["provenance"]["pattern"]))
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    t0 = time.perf_counter()
    spec_path = Path(args.spec)
    if not spec_path.is_file():
        raise SystemExit(f"error: task spec {spec_path} not found")
    task, spec = load(spec_path, None)
    if not task.is_classification or spec.data.train is None:
        raise SystemExit(f"error: {spec_path}: needs a classification task with data.train")
    cands = candidates(Path(args.task_run), task)
    if not cands:
        raise SystemExit(f"error: {args.task_run}: no candidates (the gate ranked nothing)")
    train = read_rows(resolve_source(spec.data.train, spec_path.resolve().parent), what="data.train")
    x, y, _ = rows_to_xy(train, task.input_fields, task.output_field, set(task.label_names))
    seeds_x = [example_text(e.inputs, task.input_fields) for e in task.seeds]
    seeds_y = [e.output for e in task.seeds]
    seen = set(seeds_x)
    pool = [(a, b) for a, b in zip(x, y) if a not in seen]
    random.Random(f"held-out:{args.seed}").shuffle(pool)
    hx, hy = [a for a, _ in pool[: args.held_out]], [b for _, b in pool[: args.held_out]]
    embedder = Embedder()
    embedder.load()

    def score(extra: list[tuple[str, str, str]]) -> float:
        student = EmbeddingLogRegStudent(embedder).train(seeds_x + [c[0] for c in extra], seeds_y + [c[1] for c in extra])
        return round(student.evaluate(hx, hy)["accuracy"], 4)

    result: dict[str, Any] = {"benchmark": "pattern_utility", "command": " ".join(sys.argv), "task": task.name,
                              "held_out": len(hx), "candidates": len(cands), "seeds_only": score([]), "all": score(cands),
                              "parts": []}
    print(f"{task.name}: {len(cands)} candidates; held-out accuracy: seeds alone {result['seeds_only']:.3f}, "
          f"seeds + all {result['all']:.3f}")
    values = sorted({part for c in cands for part in c[2].split("|")})
    for v in values:
        mine = [c for c in cands if v in c[2].split("|")]
        rest = [c for c in cands if v not in c[2].split("|")]
        row = {"part": v, "n": len(mine), "only": score(mine), "n_without": len(rest), "without": score(rest) if rest else None}
        result["parts"].append(row)
        without = f"{row['without']:.3f}" if row["without"] is not None else "-"
        print(f"  {v:<14} n {len(mine):3d}: seeds + only these {row['only']:.3f} | seeds + all the others ({len(rest)}) {without}")
    result["wall_s"] = round(time.perf_counter() - t0, 1)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
