"""Faults and kills (BENCHMARKS.md section 3): does a run survive a faulty server, and a SIGKILL?

1. Faults: ``streamsynth.api.generate`` against the test server (its own process) answering a
   share of requests (``--fault-rate``, 20%) with a fault drawn from every kind it has (429 with
   Retry-After, 500, 503, timeout, malformed, empty choices, truncated, disconnect, reset). The
   run must complete; every request that failed for good must be in ``rejected.jsonl`` as a
   ``backend_error`` with its reason; and the books must balance: the server's request count
   equals the calls plus the backend's retries, and each kind of fault the server served was
   either retried or is the reason of a failure.
2. Kill and resume: the same kind of run (a clean server) in a subprocess with a run folder,
   SIGKILLed at ``--kills`` random moments (seeded), started again each time, until it finishes;
   then compared with an uninterrupted run of the same config and seed: samples lost, duplicated
   or different, and model calls repeated (the server's count minus the uninterrupted run's),
   next to the calls that were in flight at the kills (sent but not yet in the journal), which
   bound them.

    python bench/faults.py --queries 1000 --fault-rate 0.2 --kills 20

Tiny check: ``--queries 200 --kills 3``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from _server import result_header, server_stats, start_server, stop_server, write_result

from streamsynth.testing.mock_server import ALL_FAULT_KINDS

ROOT = Path(__file__).resolve().parent.parent
MODEL = "mock-model"
#: the backend's name for each kind of fault the server serves
BACKEND_KIND = {"429": "http 429", "500": "http 500", "503": "http 503", "timeout": "timeout",
                "malformed": "malformed response", "empty_choices": "malformed response",
                "truncated": "malformed response", "disconnect": "connection error", "reset": "connection error"}

#: one run as a subprocess (the kill-and-resume part); format with the run's settings
RUN_SCRIPT = """
from streamsynth.api import generate
from streamsynth.backends.openai_http import OpenAIChatBackend
from streamsynth.methods import AttributeConditionedStrategy
from streamsynth.program import SynthesisProgram
from streamsynth.quality import default_checks
backend = OpenAIChatBackend(base_url={url!r}, model={model!r}, api_key_env=None, concurrency={concurrency})
program = SynthesisProgram(methods=[AttributeConditionedStrategy()], checks=default_checks())
generate({spec!r}, backend, budget={queries}, out={out!r}, seed={seed}, program=program)
"""


def program():
    from streamsynth.methods import AttributeConditionedStrategy
    from streamsynth.program import SynthesisProgram
    from streamsynth.quality import default_checks

    return SynthesisProgram(methods=[AttributeConditionedStrategy()], checks=default_checks())  # no label check


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def failure_kind(reason: str) -> str:
    """``"backend_error: http 500 after 3 attempts"`` -> ``"http 500"``."""
    detail = reason.split(": ", 1)[-1]
    return detail.split(" after ", 1)[0]


# -- 1. faults -----------------------------------------------------------------------------


def fault_run(args: argparse.Namespace) -> dict[str, Any]:
    from streamsynth.api import agenerate
    from streamsynth.backends.openai_http import OpenAIChatBackend

    server, url = start_server("--latency-s", str(args.latency_s), "--reply", "review", "--seed", str(args.seed),
                               "--fault-rate", str(args.fault_rate), "--fault-kinds", ",".join(ALL_FAULT_KINDS),
                               "--retry-after", "0.1", "--timeout-sleep-s", str(3 * args.timeout_s))
    backend = OpenAIChatBackend(base_url=url, model=MODEL, api_key_env=None, concurrency=args.concurrency,
                                timeout_s=args.timeout_s, max_retries=args.max_retries, backoff_base_s=0.05,
                                backoff_max_s=0.5)

    async def go():
        try:
            return await agenerate(args.spec, backend, budget=args.queries, out=out, seed=args.seed, program=program())
        finally:
            await backend.aclose()

    try:
        with tempfile.TemporaryDirectory(prefix="faults-") as out:
            t0 = time.perf_counter()
            error = None
            try:
                report = asyncio.run(go())
            except Exception as exc:  # the run must complete: an exception is the finding
                error, report = f"{type(exc).__name__}: {exc}", None
            wall = time.perf_counter() - t0
            rejected = read_jsonl(Path(out) / "rejected.jsonl") if report else []
            stats = server_stats(url)
    finally:
        stop_server(server)
    if report is None:
        return {"completed": False, "error": error, "wall_s": round(wall, 2)}
    usage = report.manifest["usage"]
    backend_errors = [r for r in (row.get("rejected_reason") or "" for row in rejected) if r.startswith("backend_error")]
    failures = Counter(failure_kind(r) for r in backend_errors)
    retries = dict(backend.retries)
    served = Counter()
    for kind, n in stats["faults"].items():
        served[BACKEND_KIND[kind]] += n
    books = {kind: {"served": served[kind], "retried": retries.get(kind, 0), "failed": failures.get(kind, 0)}
             for kind in sorted(set(served) | set(retries) | set(failures))}
    calls = usage["calls"]
    return {
        "completed": True,
        "wall_s": round(wall, 2),
        "queries": args.queries,
        "calls": calls,
        "failed_calls": usage["failed_calls"],
        "backend_error_rows": len(backend_errors),
        "backend_error_reasons": dict(Counter(r.split(": ", 1)[-1] for r in backend_errors).most_common()),
        "every_failure_recorded": usage["failed_calls"] == len(backend_errors) and all(
            r.split(": ", 1)[-1].strip() for r in backend_errors),
        "retries": sum(retries.values()),
        "server_requests": stats["requests"],
        "server_faults": stats["faults"],
        "books_balance": stats["requests"] == calls + sum(retries.values()) and all(
            b["served"] == b["retried"] + b["failed"] for b in books.values()),
        "by_kind": books,
        "accepted": len(report.result.accepted),
        "limit_end": backend.limit,
        "limit_decreases": backend.limiter.decreases,
    }


# -- 2. kill and resume ----------------------------------------------------------------------


def journal_calls(out: Path) -> int:
    """Model calls of the items in the run folder's journal (what a resumed run will not make again)."""
    from streamsynth.runtime.journal import JOURNAL, read_journal

    path = out / JOURNAL
    return read_journal(path)[4] if path.is_file() else 0


def journal_lines(out: Path) -> int:
    """Whole lines in the journal: cheap enough to poll while a run writes it."""
    try:
        return (out / "journal.jsonl").read_bytes().count(b"\n")
    except FileNotFoundError:
        return 0


def start_run(url: str, out: Path, args: argparse.Namespace) -> subprocess.Popen:
    script = RUN_SCRIPT.format(url=url, model=MODEL, concurrency=args.concurrency, spec=str(Path(args.spec).resolve()),
                               queries=args.queries, out=str(out), seed=args.seed)
    return subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})


def finish(proc: subprocess.Popen, timeout_s: float) -> None:
    try:
        _, err = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise SystemExit(f"a run did not finish in {timeout_s:.0f} s")
    if proc.returncode != 0:
        raise SystemExit(f"a run failed (exit {proc.returncode}): {err.strip()[-800:]}")


def rows(out: Path) -> tuple[list[tuple], list[tuple]]:
    """What a run made: accepted (id, inputs, output) in file order; rejected (id, reason)."""
    accepted = [(r["id"], json.dumps({k: v for k, v in r.items() if k not in ("id", "meta")}, sort_keys=True))
                for r in read_jsonl(out / "samples.jsonl")]
    rejected = [(r["id"], r.get("rejected_reason")) for r in read_jsonl(out / "rejected.jsonl")]
    return accepted, rejected


def kill_run(args: argparse.Namespace) -> dict[str, Any]:
    rng = random.Random(args.seed)
    server, url = start_server("--latency-s", str(args.latency_s), "--reply", "review", "--seed", str(args.seed))
    try:
        with tempfile.TemporaryDirectory(prefix="kills-") as tmp:
            whole, killed = Path(tmp) / "whole", Path(tmp) / "killed"
            before = server_stats(url)["requests"]
            t0 = time.perf_counter()
            finish(start_run(url, whole, args), args.run_timeout_s)
            whole_wall = time.perf_counter() - t0
            whole_requests = server_stats(url)["requests"] - before

            before = server_stats(url)["requests"]
            kills: list[dict[str, Any]] = []
            finished_early = False
            for k in range(args.kills):
                # kill k at a random point of the k-th stretch of the run (journaled items, spread
                # over the whole run; at least one new item), then at a random instant after it
                target = 1 + int(args.queries * (k + rng.random()) / (args.kills + 1))
                wait_for = max(journal_lines(killed) + 1, target)
                extra_s = rng.uniform(0.0, 0.05)
                proc = start_run(url, killed, args)
                deadline = time.monotonic() + args.run_timeout_s
                while proc.poll() is None and journal_lines(killed) < wait_for and time.monotonic() < deadline:
                    time.sleep(0.005)
                time.sleep(extra_s)
                if proc.poll() is not None:
                    finish(proc, args.run_timeout_s)
                    finished_early = True
                    break
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                sent = server_stats(url)["requests"] - before
                kept = journal_calls(killed)
                kills.append({"journaled_calls": kept, "server_requests_so_far": sent})
            if not finished_early:
                finish(start_run(url, killed, args), args.run_timeout_s)
            killed_requests = server_stats(url)["requests"] - before
            (a_ok, a_rej), (b_ok, b_rej) = rows(whole), rows(killed)
    finally:
        stop_server(server)
    # calls in flight at kill k: sent in segment k but not in the journal when it died
    in_flight, sent_before, kept_before = [], 0, 0
    for k in kills:
        in_flight.append((k["server_requests_so_far"] - sent_before) - (k["journaled_calls"] - kept_before))
        sent_before, kept_before = k["server_requests_so_far"], k["journaled_calls"]
        k["in_flight_calls"] = in_flight[-1]
    a_all, b_all = dict(a_ok + a_rej), dict(b_ok + b_rej)
    b_ids = [i for i, _ in b_ok + b_rej]
    repeated = killed_requests - whole_requests
    return {
        "kills": len(kills),
        "finished_before_all_kills": finished_early,
        "uninterrupted": {"wall_s": round(whole_wall, 2), "server_requests": whole_requests,
                          "accepted": len(a_ok), "rejected": len(a_rej)},
        "interrupted": {"server_requests": killed_requests, "accepted": len(b_ok), "rejected": len(b_rej)},
        "samples_lost": len(set(a_all) - set(b_all)),
        "samples_duplicated": len(b_ids) - len(set(b_ids)),
        "samples_extra": len(set(b_all) - set(a_all)),
        "samples_different": sum(1 for i in set(a_all) & set(b_all) if a_all[i] != b_all[i]),
        "same_accepted_in_same_order": a_ok == b_ok,
        "calls_repeated": repeated,
        "calls_in_flight_at_kills": sum(in_flight),
        "repeated_within_in_flight": repeated <= sum(in_flight),
        "max_items_in_flight": 2 * args.concurrency,
        "per_kill": kills,
    }


def print_tables(result: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=max(Console().width, 110))
    f = result["faults"]
    if not f["completed"]:
        console.print(f"[red]fault run did not complete: {f['error']}")
    else:
        t = Table(title=f"faults: {f['queries']} queries, {result['settings']['fault_rate']:.0%} faulty answers, "
                        f"max_retries={result['settings']['max_retries']}")
        for col in ("backend kind", "served by server", "retried", "failed for good"):
            t.add_column(col, justify="left" if col == "backend kind" else "right")
        for kind, b in f["by_kind"].items():
            t.add_row(kind, str(b["served"]), str(b["retried"]), str(b["failed"]))
        console.print(t)
        console.print(f"completed in {f['wall_s']} s; calls {f['calls']}, retries {f['retries']}, server requests "
                      f"{f['server_requests']} (books balance: {f['books_balance']}); failed calls {f['failed_calls']}, "
                      f"backend_error rows {f['backend_error_rows']} (every failure recorded: "
                      f"{f['every_failure_recorded']}); adaptive limit at the end {f['limit_end']} "
                      f"after {f['limit_decreases']} decreases")
    k = result["kills"]
    t = Table(title=f"kill and resume: {k['kills']} SIGKILLs, then compared with an uninterrupted run")
    for col in ("samples lost", "duplicated", "different", "extra", "same accepted, same order", "calls repeated",
                "calls in flight at the kills"):
        t.add_column(col, justify="right")
    t.add_row(str(k["samples_lost"]), str(k["samples_duplicated"]), str(k["samples_different"]),
              str(k["samples_extra"]), str(k["same_accepted_in_same_order"]), str(k["calls_repeated"]),
              str(k["calls_in_flight_at_kills"]))
    console.print(t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--spec", default="examples/sst2.yaml", help="task spec (default: examples/sst2.yaml)")
    ap.add_argument("--queries", type=int, default=1000, help="budget of each run (default: 1000)")
    ap.add_argument("--concurrency", type=int, default=64, help="the backend's concurrency (default: 64)")
    ap.add_argument("--latency-s", type=float, default=0.02, help="the server's latency (default: 0.02)")
    ap.add_argument("--fault-rate", type=float, default=0.2, help="share of faulty answers (default: 0.2)")
    ap.add_argument("--max-retries", type=int, default=2,
                    help="the backend's retries (default: 2, so that some requests fail for good)")
    ap.add_argument("--timeout-s", type=float, default=1.0, help="the backend's timeout; a timeout fault sleeps 3x this")
    ap.add_argument("--kills", type=int, default=20, help="SIGKILLs in the kill-and-resume part (default: 20)")
    ap.add_argument("--seed", type=int, default=0, help="seeds the server's faults, the run and the kill moments")
    ap.add_argument("--run-timeout-s", type=float, default=300, help="give up on one run after this long")
    ap.add_argument("--out", default="bench/results/faults.json")
    args = ap.parse_args()
    if not Path(args.spec).is_file():
        ap.error(f"--spec {args.spec}: no such file")
    if args.queries < 1 or args.concurrency < 1 or args.kills < 0 or not 0 <= args.fault_rate <= 1:
        ap.error("--queries and --concurrency must be at least 1, --kills 0 or more, --fault-rate in [0, 1]")
    t0 = time.perf_counter()
    print("fault run ...", file=sys.stderr, flush=True)
    faults = fault_run(args)
    print("kill and resume ...", file=sys.stderr, flush=True)
    kills = kill_run(args)
    result = {**result_header(t0), "settings": {k: v for k, v in vars(args).items() if k != "out"},
              "faults": faults, "kills": kills}
    print_tables(result)
    write_result(result, args.out)


if __name__ == "__main__":
    main()
