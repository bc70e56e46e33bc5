#!/usr/bin/env python
"""Choose the selection's quality-diversity balance on dev data: replay the ranking and the gate
of saved stream runs under other balances.

    python bench/balance_replay.py --tasks examples/sst2.yaml examples/ag_news.yaml \
        examples/trec.yaml examples/emotion.yaml --seed 0 \
        --runs bench/results/stream-shrink-fwd-work/experience-fwd-s0 --balance 0.3 0.5 0.7 0.9 1 \
        --out balance-replay.json

For every task folder of the runs (``NN-TASK``, as ``bench/gate_replay.py`` reads them) it takes
the candidates the gate chose from (the kept samples and those the gate turned away, with their
rewards), ranks them again with ``MMRSelector(balance=b)`` for each ``--balance`` (1: reward
only, 0: diversity only), and asks ``DevUtility.best_prefix`` with the stream's defaults which
prefix to keep. The dev-side figure is what the gate saw: the dev (or seed cross-validation)
accuracy of the kept prefix minus that of the seeds alone. The test split is read only to score
each choice afterwards (the student on the seeds plus the kept prefix, first ``--test-rows`` rows).
A default is chosen by the dev-side column; the test column says whether that choice held.
``--label-ratio R ...`` also caps each ranking as ``generate`` does (``LabelBalance``: no label more
than R times as often as the rarest, seeds counted; 0 leaves it as the stream has it), so every
(balance, ratio) pair is one choice.

What it cannot tell: another ranking on one task would change what later tasks learned from it;
the replay keeps every task's candidates as they were.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from statistics import mean
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from gate_replay import load_specs, ranked_candidates, read_tests, task_folders  # noqa: E402

from streamsynth.eval import Embedder, EmbeddingLogRegStudent, example_text  # noqa: E402
from streamsynth.learn.feedback import GATE_CONFIDENCE_Z, GATE_FRACTIONS, GATE_MIN_GAIN, DevUtility  # noqa: E402
from streamsynth.quality.select import LabelBalance, MMRSelector  # noqa: E402
from streamsynth.records import Provenance, Sample  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tasks", nargs="+", required=True, help="the stream's task specs (classification)")
    p.add_argument("--runs", nargs="+", required=True, help="stream work folders holding NN-TASK folders")
    p.add_argument("--seed", type=int, required=True, help="the seed those runs drew their seeds with")
    p.add_argument("--balance", type=float, nargs="+", default=[0.3, 0.5, 0.7, 0.9, 1.0], help="MMR balances to try")
    p.add_argument("--label-ratio", type=float, nargs="+", default=[0.0],
                   help="after the ranking, keep no label more than R times as often as the rarest, seeds counted "
                        "(LabelBalance, as generate and the stream do with the task's generation.max_label_ratio); "
                        "0: off, as the stream was before 2026-12-07")
    p.add_argument("--repeats", type=int, default=5, help="seed cross-validation draws (tasks without dev data)")
    p.add_argument("--test-rows", type=int, default=1000)
    p.add_argument("--out", default=None, help="JSON result file (default: print only)")
    args = p.parse_args(argv)
    bad = [b for b in args.balance if not 0 <= b <= 1]
    if bad:
        p.error(f"--balance values must lie within [0, 1] (1: reward only, 0: diversity only); got {bad}")
    if any(not (r == 0 or r >= 1) for r in args.label_ratio):
        p.error(f"--label-ratio values must be 0 (off) or at least 1; got {args.label_ratio}")
    return args


def as_samples(candidates: list[Any], task: Any) -> list[Sample]:
    """The candidates as accepted samples with the scores the run gave them (``read_kept`` keeps a kept
    row's scores; those the gate turned away are samples already)."""
    out = []
    for i, c in enumerate(candidates):
        # the seeds a prompt showed stay on its sample: the cross-validation leaves such samples out of
        # a fold that tests on those seeds (without them the replay's folds would leak)
        prov = c.provenance if isinstance(c, Sample) else Provenance(
            "replay", "replay", "", "", "", 0, i, seed_example_ids=tuple(c.provenance.seed_example_ids))
        sid = c.id if isinstance(c, Sample) else f"kept-{i}"
        out.append(Sample(sid, task.name, dict(c.inputs), c.output, prov, scores=dict(c.scores)))
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    t0 = time.perf_counter()
    specs = load_specs(args.tasks, args.seed)
    tests = read_tests(specs, args.test_rows)  # only to score the gate's choices afterwards
    embedder = Embedder()
    embedder.load()
    rows_out: list[dict[str, Any]] = []
    for run, folder, task in task_folders(args.runs, specs):
        # with the samples the stream's own label cap took out: the replay ranks and caps them again
        candidates = as_samples(ranked_candidates(folder, task, also=("selection: label balance",))[0], task)
        utility = DevUtility(embedder=embedder, seed=args.seed, repeats=args.repeats)
        choices = []
        for b in args.balance:
            mmr = MMRSelector(balance=b, embedder=embedder).select(candidates, task, seed=0)
            for ratio in args.label_ratio:
                ranked = LabelBalance(ratio).select(mmr, task, seed=0)  # keeps the ranked order
                choice = utility.best_prefix(task, ranked, fractions=GATE_FRACTIONS, min_gain=GATE_MIN_GAIN,
                                             confidence_z=GATE_CONFIDENCE_Z)
                choices.append(((b, ratio), ranked[: choice.keep], choice))
        tx, ty = tests[task.name]
        seeds_x = [example_text(e.inputs, task.input_fields) for e in task.seeds]
        seeds_y = [e.output for e in task.seeds]
        row: dict[str, Any] = {"run": str(run), "task": task.name, "method": "dev" if task.dev else "cv",
                               "candidates": len(candidates), "by_balance": []}
        for (b, ratio), kept, choice in choices:
            student = EmbeddingLogRegStudent(embedder).train(
                seeds_x + [example_text(s.inputs, task.input_fields) for s in kept], seeds_y + [s.output for s in kept])
            row["by_balance"].append({
                "balance": b, "label_ratio": ratio, "keep": choice.keep,
                "dev_gain": round(choice.scores.get(choice.keep, choice.seed_only) - choice.seed_only, 4),
                "test": round(student.evaluate(tx, ty)["accuracy"], 4)})
        rows_out.append(row)
        print(f"{run.name} {task.name} ({row['method']}, {len(candidates)} candidates): " + "; ".join(
            f"b{c['balance']:g} r{c['label_ratio']:g} keep {c['keep']} dev {c['dev_gain']:+.3f} test {c['test']:.3f}"
            for c in row["by_balance"]),
            flush=True)
    summary = []
    for i, (b, ratio) in enumerate((b, r) for b in args.balance for r in args.label_ratio):
        cells = [r["by_balance"][i] for r in rows_out]
        summary.append({"balance": b, "label_ratio": ratio, "cells": len(cells),
                        "mean_dev_gain": round(mean(c["dev_gain"] for c in cells), 4),
                        "mean_test": round(mean(c["test"] for c in cells), 4), "mean_keep": round(mean(c["keep"] for c in cells), 1)})
        print(f"balance {b:g}, label ratio {ratio:g}: mean dev gain {summary[-1]['mean_dev_gain']:+.4f}, mean test "
              f"{summary[-1]['mean_test']:.4f}, mean kept {summary[-1]['mean_keep']:.1f} over {len(cells)} task runs")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps({"benchmark": "balance_replay", "command": " ".join(sys.argv), "seed": args.seed,
                                              "rows": rows_out, "summary": summary,
                                              "wall_s": round(time.perf_counter() - t0, 1)}, indent=2))
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
