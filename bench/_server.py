"""Shared by the HTTP benchmarks: the test server in its own process, its counters, the result file."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any


def start_server(*options: str) -> tuple[subprocess.Popen, str]:
    """``python -m streamsynth.testing.mock_server OPTIONS`` in its own process; it and its base URL."""
    cmd = [sys.executable, "-m", "streamsynth.testing.mock_server", *options]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    url = (proc.stdout.readline() if proc.stdout else "").strip()
    if not url.startswith("http://"):
        proc.kill()
        err = proc.stderr.read().strip() if proc.stderr else ""
        raise SystemExit(f"the test server did not start: {err[-500:]}")
    return proc, url


def server_stats(url: str) -> dict[str, Any]:
    """The server's counters (``GET /mock/stats``): requests, faults by kind, rate_limited."""
    with urllib.request.urlopen(url.removesuffix("/v1") + "/mock/stats", timeout=10) as resp:
        return json.load(resp)


def stop_server(proc: subprocess.Popen) -> None:
    proc.kill()
    proc.wait()


def machine() -> dict[str, Any]:
    return {"platform": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count(),
            "load_average": [round(x, 2) for x in os.getloadavg()]}


def result_header(started: float) -> dict[str, Any]:
    """What every result file starts with: the command, the machine, the wall time since ``started``."""
    return {"command": " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]), "machine": machine(),
            "wall_s": round(time.perf_counter() - started, 1)}


def write_result(result: dict[str, Any], out: str) -> None:
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2))
    print(f"wrote {path} ({result['wall_s']:.0f} s)")
