"""HTTP throughput (BENCHMARKS.md section 3): the whole streamsynth pipeline against a server
with a fixed latency, next to a bare aiohttp client and to Bespoke Curator and distilabel.

The test server (``streamsynth.testing.mock_server``, 200 ms per answer by default) runs in its
own process, so its CPU does not count against the client. Every arm runs in its own fresh
process (for a clean peak RSS) against the same server URL, and reports wall time, client CPU
(user + system, its child processes included) and peak RSS for the run alone (imports and
start-up excluded):

- ``streamsynth``: ``streamsynth.api.agenerate`` on the task spec (``--spec``) with the default
  checks minus the label check, ``OpenAIChatBackend(concurrency=C)``, output written to a
  temporary folder, no response cache;
- ``aiohttp``: a bare client, ``asyncio.Semaphore(C)`` + ``gather`` (the reference);
- ``curator`` and ``distilabel``: each installed in its own virtual environment under
  ``bench/.peers/`` (made here on first use; a peer that fails to install is reported, not
  fatal) and driven by a small script written there, configured for C requests in flight.

    python bench/http_throughput.py --queries 1000 10000 --concurrency 256 2048 --repeats 3

Tiny check that everything runs: ``--queries 200 --concurrency 64 --repeats 1``.
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _server import result_header, server_stats, start_server, stop_server, write_result

ROOT = Path(__file__).resolve().parent.parent
PEERS_DIR = ROOT / "bench" / ".peers"
ARMS = ("streamsynth", "aiohttp", "curator", "distilabel")
PEERS = {
    # name: (what pip installs, the import that must work, the distribution whose version is reported)
    "curator": (["bespokelabs-curator"], "from bespokelabs import curator", "bespokelabs-curator"),
    # distilabel 1.5.3 imports requests without declaring it
    "distilabel": (["distilabel[openai]", "requests"], "from distilabel.models import OpenAILLM", "distilabel"),
}
MODEL = "mock-model"
#: the prompt the reference client and the peers send (streamsynth sends its own task prompts)
PROMPT = ("Write one sentence from a movie review about the {aspect}, in a {style} style, "
          "that a reader would label {label}. Reply with the sentence only. (item {i})")
ASPECTS = ("acting", "plot", "directing", "soundtrack", "visuals", "pacing", "dialogue", "humor")


def prompt(i: int) -> str:
    return PROMPT.format(aspect=ASPECTS[i % 8], style=("casual", "critic-like")[i % 2],
                         label=("negative", "positive")[(i // 2) % 2], i=i)


# -- measuring a run (in every arm's process; the peers' scripts get this source) ------------


class Measure:
    """Wall time, CPU (this process and the child processes it reaped) and peak RSS of a block."""

    def __enter__(self):
        self.t0, self.c0, self.k0 = time.perf_counter(), self._cpu(resource.RUSAGE_SELF), self._cpu(resource.RUSAGE_CHILDREN)
        return self

    @staticmethod
    def _cpu(who):
        r = resource.getrusage(who)
        return r.ru_utime + r.ru_stime

    def __exit__(self, *exc):
        self.wall_s = time.perf_counter() - self.t0
        self.cpu_s = self._cpu(resource.RUSAGE_SELF) - self.c0
        self.children_cpu_s = self._cpu(resource.RUSAGE_CHILDREN) - self.k0
        self.rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        # the largest child's peak, when child processes worked during the run (distilabel's steps;
        # not a short `uname -p` that a library forks, whose peak is the parent's size at the fork)
        worked = self.children_cpu_s > 0.05
        self.children_rss_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024 if worked else 0.0

    def report(self, ok, failed, **extra):
        print("RESULT " + json.dumps({"wall_s": self.wall_s, "cpu_s": self.cpu_s + self.children_cpu_s,
                                      "children_cpu_s": self.children_cpu_s, "rss_mib": self.rss_mib,
                                      "children_rss_mib": self.children_rss_mib, "ok": ok, "failed": failed, **extra}),
              flush=True)


# -- the arms run in this file (a child process each) ----------------------------------------


def run_streamsynth(url: str, queries: int, concurrency: int, spec: str) -> None:
    from streamsynth.api import agenerate
    from streamsynth.backends.openai_http import OpenAIChatBackend
    from streamsynth.methods import AttributeConditionedStrategy
    from streamsynth.program import SynthesisProgram
    from streamsynth.quality import default_checks
    from streamsynth import aio

    # the output writer imports pyarrow on first use, and pyarrow imports pandas (when installed) on its
    # first pa.array(); the peers import both (through datasets) before their timed block too, so
    # import time counts for no one
    import pyarrow
    import pyarrow.parquet  # noqa: F401

    pyarrow.array([""], type=pyarrow.string())

    async def main() -> None:
        # max_concurrency=C: the adaptive limit may shrink but never exceed the C of the cell, so the
        # ceiling C / latency holds for this arm as for the others
        backend = OpenAIChatBackend(base_url=url, model=MODEL, api_key_env=None, concurrency=concurrency,
                                    max_concurrency=concurrency)
        program = SynthesisProgram(methods=[AttributeConditionedStrategy()], checks=default_checks())  # no label check
        with tempfile.TemporaryDirectory(prefix="http-throughput-") as out:
            with Measure() as m:
                report = await agenerate(spec, backend, budget=queries, out=out, seed=0, cache=None, program=program)
                await backend.aclose()
        usage = report.manifest["usage"]
        m.report(ok=usage["calls"] - usage["failed_calls"], failed=usage["failed_calls"],
                 accepted=len(report.result.accepted), limit_end=backend.limit,
                 limit_decreases=backend.limiter.decreases, limit_increases=backend.limiter.increases,
                 retries=sum(backend.retries.values()), event_loop=aio.loop_name())

    aio.run(main())  # the loop streamsynth's own entry points use (uvloop when installed)


def run_aiohttp(url: str, queries: int, concurrency: int) -> None:
    import aiohttp

    async def main() -> None:
        sem = asyncio.Semaphore(concurrency)
        connector = aiohttp.TCPConnector(limit=concurrency)
        async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=60)) as session:

            async def one(i: int) -> bool:
                body = {"model": MODEL, "messages": [{"role": "user", "content": prompt(i)}], "max_tokens": 80,
                        "temperature": 0.9, "seed": i}
                async with sem:
                    async with session.post(url + "/chat/completions", json=body) as resp:
                        data = await resp.json()
                        return resp.status == 200 and bool(data["choices"][0]["message"]["content"])

            with Measure() as m:
                results = await asyncio.gather(*(one(i) for i in range(queries)), return_exceptions=True)
        ok = sum(r is True for r in results)
        m.report(ok=ok, failed=queries - ok)

    asyncio.run(main())


# -- the peers: their own venvs, their own scripts -----------------------------------------

#: how every peer script starts: its environment, its arguments, a scratch folder (removed at the end)
PEER_PREAMBLE = '''
import argparse, atexit, os, shutil, tempfile
os.environ.update({env!r})
ap = argparse.ArgumentParser()
ap.add_argument("--url"); ap.add_argument("--queries", type=int); ap.add_argument("--concurrency", type=int)
args = ap.parse_args()
work_dir = tempfile.mkdtemp(prefix="http-throughput-peer-")
atexit.register(shutil.rmtree, work_dir, ignore_errors=True)
'''

CURATOR_ENV = {"CURATOR_DISABLE_CACHE": "1", "TELEMETRY_ENABLED": "False", "CURATOR_VIEWER": "0",
               "CURATOR_DISABLE_RICH_DISPLAY": "1", "HF_HUB_OFFLINE": "1", "OPENAI_API_KEY": "sk-bench-not-a-secret",
               "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
CURATOR_SCRIPT = '''
os.environ["CURATOR_CACHE_DIR"] = work_dir
from datasets import Dataset
from bespokelabs import curator
from bespokelabs.curator.request_processor.online import openai_online_request_processor as oai
{shared}

class WordEncoding:
    """Stands in for tiktoken's cl100k_base, which cannot be downloaded here: a word is a token."""

    def encode(self, text, **kwargs):
        return text.split()

oai.OpenAIOnlineRequestProcessor.get_token_encoding = lambda self: WordEncoding()

class Gen(curator.LLM):
    def prompt(self, row):
        return row["prompt"]

    def parse(self, row, response):
        return {{"text": response}}

rows = Dataset.from_dict({{"prompt": [prompt(i) for i in range(args.queries)]}})
llm = Gen(
    model_name="{model}",
    backend="openai",
    generation_params={{"max_tokens": 80, "temperature": 0.9}},
    backend_params={{
        "base_url": args.url,
        "api_key": os.environ["OPENAI_API_KEY"],
        "max_requests_per_minute": 10_000_000,
        "max_tokens_per_minute": 10_000_000_000,
        "max_concurrent_requests": args.concurrency,
        "max_retries": 1,
        "require_all_responses": False,
        "request_timeout": 60,
    }},
)
with Measure() as m:
    out = llm(rows)
data = getattr(out, "dataset", out)
ok = sum(1 for t in data["text"] if t)
m.report(ok=ok, failed=args.queries - ok)
'''

DISTILABEL_ENV = {"DISTILABEL_LOG_LEVEL": "ERROR", "HF_HUB_OFFLINE": "1"}
DISTILABEL_SCRIPT = '''
import openai._base_client
from distilabel.models import OpenAILLM
from distilabel.pipeline import Pipeline
from distilabel.steps import LoadDataFromDicts
from distilabel.steps.tasks import TextGeneration
{shared}

# the OpenAI client pools at most 1000 connections (100 kept alive): let it hold C
limits = openai._base_client.DEFAULT_CONNECTION_LIMITS
openai._base_client.DEFAULT_CONNECTION_LIMITS = type(limits)(max_connections=args.concurrency,
                                                             max_keepalive_connections=args.concurrency)

with Pipeline(name="http-throughput", cache_dir=work_dir) as pipeline:
    load = LoadDataFromDicts(data=[{{"instruction": prompt(i)}} for i in range(args.queries)],
                             batch_size=args.concurrency)
    gen = TextGeneration(
        llm=OpenAILLM(model="{model}", base_url=args.url, api_key="sk-bench-not-a-secret", max_retries=1, timeout=60,
                      generation_kwargs={{"max_new_tokens": 80, "temperature": 0.9}}),
        input_batch_size=args.concurrency,
    )
    load >> gen

with Measure() as m:
    distiset = pipeline.run(use_cache=False)
rows = distiset["default"]["train"]
ok = sum(1 for t in rows["generation"] if t)
m.report(ok=ok, failed=args.queries - ok)
'''

PEER_SCRIPTS = {"curator": (CURATOR_ENV, CURATOR_SCRIPT), "distilabel": (DISTILABEL_ENV, DISTILABEL_SCRIPT)}


def shared_source() -> str:
    """What a peer's script shares with this file: the prompts and ``Measure``."""
    return "\n".join(["import json, resource, time", f"PROMPT = {PROMPT!r}", f"ASPECTS = {ASPECTS!r}",
                      inspect.getsource(prompt), inspect.getsource(Measure)])


def peer_python(name: str) -> Path:
    return PEERS_DIR / name / "bin" / "python"


def ensure_peer(name: str, log) -> tuple[Path | None, str]:
    """The peer's venv python (made and installed on first use), or None and why not."""
    requirements, check_import, _ = PEERS[name]
    python = peer_python(name)
    check = [str(python), "-c", check_import]
    if python.exists() and subprocess.run(check, capture_output=True, cwd=tempfile.gettempdir()).returncode == 0:
        return python, "installed"
    PEERS_DIR.mkdir(parents=True, exist_ok=True)
    log(f"installing {' '.join(requirements)} into {python.parent.parent} (first run only) ...")
    steps = [[sys.executable, "-m", "venv", "--clear", str(PEERS_DIR / name)],
             [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", *requirements]]
    for step in steps:
        r = subprocess.run(step, capture_output=True, text=True)
        if r.returncode != 0:
            tail = (r.stderr or r.stdout).strip().splitlines()[-3:]
            return None, "install failed: " + " | ".join(tail)
    r = subprocess.run(check, capture_output=True, text=True, cwd=tempfile.gettempdir())
    if r.returncode != 0:
        return None, "import failed after install: " + (r.stderr.strip().splitlines() or ["?"])[-1]
    return python, "installed now"


def peer_version(python: Path, name: str) -> str | None:
    dist = PEERS[name][2]
    r = subprocess.run([str(python), "-c", f"import importlib.metadata as m; print(m.version({dist!r}))"],
                       capture_output=True, text=True)
    return r.stdout.strip() or None


# -- orchestration -------------------------------------------------------------------------


def server_requests(url: str) -> int:
    return int(server_stats(url)["requests"])


def run_arm(arm: str, url: str, queries: int, concurrency: int, spec: str, python: Path | None,
            timeout_s: float) -> dict[str, Any]:
    """One run of one arm in its own process; its RESULT line plus the server's count."""
    if arm in PEER_SCRIPTS:
        script = PEERS_DIR / f"{arm}_run.py"
        env, body = PEER_SCRIPTS[arm]
        script.write_text(PEER_PREAMBLE.format(env=env) + body.format(shared=shared_source(), model=MODEL))
        cmd = [str(python), str(script)]
    else:
        cmd = [sys.executable, str(Path(__file__).resolve()), "--child", arm, "--spec", spec]
    cmd += ["--url", url, "--queries", str(queries), "--concurrency", str(concurrency)]
    before = server_requests(url)
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, cwd=tempfile.gettempdir(),
                           env={**os.environ, "PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1"})
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout_s:.0f} s"}
    lines = [ln for ln in r.stdout.splitlines() if ln.startswith("RESULT ")]
    if r.returncode != 0 or not lines:
        tail = (r.stderr or r.stdout).strip().splitlines()[-4:]
        return {"error": f"exit {r.returncode}: " + " | ".join(tail)}
    result = json.loads(lines[-1][len("RESULT "):])
    result["server_requests"] = server_requests(url) - before
    return result


def summarize(runs: list[dict[str, Any]], queries: int, concurrency: int, latency_s: float) -> dict[str, Any]:
    good = [r for r in runs if "error" not in r]
    if not good:
        return {"error": runs[-1]["error"] if runs else "not run", "runs": runs}
    med = lambda key: statistics.median(r[key] for r in good)  # noqa: E731
    rps = statistics.median(queries / r["wall_s"] for r in good)
    out = {
        "requests_per_s": round(rps, 1),
        "share_of_ceiling": round(rps / (concurrency / latency_s), 3),
        "wall_s": round(med("wall_s"), 3),
        "cpu_s_per_1k_requests": round(1000 * med("cpu_s") / queries, 3),
        "peak_rss_mib": round(med("rss_mib"), 1),
        "children_peak_rss_mib": round(med("children_rss_mib"), 1),
        "ok": min(r["ok"] for r in good),
        "failed": max(r["failed"] for r in good),
        "server_requests": max(r["server_requests"] for r in good),
        "repeats": len(good),
        "runs": runs,
    }
    for key in ("limit_end", "limit_decreases", "limit_increases", "retries"):  # streamsynth's limiter
        if all(key in r for r in good):
            out[key] = med(key)
    if len(good) < len(runs):
        out["errors"] = [r["error"] for r in runs if "error" in r]
    return out


def print_table(result: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"HTTP throughput, {result['latency_s'] * 1000:.0f} ms server latency, "
                        f"median of {result['repeats']}")
    for col in ("queries", "C", "arm", "req/s", "of ceiling", "CPU s/1k req", "peak RSS MiB", "ok/failed",
                "streamsynth / arm"):
        table.add_column(col, justify="left" if col == "arm" else "right")
    errors = []
    for cell in result["cells"]:
        for arm, s in cell["arms"].items():
            if "error" in s:
                errors.append(f"{arm} (queries={cell['queries']}, C={cell['concurrency']}): {s['error']}")
                table.add_row(str(cell["queries"]), str(cell["concurrency"]), arm, "failed", *["-"] * 5)
                continue
            rss = s["peak_rss_mib"] + s["children_peak_rss_mib"]
            table.add_row(str(cell["queries"]), str(cell["concurrency"]), arm, f"{s['requests_per_s']:.0f}",
                          f"{s['share_of_ceiling']:.0%}", f"{s['cpu_s_per_1k_requests']:.2f}", f"{rss:.0f}",
                          f"{s['ok']}/{s['failed']}", f"{s['streamsynth_ratio']:.2f}" if "streamsynth_ratio" in s else "")
    Console(width=max(Console().width, 120)).print(table)
    for name, status in result["peers"].items():
        print(f"{name}: {status}")
    for line in errors:
        print(f"failed: {line}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--spec", default="examples/sst2.yaml", help="task spec streamsynth runs (default: examples/sst2.yaml)")
    ap.add_argument("--queries", type=int, nargs="+", default=[1000, 10000], help="requests per run (default: 1000 10000)")
    ap.add_argument("--concurrency", type=int, nargs="+", default=[256, 2048], help="requests in flight C (default: 256 2048)")
    ap.add_argument("--latency-s", type=float, default=0.2, help="the server's fixed latency (default: 0.2)")
    ap.add_argument("--repeats", type=int, default=3, help="runs per arm and cell; medians are reported (default: 3)")
    ap.add_argument("--arms", nargs="+", choices=ARMS, default=list(ARMS), help="which arms to run (default: all)")
    ap.add_argument("--arm-timeout-s", type=float, default=600, help="give up on one run after this long (default: 600)")
    ap.add_argument("--out", default="bench/results/http_throughput.json")
    ap.add_argument("--child", choices=("streamsynth", "aiohttp"), help=argparse.SUPPRESS)
    ap.add_argument("--url", help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.child:
        queries, concurrency = args.queries[0], args.concurrency[0]
        if args.child == "streamsynth":
            run_streamsynth(args.url, queries, concurrency, args.spec)
        else:
            run_aiohttp(args.url, queries, concurrency)
        return

    spec = Path(args.spec).resolve()
    if not spec.is_file():
        ap.error(f"--spec {args.spec}: no such file")
    if min(args.queries) < 1 or min(args.concurrency) < 1 or args.repeats < 1 or args.latency_s <= 0:
        ap.error("--queries, --concurrency and --repeats must be at least 1, --latency-s positive")
    t0 = time.perf_counter()
    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    pythons: dict[str, Path | None] = {}
    peers: dict[str, str] = {}
    for name in PEERS:
        if name in args.arms:
            pythons[name], status = ensure_peer(name, log)
            version = peer_version(pythons[name], name) if pythons[name] else None
            peers[name] = f"{status} ({PEERS[name][2]} {version})" if version else status
    server, url = start_server("--latency-s", str(args.latency_s), "--reply", "review")
    cells = []
    try:
        for queries in args.queries:
            for concurrency in args.concurrency:
                runs: dict[str, list[dict[str, Any]]] = {arm: [] for arm in args.arms}
                for repeat in range(args.repeats):
                    for arm in args.arms:  # interleaved, so a slow spell of the machine hits every arm
                        if arm in PEERS and pythons.get(arm) is None:
                            runs[arm].append({"error": f"not installed: {peers[arm]}"})
                            continue
                        log(f"queries={queries} C={concurrency} repeat {repeat + 1}/{args.repeats}: {arm} ...")
                        r = run_arm(arm, url, queries, concurrency, str(spec), pythons.get(arm), args.arm_timeout_s)
                        log("    " + (r.get("error") or f"{queries / r['wall_s']:.0f} req/s"))
                        runs[arm].append(r)
                arms = {arm: summarize(rs, queries, concurrency, args.latency_s) for arm, rs in runs.items()}
                ours = arms.get("streamsynth", {}).get("requests_per_s")
                for arm, s in arms.items():
                    if arm != "streamsynth" and ours and "error" not in s:
                        s["streamsynth_ratio"] = round(ours / s["requests_per_s"], 2)
                cells.append({"queries": queries, "concurrency": concurrency,
                              "ceiling_requests_per_s": concurrency / args.latency_s, "arms": arms})
    finally:
        stop_server(server)
    result = {**result_header(t0), "spec": args.spec, "latency_s": args.latency_s, "repeats": args.repeats,
              "peers": peers, "cells": cells}
    print_table(result)
    write_result(result, args.out)


if __name__ == "__main__":
    main()
