#!/usr/bin/env python
"""Stream learning benchmark (BENCHMARKS.md, section 1): does streamsynth get better at task k
because it did tasks 1..k-1?

    python bench/stream.py --tasks examples/sst2.yaml examples/ag_news.yaml examples/trec.yaml \
        examples/emotion.yaml --arms seed_only,isolated,experience,weights --budget 128 \
        --seeds 0 1 2 --out results.json

For every task (any classification spec, with or without a dev split, any number of labels), arm
and seed, one row in ``results.json`` under ``"rows"``: ``{task, arm, seed, position, accuracy,
macro_f1, calls, wall_s, n_samples}``. Accuracy and macro-F1 are the benchmark student's (frozen
MiniLM embeddings + logistic regression) trained on the seeds the generator saw plus the synthetic
set, on the first ``--test-rows`` rows of the test split, which nothing else reads. ``"real_2000"``
holds the student on 2,000 real train rows per task (the upper reference).

Arms:
- ``seed_only``: the student on the seeds alone (no synthesizer call);
- ``isolated``: ``streamsynth generate`` with the default program, every task from zero;
- ``experience``: the stream with explicit experience (pattern rewards, lessons, exemplars) in a
  store that starts empty for each seed and order;
- ``weights``: the same, plus LoRA updates of the local synthesizer carried across tasks;
- ``within`` (optional, not in the default list): the stream's learning inside each task but no
  store, to tell what experience adds from what feedback inside a task adds.

``--reverse`` runs the tasks in the reverse order. The seed changes which seeds are drawn from
train and all sampling. The learning arms take the stream file's settings from ``--rounds``,
``--draw`` and the pattern space ``--templates``, ``--shots``, ``--temperatures`` (defaults: the
stream file's).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shlex
import sys
import time
from pathlib import Path
from statistics import mean
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from student_eval import load, rows_to_xy  # noqa: E402

from streamsynth.errors import StreamsynthError  # noqa: E402
from streamsynth.eval import Embedder, EmbeddingLogRegStudent, example_text  # noqa: E402
from streamsynth.task import read_rows  # noqa: E402
from streamsynth.task.spec import resolve_source  # noqa: E402

ARMS = ("seed_only", "isolated", "experience", "weights", "within")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tasks", nargs="+", required=True, help="task specs (classification), in stream order")
    p.add_argument("--arms", default="seed_only,isolated,experience,weights", help=f"comma-separated, from {', '.join(ARMS)}")
    p.add_argument("--budget", type=int, default=128, help="synthesizer queries per task, the same for every arm")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="seed draws (and sampling seeds)")
    p.add_argument("--out", default="results.json", help="JSON result file")
    p.add_argument("--reverse", action="store_true", help="run the tasks in the reverse order")
    p.add_argument("--test-rows", type=int, default=1000, help="score on the first N test rows")
    p.add_argument("--real", type=int, default=2000, help="real train rows for the upper reference (0: skip)")
    p.add_argument("--rounds", type=int, default=3, help="feedback rounds per task in the learning arms")
    p.add_argument("--draw", choices=("joint", "factored"), default="joint",
                   help="learning arms: the pattern policy's draw (stream.yaml's 'draw')")
    p.add_argument("--shots", type=int, nargs="+", default=None,
                   help="learning arms: seeds per prompt the patterns try (stream.yaml's patterns.shots)")
    p.add_argument("--temperatures", type=float, nargs="+", default=None,
                   help="learning arms: sampling temperatures the patterns try (patterns.temperatures)")
    p.add_argument("--templates", nargs="+", default=None,
                   help="learning arms: template variants the patterns try (patterns.templates)")
    p.add_argument("--backend", choices=("local", "fake"), default="local", help="local: the embedded model; fake: test replies")
    p.add_argument("--model", default=None, help="local model path (default: the embedded SmolLM2-135M-Instruct)")
    p.add_argument("--work", default=None, help="folder for runs, stores and adapters (default: next to --out)")
    p.add_argument("--cache-dir", default=None, help="response cache folder (default: $STREAMSYNTH_CACHE_DIR or ~/.cache/streamsynth)")
    return p.parse_args(argv)


def student_scores(embedder: Embedder, texts: list[str], labels: list[str], test: tuple[list[str], list[str]]) -> dict[str, float]:
    student = EmbeddingLogRegStudent(embedder).train(texts, labels)
    s = student.evaluate(*test)
    return {"accuracy": round(s["accuracy"], 4), "macro_f1": round(s["macro_f1"], 4)}


def samples_xy(samples: list[Any], fields: tuple[str, ...]) -> tuple[list[str], list[str]]:
    return [example_text(s.inputs, fields) for s in samples], [s.output for s in samples]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    arms = [a.strip() for a in args.arms.split(",") if a.strip()]
    bad = [a for a in arms if a not in ARMS]
    if bad:
        raise SystemExit(f"error: unknown arm {bad[0]!r}; choose from {', '.join(ARMS)}")
    spec_paths = [Path(t) for t in args.tasks]
    if args.reverse:
        spec_paths = spec_paths[::-1]
    for p in spec_paths:
        if not p.is_file():
            raise SystemExit(f"error: task spec {p} not found")
    from streamsynth.errors import ConfigError
    from streamsynth.learn.patterns import check_space

    # the learning arms' pattern space (stream.yaml's ``patterns``), checked before any arm runs
    args.patterns = {k: v for k, v in (("shots", args.shots), ("temperatures", args.temperatures),
                                       ("templates", args.templates)) if v is not None}
    try:
        check_space(args.patterns)
    except ConfigError as exc:
        raise SystemExit(f"error: {str(exc).replace('patterns.', '--')}") from None
    out = Path(args.out)
    work = Path(args.work) if args.work else out.with_suffix("").parent / (out.stem + "-work")
    work.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    t_all = time.perf_counter()
    embedder = Embedder()
    embedder.load()

    # the test split is read here, for the final evaluation only
    tests: dict[str, tuple[list[str], list[str]]] = {}
    real: dict[str, dict[str, float]] = {}
    for p in spec_paths:
        task, spec = load(p, None)
        if not task.is_classification:
            raise SystemExit(f"error: {p}: the stream benchmark needs classification tasks, got kind {task.kind!r}")
        if task.test_source is None:
            raise SystemExit(f"error: {p}: set 'data.test' in the spec; the student is scored on the test split")
        rows = read_rows(task.test_source, what="data.test")[: args.test_rows]
        t, y, _ = rows_to_xy(rows, task.input_fields, task.output_field, set(task.label_names))
        tests[task.name] = (t, y)
        if args.real and spec.data.train is not None:
            train_rows = read_rows(resolve_source(spec.data.train, p.resolve().parent), what="data.train")[: args.real]
            rt, ry, _ = rows_to_xy(train_rows, task.input_fields, task.output_field, set(task.label_names))
            real[task.name] = {**student_scores(embedder, rt, ry, tests[task.name]), "n_train": len(rt)}

    rows: list[dict[str, Any]] = []
    for seed in args.seeds:
        tasks = [load(p, seed)[0] for p in spec_paths]
        for arm in arms:
            print(f"--- seed {seed}, arm {arm}", flush=True)
            for pos, task, r in run_arm(arm, tasks, spec_paths, seed, args, work, embedder):
                texts, labels = [example_text(e.inputs, task.input_fields) for e in task.seeds], [e.output for e in task.seeds]
                st, sy = samples_xy(r["samples"], task.input_fields)
                scores = student_scores(embedder, texts + st, labels + sy, tests[task.name])
                row = {"task": task.name, "arm": arm, "seed": seed, "position": pos, **scores, "calls": r["calls"],
                       "wall_s": round(r["wall_s"], 2), "n_samples": len(r["samples"])}
                row.update({k: v for k, v in r.items() if k not in ("samples", "calls", "wall_s")})
                rows.append(row)
                print(json.dumps({k: row[k] for k in ("task", "arm", "seed", "position", "accuracy", "macro_f1", "calls", "wall_s", "n_samples")}), flush=True)
                write(out, args, rows, real, time.perf_counter() - t_all)
    write(out, args, rows, real, time.perf_counter() - t_all)
    print_table(rows, real)
    print(f"wrote {out} (wall {time.perf_counter() - t_all:.0f} s)")
    return 0


def run_arm(arm: str, tasks: list[Any], spec_paths: list[Path], seed: int, args: argparse.Namespace, work: Path, embedder: Embedder):
    """Yield (position, task, result) for each task of one arm and seed."""
    if arm == "seed_only":
        for pos, task in enumerate(tasks):
            yield pos, task, {"samples": [], "calls": 0, "wall_s": 0.0}
        return
    cache = _cache(args)
    try:
        if arm == "isolated":
            from streamsynth.api import agenerate

            for pos, task in enumerate(tasks):
                t0 = time.perf_counter()
                out_dir = work / f"isolated-s{seed}" / task.name

                async def one():
                    be = make_backend(args, None)
                    try:
                        return await agenerate(task, be, budget=args.budget, seed=seed, out=out_dir, cache=cache, overwrite=True)
                    finally:
                        await be.aclose()

                rep = asyncio.run(one())
                yield pos, task, {"samples": list(rep.result.accepted), "calls": rep.result.stats.queries,
                                  "wall_s": time.perf_counter() - t0}
            return
        from streamsynth.learn.stream import Stream, StreamSpec, arun_stream

        learning = {"experience": ["explicit"], "weights": ["explicit", "weights"], "within": []}[arm]
        order = "rev" if args.reverse else "fwd"
        spec = StreamSpec(tasks=[str(p) for p in spec_paths], budget=args.budget, learning=learning, rounds=args.rounds,
                          draw=args.draw, seed=seed, store=str(work / f"store-{arm}-{order}-s{seed}.sqlite"),
                          patterns=args.patterns)
        store_path = Path(spec.store)
        for f in (store_path, Path(str(store_path) + "-wal"), Path(str(store_path) + "-shm")):
            f.unlink(missing_ok=True)  # each arm, seed and order starts from an empty store
        import shutil

        shutil.rmtree(Path(str(store_path) + ".snapshots"), ignore_errors=True)
        out_dir = work / f"{arm}-{order}-s{seed}"
        shutil.rmtree(out_dir, ignore_errors=True)
        stream = Stream(spec, tuple(p.resolve() for p in spec_paths), store_path, "bench")
        outcomes = asyncio.run(arun_stream(stream, out=out_dir, make_backend=lambda adapter: make_backend(args, adapter),
                                           cache=cache, embedder=embedder, tasks=tasks, train_last=False))
        for o, task in zip(outcomes, tasks):
            kept = read_kept(Path(o.out_dir), task)
            yield o.position, task, {"samples": kept, "calls": o.calls, "wall_s": o.wall_s + o.weights_s,
                                     "weights_s": round(o.weights_s, 2), "kept_reason": o.message,
                                     "dev_utility": o.utility}
    finally:
        if cache is not None:
            cache.close()


def read_kept(folder: Path, task: Any) -> list[Any]:
    """The kept samples of a stream task, from its written data set (inputs, output, the seed ids
    their prompts showed, and the scores the run gave them)."""
    from types import SimpleNamespace

    path = folder / "samples.jsonl"
    out = []
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            if not line.strip():
                continue
            row = json.loads(line)
            seed_ids = tuple(row.get("meta", {}).get("provenance", {}).get("seed_example_ids", ()))
            out.append(SimpleNamespace(inputs={f: str(row[f]) for f in task.input_fields}, output=str(row[task.output_field]),
                                       provenance=SimpleNamespace(seed_example_ids=seed_ids),
                                       scores=dict(row.get("meta", {}).get("scores", {}))))
    return out


def _cache(args: argparse.Namespace):
    from streamsynth.backends.local_hf import default_cache_dir
    from streamsynth.runtime import ResponseCache

    root = Path(args.cache_dir) if args.cache_dir else default_cache_dir()
    return ResponseCache(root / "responses.sqlite")


def make_backend(args: argparse.Namespace, adapter: Any):
    if args.backend == "fake":
        from streamsynth.backends.fake import FakeBackend

        return FakeBackend(model="fake")
    from streamsynth.backends.local_hf import LocalHFBackend

    kwargs = {"adapter": adapter} if adapter is not None else {}
    return LocalHFBackend(args.model, batch_size=64, **kwargs)


def summarize(rows: list[dict[str, Any]], real: dict[str, dict[str, float]]) -> list[dict[str, Any]]:
    """Per task and arm: means over seeds, gain over isolated, share of the seed-only-to-real gap closed."""
    out = []
    tasks = list(dict.fromkeys(r["task"] for r in rows))
    arms = list(dict.fromkeys(r["arm"] for r in rows))
    for t in tasks:
        by_arm = {a: [r for r in rows if r["task"] == t and r["arm"] == a] for a in arms}
        base = mean(r["accuracy"] for r in by_arm["seed_only"]) if by_arm.get("seed_only") else None
        iso = mean(r["accuracy"] for r in by_arm["isolated"]) if by_arm.get("isolated") else None
        ref = real.get(t, {}).get("accuracy")
        for a, rs in by_arm.items():
            if not rs:
                continue
            acc = mean(r["accuracy"] for r in rs)
            out.append({
                "task": t, "arm": a, "position": rs[0]["position"], "seeds": len(rs), "accuracy": round(acc, 4),
                "macro_f1": round(mean(r["macro_f1"] for r in rs), 4), "calls": round(mean(r["calls"] for r in rs), 1),
                "wall_s": round(mean(r["wall_s"] for r in rs), 1), "n_samples": round(mean(r["n_samples"] for r in rs), 1),
                "gain_over_isolated": round(acc - iso, 4) if iso is not None else None,
                "gap_closed": round((acc - base) / (ref - base), 4) if base is not None and ref is not None and ref > base else None,
            })
    return out


def write(out: Path, args: argparse.Namespace, rows: list[dict[str, Any]], real: dict[str, Any], wall: float) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "benchmark": "stream",
        "command": " ".join(shlex.quote(a) for a in [Path(sys.executable).name, *sys.argv]),
        "machine": {"platform": platform.platform(), "python": platform.python_version(), "cpu_count": os.cpu_count()},
        "order": "reverse" if args.reverse else "given",
        "budget": args.budget,
        "test_rows": args.test_rows,
        "rows": rows,
        "real_2000": real,
        "summary": summarize(rows, real),
        "wall_s": round(wall, 1),
    }
    tmp = out.with_suffix(out.suffix + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, out)


def print_table(rows: list[dict[str, Any]], real: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="stream benchmark (means over seeds)")
    for col in ("pos", "task", "arm", "accuracy", "macro_f1", "vs isolated", "gap closed", "calls", "wall s", "n"):
        table.add_column(col, justify="left" if col in ("task", "arm") else "right")
    for s in summarize(rows, real):
        g, c = s["gain_over_isolated"], s["gap_closed"]
        table.add_row(str(s["position"] + 1), s["task"], s["arm"], f"{s['accuracy']:.3f}", f"{s['macro_f1']:.3f}",
                      "-" if g is None else f"{g:+.3f}", "-" if c is None else f"{c:.0%}", f"{s['calls']:.0f}",
                      f"{s['wall_s']:.0f}", f"{s['n_samples']:.0f}")
    for t, r in real.items():
        table.add_row("", t, "real_2000", f"{r['accuracy']:.3f}", f"{r['macro_f1']:.3f}", "", "", "", "", str(r["n_train"]))
    Console(width=160).print(table)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except StreamsynthError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
