#!/usr/bin/env python
"""How far should a generated set be balanced over its labels? The student on each cap.

    python bench/label_balance.py --spec examples/sst2.yaml --run runs/sst2 --ratios 0 1 1.5 2 \
        --out bench/results/label-balance-sst2.json

``--run`` is the output folder of ``streamsynth generate`` for that spec. Every sample that passed
the checks is in it: ``samples.jsonl`` (kept) and the rows of ``rejected.jsonl`` that only the
selector turned away (reason ``selection``). For each ratio R this program keeps what
``LabelBalance(max_ratio=R)`` (the default selector of classification tasks; ``0`` keeps every
sample) keeps of them, trains the benchmark student (MiniLM + logistic regression) on the spec's
seeds plus that set, and scores it on the dev split when the task has one (where a default may be
chosen) and on the first ``--test-rows`` rows of the test split (reported, never used to choose).
Works for any classification spec, with or without a dev split.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from student_eval import load, rows_to_xy  # noqa: E402

from streamsynth.errors import ConfigError  # noqa: E402
from streamsynth.eval import Embedder, EmbeddingLogRegStudent, example_text  # noqa: E402
from streamsynth.quality.select import LabelBalance  # noqa: E402
from streamsynth.records import Provenance, Sample  # noqa: E402
from streamsynth.task import read_rows  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--spec", required=True, help="the task spec the run was made from (classification)")
    p.add_argument("--run", required=True, help="output folder of 'streamsynth generate' for that spec")
    p.add_argument("--ratios", type=float, nargs="+", default=[0, 1, 1.5, 2, 3], help="max_label_ratio values (0: keep all)")
    p.add_argument("--test-rows", type=int, default=1000)
    p.add_argument("--out", default=None, help="JSON result file (default: print only)")
    return p.parse_args(argv)


def passed_samples(run: Path, task: Any) -> list[Sample]:
    """Every sample of a generate run that passed the checks: kept, or left out by the selector only."""
    path = run / "samples.jsonl"
    if not path.is_file():
        raise SystemExit(f"error: {run} holds no samples.jsonl; give the output folder of 'streamsynth generate'")
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            row = json.loads(line)  # the task's own fields, id, and meta (provenance, scores)
            meta = row.get("meta", {})
            out.append(Sample(id=row["id"], task=task.name, inputs={f: str(row[f]) for f in task.input_fields},
                              output=str(row[task.output_field]), provenance=Provenance.from_dict(meta["provenance"]),
                              scores=dict(meta.get("scores") or {})))
    rejected = run / "rejected.jsonl"
    for line in (rejected.read_text(encoding="utf-8").splitlines() if rejected.is_file() else []):
        if line.strip():
            row = json.loads(line)
            if str(row.get("rejected_reason") or "").startswith("selection"):
                sample = Sample.from_dict(row)
                out.append(dataclasses.replace(sample, verdicts=tuple(v for v in sample.verdicts if v.passed),
                                               rejected_reason=None))
    return sorted(out, key=lambda s: s.provenance.sample_index)  # the run's order, as generate's selector saw them


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    t0 = time.perf_counter()
    spec_path, run = Path(args.spec), Path(args.run)
    if not spec_path.is_file():
        raise SystemExit(f"error: task spec {spec_path} not found")
    task = load(spec_path, None)[0]
    if task.kind != "classification" or task.test_source is None:
        raise SystemExit(f"error: {spec_path}: needs a classification task (generate balances no other kind) with 'data.test'")
    try:
        selectors = {r: LabelBalance(max_ratio=r) for r in args.ratios}
    except ConfigError as exc:
        raise SystemExit(f"error: --ratios: {exc}") from None
    samples = passed_samples(run, task)
    print(f"{len(samples)} samples passed the checks: {dict(Counter(s.output for s in samples))}")
    embedder = Embedder()
    embedder.load()
    splits: dict[str, tuple[list[str], list[str]]] = {}
    if task.dev:
        splits["dev"] = ([example_text(e.inputs, task.input_fields) for e in task.dev], [e.output for e in task.dev])
    test_rows = read_rows(task.test_source, what="data.test")[: args.test_rows]  # scored, never used to choose
    splits["test"] = rows_to_xy(test_rows, task.input_fields, task.output_field, set(task.label_names))[:2]
    seeds_x = [example_text(e.inputs, task.input_fields) for e in task.seeds]
    seeds_y = [e.output for e in task.seeds]

    def score(extra: list[Sample]) -> dict[str, Any]:
        student = EmbeddingLogRegStudent(embedder).train(
            seeds_x + [example_text(s.inputs, task.input_fields) for s in extra], seeds_y + [s.output for s in extra])
        out: dict[str, Any] = {"n": len(extra), "by_label": dict(Counter(s.output for s in extra))}
        for name, (x, y) in splits.items():
            m = student.evaluate(x, y)
            out[name] = {"accuracy": round(m["accuracy"], 4), "macro_f1": round(m["macro_f1"], 4)}
        return out

    rows = {"seeds_only": score([])}
    for r in args.ratios:
        rows[f"{r:g}"] = score(selectors[r].select(samples, task, seed=0))
    for name, row in rows.items():
        parts = "  ".join(f"{k} {v['accuracy']:.3f} (F1 {v['macro_f1']:.3f})" for k, v in row.items() if k in splits)
        print(f"{name:>10}: n {row['n']:4d}  {parts}  {row['by_label']}")
    result = {"benchmark": "label_balance", "command": " ".join(sys.argv), "spec": str(spec_path), "run": str(run),
              "rows": rows, "wall_s": round(time.perf_counter() - t0, 1)}
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
