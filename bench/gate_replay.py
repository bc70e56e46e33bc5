#!/usr/bin/env python
"""Replay the dev-utility gate ("do no harm") on the candidates a stream run saved, under other
gate settings, and score every choice on the test split.

    python bench/gate_replay.py --tasks examples/sst2.yaml examples/ag_news.yaml \
        examples/trec.yaml examples/emotion.yaml --seed 0 \
        --runs bench/results/stream-fwd-s0-work/experience-fwd-s0 --repeats 1 5 --z 1 \
        --out gate-replay.json

A stream task folder (``NN-TASK`` under a ``bench/stream.py`` work folder) holds the kept samples
(``samples.jsonl``) and those the gate turned away (``rejected.jsonl``, reason ``utility_gate``),
both in the selector's ranked order: together they are the list the gate chose a prefix of. For
every task, this program asks ``DevUtility.best_prefix`` again with each ``--repeats`` (seed
cross-validation draws; a task with a dev split is scored on it, so repeats do not matter there)
and ``--z`` (confidence_z), and trains the benchmark student on the seeds plus each candidate
prefix to score it on the first ``--test-rows`` test rows. The test split is read only for that
final score, never by the gate.

What it cannot tell: a different choice on one task would change what later tasks of the stream
learned from it; the replay keeps the later tasks' candidates as they were.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from stream import read_kept  # noqa: E402
from student_eval import load, rows_to_xy  # noqa: E402

from streamsynth.eval import Embedder, EmbeddingLogRegStudent, example_text  # noqa: E402
from streamsynth.learn.feedback import GATE_FRACTIONS as FRACTIONS  # noqa: E402
from streamsynth.learn.feedback import DevUtility  # noqa: E402
from streamsynth.records import Sample  # noqa: E402
from streamsynth.task import read_rows  # noqa: E402



def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tasks", nargs="+", required=True, help="the stream's task specs (classification)")
    p.add_argument("--runs", nargs="+", required=True, help="stream work folders holding NN-TASK folders")
    p.add_argument("--seed", type=int, required=True, help="the seed those runs drew their seeds with")
    p.add_argument("--repeats", type=int, nargs="+", default=[1, 5], help="seed cross-validation draws to try")
    p.add_argument("--z", type=float, nargs="+", default=[1.0], help="confidence_z values to try")
    p.add_argument("--min-gain", type=float, default=0.005)
    p.add_argument("--test-rows", type=int, default=1000)
    p.add_argument("--out", default=None, help="JSON result file (default: print only)")
    return p.parse_args(argv)


def ranked_candidates(folder: Path, task: Any, *, also: tuple[str, ...] = ()) -> tuple[list[Any], int]:
    """The gate's ranked input: kept samples, then those it turned away; and how many it kept.
    ``also``: reject reasons (prefixes) whose samples join the end, such as ``"selection: label
    balance"`` for the samples the label cap took out of the ranking before the gate saw it."""
    kept = read_kept(folder, task)
    turned_away, more = [], []
    rejected = folder / "rejected.jsonl"
    for line in (rejected.read_text(encoding="utf-8").splitlines() if rejected.is_file() else []):
        if line.strip():
            row = json.loads(line)
            reason = str(row.get("rejected_reason") or "")
            if reason.startswith("utility_gate"):
                turned_away.append(Sample.from_dict(row))
            elif also and reason.startswith(also):
                more.append(Sample.from_dict(row))
    return kept + turned_away + more, len(kept)


def load_specs(paths: list[str], seed: int) -> dict[str, Any]:
    """The --tasks specs by task name, with the seeds drawn by ``seed``; exits with a clear line when a
    spec is missing or is not a classification task with a test split."""
    specs = {}
    for p in map(Path, paths):
        if not p.is_file():
            raise SystemExit(f"error: task spec {p} not found")
        task = load(p, seed)[0]
        if not task.is_classification or task.test_source is None:
            raise SystemExit(f"error: {p}: needs a classification task with 'data.test'")
        specs[task.name] = task
    return specs


def read_tests(specs: dict[str, Any], rows: int) -> dict[str, tuple[list[str], list[str]]]:
    """Each task's first ``rows`` test rows as (texts, labels): read once, only to score choices made
    without them."""
    tests = {}
    for name, task in specs.items():
        test_rows = read_rows(task.test_source, what="data.test")[:rows]
        tests[name] = rows_to_xy(test_rows, task.input_fields, task.output_field, set(task.label_names))[:2]
    return tests


def task_folders(runs: list[str], specs: dict[str, Any]):
    """``(run, folder, task)`` for every NN-TASK folder of the stream work folders ``runs`` whose task
    is among ``specs`` (others are skipped with a line on stderr)."""
    for run in map(Path, runs):
        folders = sorted(f for f in run.iterdir() if f.is_dir() and "-" in f.name) if run.is_dir() else []
        if not folders:
            raise SystemExit(f"error: {run} holds no NN-TASK folders of a stream run")
        for folder in folders:
            name = folder.name.split("-", 1)[1]
            if name not in specs:
                print(f"skipping {folder}: no spec among --tasks is named {name!r}", file=sys.stderr)
                continue
            yield run, folder, specs[name]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    t0 = time.perf_counter()
    specs = load_specs(args.tasks, args.seed)
    tests = read_tests(specs, args.test_rows)  # for the final scores only
    embedder = Embedder()
    embedder.load()
    rows_out: list[dict[str, Any]] = []
    for run, folder, task in task_folders(args.runs, specs):
        name = task.name
        ranked, kept_then = ranked_candidates(folder, task)
        tx, ty = tests[name]
        seeds_x = [example_text(e.inputs, task.input_fields) for e in task.seeds]
        seeds_y = [e.output for e in task.seeds]
        test: dict[int, float] = {}
        for k in sorted({int(round(f * len(ranked))) for f in FRACTIONS}):
            extra = ranked[:k]
            student = EmbeddingLogRegStudent(embedder).train(
                seeds_x + [example_text(s.inputs, task.input_fields) for s in extra], seeds_y + [s.output for s in extra])
            test[k] = round(student.evaluate(tx, ty)["accuracy"], 4)
        row: dict[str, Any] = {"run": str(run), "task": name, "method": "dev" if task.dev else "cv",
                               "candidates": len(ranked), "kept_in_run": kept_then, "test_by_kept": test, "choices": []}
        for repeats in (args.repeats if not task.dev else args.repeats[:1]):
            utility = DevUtility(embedder=embedder, seed=args.seed, repeats=repeats)
            for z in args.z:
                choice = utility.best_prefix(task, ranked, fractions=FRACTIONS, min_gain=args.min_gain, confidence_z=z)
                row["choices"].append({"repeats": repeats, "z": z, "keep": choice.keep, "test": test[choice.keep],
                                       "utility": {str(k): round(v, 4) for k, v in choice.scores.items()}})
        rows_out.append(row)
        picks = ", ".join(f"r{c['repeats']} z{c['z']:g}: keep {c['keep']} -> {c['test']:.3f}" for c in row["choices"])
        print(f"{run.name} {name} ({row['method']}): test by kept {test}; {picks}", flush=True)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps({"benchmark": "gate_replay", "command": " ".join(sys.argv),
                                              "seed": args.seed, "rows": rows_out,
                                              "wall_s": round(time.perf_counter() - t0, 1)}, indent=2))
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
