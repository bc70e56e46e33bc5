#!/usr/bin/env python
"""Benchmark student: how much does a synthetic set help a small classifier? (BENCHMARKS.md, section 1)

Trains the student (frozen all-MiniLM-L6-v2 embeddings + logistic regression) on the task's seeds
alone and on seeds + synthetic samples, optionally on the first N real train rows as an upper
reference, and scores each on the first --test-rows rows of the test split. Prints a table and
writes a JSON result file.

    python bench/student_eval.py --spec examples/sst2.yaml --samples runs/sst2/samples.jsonl \
        --real 2000 --out bench/results/sst2.json

The test split is read here only, by this final evaluation.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shlex
import sys
import time
from pathlib import Path
from typing import Any

from streamsynth.errors import StreamsynthError
from streamsynth.eval import Embedder, EmbeddingLogRegStudent, example_text
from streamsynth.task import load_task, make_source, read_rows, read_spec, task_from_spec
from streamsynth.task.spec import resolve_source


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--spec", required=True, help="task spec YAML (classification or pair_classification)")
    p.add_argument("--samples", action="append", default=[], metavar="JSONL",
                   help="synthetic samples (one JSON object per line with the task's input and output fields); repeatable")
    p.add_argument("--test-rows", type=int, default=1000, help="score on the first N rows of the test split (default 1000)")
    p.add_argument("--real", type=int, default=None, metavar="N",
                   help="also train a reference student on the first N rows of the spec's train file")
    p.add_argument("--oracle", type=int, nargs="+", default=[], metavar="N",
                   help="also train on the seeds plus N real train rows that are not seeds (a seeded draw): "
                        "the most N perfect synthetic samples could give; one or more sizes")
    p.add_argument("--seed", type=int, default=None,
                   help="override the spec's seeds.seed (which seed examples are chosen)")
    p.add_argument("--C", type=float, default=1.0, help="inverse regularization strength of the logistic regression")
    p.add_argument("--out", default=None, help="JSON result file (default bench/results/<task>-student.json)")
    return p.parse_args(argv)


def load(spec_path: Path, seed: int | None):
    if seed is None:
        return load_task(spec_path), read_spec(spec_path)
    spec = read_spec(spec_path)
    spec = spec.model_copy(update={"seeds": spec.seeds.model_copy(update={"seed": seed})})
    return task_from_spec(spec, base=spec_path.resolve().parent, source=str(spec_path)), spec


def rows_to_xy(rows: list[dict[str, Any]], fields: tuple[str, ...], output: str, labels: set[str]):
    """Texts and labels from JSONL rows; rows missing a field or with an unknown label are skipped."""
    texts, ys, skipped = [], [], 0
    for row in rows:
        src = row if all(f in row for f in fields) else row.get("inputs")
        label = row.get(output, row.get("output"))
        if not isinstance(src, dict) or not all(f in src for f in fields) or label is None:
            skipped += 1
            continue
        label = str(label)
        if labels and label not in labels:
            skipped += 1
            continue
        texts.append(example_text({f: str(src[f]) for f in fields}, fields))
        ys.append(label)
    return texts, ys, skipped


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    t_start = time.perf_counter()
    spec_path = Path(args.spec)
    task, spec = load(spec_path, args.seed)
    if not task.is_classification:
        raise SystemExit(f"error: {spec_path}: the student benchmark needs a classification task, got kind {task.kind!r}")
    if task.test_source is None:
        raise SystemExit(f"error: {spec_path}: set 'data.test' in the spec; the student is scored on the test split")
    fields, labels = task.input_fields, set(task.label_names)

    seed_texts = [example_text(e.inputs, fields) for e in task.seeds]
    seed_labels = [e.output for e in task.seeds]

    syn_texts: list[str] = []
    syn_labels: list[str] = []
    syn_skipped = 0
    for path in args.samples:
        t, y, s = rows_to_xy(read_rows(make_source(Path(path)), what="--samples"), fields, task.output_field, labels)
        syn_texts += t
        syn_labels += y
        syn_skipped += s

    train_rows: list[dict[str, Any]] = []
    if args.real or args.oracle:
        if spec.data.train is None:
            raise SystemExit(f"error: {spec_path}: --real and --oracle need 'data.train' in the spec")
        train_rows = read_rows(resolve_source(spec.data.train, spec_path.resolve().parent), what="data.train")

    real_texts: list[str] = []
    real_labels: list[str] = []
    if args.real:
        real_texts, real_labels, _ = rows_to_xy(train_rows[: args.real], fields, task.output_field, labels)

    oracle_pool: list[tuple[str, str]] = []
    if args.oracle:
        t, y, _ = rows_to_xy(train_rows, fields, task.output_field, labels)
        seen = set(seed_texts)
        oracle_pool = [(a, b) for a, b in zip(t, y) if a not in seen]
        # one seeded order; size N takes its first N rows, so the sizes nest
        random.Random(f"oracle:{spec.seeds.seed}").shuffle(oracle_pool)
        too_big = [n for n in args.oracle if n > len(oracle_pool)]
        if too_big:
            raise SystemExit(f"error: --oracle {too_big[0]}: the train split has only {len(oracle_pool)} rows besides the seeds")

    test_rows = read_rows(task.test_source, what="data.test")[: args.test_rows]
    test_texts, test_labels, test_skipped = rows_to_xy(test_rows, fields, task.output_field, labels)
    if test_skipped:
        print(f"warning: {test_skipped} test rows lack a field or have a label outside the spec; skipped", file=sys.stderr)

    embedder = Embedder()
    embedder.load()
    timings: dict[str, float] = {"embedder_load_s": round(embedder.load_seconds or 0.0, 3)}

    def run(texts: list[str], ys: list[str], name: str) -> dict[str, Any]:
        t0 = time.perf_counter()
        student = EmbeddingLogRegStudent(embedder, C=args.C).train(texts, ys)
        scores = student.evaluate(test_texts, test_labels)
        timings[f"{name}_s"] = round(time.perf_counter() - t0, 3)
        return {"accuracy": round(scores["accuracy"], 4), "macro_f1": round(scores["macro_f1"], 4),
                "n_train": len(texts), "n_test": scores["n"]}

    seed_only = run(seed_texts, seed_labels, "seed_only")
    with_synthetic = run(seed_texts + syn_texts, seed_labels + syn_labels, "with_synthetic") if syn_texts else None
    real_reference = run(real_texts, real_labels, "real_reference") if args.real else None
    oracle = {}
    for n in args.oracle:
        extra = oracle_pool[:n]
        oracle[str(n)] = run(seed_texts + [a for a, _ in extra], seed_labels + [b for _, b in extra], f"oracle_{n}")

    def closed(scores: dict[str, Any], metric: str) -> float | None:
        """The share of the seed-only-to-real gap that ``scores`` closes."""
        gap = real_reference[metric] - seed_only[metric]
        return round((scores[metric] - seed_only[metric]) / gap, 4) if gap > 0 else None

    gap_closed = None
    if real_reference and with_synthetic:
        gap_closed = {metric: closed(with_synthetic, metric) for metric in ("accuracy", "macro_f1")}
    if real_reference:
        for r in oracle.values():
            r["gap_closed_accuracy"] = closed(r, "accuracy")

    wall = time.perf_counter() - t_start
    timings["embed_s"] = round(embedder.encode_seconds, 3)
    result = {
        "benchmark": "student_eval",
        "command": " ".join(shlex.quote(a) for a in [Path(sys.executable).name, *sys.argv]),
        "machine": {
            "platform": platform.platform(),
            "python": platform.python_version(),
            "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(),
        },
        "task": task.name,
        "spec": str(spec_path),
        "student": {"embedder": "all-MiniLM-L6-v2", "classifier": "LogisticRegression", "C": args.C, "max_iter": 2000},
        "seeds_seed": spec.seeds.seed,
        "n_seeds": len(seed_texts),
        "samples": list(args.samples),
        "n_synthetic": len(syn_texts),
        "n_synthetic_skipped": syn_skipped,
        "test_rows": len(test_texts),
        "seed_only": seed_only,
        "with_synthetic": with_synthetic,
        "real_reference": real_reference,
        "oracle": oracle,
        "gap_closed": gap_closed,
        "timings": timings,
        "wall_s": round(wall, 3),
    }

    print_table(result)
    out = Path(args.out) if args.out else Path("bench/results") / f"{task.name}-student.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {out}  (wall {wall:.1f} s, {os.cpu_count()} CPUs)")
    return 0


def print_table(result: dict[str, Any]) -> None:
    rows = [("seed-only", result["seed_only"])]
    if result["with_synthetic"]:
        rows.append(("seeds + synthetic", result["with_synthetic"]))
    for n, r in (result.get("oracle") or {}).items():
        rows.append((f"seeds + {n} real (oracle)", r))
    if result["real_reference"]:
        rows.append(("real reference", result["real_reference"]))
    title = f"student on {result['task']} (first {result['test_rows']} test rows)"
    try:
        from rich.console import Console
        from rich.table import Table

        table = Table(title=title)
        for col in ("arm", "n_train", "accuracy", "macro_f1"):
            table.add_column(col, justify="left" if col == "arm" else "right")
        for name, r in rows:
            table.add_row(name, str(r["n_train"]), f"{r['accuracy']:.3f}", f"{r['macro_f1']:.3f}")
        Console().print(table)
    except ImportError:  # pragma: no cover
        print(title)
        print(f"{'arm':<20}{'n_train':>8}{'accuracy':>10}{'macro_f1':>10}")
        for name, r in rows:
            print(f"{name:<20}{r['n_train']:>8}{r['accuracy']:>10.3f}{r['macro_f1']:>10.3f}")
    if result["gap_closed"]:
        acc = result["gap_closed"]["accuracy"]
        print(f"gap closed (accuracy): {acc:.1%}" if acc is not None else "gap closed: n/a (real <= seed-only)")


if __name__ == "__main__":
    try:
        sys.exit(main())
    except StreamsynthError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
